"""Length-prefixed frames: caps are enforced before the body is read."""

import struct

import pytest
import trio
import trio.testing

from node.framing import FrameError, FrameStream, PeerDisconnected


class CountingStream:
    """A receive stream that records how many bytes were pulled from it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.read = 0

    async def receive_some(self, max_bytes=None):
        chunk = self.data[self.read:self.read + (max_bytes or 65536)]
        self.read += len(chunk)
        return chunk

    async def send_all(self, data):
        raise trio.BrokenResourceError

    async def aclose(self):
        pass


async def test_frames_round_trip_over_a_memory_stream():
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = FrameStream(left, 1024), FrameStream(right, 1024)
    for body in (b"x", b"hello" * 100, bytes(1024)):
        await sender.send_frame(body)
        assert await receiver.receive_frame() == body


async def test_an_oversize_frame_is_rejected_before_its_body_is_read():
    body = bytes(10_000)
    stream = CountingStream(struct.pack(">I", len(body)))  # only the header is even there
    frames = FrameStream(stream, max_frame_bytes=1000)
    with pytest.raises(FrameError) as info:
        await frames.receive_frame()
    assert info.value.reason == "oversize"
    assert stream.read == 4


async def test_an_empty_frame_is_refused():
    frames = FrameStream(CountingStream(struct.pack(">I", 0)), 1000)
    with pytest.raises(FrameError) as info:
        await frames.receive_frame()
    assert info.value.reason == "empty"


async def test_a_truncated_frame_is_a_disconnect():
    frames = FrameStream(CountingStream(struct.pack(">I", 10) + b"abc"), 1000)
    with pytest.raises(PeerDisconnected):
        await frames.receive_frame()


async def test_sending_on_a_broken_stream_raises_peer_disconnected():
    frames = FrameStream(CountingStream(b""), 1000)
    with pytest.raises(PeerDisconnected):
        await frames.send_frame(b"x")


async def test_sending_an_oversize_frame_is_a_local_bug():
    left, _ = trio.testing.memory_stream_pair()
    with pytest.raises(ValueError):
        await FrameStream(left, 10).send_frame(bytes(11))
