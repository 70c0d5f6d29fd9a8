"""The node's HTTP API: Starlette on hypercorn (trio worker) over a `NodeService`.

Routes (JSON unless said; bytes as lowercase hex; errors are
`{"error": <stable label>, "detail": <text>}`):

| route                         | answer                                                           |
|-------------------------------|------------------------------------------------------------------|
| GET  /health                  | 200 {"status": "ok", "height"} or 503 {"status": "unavailable", "component", "detail"} |
| GET  /status                  | NodeService.status(): chain_id, node_id, moniker, role, height, app_hash, view, catching_up, peers, latest_block_time_ms, validator, earliest_block_height (lowest block height surely stored; [storage] retain_blocks) |
| GET  /net_info                | NodeService.net_info()                                           |
| GET  /validators              | {"height", "validators": [{"name", "public_key"}], "quorum"}     |
| GET  /genesis                 | the genesis document                                             |
| GET  /blocks/{height}         | block or 404 "not_found"; 400 "bad_height"; 410 "pruned" {"oldest_height"} below the earliest retained block ([storage] retain_blocks) |
|   …?wait_ms=W                 | long poll: not committed yet → wait up to W ms (0..10000, default 0) for it, then answer as usual; 400 "bad_wait_ms" (a service without `wait_for_height` answers at once) |
|   …?txs=hashes                | {"height", "hash", "header", "tx_hashes": [hex]}: the txs' hashes instead of "txs"/"encoded" (default txs=raw); 400 "bad_query" |
| GET  /commit/{height}         | header + certificate or 404 / 400 / 410 "pruned" (as /blocks)    |
| POST /tx                      | body: raw tx bytes (application/octet-stream) or {"tx": hex}; 200 {"hash"}; 400 {"error": TxRejected.reason, "detail"}; 413 "oversize"; 503 "read_only" (observers) or "mempool_full" |
| POST /txs                     | body: msgpack array of raw txs (application/msgpack), ≤ 4096; 200 {"results": [{"hash"} or {"error", "detail"} per tx, in order]}; 400 "malformed"; 413; 503 "read_only" |
| GET  /tx/{hash}               | {"hash", "status", "height", "index", "receipt"} or 404          |
| GET  /state/{key hex}?prove=  | {"key", "value", "height"} (+ "proof", "header", "certificate")  |
|   …&height=V                  | state version V (header V+L, L = genesis results_lag, default 1); 404 "not_found" above tip-L; 410 "pruned" {"oldest_height"} below the oldest kept version ([storage] keep_recent_versions) |
| GET  /evidence                | {"evidence": [{"validator", "kind", "view", "height", "first", "second", "recorded_height"}]}: persisted double-signing evidence |
| GET  /openapi.json            | this table as OpenAPI 3.1                                        |

`/status` is a stable machine-readable contract: scripts and tests read its
keys; add keys, never rename them.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable

import msgpack
import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ledger.hashing import sha256
from node.config import NodeConfig
from node.metrics import serve_asgi
from node.rpc_observer import observer_routes  # [observer] history/proof/explorer routes
from node.service import NodeService, StateUnavailable, TxRejected
from node.store import BlockPruned

HASH_HEX_CHARS = 64
MAX_KEY_HEX_CHARS = 2048  # state keys are at most 1024 bytes
STATUS_KEYS = ("chain_id", "height", "app_hash", "view", "catching_up")
API_VERSION = "1"
# TxRejected reasons that are the server's condition rather than the client's mistake.
_UNAVAILABLE_REASONS = frozenset({"read_only", "mempool_full"})
MAX_BATCH_TXS = 4096  # txs per POST /txs
MAX_BATCH_BODY_FACTOR = 8  # POST /txs body limit: this many times max_body_bytes
MAX_WAIT_MS = 10_000  # GET /blocks/{h}?wait_ms= ceiling: a long poll holds a connection at most this long
BLOCK_TX_FORMS = ("raw", "hashes")  # GET /blocks/{h}?txs=
CLIENT_CLOSED = 499  # status of the answer to a client that left during a long poll (nobody reads it)


def _error(status: int, error: str, detail: str = "") -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _pruned(exc: BlockPruned) -> JSONResponse:
    """410 for a pruned block, shaped as the state route's: the oldest height still served."""
    return JSONResponse({"error": "pruned", "detail": str(exc), "oldest_height": exc.earliest}, status_code=410)


