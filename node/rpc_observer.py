"""Observer and proof routes, mounted in front of `node.rpc`'s routes.

| route                                   | answer                                                         |
|-----------------------------------------|----------------------------------------------------------------|
| GET /history/consistency?old=A&new=B    | RFC 6962 consistency proof between history sizes A <= B        |
| GET /history/inclusion?height=H&size=S  | block H's hash (leaf H-1) in the history of S blocks           |
| GET /light/epoch-changes?to=T[&from=F]  | headers in (F, T] that hand over to a new validator set: height, header, certificate, validators (the new set), history proof chained from F (default 0 = genesis), encoded HeaderUpdate — for `LightClient.verify_epoch_changes` |
| GET /tx/{hash}[?prove=true]             | as node.rpc's /tx/{hash}; with prove: "proof": {height, index, size, tx, proof, header, certificate, receipt} |
| GET /proof/state/{key hex}?version=V    | value + JMT proof in state version V (committed by header V+L, L = genesis results_lag); 410 "pruned" below the oldest kept version |
| GET /verified                           | the light observer's status (verified_height, failure, …); {"enabled": false} on validators |
| GET /verified/state/{key hex}           | value + whether the light client verified its proof            |
| GET /verified/explorer                  | everything the explorer page draws, each figure with "verified" |
| GET /explorer, /static/{file}           | the explorer page (node/static/, no external resources)        |

The service may lack the proof methods (a test double): those routes answer 501.
"""

from __future__ import annotations

import os
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "application/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
HASH_HEX_CHARS = 64
MAX_KEY_HEX_CHARS = 2048


def _error(status: int, error: str, detail: str = "") -> JSONResponse:
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _int_param(request: Request, name: str) -> int | None:
    text = request.query_params.get(name, "")
    if not text.isdigit() or len(text) > 15:
        return None
    return int(text)


def _hex(text: str, max_chars: int) -> bytes | None:
    if not text or len(text) > max_chars or len(text) % 2:
        return None
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def observer_routes(service: Any) -> list[Route]:
    """Routes for `service` (a NodeService, ideally with node.history's methods)."""
    from node.history import HistoryError, PrunedError

    def _method(name: str) -> Any:
        return getattr(service, name, None)

    def _proof_answer(name: str, what: str, *args: Any) -> Response:
        """Call the service's proof method `name`: 501 if it has none, 404 on HistoryError."""
        method = _method(name)
        if method is None:
            return _error(501, "not_implemented", "this node serves no %s" % what)
        try:
            return JSONResponse(method(*args))
        except PrunedError as exc:
            return _error(410, "pruned", str(exc))
        except HistoryError as exc:
            return _error(404, "not_found", str(exc))

    async def consistency(request: Request) -> Response:
        old, new = _int_param(request, "old"), _int_param(request, "new")
        if old is None or new is None or not 0 < old <= new:
            return _error(400, "bad_query", "need integers 0 < old <= new (history sizes)")
        return _proof_answer("history_consistency", "history proofs", old, new)

    async def inclusion(request: Request) -> Response:
        height, size = _int_param(request, "height"), _int_param(request, "size")
        if height is None or size is None or not 0 < height <= size:
            return _error(400, "bad_query", "need integers 0 < height <= size")
        return _proof_answer("history_inclusion", "history proofs", height, size)

    async def epoch_changes(request: Request) -> Response:
        to = _int_param(request, "to")
        start = 0 if "from" not in request.query_params else _int_param(request, "from")
        if to is None or start is None or not 0 <= start <= to:
            return _error(400, "bad_query", "need integers 0 <= from <= to (heights; from defaults to 0)")
        return _proof_answer("epoch_changes", "epoch-change proofs", start, to)

    async def tx(request: Request) -> Response:
        tx_hash = _hex(request.path_params["hash"].lower(), HASH_HEX_CHARS)
        if tx_hash is None or len(tx_hash) != 32:
            return _error(400, "bad_hash", "a tx hash is 64 hex characters")
        prove = request.query_params.get("prove", "false").lower()
        if prove not in ("true", "1", "yes", "false", "0", "no", ""):
            return _error(400, "bad_query", "prove must be true or false")
        found = service.tx(tx_hash)
        if found is None:
            return _error(404, "not_found", "unknown tx %s" % tx_hash.hex())
        if prove in ("true", "1", "yes"):
            method = _method("tx_proof")
            if method is None:
                return _error(501, "not_implemented", "this node serves no tx proofs")
            found = dict(found, proof=method(tx_hash))
        return JSONResponse(found)

    async def state_proof(request: Request) -> Response:
        key = _hex(request.path_params["key"].lower(), MAX_KEY_HEX_CHARS)
        version = _int_param(request, "version")
        if key is None or version is None:
            return _error(400, "bad_query", "need a hex key and ?version=<state version>")
        return _proof_answer("state_proof", "versioned state proofs", key, version)

    def _light() -> Any:
        return getattr(service, "light", None)

    async def verified(request: Request) -> Response:
        light = _light()
        if light is None:
            height = service.status().get("height")
            return JSONResponse({"enabled": False, "verified_height": None, "height": height,
                                 "detail": "this node runs no light client (start it with `careledger observe`)"})
        return JSONResponse(light.status())

    async def verified_state(request: Request) -> Response:
        key = _hex(request.path_params["key"].lower(), MAX_KEY_HEX_CHARS)
        if key is None:
            return _error(400, "bad_key", "a state key is 1..1024 bytes as hex")
        light = _light()
        if light is None:
            answer = dict(service.state(key, False), verified=False, reason="this node runs no light client")
            return JSONResponse(answer)
        return JSONResponse(light.verify_state(key))

    async def verified_explorer(request: Request) -> Response:
        from node.observer import explorer_summary

        if getattr(service, "store", None) is None:
            return _error(501, "not_implemented", "this node has no block store to index")
        return JSONResponse(explorer_summary(service))

    async def explorer(request: Request) -> Response:
        return _static_file("explorer.html")

    async def static(request: Request) -> Response:
        return _static_file(request.path_params["name"])

    async def root(request: Request) -> Response:
        return RedirectResponse("/explorer")

    return [
        Route("/", root),
        Route("/history/consistency", consistency),
        Route("/history/inclusion", inclusion),
        Route("/light/epoch-changes", epoch_changes),
        Route("/tx/{hash}", tx),
        Route("/proof/state/{key}", state_proof),
        Route("/verified", verified),
        Route("/verified/state/{key}", verified_state),
        Route("/verified/explorer", verified_explorer),
        Route("/explorer", explorer),
        Route("/static/{name}", static),
    ]


def _static_file(name: str) -> Response:
    """A file of node/static/ by bare name (no paths: nothing outside the folder is served)."""
    extension = os.path.splitext(name)[1]
    if os.path.basename(name) != name or name.startswith(".") or extension not in STATIC_TYPES:
        return _error(404, "not_found", "no such file")
    path = os.path.join(STATIC_DIR, name)
    if not os.path.isfile(path):
        return _error(404, "not_found", "no such file")
    with open(path, "rb") as handle:
        body = handle.read()
    return Response(body, media_type=STATIC_TYPES[extension],
                    headers={"cache-control": "no-cache", "content-security-policy":
                             "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'"})
