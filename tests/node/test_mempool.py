"""The mempool: each rejection reason, dedup, bounds, per-account nonce order."""

import pytest
import trio

from ledger.crypto import PrivateKey
from ledger.types import Tx
from node.mempool import Mempool, MempoolConfig
from node.service import TxRejected

CHAIN = "careledger-test"
ALICE = PrivateKey(b"a" * 32)
BOB = PrivateKey(b"b" * 32)


def tx(key=ALICE, nonce=1, chain=CHAIN, body=None):
    return Tx(chain, key.public_key, nonce, "transfer", body or {"amount": 1}).signed(key)


class Harness:
    def __init__(self, **config):
        self.committed = {}
        self.ready = []
        self.admitted = []
        self.pool = Mempool(CHAIN, lambda sender: self.committed.get(sender, 0), MempoolConfig(**config),
                            on_ready=self.ready.extend,
                            on_admitted=lambda t, raw, source: self.admitted.append(t))


@pytest.fixture
async def harness(nursery):
    h = Harness(max_txs=8, max_bytes=100_000, nonce_window=4)
    await nursery.start(h.pool.run)
    return h


async def reject_reason(pool, raw):
    with pytest.raises(TxRejected) as info:
        with trio.fail_after(5):
            await pool.submit(raw)
    return info.value.reason


async def test_a_valid_tx_is_admitted_and_released(harness):
    t = tx()
    with trio.fail_after(5):
        assert await harness.pool.submit(t.encode()) == t
    assert t.hash in harness.pool and harness.ready == [t] and harness.admitted == [t]


async def test_every_rejection_reason_is_reported_and_counted(harness):
    pool = harness.pool
    assert await reject_reason(pool, b"\xc1garbage") == "malformed"
    assert await reject_reason(pool, bytes(70_000)) == "oversize"
    assert await reject_reason(pool, tx(chain="other-chain").encode()) == "wrong_chain"
    bad = Tx(CHAIN, ALICE.public_key, 1, "transfer", {"amount": 1}, signature=BOB.sign("tx", CHAIN, b"x"))
    assert await reject_reason(pool, bad.encode()) == "bad_signature"
    harness.committed[ALICE.public_key] = 3
    assert await reject_reason(pool, tx(nonce=3).encode()) == "nonce_too_old"
    assert await reject_reason(pool, tx(nonce=8).encode()) == "nonce_too_far"
    with trio.fail_after(5):
        await pool.submit(tx(nonce=4).encode())
    assert await reject_reason(pool, tx(nonce=4).encode()) == "duplicate"
    assert await reject_reason(pool, tx(nonce=4, body={"amount": 2}).encode()) == "nonce_taken"
    assert dict(pool.rejected) == {
        "malformed": 1, "oversize": 1, "wrong_chain": 1, "bad_signature": 1, "nonce_too_old": 1,
        "nonce_too_far": 1, "duplicate": 1, "nonce_taken": 1,
    }


async def test_the_pool_is_bounded_by_count(harness):
    keys = [PrivateKey(bytes([i + 1]) * 32) for i in range(9)]
    with trio.fail_after(5):
        for key in keys[:8]:
            await harness.pool.submit(tx(key).encode())
    assert await reject_reason(harness.pool, tx(keys[8]).encode()) == "mempool_full"
    assert len(harness.pool) == 8


async def test_the_pool_is_bounded_by_bytes(nursery):
    h = Harness(max_txs=100, max_bytes=300)
    await nursery.start(h.pool.run)
    with trio.fail_after(5):
        await h.pool.submit(tx(nonce=1).encode())
    assert await reject_reason(h.pool, tx(nonce=2, body={"pad": "x" * 200}).encode()) == "mempool_full"


async def test_concurrent_duplicates_are_verified_once(harness):
    t = tx()
    results = []

    async def submit():
        try:
            results.append(await harness.pool.submit(t.encode()))
        except TxRejected as exc:
            results.append(exc.reason)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(submit)
    assert sorted(map(str, results)).count("duplicate") == 2 and len(harness.pool) == 1


async def test_txs_are_released_in_nonce_order_per_account(harness):
    t1, t2, t3 = (tx(nonce=n) for n in (1, 2, 3))
    with trio.fail_after(5):
        await harness.pool.submit(t3.encode())
        await harness.pool.submit(t2.encode())
        assert harness.ready == []  # nonce 1 is missing: hold 2 and 3 back
        await harness.pool.submit(t1.encode())
    assert harness.ready == [t1, t2, t3]