def _parse_height(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()) or len(text) > 20:
        return None
    height = int(text)
    return height if height >= 1 else None


def _parse_hex(text: str, max_chars: int, exact: int | None = None) -> bytes | None:
    if len(text) > max_chars or len(text) % 2 or (exact is not None and len(text) != exact):
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _parse_wait_ms(text: str | None) -> int | None:
    """?wait_ms: milliseconds 0..MAX_WAIT_MS, absent = 0; None if not such an integer."""
    if text is None:
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 6:
        return None
    wait_ms = int(text)
    return wait_ms if wait_ms <= MAX_WAIT_MS else None


async def _cancel_on_disconnect(receive: Callable[[], Any], scope: trio.CancelScope, left: list[bool]) -> None:
    """Cancel `scope` once the client goes away (ASGI "http.disconnect"), noting it in `left`."""
    while (await receive())["type"] != "http.disconnect":
        pass
    left.append(True)
    scope.cancel()


async def _wait_for_block(request: Request, wait: Callable[[int], Any], height: int, wait_ms: int) -> bool:
    """Wait until block `height` is committed, `wait_ms` pass, or the client
    leaves, whichever comes first; True if the client left.

    `wait` is the service's `wait_for_height` (woken by commits, no polling).
    A height far above the tip just runs out the clock: the wait is bounded by
    `wait_ms` whatever the height, and the disconnect watcher ends it early so
    a client that hangs up leaves no task behind (hypercorn does not cancel a
    handler when its connection closes; it waits for it).
    """
    left: list[bool] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_disconnect, request.receive, nursery.cancel_scope, left)
        with trio.move_on_after(wait_ms / 1000):
            await wait(height)
        nursery.cancel_scope.cancel()
    return bool(left)


def _parse_bool(text: str | None) -> bool | None:
    if text is None or text.lower() in ("false", "0", "no", ""):
        return False
    if text.lower() in ("true", "1", "yes"):
        return True
    return None


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (before buffering it all) anything over `limit`.

    Raises _TooLarge.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _TooLarge()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge()
        chunks.append(chunk)
    return b"".join(chunks)


