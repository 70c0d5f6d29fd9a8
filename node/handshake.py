"""Encrypted, mutually authenticated peer connections: Noise XX bound to ed25519.

Handshake (`Noise_XX_25519_ChaChaPoly_SHA256`, prologue = protocol version and
chain id, so nodes of different chains never complete a handshake):

    -> e
    <- e, ee, s, es   payload: [ed25519 key, sig("handshake", s_responder)]
    -> s, se          payload: [ed25519 key, sig("handshake", s_initiator)]

Each side's Noise static key is a fresh X25519 key; its ed25519 node key signs
it (kind "handshake", chain id bound by `ledger.crypto.sign_bytes`), as in
libp2p's noise spec. The peer checks the signature and that the ed25519 key
is allowed (genesis validator or observer allowlist), and, when we dialled a
configured `key@host:port`, that it is exactly that key.

Noise raw layer: every Noise message travels in a 4-byte-length frame capped
at 65,535 bytes. Above it the decrypted byte stream carries application
frames (4-byte length + body, capped by the caller), so one application frame
may span several Noise messages and its length is checked before its body is
read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric import x25519
from noise.connection import Keypair, NoiseConnection
from noise.exceptions import (
    NoiseHandshakeError, NoiseInvalidMessage, NoiseMaxNonceError, NoiseValidationError, NoiseValueError,
)

from ledger import codec
from ledger.crypto import PUBLIC_KEY_BYTES, PrivateKey, verify
from ledger.errors import LedgerError

from node.framing import ByteStream, FrameError, FrameStream, PeerDisconnected

NOISE_PROTOCOL = b"Noise_XX_25519_ChaChaPoly_SHA256"
PROLOGUE = b"careledger/p2p/v1\x00"
NOISE_MAX_MESSAGE = 65535
NOISE_TAG_BYTES = 16
MAX_CHUNK = NOISE_MAX_MESSAGE - NOISE_TAG_BYTES
STATIC_KEY_CONTEXT = b"careledger/noise-static/v1\x00"
NOISE_ERRORS = (NoiseHandshakeError, NoiseInvalidMessage, NoiseMaxNonceError, NoiseValidationError, NoiseValueError,
                InvalidTag)


class HandshakeError(FrameError):
    """The peer failed the handshake; `reason` is a metric label:
    "protocol" (bad Noise message), "bad_identity" (payload or signature),
    "unknown_key" (not allowed), "unexpected_key" (not the dialled key), "self"."""


@dataclass(frozen=True)
class NodeIdentity:
    """Our side of the handshake: the ed25519 node key and a Noise static key."""

    key: PrivateKey
    chain_id: str
    noise_private: bytes

    @classmethod
    def create(cls, key: PrivateKey, chain_id: str) -> "NodeIdentity":
        return cls(key, chain_id, os.urandom(32))

    @property
    def public_key(self) -> bytes:
        return self.key.public_key

    @property
    def noise_public(self) -> bytes:
        return x25519.X25519PrivateKey.from_private_bytes(self.noise_private).public_key().public_bytes_raw()

    def handshake_payload(self) -> bytes:
        signature = self.key.sign("handshake", self.chain_id, STATIC_KEY_CONTEXT + self.noise_public)
        return codec.encode([self.public_key, signature])


def check_handshake_payload(payload: bytes, noise_static: bytes, chain_id: str) -> bytes:
    """The ed25519 key that signed the peer's Noise static key.

    Raises HandshakeError("bad_identity") if the payload is malformed or the
    signature does not cover `noise_static`.
    """
    try:
        public_key, signature = codec.decode(bytes(payload), max_bytes=1024)
        if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_BYTES:
            raise HandshakeError("bad_identity", "malformed identity key")
        verify(public_key, "handshake", chain_id, STATIC_KEY_CONTEXT + noise_static, signature)
    except (LedgerError, ValueError, TypeError) as exc:
        raise HandshakeError("bad_identity", str(exc)) from exc
    return public_key


class _NoiseByteStream:
    """The decrypted byte stream of an established Noise session."""

    def __init__(self, raw: FrameStream, noise: NoiseConnection) -> None:
        self._raw = raw
        self._noise = noise

    async def send_all(self, data: bytes) -> None:
        frames = []
        for start in range(0, len(data), MAX_CHUNK):
            ciphertext = self._noise.encrypt(data[start:start + MAX_CHUNK])
            frames.append(len(ciphertext).to_bytes(4, "big") + ciphertext)
        try:
            await self._raw.stream.send_all(b"".join(frames))
        except PeerDisconnected:
            raise
        except Exception as exc:  # trio/socket errors: translate at the boundary
            raise PeerDisconnected("connection broke: %s" % exc) from exc

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        ciphertext = await self._raw.receive_frame()
        try:
            return bytes(self._noise.decrypt(ciphertext))
        except (*NOISE_ERRORS, ValueError) as exc:
            raise FrameError("malformed", "undecryptable frame") from exc

    async def aclose(self) -> None:
        await self._raw.aclose()


class SecureChannel:
    """An authenticated, encrypted frame channel to `peer_key`."""

    def __init__(self, raw: FrameStream, noise: NoiseConnection, peer_key: bytes, max_frame_bytes: int) -> None:
        self.peer_key = peer_key
        self._frames = FrameStream(_NoiseByteStream(raw, noise), max_frame_bytes)

    async def send_frame(self, body: bytes) -> None:
        await self._frames.send_frame(body)

    async def receive_frame(self) -> bytes:
        return await self._frames.receive_frame()

    async def aclose(self) -> None:
        await self._frames.aclose()


def _new_noise(identity: NodeIdentity, initiator: bool) -> NoiseConnection:
    noise = NoiseConnection.from_name(NOISE_PROTOCOL)
    noise.set_keypair_from_private_bytes(Keypair.STATIC, identity.noise_private)
    if initiator:
        noise.set_as_initiator()
    else:
        noise.set_as_responder()
    noise.set_prologue(PROLOGUE + identity.chain_id.encode())
    noise.start_handshake()
    return noise


async def perform_handshake(
    stream: ByteStream,
    identity: NodeIdentity,
    *,
    initiator: bool,
    is_allowed: Callable[[bytes], bool],
    expected_key: bytes | None = None,
    max_frame_bytes: int,
) -> SecureChannel:
    """Run Noise XX over `stream` and authenticate the peer.

    The caller bounds the time (`trio.fail_after`). Raises HandshakeError for
    a peer that fails authentication and PeerDisconnected if the connection
    breaks; on any failure the stream is left for the caller to close.
    """
    raw = FrameStream(stream, NOISE_MAX_MESSAGE)
    noise = _new_noise(identity, initiator)
    state = noise.noise_protocol.handshake_state  # the responder needs it after msg 3
    try:
        if initiator:
            await raw.send_frame(noise.write_message(b""))
            payload = noise.read_message(await raw.receive_frame())
            remote_static = state.rs.public_bytes
            peer_key = _authenticate(payload, remote_static, identity, is_allowed, expected_key)
            await raw.send_frame(noise.write_message(identity.handshake_payload()))
        else:
            noise.read_message(await raw.receive_frame())
            await raw.send_frame(noise.write_message(identity.handshake_payload()))
            payload = noise.read_message(await raw.receive_frame())
            remote_static = state.rs.public_bytes
            peer_key = _authenticate(payload, remote_static, identity, is_allowed, expected_key)
    except (*NOISE_ERRORS, ValueError, AttributeError) as exc:
        raise HandshakeError("protocol", "noise handshake failed: %s" % type(exc).__name__) from exc
    if not noise.handshake_finished:
        raise HandshakeError("protocol", "handshake did not finish")
    return SecureChannel(raw, noise, peer_key, max_frame_bytes)


def _authenticate(
    payload: bytes, remote_static: bytes, identity: NodeIdentity,
    is_allowed: Callable[[bytes], bool], expected_key: bytes | None,
) -> bytes:
    peer_key = check_handshake_payload(payload, remote_static, identity.chain_id)
    if peer_key == identity.public_key:
        raise HandshakeError("self", "connected to ourselves")
    if expected_key is not None and peer_key != expected_key:
        raise HandshakeError("unexpected_key", "peer is %s, dialled %s" % (peer_key.hex()[:16], expected_key.hex()[:16]))
    if not is_allowed(peer_key):
        raise HandshakeError("unknown_key", "key %s is not a validator or allowed observer" % peer_key.hex()[:16])
    return peer_key
