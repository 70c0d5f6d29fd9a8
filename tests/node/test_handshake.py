"""Noise XX bound to ed25519 identities: known keys connect, others do not."""

import pytest
import trio
import trio.testing

from ledger.crypto import PrivateKey
from node.framing import FrameError
from node.handshake import HandshakeError, NodeIdentity, perform_handshake

CHAIN = "careledger-test"
ALICE = NodeIdentity.create(PrivateKey(b"a" * 32), CHAIN)
BOB = NodeIdentity.create(PrivateKey(b"b" * 32), CHAIN)
MALLORY = NodeIdentity.create(PrivateKey(b"m" * 32), CHAIN)
KNOWN = {ALICE.public_key, BOB.public_key}


async def handshake_pair(initiator, responder, *, initiator_allows=KNOWN, responder_allows=KNOWN,
                         expected=None, left=None, right=None):
    if left is None:
        left, right = trio.testing.memory_stream_pair()
    results = {}

    async def side(name, stream, identity, initiator_flag, allowed, expected_key):
        try:
            results[name] = await perform_handshake(
                stream, identity, initiator=initiator_flag, is_allowed=allowed.__contains__,
                expected_key=expected_key, max_frame_bytes=1 << 20)
        except (HandshakeError, FrameError) as exc:
            results[name] = exc
            await stream.aclose()
        except Exception as exc:  # the other side closed mid-handshake
            results[name] = exc

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, "i", left, initiator, True, initiator_allows, expected)
            nursery.start_soon(side, "r", right, responder, False, responder_allows, None)
    return results["i"], results["r"]


async def test_two_known_keys_connect_and_exchange_encrypted_frames():
    a, b = await handshake_pair(ALICE, BOB, expected=BOB.public_key)
    assert a.peer_key == BOB.public_key and b.peer_key == ALICE.public_key
    big = bytes(range(256)) * 1000  # spans several Noise messages
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_frame, big)
            assert await b.receive_frame() == big
        await b.send_frame(b"pong")
        assert await a.receive_frame() == b"pong"


async def test_a_responder_rejects_an_unknown_initiator():
    a, b = await handshake_pair(MALLORY, BOB)
    assert isinstance(b, HandshakeError) and b.reason == "unknown_key"


async def test_an_initiator_rejects_an_unknown_responder():
    a, b = await handshake_pair(ALICE, MALLORY)
    assert isinstance(a, HandshakeError) and a.reason == "unknown_key"


async def test_an_initiator_rejects_a_responder_that_is_not_the_dialled_key():
    a, b = await handshake_pair(ALICE, BOB, expected=MALLORY.public_key)
    assert isinstance(a, HandshakeError) and a.reason == "unexpected_key"


async def test_a_node_of_another_chain_cannot_complete_the_handshake():
    other = NodeIdentity.create(PrivateKey(b"b" * 32), "other-chain")
    a, b = await handshake_pair(ALICE, other)
    assert isinstance(a, HandshakeError) or isinstance(b, HandshakeError)


async def test_a_tampered_handshake_message_fails():
    left, right = trio.testing.memory_stream_pair()
    flipped = {"count": 0}
    original = right.send_stream.send_all_hook

    def tamper():
        data = right.send_stream.get_data_nowait()
        if flipped["count"] == 0 and len(data) > 40:
            data = data[:-1] + bytes([data[-1] ^ 1])  # flip a bit in the responder's message 2
            flipped["count"] += 1
        left.receive_stream.put_data(data)

    right.send_stream.send_all_hook = tamper
    a, b = await handshake_pair(ALICE, BOB, left=left, right=right)
    assert flipped["count"] == 1
    assert isinstance(a, HandshakeError) and a.reason == "protocol"
    assert not hasattr(b, "peer_key")


async def test_a_signature_over_another_static_key_is_refused():
    forged = NodeIdentity(ALICE.key, CHAIN, MALLORY.noise_private)
    payload = forged.handshake_payload()
    from node.handshake import check_handshake_payload
    assert check_handshake_payload(payload, MALLORY.noise_public, CHAIN) == ALICE.public_key
    with pytest.raises(HandshakeError):
        check_handshake_payload(payload, BOB.noise_public, CHAIN)