def create_app(service: NodeService, *, read_only: bool = False, max_body_bytes: int = 1_000_000) -> Starlette:
    """The ASGI app for `service`. `read_only` (observers) refuses POST /tx with 503."""

    async def health(request: Request) -> Response:
        # The one place a broad catch is right: /health reports failure instead of raising it.
        try:
            status = service.status()
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"status": "unavailable", "component": "node", "detail": str(exc)},
                                status_code=503)
        return JSONResponse({"status": "ok", "height": status.get("height"),
                             "catching_up": status.get("catching_up")})

    async def status(request: Request) -> Response:
        return JSONResponse(service.status())

    async def net_info(request: Request) -> Response:
        return JSONResponse(service.net_info())

    async def validators(request: Request) -> Response:
        return JSONResponse(service.validators())

    async def genesis(request: Request) -> Response:
        return JSONResponse(service.genesis())

    def _at_height(request: Request, lookup: Callable[[int], Any], what: str) -> Response:
        """400 for a malformed height, 404 when `lookup` finds nothing there."""
        height = _parse_height(request.path_params["height"])
        if height is None:
            return _error(400, "bad_height", "height must be a positive integer")
        try:
            found = lookup(height)
        except BlockPruned as exc:
            return _pruned(exc)
        if found is None:
            return _error(404, "not_found", "no %s at height %d" % (what, height))
        return JSONResponse(found)

    def _block_tx_hashes(height: int) -> dict[str, Any] | None:
        """service.block_tx_hashes, or (a service without it) derived from service.block."""
        method = getattr(service, "block_tx_hashes", None)
        if method is not None:
            return method(height)
        found = service.block(height)
        if found is None:
            return None
        light = {key: value for key, value in found.items() if key not in ("txs", "encoded")}
        light["tx_hashes"] = [sha256(bytes.fromhex(raw)).hex() for raw in found.get("txs", [])]
        return light

    async def block(request: Request) -> Response:
        # ?wait_ms= long-polls (one request per new block instead of polling for
        # 404s); ?txs=hashes leaves out the tx bytes (a commit follower's form).
        height = _parse_height(request.path_params["height"])
        if height is None:
            return _error(400, "bad_height", "height must be a positive integer")
        wait_ms = _parse_wait_ms(request.query_params.get("wait_ms"))
        if wait_ms is None:
            return _error(400, "bad_wait_ms", "wait_ms must be an integer 0..%d (milliseconds)" % MAX_WAIT_MS)
        form = request.query_params.get("txs", "raw")
        if form not in BLOCK_TX_FORMS:
            return _error(400, "bad_query", "txs must be raw or hashes")
        lookup = service.block if form == "raw" else _block_tx_hashes
        try:
            found = lookup(height)
        except BlockPruned as exc:
            return _pruned(exc)
        wait = getattr(service, "wait_for_height", None)  # a service without it answers at once
        if found is None and wait_ms and wait is not None:
            if await _wait_for_block(request, wait, height, wait_ms):
                return Response(status_code=CLIENT_CLOSED)
            found = lookup(height)
        if found is None:
            return _error(404, "not_found", "no block at height %d" % height)
        return JSONResponse(found)

    async def commit(request: Request) -> Response:
        return _at_height(request, service.commit, "commit")

    async def submit_tx(request: Request) -> Response:
        if read_only:
            return _error(503, "read_only", "this node is an observer; submit to a validator")
        try:
            body = await _read_body(request, max_body_bytes)
        except _TooLarge:
            return _error(413, "oversize", "body over %d bytes" % max_body_bytes)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            raw = _tx_from_json(body)
            if isinstance(raw, Response):
                return raw
        elif content_type in ("application/octet-stream", "application/msgpack", "application/x-msgpack", ""):
            raw = body
        else:
            return _error(415, "unsupported_media_type",
                          "send application/octet-stream (raw tx) or application/json {\"tx\": hex}")
        try:
            result = await service.submit_tx(raw)
        except TxRejected as exc:
            code = 503 if exc.reason in _UNAVAILABLE_REASONS else 413 if exc.reason == "oversize" else 400
            return _error(code, exc.reason, exc.detail)
        return JSONResponse({"hash": result.tx_hash.hex()})

    async def submit_txs(request: Request) -> Response:
        # Batch submission: one request verifies many txs (their signature
        # batches run together), so a client at load is not one round trip per tx.
        if read_only:
            return _error(503, "read_only", "this node is an observer; submit to a validator")
        try:
            body = await _read_body(request, max_body_bytes * MAX_BATCH_BODY_FACTOR)
        except _TooLarge:
            return _error(413, "oversize", "body over %d bytes" % (max_body_bytes * MAX_BATCH_BODY_FACTOR))
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/msgpack", "application/x-msgpack", "application/octet-stream", ""):
            return _error(415, "unsupported_media_type", "send application/msgpack: an array of raw txs")
        raws = _txs_from_msgpack(body)
        if isinstance(raws, Response):
            return raws
        submit_many = getattr(service, "submit_txs", None)
        if submit_many is not None:
            outcomes = await submit_many(raws)
        else:  # a NodeService without the batch method: one at a time
            outcomes = []
            for raw in raws:
                try:
                    outcomes.append(await service.submit_tx(raw))
                except TxRejected as exc:
                    outcomes.append(exc)
        results: list[dict[str, str]] = []
        for outcome in outcomes:
            if isinstance(outcome, TxRejected):
                results.append({"error": outcome.reason, "detail": outcome.detail})
            else:
                results.append({"hash": outcome.tx_hash.hex()})
        return JSONResponse({"results": results})

    async def tx(request: Request) -> Response:
        tx_hash = _parse_hex(request.path_params["hash"].lower(), HASH_HEX_CHARS, HASH_HEX_CHARS)
        if tx_hash is None:
            return _error(400, "bad_hash", "a tx hash is 64 hex characters")
        found = service.tx(tx_hash)
        if found is None:
            return _error(404, "not_found", "unknown tx %s" % tx_hash.hex())
        return JSONResponse(found)

    async def state(request: Request) -> Response:
        key = _parse_hex(request.path_params["key"].lower(), MAX_KEY_HEX_CHARS)
        if key is None or not key:
            return _error(400, "bad_key", "a state key is 1..1024 bytes as hex")
        prove = _parse_bool(request.query_params.get("prove"))
        if prove is None:
            return _error(400, "bad_query", "prove must be true or false")
        height_text = request.query_params.get("height")
        if height_text is None:
            return JSONResponse(service.state(key, prove))
        if not height_text.isdigit() or len(height_text) > 20:
            return _error(400, "bad_height", "height must be a state version (an integer >= 0)")
        try:
            return JSONResponse(service.state(key, prove, height=int(height_text)))
        except StateUnavailable as exc:
            if exc.reason == "pruned":
                return JSONResponse({"error": "pruned", "detail": exc.detail, "oldest_height": exc.oldest},
                                    status_code=410)
            return _error(404, exc.reason, exc.detail)

    async def evidence(request: Request) -> Response:
        return JSONResponse({"evidence": service.evidence()})

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    routes = [
        Route("/health", health),
        Route("/status", status),
        Route("/net_info", net_info),
        Route("/validators", validators),
        Route("/genesis", genesis),
        Route("/blocks/{height}", block),
        Route("/commit/{height}", commit),
        Route("/tx", submit_tx, methods=["POST"]),
        Route("/txs", submit_txs, methods=["POST"]),
        Route("/tx/{hash}", tx),
        Route("/state/{key}", state),
        Route("/evidence", evidence),
        Route("/openapi.json", openapi),
    ]
    routes = observer_routes(service) + routes  # [observer] first: its /tx/{hash} adds ?prove=true
    return Starlette(routes=routes)