async def test_committed_txs_leave_the_pool_and_unblock_later_nonces(harness):
    t1, t2, t3 = (tx(nonce=n) for n in (1, 2, 3))
    with trio.fail_after(5):
        await harness.pool.submit(t1.encode())
        await harness.pool.submit(t3.encode())
    assert harness.ready == [t1]
    # another node's block committed nonces 1 and 2
    harness.committed[ALICE.public_key] = 2
    harness.pool.remove_committed([t1, t2])
    assert t1.hash not in harness.pool and harness.ready == [t1, t3]
    assert harness.pool.bytes == len(t3.encode())


async def test_a_pooled_tx_whose_nonce_another_tx_used_leaves_the_pool(harness):
    t1, t3 = tx(nonce=1), tx(nonce=3)
    rival = tx(nonce=2, body={"amount": 7})  # pooled here; the block carries another nonce-2 tx
    with trio.fail_after(5):
        for t in (t1, rival, t3):
            await harness.pool.submit(t.encode())
    harness.committed[ALICE.public_key] = 2
    harness.pool.remove_committed([t1, tx(nonce=2)])
    assert t1.hash not in harness.pool and rival.hash not in harness.pool and t3.hash in harness.pool
    assert harness.pool.bytes == len(t3.encode())


async def test_gossiped_txs_are_queued_without_waiting(harness):
    t = tx(BOB)
    assert harness.pool.submit_nowait(t.encode(), source=b"p" * 32)
    assert not harness.pool.submit_nowait(t.encode())  # in flight: duplicate
    with trio.fail_after(5):
        while t.hash not in harness.pool:
            await trio.testing.wait_all_tasks_blocked()
    assert harness.pool.gossip_rejected["duplicate"] == 1 and not harness.pool.rejected


async def test_a_signature_is_verified_once_whether_the_pool_or_the_replica_sees_it_first(nursery, monkeypatch):
    import node.mempool as mempool_module

    verified = []
    real = mempool_module._verify_batch
    monkeypatch.setattr(mempool_module, "_verify_batch", lambda txs: verified.extend(txs) or real(txs))
    h = Harness(max_txs=8, max_bytes=100_000, nonce_window=4)
    await nursery.start(h.pool.run)
    signatures = h.pool.verified
    first, second = tx(nonce=1), tx(nonce=2)
    # the replica's proposal check verified `second` before the pool did
    assert signatures.verifier(ALICE.public_key, "tx", CHAIN, second.signing_payload(), second.signature)
    with trio.fail_after(5):
        await h.pool.submit(first.encode())
        await h.pool.submit(second.encode())
    assert verified == [first]  # `second` was answered from memory
    assert h.ready == [first, second] and signatures.hits == 1
    # and the replica does not verify what the pool verified
    monkeypatch.setattr(mempool_module, "is_valid", lambda *args: pytest.fail("verified twice"))
    assert signatures.verifier(ALICE.public_key, "tx", CHAIN, first.signing_payload(), first.signature)


async def test_a_bad_signature_is_never_remembered_and_other_kinds_are_always_verified(harness):
    signatures = harness.pool.verified
    good = tx()
    forged = Tx(CHAIN, ALICE.public_key, 1, "transfer", {"amount": 2}, good.signature)
    for _ in range(2):
        assert not signatures.verifier(ALICE.public_key, "tx", CHAIN, forged.signing_payload(), forged.signature)
    assert await reject_reason(harness.pool, forged.encode()) == "bad_signature"
    assert signatures.verifier(ALICE.public_key, "tx", CHAIN, good.signing_payload(), good.signature)
    # same key, payload and signature, but another kind or chain: a different verification
    assert not signatures.verifier(ALICE.public_key, "commit", CHAIN, good.signing_payload(), good.signature)
    assert not signatures.verifier(ALICE.public_key, "tx", "other-chain", good.signing_payload(), good.signature)


