"""GET /blocks/{h} long poll and ?txs=hashes over real runtimes: a validator
of a four-validator cluster and an observer syncing from it."""

from __future__ import annotations

from typing import Any

import httpx
import trio
import trio.testing
from starlette.responses import JSONResponse

from ledger.hashing import sha256
from ledger.types import Block
from node.node import NodeRuntime, header_json
from node.rpc import create_app
from tests.node.node_cluster import cluster, make_genesis, transfer


def api(runtime: NodeRuntime, read_only: bool = False) -> httpx.AsyncClient:
    app = create_app(runtime, read_only=read_only)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://node")


def block_answer_as_before(runtime: NodeRuntime, height: int) -> bytes:
    """The default GET /blocks/{h} body, built as it was before ?txs= existed."""
    raw = runtime.store.block_bytes(height)
    block = Block.decode(raw)
    return JSONResponse({"height": height, "hash": block.hash.hex(), "header": header_json(block.header),
                         "txs": [tx.encode().hex() for tx in block.txs], "encoded": raw.hex()}).body


async def test_long_polls_and_tx_hashes_on_a_validator_and_an_observer(tmp_path: Any) -> None:
    genesis, keys, clients = make_genesis(n_validators=4, n_clients=2, n_observers=1)
    txs = [transfer(clients[0], nonce, clients[1].public_key) for nonce in (1, 2, 3)]
    with trio.fail_after(60):
        async with cluster(tmp_path, genesis, keys) as nodes:
            validator, observer = nodes[0], nodes[4]
            async with api(validator) as v, api(observer, read_only=True) as o:
                next_height = validator.store.height + 1
                answers: dict[str, httpx.Response] = {}

                async def long_poll(name: str, c: httpx.AsyncClient) -> None:
                    answers[name] = await c.get("/blocks/%d" % next_height, params={"wait_ms": "10000"})

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(long_poll, "validator", v)
                    nursery.start_soon(long_poll, "observer", o)
                    await trio.testing.wait_all_tasks_blocked()
                    assert not answers  # both are waiting for a block nobody has yet
                    for tx in txs:
                        await validator.submit_tx(tx.encode())
                assert answers["validator"].status_code == 200 == answers["observer"].status_code
                assert answers["validator"].json()["height"] == next_height
                assert answers["observer"].json()["hash"] == answers["validator"].json()["hash"]

                found = [(await v.get("/tx/" + tx.hash.hex())).json() for tx in txs]
                await observer.wait_for_height(max(f["height"] for f in found))
                for height in sorted({f["height"] for f in found}):
                    full = await v.get("/blocks/%d" % height)
                    assert full.content == block_answer_as_before(validator, height)  # default unchanged
                    for c in (v, o):
                        light = (await c.get("/blocks/%d" % height, params={"txs": "hashes"})).json()
                        assert light["tx_hashes"] == [sha256(bytes.fromhex(raw)).hex() for raw in full.json()["txs"]]
                        assert light["hash"] == full.json()["hash"] and "txs" not in light
                mine = [h for height in sorted({f["height"] for f in found})
                        for h in (await o.get("/blocks/%d?txs=hashes" % height)).json()["tx_hashes"]]
                assert [h for h in mine if h in {tx.hash.hex() for tx in txs}] == [tx.hash.hex() for tx in txs]

                start = trio.current_time()
                missing = await o.get("/blocks/%d" % (observer.store.height + 1000), params={"wait_ms": "200"})
                assert missing.status_code == 404 and trio.current_time() - start >= 0.2
