"""History proofs built from block hashes, and the observer's reaction to a bad header."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import merkle
from ledger.errors import ValidationError
from ledger.hashing import sha256
from ledger.types import CommitCertificate
from live_chain import LiveChain
from node.history import HistoryError, history_proof
from node.observer import LightObserver


def _hashes(n: int) -> list[bytes]:
    return [sha256(b"block %d" % i) for i in range(1, n + 1)]


@given(st.integers(1, 70).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n - 1), st.integers(1, n))))
def test_proofs_from_hashes_verify_and_match_the_leaf_based_builders(case: tuple[int, int, int]) -> None:
    n, index, old = case
    hashes = _hashes(n)
    root = merkle.root_from_hashes(hashes)
    proof = merkle.inclusion_proof_from_hashes(hashes, index)
    merkle.verify_inclusion_hash(hashes[index], index, n, proof, root)
    consistency = merkle.consistency_proof_from_hashes(hashes, old)
    merkle.verify_consistency(old, n, consistency, merkle.root_from_hashes(hashes[:old]), root)
    leaves = [b"leaf %d" % i for i in range(n)]
    leaf_hashes = [merkle.leaf_hash(leaf) for leaf in leaves]
    assert merkle.inclusion_proof_from_hashes(leaf_hashes, index) == merkle.inclusion_proof(leaves, index)
    assert merkle.consistency_proof_from_hashes(leaf_hashes, old) == merkle.consistency_proof(leaves, old)


def test_proofs_from_hashes_refuse_out_of_range_arguments() -> None:
    with pytest.raises(ValidationError):
        merkle.inclusion_proof_from_hashes(_hashes(3), 3)
    with pytest.raises(ValidationError):
        merkle.consistency_proof_from_hashes(_hashes(3), 0)
    with pytest.raises(HistoryError):
        history_proof(_hashes(2), 3, 3)


def test_the_history_routes_agree_with_the_light_clients_checks(live_chain: LiveChain) -> None:
    runtime = live_chain.runtimes[4]
    head = runtime.store.block(runtime.store.height).header
    answer = runtime.history_consistency(1, head.history_size)
    assert answer["new_root"] == head.history_root.hex()
    merkle.verify_consistency(1, head.history_size, [bytes.fromhex(p) for p in answer["proof"]],
                              bytes.fromhex(answer["old_root"]), head.history_root)
    inclusion = runtime.history_inclusion(2, head.history_size)
    merkle.verify_inclusion_hash(runtime.store.block(2).hash, 1, head.history_size,
                                 [bytes.fromhex(p) for p in inclusion["proof"]], head.history_root)


def test_a_header_short_of_a_quorum_stops_verification_and_is_reported(live_chain: LiveChain) -> None:
    runtime = live_chain.runtimes[4]
    observer = LightObserver(runtime)  # a fresh client over the same store
    block1, cert1 = runtime.store.block(1), runtime.store.certificate(1)
    short = CommitCertificate(cert1.height, cert1.view, cert1.block_hash, cert1.signatures[:2])
    assert observer.verify_block(block1, short) is False
    assert observer.failure is not None and observer.failure["height"] == 1
    assert "quorum" in observer.failure["reason"]
    assert observer.verified_height == 0
    observer.catch_up()  # a failure is sticky: nothing more is marked verified
    assert observer.verified_height == 0


def test_a_block_whose_transactions_differ_from_its_header_fails_verification(live_chain: LiveChain) -> None:
    runtime = live_chain.runtimes[4]
    observer = LightObserver(runtime)
    block1, cert1 = runtime.store.block(1), runtime.store.certificate(1)
    tx = block1.txs[0]
    forged = replace(block1, txs=(replace(tx, nonce=tx.nonce + 1),))
    assert observer.verify_block(forged, cert1) is False
    assert "transaction inclusion" in observer.failure["reason"]
    assert observer.verified_height == 0  # the header was not trusted with contents that fail
