"""Length-prefixed frames over a trio byte stream, and the transport's errors.

A frame is a 4-byte big-endian length followed by that many bytes. The
length is checked against the reader's cap BEFORE any of the body is read
(py-libp2p `io/msgio.py`), so a peer cannot make us buffer more than the cap.

Every trio/socket failure is translated into `PeerDisconnected` here, at the
transport boundary; callers above never see `trio.BrokenResourceError` or
`OSError` from a peer connection.
"""

from __future__ import annotations

import struct
from typing import Protocol

import trio

LENGTH_BYTES = 4
_LENGTH = struct.Struct(">I")
READ_CHUNK = 64 * 1024


class PeerDisconnected(Exception):
    """The peer went away, or the connection broke, or it was closed by us."""


class FrameError(PeerDisconnected):
    """The peer sent a frame we refuse (oversize, empty, undecryptable): we
    disconnect it. `reason` is a stable metric label."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__("%s: %s" % (reason, detail) if detail else reason)
        self.reason = reason


class ByteStream(Protocol):
    async def send_all(self, data: bytes) -> None: ...

    async def receive_some(self, max_bytes: int | None = None) -> bytes: ...

    async def aclose(self) -> None: ...


class BufferedReader:
    """Reads exact byte counts from a stream, keeping what it over-read."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream
        self._buffer = bytearray()

    async def receive_exactly(self, count: int) -> bytes:
        """Raise PeerDisconnected if the stream ends first."""
        while len(self._buffer) < count:
            try:
                chunk = await self._stream.receive_some(max(READ_CHUNK, count - len(self._buffer)))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                raise PeerDisconnected("connection broke: %s" % exc) from exc
            if not chunk:
                raise PeerDisconnected("peer closed the connection")
            self._buffer += chunk
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data


def encode_frame(body: bytes, max_frame_bytes: int) -> bytes:
    """Prefix `body` with its length; raise ValueError if it is over the cap."""
    if len(body) > max_frame_bytes:
        raise ValueError("frame of %d bytes is over the %d-byte cap" % (len(body), max_frame_bytes))
    return _LENGTH.pack(len(body)) + body


class FrameStream:
    """Frames over a byte stream: `send_frame` / `receive_frame`.

    `send_frame` must not be called concurrently from two tasks (the p2p layer
    has exactly one writer task per connection); trio raises BusyResourceError
    otherwise, which is a bug on our side.
    """

    def __init__(self, stream: ByteStream, max_frame_bytes: int) -> None:
        self.stream = stream
        self.max_frame_bytes = max_frame_bytes
        self._reader = BufferedReader(stream)

    async def send_frame(self, body: bytes) -> None:
        """Raise PeerDisconnected if the connection is gone."""
        data = encode_frame(body, self.max_frame_bytes)
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise PeerDisconnected("connection broke: %s" % exc) from exc

    async def receive_frame(self) -> bytes:
        """The next frame's body.

        Raises FrameError("oversize") when the announced length is over the
        cap (nothing of the body is read), FrameError("empty") for a
        zero-length frame, PeerDisconnected when the stream ends.
        """
        (length,) = _LENGTH.unpack(await self._reader.receive_exactly(LENGTH_BYTES))
        if length > self.max_frame_bytes:
            raise FrameError("oversize", "frame announces %d bytes, cap %d" % (length, self.max_frame_bytes))
        if length == 0:
            raise FrameError("empty", "zero-length frame")
        return await self._reader.receive_exactly(length)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
