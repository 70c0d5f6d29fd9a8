"""The HTTP API over an in-memory NodeService double."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from starlette.responses import JSONResponse

from ledger.crypto import PrivateKey
from ledger.errors import LedgerError
from ledger.hashing import sha256
from ledger.types import Tx
from node.config import NodeConfig, RPCSection
from node.rpc import OPENAPI, STATUS_KEYS, create_app, serve_rpc
from node.service import SubmitResult, TxRejected
from tests.node.rpc_doubles import GrowingChain

CHAIN = "careledger-test"
KEY = PrivateKey(bytes(range(32)))


class FakeNode:
    """A verified-enough double: decodes and signature-checks like the mempool."""

    def __init__(self) -> None:
        self.pool: dict[bytes, Tx] = {}
        self.state_values = {b"balance/ab": b"\x05"}

    def status(self) -> dict[str, Any]:
        return {"chain_id": CHAIN, "node_id": "00" * 32, "moniker": "fake", "role": "validator",
                "height": 3, "app_hash": "11" * 32, "view": 0, "catching_up": False, "peers": 3,
                "latest_block_time_ms": 1, "validator": None}

    def net_info(self) -> dict[str, Any]:
        return {"peers": []}

    def validators(self) -> dict[str, Any]:
        return {"height": 3, "validators": [{"name": "v0", "public_key": "22" * 32}], "quorum": 1}

    def genesis(self) -> dict[str, Any]:
        return {"chain_id": CHAIN}

    def block(self, height: int) -> dict[str, Any] | None:
        return {"height": height, "txs": []} if height <= 3 else None

    def commit(self, height: int) -> dict[str, Any] | None:
        return {"height": height} if height <= 3 else None

    async def submit_tx(self, raw: bytes) -> SubmitResult:
        try:
            tx = Tx.decode(raw)
        except LedgerError as exc:
            raise TxRejected("malformed", str(exc)) from exc
        if tx.chain_id != CHAIN:
            raise TxRejected("wrong_chain", tx.chain_id)
        try:
            tx.verify_signature()
        except LedgerError as exc:
            raise TxRejected("bad_signature") from exc
        if tx.hash in self.pool:
            raise TxRejected("duplicate")
        self.pool[tx.hash] = tx
        return SubmitResult(tx.hash)

    def tx(self, tx_hash: bytes) -> dict[str, Any] | None:
        if tx_hash not in self.pool:
            return None
        return {"hash": tx_hash.hex(), "status": "pending", "height": None, "index": None, "receipt": None}

    def state(self, key: bytes, prove: bool) -> dict[str, Any]:
        value = self.state_values.get(key)
        out: dict[str, Any] = {"key": key.hex(), "value": value.hex() if value else None, "height": 3}
        if prove:
            out.update(proof="aa", header="bb", certificate="cc")
        return out

    def evidence(self) -> list[dict[str, Any]]:
        return []


def signed_tx(nonce: int = 1, chain_id: str = CHAIN) -> bytes:
    tx = Tx(chain_id, KEY.public_key, nonce, "transfer", {"to": b"\x01" * 32, "amount": 5})
    return tx.signed(KEY).encode()


def client(read_only: bool = False, max_body_bytes: int = 100_000) -> httpx.AsyncClient:
    app = create_app(FakeNode(), read_only=read_only, max_body_bytes=max_body_bytes)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node")


async def test_status_carries_the_stable_keys() -> None:
    async with client() as c:
        response = await c.get("/status")
    assert response.status_code == 200
    assert set(STATUS_KEYS) <= set(response.json())


async def test_health_is_ok_while_the_service_answers() -> None:
    async with client() as c:
        response = await c.get("/health")
    assert response.json()["status"] == "ok"


async def test_health_is_503_naming_the_component_when_the_service_fails() -> None:
    node = FakeNode()
    node.status = lambda: (_ for _ in ()).throw(RuntimeError("store closed"))  # type: ignore[method-assign]
    app = create_app(node)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://n") as c:
        response = await c.get("/health")
    assert response.status_code == 503
    assert response.json()["component"] == "node"


async def test_a_raw_signed_tx_is_admitted_and_then_found_by_hash() -> None:
    raw = signed_tx()
    async with client() as c:
        response = await c.post("/tx", content=raw, headers={"content-type": "application/octet-stream"})
        assert response.status_code == 200
        tx_hash = response.json()["hash"]
        assert tx_hash == Tx.decode(raw).hash.hex()
        found = await c.get("/tx/" + tx_hash)
    assert found.json()["status"] == "pending"


async def test_a_json_hex_tx_is_admitted() -> None:
    async with client() as c:
        response = await c.post("/tx", json={"tx": signed_tx().hex()})
    assert response.status_code == 200


async def test_a_malformed_tx_gets_400_with_the_reason() -> None:
    async with client() as c:
        response = await c.post("/tx", content=b"\xc1garbage", headers={"content-type": "application/octet-stream"})
    assert response.status_code == 400
    assert response.json()["error"] == "malformed"
    assert response.json()["detail"]


async def test_a_json_body_without_hex_is_malformed() -> None:
    async with client() as c:
        response = await c.post("/tx", json={"tx": "zz"})
        not_json = await c.post("/tx", content=b"{", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["error"] == "malformed"
    assert not_json.status_code == 400 and not_json.json()["error"] == "malformed"


async def test_a_tx_for_another_chain_and_a_replay_are_refused_with_their_reasons() -> None:
    async with client() as c:
        wrong = await c.post("/tx", content=signed_tx(chain_id="other-chain"))
        first = await c.post("/tx", content=signed_tx(nonce=2))
        again = await c.post("/tx", content=signed_tx(nonce=2))
    assert wrong.json()["error"] == "wrong_chain"
    assert first.status_code == 200
    assert again.status_code == 400 and again.json()["error"] == "duplicate"


async def test_a_body_over_the_limit_gets_413() -> None:
    async with client(max_body_bytes=100) as c:
        response = await c.post("/tx", content=b"\x00" * 101)
    assert response.status_code == 413
    assert response.json()["error"] == "oversize"


async def test_an_observer_refuses_transactions_with_503_read_only() -> None:
    async with client(read_only=True) as c:
        response = await c.post("/tx", content=signed_tx())
    assert response.status_code == 503
    assert response.json()["error"] == "read_only"


async def test_an_unknown_content_type_gets_415() -> None:
    async with client() as c:
        response = await c.post("/tx", content=b"x", headers={"content-type": "text/plain"})
    assert response.status_code == 415


async def test_blocks_and_commits_answer_404_past_the_tip_and_400_for_bad_heights() -> None:
    async with client() as c:
        assert (await c.get("/blocks/3")).json()["height"] == 3
        assert (await c.get("/commit/2")).json()["height"] == 2
        assert (await c.get("/blocks/4")).status_code == 404
        assert (await c.get("/blocks/0")).status_code == 400
        assert (await c.get("/commit/abc")).json()["error"] == "bad_height"


async def test_tx_lookup_rejects_a_malformed_hash_and_404s_an_unknown_one() -> None:
    async with client() as c:
        assert (await c.get("/tx/xyz")).status_code == 400
        assert (await c.get("/tx/" + "00" * 32)).status_code == 404


async def test_state_returns_the_value_and_with_prove_the_proof_material() -> None:
    key = b"balance/ab".hex()
    async with client() as c:
        plain = (await c.get("/state/" + key)).json()
        proven = (await c.get("/state/" + key, params={"prove": "true"})).json()
        bad = await c.get("/state/" + key, params={"prove": "maybe"})
        bad_key = await c.get("/state/zz")
    assert plain["value"] == "05" and "proof" not in plain
    assert {"proof", "header", "certificate"} <= set(proven)
    assert bad.status_code == 400 and bad_key.status_code == 400


async def test_read_routes_answer_json() -> None:
    async with client() as c:
        for path in ("/net_info", "/validators", "/genesis", "/evidence"):
            response = await c.get(path)
            assert response.status_code == 200, path
            assert isinstance(response.json(), dict)


async def test_the_openapi_document_lists_every_route() -> None:
    async with client() as c:
        spec = (await c.get("/openapi.json")).json()
    assert spec == OPENAPI
    for path in ("/health", "/status", "/tx", "/tx/{hash}", "/state/{key}", "/blocks/{height}"):
        assert path in spec["paths"]


async def test_serve_rpc_binds_a_real_port_and_answers(tmp_path: Any) -> None:
    config = NodeConfig(home=str(tmp_path), rpc=RPCSection(listen_port=0))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_rpc, FakeNode(), config)
        async with httpx.AsyncClient() as c:
            response = await c.get("http://127.0.0.1:%d/status" % port)
        nursery.cancel_scope.cancel()
    assert response.json()["chain_id"] == CHAIN


@pytest.mark.parametrize("role,code", [("validator", 200), ("observer", 503)])
async def test_serve_rpc_makes_observers_read_only(tmp_path: Any, role: str, code: int) -> None:
    config = NodeConfig(home=str(tmp_path), role=role, rpc=RPCSection(listen_port=0))
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_rpc, FakeNode(), config)
        async with httpx.AsyncClient() as c:
            response = await c.post("http://127.0.0.1:%d/tx" % port, content=signed_tx())
        nursery.cancel_scope.cancel()
    assert response.status_code == code


# ------------------------------------------------- GET /blocks/{h}: long poll and tx forms


def chain_client(chain: GrowingChain) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(chain)), base_url="http://node")


async def commit_after(chain: GrowingChain, delay_s: float, txs: list[bytes] | None = None) -> None:
    await trio.sleep(delay_s)
    chain.add_block(txs)


async def test_a_long_poll_answers_with_the_block_committed_during_the_wait(autojump_clock: Any) -> None:
    chain = GrowingChain(blocks=3)
    raw = signed_tx()
    async with chain_client(chain) as c, trio.open_nursery() as nursery:
        nursery.start_soon(commit_after, chain, 1.5, [raw])
        start = trio.current_time()
        response = await c.get("/blocks/4", params={"wait_ms": "5000"})
        elapsed = trio.current_time() - start
    assert response.status_code == 200
    assert response.json()["height"] == 4 and response.json()["txs"] == [raw.hex()]
    assert elapsed == pytest.approx(1.5)  # answered at the commit, not at the end of the wait


async def test_a_long_poll_times_out_with_the_usual_404_when_nothing_commits(autojump_clock: Any) -> None:
    async with chain_client(GrowingChain(blocks=3)) as c:
        start = trio.current_time()
        response = await c.get("/blocks/4", params={"wait_ms": "250"})
        elapsed = trio.current_time() - start
        at_once = await c.get("/blocks/4", params={"wait_ms": "0"})
        at_once_elapsed = trio.current_time() - start - elapsed
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    assert elapsed == pytest.approx(0.25)
    assert at_once.status_code == 404 and at_once_elapsed == 0


async def test_a_committed_block_is_answered_at_once_whatever_the_wait(autojump_clock: Any) -> None:
    async with chain_client(GrowingChain(blocks=3)) as c:
        start = trio.current_time()
        response = await c.get("/blocks/3", params={"wait_ms": "10000"})
    assert response.status_code == 200 and trio.current_time() == start


async def test_a_long_poll_far_beyond_the_tip_holds_no_longer_than_its_wait(autojump_clock: Any) -> None:
    chain = GrowingChain(blocks=3)

    async def keep_committing() -> None:
        while True:
            await commit_after(chain, 0.1)

    async with chain_client(chain) as c, trio.open_nursery() as nursery:
        nursery.start_soon(keep_committing)  # every commit wakes the waiter; it must still stop at wait_ms
        start = trio.current_time()
        response = await c.get("/blocks/100000", params={"wait_ms": "2000"})
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert response.status_code == 404
    assert elapsed == pytest.approx(2.0)


@pytest.mark.parametrize("wait_ms", ["-1", "10001", "abc", "1.5", "", "\u00b2", "1e3", "99999999999"])
async def test_a_wait_out_of_range_or_not_an_integer_is_400_bad_wait_ms(wait_ms: str) -> None:
    async with chain_client(GrowingChain()) as c:
        response = await c.get("/blocks/4", params={"wait_ms": wait_ms})
    assert response.status_code == 400
    assert response.json()["error"] == "bad_wait_ms"


async def test_an_unknown_tx_form_is_400_bad_query() -> None:
    async with chain_client(GrowingChain()) as c:
        response = await c.get("/blocks/1", params={"txs": "bodies"})
    assert response.status_code == 400 and response.json()["error"] == "bad_query"


async def test_a_height_that_is_not_ascii_digits_is_400_not_a_crash() -> None:
    async with chain_client(GrowingChain()) as c:
        response = await c.get("/blocks/\u00b2")
    assert response.status_code == 400 and response.json()["error"] == "bad_height"


async def test_the_hashes_form_lists_the_hashes_of_the_default_forms_txs() -> None:
    # GrowingChain has no block_tx_hashes: this is the RPC's fallback for such services
    raws = [signed_tx(nonce=n) for n in (1, 2, 3)]
    chain = GrowingChain(blocks=0)
    chain.add_block(raws)
    async with chain_client(chain) as c:
        full = (await c.get("/blocks/1")).json()
        light = (await c.get("/blocks/1", params={"txs": "hashes"})).json()
        explicit_raw = (await c.get("/blocks/1", params={"txs": "raw"})).json()
    assert light["tx_hashes"] == [sha256(bytes.fromhex(raw)).hex() for raw in full["txs"]]
    assert light["tx_hashes"] == [Tx.decode(raw).hash.hex() for raw in raws]
    assert "txs" not in light and "encoded" not in light
    assert {k: v for k, v in light.items() if k != "tx_hashes"} == {
        k: v for k, v in full.items() if k not in ("txs", "encoded")}
    assert explicit_raw == full


async def test_the_default_block_answer_is_the_service_dict_as_before() -> None:
    chain = GrowingChain(blocks=0)
    chain.add_block([signed_tx()])
    async with chain_client(chain) as c:
        response = await c.get("/blocks/1")
    assert response.content == JSONResponse(chain.block(1)).body


async def test_a_service_without_wait_for_height_answers_a_long_poll_at_once(autojump_clock: Any) -> None:
    async with client() as c:  # FakeNode: no wait_for_height
        start = trio.current_time()
        response = await c.get("/blocks/4", params={"wait_ms": "5000"})
    assert response.status_code == 404 and trio.current_time() == start


@pytest.mark.parametrize("hang_up_after_s", [0.0, 2.0])
async def test_a_client_that_hangs_up_ends_its_long_poll_and_leaves_no_task(
        autojump_clock: Any, hang_up_after_s: float) -> None:
    app = create_app(GrowingChain(blocks=3))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/blocks/4", "raw_path": b"/blocks/4", "root_path": "",
             "query_string": b"wait_ms=10000", "headers": [], "server": ("node", 80), "client": ("c", 1)}
    receives = 0

    async def receive() -> dict[str, Any]:
        nonlocal receives
        receives += 1
        if receives == 1:
            return {"type": "http.request", "body": b"", "more_body": False}
        await trio.sleep(hang_up_after_s)
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    start = trio.current_time()
    with trio.fail_after(5):  # a handler that sat out its 10 s wait trips this
        await app(scope, receive, send)  # returns only once every task it started has ended
    assert trio.current_time() - start == pytest.approx(hang_up_after_s)
    assert sent[0]["status"] == 499


def test_the_openapi_document_describes_the_block_query_parameters() -> None:
    names = {p["name"]: p for p in OPENAPI["paths"]["/blocks/{height}"]["get"]["parameters"]}
    assert names["wait_ms"]["schema"]["maximum"] == 10000
    assert names["txs"]["schema"]["enum"] == ["raw", "hashes"]
