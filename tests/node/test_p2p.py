"""Peer links on 127.0.0.1: authentication, bad frames, priority, reconnects."""

import struct

import trio

from ledger.crypto import PrivateKey
from node.handshake import NodeIdentity, perform_handshake
from node.p2p import CHANNEL_CONSENSUS, CHANNEL_TX, P2P, P2PConfig, PeerAddress

CHAIN = "careledger-test"
KEYS = [PrivateKey(bytes([i + 1]) * 32) for i in range(3)]
ALLOWED = {KEYS[0].public_key, KEYS[1].public_key}


def make_p2p(index, **config):
    cfg = P2PConfig(listen_port=0, backoff_initial_s=0.01, backoff_max_s=0.2, **config)
    return P2P(NodeIdentity.create(KEYS[index], CHAIN), cfg, ALLOWED.__contains__)


async def wait_until(predicate, event_source):
    while not predicate():
        await event_source()


async def test_two_allowed_nodes_connect_and_deliver_frames_by_channel():
    a, b = make_p2p(0), make_p2p(1)
    received = trio.Event()
    got = []

    async def handler(peer, channel, payload):
        got.append((peer, channel, payload))
        received.set()

    b.on(CHANNEL_CONSENSUS, handler)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            a.add_peer_address(PeerAddress(KEYS[1].public_key, "127.0.0.1", b.port))
            await a.wait_for_peers(1)
            await b.wait_for_peers(1)
            assert a.send(KEYS[1].public_key, CHANNEL_CONSENSUS, b"vote")
            await received.wait()
            assert got == [(KEYS[0].public_key, CHANNEL_CONSENSUS, b"vote")]
            nursery.cancel_scope.cancel()


async def test_a_node_with_an_unknown_key_is_refused_and_counted():
    a = make_p2p(0)
    stranger = P2P(NodeIdentity.create(KEYS[2], CHAIN), P2PConfig(listen_port=0, backoff_initial_s=0.05),
                   lambda key: True)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(stranger.run)
            stranger.add_peer_address(PeerAddress(KEYS[0].public_key, "127.0.0.1", a.port))
            # the initiator finishes Noise XX first, so it may see a short-lived link
            while a.counters["handshake_failures_unknown_key"] < 1 or stranger.peers:
                await trio.sleep(0.01)  # polling a counter, bounded by fail_after
            assert not a.peers
            nursery.cancel_scope.cancel()


async def test_an_oversize_frame_disconnects_the_peer_and_is_counted():
    a = make_p2p(0, max_frame_bytes=1024)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            stream = await trio.open_tcp_stream("127.0.0.1", a.port)
            channel = await perform_handshake(
                stream, NodeIdentity.create(KEYS[1], CHAIN), initiator=True,
                is_allowed=ALLOWED.__contains__, max_frame_bytes=1 << 20)
            await a.wait_for_peers(1)
            await channel.send_frame(bytes([CHANNEL_CONSENSUS]) + bytes(4096))
            while a.peers:
                await trio.sleep(0.01)
            assert a.counters["frames_rejected_oversize"] == 1
            nursery.cancel_scope.cancel()


async def test_a_frame_on_an_unknown_channel_disconnects_the_peer():
    a = make_p2p(0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            stream = await trio.open_tcp_stream("127.0.0.1", a.port)
            channel = await perform_handshake(
                stream, NodeIdentity.create(KEYS[1], CHAIN), initiator=True,
                is_allowed=ALLOWED.__contains__, max_frame_bytes=1 << 20)
            await a.wait_for_peers(1)
            await channel.send_frame(b"\x63garbage")
            while a.peers:
                await trio.sleep(0.01)
            assert a.counters["frames_rejected_malformed"] == 1
            nursery.cancel_scope.cancel()


async def test_garbage_instead_of_a_handshake_is_refused():
    a = make_p2p(0)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            stream = await trio.open_tcp_stream("127.0.0.1", a.port)
            await stream.send_all(struct.pack(">I", 32) + bytes(32))  # a low-order "ephemeral key"
            while a.counters["handshake_failures_protocol"] < 1:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()


async def test_a_dialler_reconnects_after_the_peer_restarts():
    a = make_p2p(0)
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            b_scope = trio.CancelScope()
            b = make_p2p(1)

            async def run_b(task_status=trio.TASK_STATUS_IGNORED):
                with b_scope:
                    await b.run(task_status=task_status)

            await nursery.start(run_b)
            a.add_peer_address(PeerAddress(KEYS[1].public_key, "127.0.0.1", b.port))
            await a.wait_for_peers(1)
            port = b.port
            b_scope.cancel()
            while a.peers:
                await a.wait_for_peers(0) if not a.peers else await trio.sleep(0.01)
            b2 = P2P(NodeIdentity.create(KEYS[1], CHAIN),
                     P2PConfig(listen_port=port, backoff_initial_s=0.01), ALLOWED.__contains__)
            await nursery.start(b2.run)
            await a.wait_for_peers(1)
            assert a.counters["connections"] == 2
            nursery.cancel_scope.cancel()


def test_consensus_frames_are_sent_before_gossip():
    from node.p2p import Peer
    peer = Peer(b"k" * 32, True, None, P2PConfig(consensus_queue=2, gossip_queue=1))
    assert peer.enqueue(CHANNEL_TX, b"tx1")
    assert not peer.enqueue(CHANNEL_TX, b"tx2")  # gossip queue full: dropped
    assert peer.enqueue(CHANNEL_CONSENSUS, b"vote")
    order = [peer.high.popleft() if peer.high else peer.low.popleft() for _ in range(2)]
    assert order == [bytes([CHANNEL_CONSENSUS]) + b"vote", bytes([CHANNEL_TX]) + b"tx1"]