async def test_one_submit_many_call_is_verified_as_one_batch_with_per_tx_results(nursery):
    batches = []
    h = Harness(max_txs=100, max_bytes=100_000, nonce_window=8)
    h.pool.on_batch_done = batches.append
    await nursery.start(h.pool.run)
    good = [tx(nonce=n) for n in (1, 2, 3)]
    forged = Tx(CHAIN, BOB.public_key, 1, "transfer", {"amount": 1}, signature=ALICE.sign("tx", CHAIN, b"x"))
    raws = [good[0].encode(), b"\xc1", good[1].encode(), forged.encode(), good[0].encode(), good[2].encode()]
    with trio.fail_after(5):
        results = await h.pool.submit_many(raws)
    assert [r if isinstance(r, Tx) else r.reason for r in results] == [
        good[0], "malformed", good[1], "bad_signature", "duplicate", good[2]]
    assert h.pool.verify_batches == 1 and batches == [good] and h.ready == good
    assert results[0].hash == good[0].hash and not h.pool._in_flight


async def test_a_cancelled_submit_many_releases_the_hashes_it_held(nursery):
    h = Harness(max_txs=100, max_bytes=100_000, nonce_window=8)
    t1, t2 = tx(nonce=1), tx(nonce=2)
    with trio.CancelScope() as scope:  # the verifier is not running yet: nothing gets a verdict
        async with trio.open_nursery() as waiting:
            waiting.start_soon(h.pool.submit_many, [t1.encode(), t2.encode()])
            await trio.testing.wait_all_tasks_blocked()
            assert h.pool._in_flight == {t1.hash, t2.hash}
            scope.cancel()
    assert not h.pool._in_flight
    await nursery.start(h.pool.run)
    with trio.fail_after(5):
        # the queued copies are verified first, so the resubmission is a duplicate, never a second pooling
        results = await h.pool.submit_many([t1.encode(), t2.encode()])
    assert [getattr(r, "reason", r) for r in results] == ["duplicate", "duplicate"]
    assert len(h.pool) == 2 and h.ready == [t1, t2]


async def test_late_gossip_copies_are_refused_by_hash_and_counted(harness):
    pool = harness.pool
    t = tx(BOB)
    with trio.fail_after(5):
        await pool.submit(t.encode())
    assert pool.submit_many_nowait([t.encode(), t.encode()], source=b"p" * 32) == 0
    harness.committed[BOB.public_key] = 1
    pool.remove_committed([t])
    assert not pool.submit_nowait(t.encode(), source=b"p" * 32)
    assert dict(pool.gossip_rejected) == {"duplicate": 2, "nonce_too_old": 1} and not pool.rejected


def test_batch_verification_gives_verify_signature_s_verdicts():
    from ledger.errors import SignatureError
    from node.mempool import _verify_batch

    good = tx()
    candidates = [
        good, tx(BOB, nonce=2), Tx(CHAIN, ALICE.public_key, 1, "transfer", {"amount": 2}, good.signature),
        Tx("other-chain", ALICE.public_key, 1, "transfer", {"amount": 1}, good.signature),
        tx(chain="other-chain"), Tx("Not A Chain!", ALICE.public_key, 1, "transfer", {"amount": 1}, good.signature),
        Tx(CHAIN, BOB.public_key, 1, "transfer", {"amount": 1}, good.signature),
    ]

    def verdict(t):
        try:
            t.verify_signature()
        except SignatureError:
            return False
        return True

    expected = [True, True, False, False, True, False, False]
    assert _verify_batch(candidates) == [verdict(t) for t in candidates] == expected


async def test_the_metrics_collector_stamps_each_admitted_batch_once(nursery):
    from node.metrics import NodeMetrics, RuntimeCollector

    class Runtime:
        pass

    h = Harness(max_txs=100, max_bytes=100_000, nonce_window=8)
    flushed = []
    h.pool.on_batch_done = flushed.append
    runtime = Runtime()
    runtime.mempool = h.pool
    metrics = NodeMetrics()
    readings = iter([10.0, 20.0])
    RuntimeCollector(runtime, metrics, clock=lambda: next(readings)).attach()
    await nursery.start(h.pool.run)
    t1, t2 = tx(nonce=1), tx(nonce=2)
    with trio.fail_after(5):
        await h.pool.submit_many([t1.encode(), t2.encode()])
    assert dict(metrics._admitted) == {t1.hash: 10.0, t2.hash: 10.0} and flushed == [[t1, t2]]
