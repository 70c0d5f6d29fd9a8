"""The HTTP API over an in-memory NodeService double."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from ledger.crypto import PrivateKey
from ledger.errors import LedgerError
from ledger.types import Tx
from node.config import NodeConfig, RPCSection
from node.rpc import OPENAPI, STATUS_KEYS, create_app, serve_rpc
from node.service import SubmitResult, TxRejected

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