def _txs_from_msgpack(body: bytes) -> list[bytes] | Response:
    """POST /txs body: a msgpack array (at most MAX_BATCH_TXS) of byte strings."""
    try:
        raws = msgpack.unpackb(body, raw=False, use_list=True, max_array_len=MAX_BATCH_TXS,
                               max_map_len=0, max_str_len=0, max_ext_len=0)
    except Exception as exc:  # noqa: BLE001 - msgpack raises several types for bad input
        return _error(400, "malformed", "body is not a msgpack array of byte strings (%s)" % type(exc).__name__)
    if not isinstance(raws, list) or not all(isinstance(raw, bytes) for raw in raws):
        return _error(400, "malformed", "body must be a msgpack array of byte strings (raw txs)")
    return raws


def _tx_from_json(body: bytes) -> bytes | Response:
    try:
        data = json.loads(body)
    except ValueError as exc:
        return _error(400, "malformed", "body is not JSON: %s" % exc)
    text = data.get("tx") if isinstance(data, dict) else None
    raw = _parse_hex(text, 2 * 1024 * 1024) if isinstance(text, str) else None
    if raw is None:
        return _error(400, "malformed", "JSON body must be {\"tx\": \"<hex of the encoded tx>\"}")
    return raw


async def serve_api(
    service: NodeService, host: str, port: int, *, read_only: bool = False,
    max_body_bytes: int = 1_000_000, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the API for `service` on host:port until cancelled; reports the bound port.

    This is the `rpc_serve(service, host, port, task_status=)` hook of
    `node.node.run_node` (bind `read_only` / `max_body_bytes` with
    functools.partial, as `rpc_hook` does).
    """
    app = create_app(service, read_only=read_only, max_body_bytes=max_body_bytes)
    await serve_asgi(app, host, port, task_status=task_status)


def rpc_hook(config: NodeConfig) -> Any:
    """The `rpc_serve` callable for `run_node`, configured from `config`."""
    return functools.partial(serve_api, read_only=not config.is_validator,
                             max_body_bytes=config.rpc.max_body_bytes)


async def serve_rpc(
    service: NodeService, config: NodeConfig, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the API for `service` on `[rpc] listen_host:listen_port` until cancelled.

    `port = await nursery.start(serve_rpc, service, config)` gives the bound
    port (useful with listen_port = 0). Observers are read-only.
    """
    await rpc_hook(config)(service, config.rpc.listen_host, config.rpc.listen_port, task_status=task_status)


# -------------------------------------------------------------------- OpenAPI


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": schema or {"type": "object"}}}}


_ERROR = {"$ref": "#/components/schemas/Error"}
_HEIGHT = {"name": "height", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}


def _get(summary: str, ok: str, *, parameters: list[dict[str, Any]] | None = None,
         errors: tuple[int, ...] = (), schema: dict[str, Any] | None = None) -> dict[str, Any]:
    responses = {"200": _json(ok, schema)}
    for code in errors:
        responses[str(code)] = _json("error", _ERROR)
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    return {"get": operation}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "CareLedger node API", "version": API_VERSION,
             "description": "Read-only on observers. Bytes are lowercase hex."},
    "paths": {
        "/health": {"get": {"summary": "Liveness", "responses": {
            "200": _json("node is up"), "503": _json("a component failed")}}},
        "/status": _get("Node status", "status", schema={"$ref": "#/components/schemas/Status"}),
        "/net_info": _get("Peers", "peers"),
        "/validators": _get("Validator set", "validators"),
        "/genesis": _get("Genesis document", "genesis"),
        "/blocks/{height}": _get("Block at a height", "block", parameters=[
            _HEIGHT,
            {"name": "wait_ms", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0, "maximum": MAX_WAIT_MS, "default": 0},
             "description": "long poll: if the block is not committed yet, wait up to this many ms for it"},
            {"name": "txs", "in": "query", "required": False,
             "schema": {"type": "string", "enum": list(BLOCK_TX_FORMS), "default": "raw"},
             "description": "hashes: \"tx_hashes\" (hex, block order) instead of \"txs\" and \"encoded\""}],
            errors=(400, 404, 410)),
        "/commit/{height}": _get("Header and commit certificate", "commit", parameters=[_HEIGHT],
                                 errors=(400, 404, 410)),
        "/tx": {"post": {
            "summary": "Submit a signed transaction",
            "requestBody": {"required": True, "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {"schema": {"type": "object", "required": ["tx"],
                                                "properties": {"tx": {"type": "string"}}}}}},
            "responses": {
                "200": _json("admitted to the mempool", {"type": "object", "properties": {
                    "hash": {"type": "string"}}}),
                "400": _json("rejected: error is the reason (malformed, bad_signature, wrong_chain, "
                             "nonce_too_old, nonce_too_far, nonce_taken, duplicate)", _ERROR),
                "413": _json("body too large", _ERROR),
                "415": _json("unsupported content type", _ERROR),
                "503": _json("read_only (observer) or mempool_full", _ERROR)}}},
        "/txs": {"post": {
            "summary": "Submit several signed transactions (one result per tx, in order)",
            "requestBody": {"required": True, "content": {
                "application/msgpack": {"schema": {"type": "string", "format": "binary",
                                                   "description": "msgpack array of raw txs"}}}},
            "responses": {
                "200": _json("per-tx outcome", {"type": "object", "properties": {"results": {
                    "type": "array", "items": {"type": "object"}}}}),
                "400": _json("malformed body", _ERROR),
                "413": _json("body too large", _ERROR),
                "415": _json("unsupported content type", _ERROR),
                "503": _json("read_only (observer)", _ERROR)}}},
        "/tx/{hash}": _get("Transaction status and receipt", "tx", parameters=[
            {"name": "hash", "in": "path", "required": True, "schema": {"type": "string"}}], errors=(400, 404)),
        "/state/{key}": _get("State value, optionally with a proof", "state", parameters=[
            {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "prove", "in": "query", "required": False, "schema": {"type": "boolean"}},
            {"name": "height", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 0},
             "description": "state version (after block height); default the latest certified one"}],
            errors=(400, 404, 410)),
        "/evidence": _get("Double-signing evidence (persisted)", "evidence"),
    },
    "components": {"schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"}, "detail": {"type": "string"}}},
        "Status": {"type": "object", "required": list(STATUS_KEYS), "properties": {
            "chain_id": {"type": "string"}, "node_id": {"type": "string"}, "moniker": {"type": "string"},
            "role": {"type": "string"}, "height": {"type": "integer"}, "app_hash": {"type": "string"},
            "view": {"type": "integer"}, "catching_up": {"type": "boolean"}, "peers": {"type": "integer"},
            "latest_block_time_ms": {"type": "integer"}, "validator": {"type": ["string", "null"]}}},
    }},
}
