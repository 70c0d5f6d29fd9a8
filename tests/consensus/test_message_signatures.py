"""`with_signature_of`: a replica takes its own signature from the bytes it signed."""

from __future__ import annotations

import pytest

from consensus.messages import CommitVote, Prepare, Proposal, decode_message, sign, with_signature_of
from ledger import codec
from ledger.errors import DecodeError
from tests.consensus.helpers import CHAIN, KEYS
from tests.consensus.test_pipelining import chain


@pytest.mark.parametrize("make", [
    lambda b: Prepare(KEYS[1].public_key, 2, b.height, b.hash),
    lambda b: CommitVote(KEYS[2].public_key, 0, b.height, b.hash),
    lambda b: Proposal(KEYS[0].public_key, 0, b.height, b),
])
def test_the_signature_taken_from_the_bytes_is_the_decoded_one(make) -> None:  # type: ignore[no-untyped-def]
    block = chain(1)[0]
    message = make(block)
    data = sign(message, KEYS[0], CHAIN).encode()
    assert with_signature_of(message, data) == decode_message(data)


@pytest.mark.parametrize("data", [b"", b"\xc4\x40", codec.encode([1, 2, 3]), codec.encode([b"x" * 63])])
def test_bytes_that_do_not_end_with_a_signature_are_refused(data: bytes) -> None:
    message = Prepare(KEYS[1].public_key, 0, 1, b"\x00" * 32)
    with pytest.raises(DecodeError):
        with_signature_of(message, data)
