"""Regression tests from the review: peer-triggered failures must never crash the node."""

import trio

from ledger import codec
from ledger.types import Tx
from node.handshake import NodeIdentity, perform_handshake
from node.p2p import CHANNEL_CONSENSUS
from node.sync import MAX_RESPONSE_BYTES, BlockSync
from tests.node.chain_helpers import CHAIN, CLIENT, next_block
from tests.node.test_p2p import ALLOWED, KEYS, make_p2p


class _Store:
    def __init__(self, blocks):
        self.blocks = {b.height: (b, c) for b, c in blocks}

    def block_bytes(self, height):
        item = self.blocks.get(height)
        return None if item is None else item[0].encode()

    def certificate_bytes(self, height):
        item = self.blocks.get(height)
        return None if item is None else item[1].encode()

    def block(self, height):
        item = self.blocks.get(height)
        return None if item is None else item[0]

    def certificate(self, height):
        item = self.blocks.get(height)
        return None if item is None else item[1]


class _SentP2P:
    def __init__(self):
        self.sent = []

    def on(self, channel, handler):
        pass

    def send(self, key, channel, data):
        self.sent.append(data)
        return True


async def test_the_sync_server_never_packs_a_response_over_the_codec_limit():
    # Four 1.5 MB blocks: the old 8 MB budget packed all of them, codec.encode
    # refused the 6 MB response and the EncodeError crashed the node.
    blocks, prev, nonce = [], None, 0
    for height in range(1, 5):
        txs = []
        for _ in range(25):
            nonce += 1
            txs.append(Tx(CHAIN, CLIENT.public_key, nonce, "transfer", {"pad": bytes(60_000)}).signed(CLIENT))
        block, cert = next_block(prev, height, txs)
        blocks.append((block, cert))
        prev = block
    p2p = _SentP2P()
    sync = BlockSync(p2p, _Store(blocks))
    await sync._on_request(b"p" * 32, 3, codec.encode([9, 1, 4]))
    (payload,) = p2p.sent
    assert len(payload) <= MAX_RESPONSE_BYTES < codec.MAX_MESSAGE_BYTES
    request_id, items = codec.decode(payload)
    assert request_id == 9 and len(items) == 2  # what fits; the fetcher asks again for the rest
    assert [b.height for b, _ in sync._check(items, 1)] == [1, 2]


async def test_a_handler_failing_on_a_peer_message_disconnects_that_peer_not_the_node():
    a = make_p2p(0)
    calls = []

    async def broken(peer, channel, payload):
        calls.append(payload)
        raise ValueError("handler bug triggered by a peer")

    a.on(CHANNEL_CONSENSUS, broken)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            stream = await trio.open_tcp_stream("127.0.0.1", a.port)
            channel = await perform_handshake(
                stream, NodeIdentity.create(KEYS[1], CHAIN), initiator=True,
                is_allowed=ALLOWED.__contains__, max_frame_bytes=1 << 20)
            await a.wait_for_peers(1)
            await channel.send_frame(bytes([CHANNEL_CONSENSUS]) + b"boom")
            while a.peers:
                await trio.sleep(0.01)  # polling, bounded by fail_after
            assert calls == [b"boom"] and a.counters["handler_errors"] == 1
            # the node is still serving: a new link comes up
            stream = await trio.open_tcp_stream("127.0.0.1", a.port)
            await perform_handshake(stream, NodeIdentity.create(KEYS[1], CHAIN), initiator=True,
                                    is_allowed=ALLOWED.__contains__, max_frame_bytes=1 << 20)
            await a.wait_for_peers(1)
            nursery.cancel_scope.cancel()


def test_the_chain_tip_hands_the_replica_the_last_k_blocks_txs_with_their_heights():
    # The replica's committed-duplicate window is K blocks before AND after a
    # restart: the store returns exactly those blocks' tx hashes, by height.
    from ledger.kv import MemoryStore
    from tests.node.test_store_executor import fresh, run_blocks
    executor = fresh(MemoryStore())
    run_blocks(executor, 5)
    tip = executor.store.chain_tip(2)
    assert [h for h, _ in tip.recent_txs] == [4, 5]
    assert all(len(hashes) >= 1 for _, hashes in tip.recent_txs)
    assert tip.recent_txs[1][1] == tuple(tx.hash for tx in executor.store.block(5).txs)


async def test_concurrent_unauthenticated_handshakes_are_capped():
    a = make_p2p(0)
    a._handshake_slots = trio.Semaphore(1)  # the cap (MAX_PENDING_HANDSHAKES), made small
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            silent = await trio.open_tcp_stream("127.0.0.1", a.port)  # holds the only slot
            second = await trio.open_tcp_stream("127.0.0.1", a.port)
            while a.counters["handshakes_refused_busy"] < 1:
                await trio.sleep(0.01)  # polling, bounded by fail_after
            await silent.aclose()  # its handshake fails: the slot comes back
            while a._handshake_slots.value < 1:
                await trio.sleep(0.01)
            stream = await trio.open_tcp_stream("127.0.0.1", a.port)
            await perform_handshake(stream, NodeIdentity.create(KEYS[1], CHAIN), initiator=True,
                                    is_allowed=ALLOWED.__contains__, max_frame_bytes=1 << 20)
            await a.wait_for_peers(1)
            await second.aclose()
            nursery.cancel_scope.cancel()
