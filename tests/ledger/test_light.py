"""The light client against a small chain of real signed headers (4 validators,
one hand-over to a new set), an honest node, and a lying node that alters one
part of one answer. The liar must be caught every time."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.engine import Receipt
from ledger import codec, merkle
from ledger.crypto import private_key_from_seed
from ledger.errors import LedgerError
from ledger.hashing import ZERO_HASH
from ledger.kv import MemoryStore
from ledger.light import (
    ClockDrift,
    Expired,
    ForkDetected,
    HeaderUpdate,
    HistoryProof,
    InconsistentHistory,
    InvalidProof,
    LightClient,
    MalformedInput,
    TrustOptions,
    UnknownValidatorSet,
    UntrustedHeader,
    Waypoint,
)
from ledger.state import StateProof, StateTree
from ledger.types import (
    CommitCertificate, Header, Tx, Validator, ValidatorSet, commit_vote_payload, compute_tx_root, make_certificate,
)

CHAIN = "careledger-test"
T0 = 1_700_000_000_000
BLOCK_MS = 1_000
HEIGHTS = 12
HANDOVER = 6  # header 6 announces the new set; it signs from height 7
KEYS = [private_key_from_seed(bytes([i + 1]) * 32) for i in range(8)]
OLD_KEYS, NEW_KEYS = KEYS[0:4], KEYS[2:6]  # two organisations leave, two join
OUTSIDERS = KEYS[6:8]
OPTIONS = TrustOptions(trusting_period_ms=3_600_000, max_clock_drift_ms=5_000)


def validator_set(keys) -> ValidatorSet:
    return ValidatorSet(tuple(Validator("org-%d" % KEYS.index(k), k.public_key) for k in keys))


OLD_SET, NEW_SET = validator_set(OLD_KEYS), validator_set(NEW_KEYS)


# ---------------------------------------------------------- proof builders
# History leaves are block hashes used directly as leaf hashes
# (consensus/history.py), so these work on hashes, written from RFC 6962 §2.1.


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def history_inclusion(hashes: list[bytes], index: int) -> list[bytes]:
    if len(hashes) <= 1:
        return []
    k = _split(len(hashes))
    if index < k:
        return history_inclusion(hashes[:k], index) + [merkle.root_from_hashes(hashes[k:])]
    return history_inclusion(hashes[k:], index - k) + [merkle.root_from_hashes(hashes[:k])]


def history_consistency(hashes: list[bytes], m: int, complete: bool = True) -> list[bytes]:
    n = len(hashes)
    if m == n:
        return [] if complete else [merkle.root_from_hashes(hashes)]
    k = _split(n)
    if m <= k:
        return history_consistency(hashes[:k], m, complete) + [merkle.root_from_hashes(hashes[k:])]
    return history_consistency(hashes[k:], m - k, False) + [merkle.root_from_hashes(hashes[:k])]


def sign_certificate(header: Header, keys, chain_id: str = CHAIN, height: int | None = None) -> CommitCertificate:
    height = header.height if height is None else height
    payload = commit_vote_payload(height, header.view, header.hash)
    return make_certificate(height, header.view, header.hash, {k.public_key: k.sign("commit", chain_id, payload) for k in keys})


# ------------------------------------------------------------------ chain


@dataclasses.dataclass
class Chain:
    headers: dict[int, Header]
    certificates: dict[int, CommitCertificate]
    txs: dict[int, list[Tx]]
    receipts: dict[int, list[bytes]]  # receipts of block h (committed in header h+1)
    tree: StateTree
    sets: dict[int, ValidatorSet]

    def hashes(self, upto: int) -> list[bytes]:
        """Block hashes 1..upto."""
        return [self.headers[h].hash for h in range(1, upto + 1)]

    def history_proof(self, trusted_height: int, height: int) -> HistoryProof:
        hashes = self.hashes(height - 1)
        consistency = history_consistency(hashes, trusted_height - 1) if trusted_height > 1 else []
        inclusion = history_inclusion(hashes, trusted_height - 1) if trusted_height >= 1 else []
        return HistoryProof(tuple(consistency), tuple(inclusion))


def account_key(i: int) -> bytes:
    return b"account/%d" % i


def build_chain() -> Chain:
    tree = StateTree(MemoryStore())
    tree.apply(0, {account_key(0): b"genesis"})
    headers: dict[int, Header] = {}
    certificates: dict[int, CommitCertificate] = {}
    txs: dict[int, list[Tx]] = {}
    receipts: dict[int, list[bytes]] = {0: []}
    sets: dict[int, ValidatorSet] = {}
    hashes: list[bytes] = []
    for h in range(1, HEIGHTS + 2):
        keys = OLD_KEYS if h <= HANDOVER else NEW_KEYS
        following = OLD_SET if h + 1 <= HANDOVER else NEW_SET
        sets[h] = validator_set(keys)
        block_txs = [
            Tx(CHAIN, KEYS[i].public_key, h, "transfer", {"amount": h * 100 + i, "to": account_key(i)}).signed(KEYS[i])
            for i in range(h % 3 + 1)
        ]
        header = Header(
            CHAIN, h, 0, T0 + h * BLOCK_MS, hashes[-1] if hashes else ZERO_HASH,
            compute_tx_root(block_txs), merkle.root(receipts[h - 1]), tree.root(h - 1),
            sets[h].hash, following.hash, merkle.root_from_hashes(hashes), h - 1,
            keys[h % 4].public_key,
        )
        headers[h], txs[h] = header, block_txs
        certificates[h] = sign_certificate(header, keys[:3])
        hashes.append(header.hash)
        receipts[h] = [Receipt(tx.hash, True, "ok", "", ({"height": h},)).encode() for tx in block_txs]
        writes: dict[bytes, bytes | None] = {account_key(i): b"balance %d at %d" % (i, h) for i in range(h % 3 + 1)}
        if h == 4:
            writes[account_key(0)] = None  # a deletion, for absence proofs
        tree.apply(h, writes)
    return Chain(headers, certificates, txs, receipts, tree, sets)


CHAIN_DATA = build_chain()


def fresh_client() -> LightClient:
    return LightClient.from_genesis(CHAIN, OLD_SET, T0, OPTIONS)


def now_at(height: int) -> int:
    return T0 + height * BLOCK_MS + 100


# ------------------------------------------------------ honest and lying nodes


class Node:
    """Serves answers from the chain; a lying node passes one kind of answer
    through `tamper` first."""

    def __init__(self, chain: Chain, tamper: Callable[[str, Any], Any] | None = None) -> None:
        self.chain = chain
        self.tamper = tamper or (lambda kind, answer: answer)

    def update(self, trusted_height: int, height: int) -> dict[str, Any]:
        answer = {
            "header": self.chain.headers[height],
            "certificate": self.chain.certificates[height],
            "history": self.chain.history_proof(trusted_height, height),
            "next_validators": NEW_SET if height == HANDOVER else None,
        }
        return {kind: self.tamper(kind, value) for kind, value in answer.items()}

    def tx(self, height: int, index: int) -> dict[str, Any]:
        encoded = [tx.encode() for tx in self.chain.txs[height]]
        answer = {"tx": encoded[index], "index": index, "size": len(encoded),
                  "proof": merkle.inclusion_proof(encoded, index)}
        return {kind: self.tamper(kind, value) for kind, value in answer.items()}

    def receipt(self, height: int, index: int) -> dict[str, Any]:
        encoded = self.chain.receipts[height]
        answer = {"receipt": encoded[index], "index": index, "size": len(encoded),
                  "proof": merkle.inclusion_proof(encoded, index)}
        return {kind: self.tamper(kind, value) for kind, value in answer.items()}

    def state(self, height: int, key: bytes) -> dict[str, Any]:
        # state after block height-1 is what header `height` commits to
        answer = {"value": self.chain.tree.get(key, height - 1), "proof": self.chain.tree.prove(key, height - 1)}
        return {kind: self.tamper(kind, value) for kind, value in answer.items()}


def follow(client: LightClient, node: Node, height: int, now: int | None = None) -> Header:
    trusted = client.trusted.height
    answer = node.update(trusted, height)
    return client.verify_header(
        answer["header"], answer["certificate"], now_at(height) if now is None else now,
        answer["history"], answer["next_validators"],
    )


def client_following_every_block() -> LightClient:
    client, node = fresh_client(), Node(CHAIN_DATA)
    for h in range(1, HEIGHTS + 1):
        follow(client, node, h)
    return client


def client_at(height: int) -> LightClient:
    """A client that followed the honest chain to `height` via the hand-over."""
    client = fresh_client()
    node = Node(CHAIN_DATA)
    for h in sorted({1, HANDOVER, height} if height >= HANDOVER else {1, height}):
        follow(client, node, h)
    return client


# ------------------------------------------------------------ happy paths


def test_a_client_follows_the_honest_chain_block_by_block():
    client, node = fresh_client(), Node(CHAIN_DATA)
    for h in range(1, HEIGHTS + 1):
        assert follow(client, node, h) == CHAIN_DATA.headers[h]
    assert client.trusted.height == HEIGHTS
    assert client.trusted.validators == NEW_SET


def test_a_client_skips_ahead_within_one_validator_set_and_through_the_handover_header():
    client, node = fresh_client(), Node(CHAIN_DATA)
    follow(client, node, 2)
    follow(client, node, HANDOVER)
    assert client.trusted.validators == NEW_SET
    follow(client, node, HEIGHTS)
    assert client.trusted.height == HEIGHTS


def test_an_epoch_change_proof_is_applied_in_one_call():
    client = fresh_client()
    first = HeaderUpdate(CHAIN_DATA.headers[1], CHAIN_DATA.certificates[1], CHAIN_DATA.history_proof(0, 1))
    handover = HeaderUpdate(CHAIN_DATA.headers[HANDOVER], CHAIN_DATA.certificates[HANDOVER],
                            CHAIN_DATA.history_proof(1, HANDOVER), NEW_SET)
    last = client.verify_epoch_changes(codec.encode([first.to_wire(), handover.to_wire()]), now_at(HANDOVER))
    assert last == CHAIN_DATA.headers[HANDOVER] and client.trusted.validators == NEW_SET


def test_a_failed_epoch_change_proof_changes_nothing():
    client = client_at(2)
    before = client.trusted
    good = HeaderUpdate(CHAIN_DATA.headers[4], CHAIN_DATA.certificates[4], CHAIN_DATA.history_proof(2, 4))
    bad = HeaderUpdate(CHAIN_DATA.headers[HANDOVER], CHAIN_DATA.certificates[HANDOVER],
                       CHAIN_DATA.history_proof(4, HANDOVER), OLD_SET)
    with pytest.raises(UnknownValidatorSet):
        client.verify_epoch_changes([good, bad], now_at(HANDOVER))
    assert client.trusted == before and client.verified_header(4) is None


def test_a_client_starts_from_a_waypoint():
    h = 8
    header = CHAIN_DATA.headers[h]
    client = LightClient.from_waypoint(CHAIN, str(Waypoint(h, header.hash)), header.encode(), NEW_SET, options=OPTIONS)
    follow(client, Node(CHAIN_DATA), HEIGHTS)
    assert client.trusted.height == HEIGHTS


def test_a_waypoint_on_a_handover_header_needs_the_next_set():
    header = CHAIN_DATA.headers[HANDOVER]
    with pytest.raises(UnknownValidatorSet):
        LightClient.from_waypoint(CHAIN, Waypoint(HANDOVER, header.hash), header, OLD_SET)
    client = LightClient.from_waypoint(CHAIN, Waypoint(HANDOVER, header.hash), header, OLD_SET, NEW_SET)
    assert client.trusted.validators == NEW_SET


@pytest.mark.parametrize("text", ["", "5", "x:00", "5:zz", "5:" + "00" * 31, "²:" + "00" * 32, "0:" + "00" * 32])
def test_a_malformed_waypoint_is_refused(text):
    with pytest.raises(MalformedInput):
        Waypoint.parse(text)


def test_a_waypoint_that_does_not_name_the_header_is_refused():
    with pytest.raises(UntrustedHeader):
        LightClient.from_waypoint(CHAIN, Waypoint(8, CHAIN_DATA.headers[7].hash), CHAIN_DATA.headers[8], NEW_SET)
    with pytest.raises(UnknownValidatorSet):
        LightClient.from_waypoint(CHAIN, Waypoint(8, CHAIN_DATA.headers[8].hash), CHAIN_DATA.headers[8], OLD_SET)


def test_verifying_the_same_header_again_is_harmless():
    client = client_at(3)
    follow(client, Node(CHAIN_DATA), 3)
    assert client.trusted.height == 3


def test_tx_receipt_and_state_proofs_from_an_honest_node_verify():
    client, node = client_at(HEIGHTS), Node(CHAIN_DATA)
    for h in (HANDOVER, HEIGHTS):
        for i in range(len(CHAIN_DATA.txs[h])):
            a = node.tx(h, i)
            assert client.verify_tx_inclusion(CHAIN_DATA.headers[h], a["tx"], a["index"], a["size"], a["proof"]) \
                == CHAIN_DATA.txs[h][i]
    block = HEIGHTS - 1  # its receipts are committed in header HEIGHTS
    for i in range(len(CHAIN_DATA.receipts[block])):
        a = node.receipt(block, i)
        client.verify_receipt(CHAIN_DATA.headers[HEIGHTS], a["receipt"], a["index"], a["size"], a["proof"],
                              tx_hash=CHAIN_DATA.txs[block][i].hash)
    for key in (account_key(0), account_key(1), account_key(2), b"never/written"):
        a = node.state(HEIGHTS, key)
        client.verify_state(CHAIN_DATA.headers[HEIGHTS], key, a["value"], a["proof"])
        client.verify_state(CHAIN_DATA.headers[HEIGHTS], key, a["value"], a["proof"].to_bytes())


def test_an_old_header_is_proven_by_the_history_of_a_verified_one():
    client = client_at(HEIGHTS)
    hashes = CHAIN_DATA.hashes(HEIGHTS - 1)
    old = CHAIN_DATA.headers[3]
    client.verify_past_header(old, history_inclusion(hashes, 2))
    a = Node(CHAIN_DATA).state(3, account_key(0))
    client.verify_state(old, account_key(0), a["value"], a["proof"])
    with pytest.raises(InvalidProof):
        client.verify_past_header(CHAIN_DATA.headers[4], history_inclusion(hashes, 2))


def test_proofs_against_a_header_the_client_did_not_verify_are_refused():
    client, node = client_at(2), Node(CHAIN_DATA)
    a = node.tx(3, 0)
    with pytest.raises(UntrustedHeader):
        client.verify_tx_inclusion(CHAIN_DATA.headers[3], a["tx"], a["index"], a["size"], a["proof"])


# ----------------------------------------------------- a lying node is caught


def _flip(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def _alter_sibling(proof):
    if isinstance(proof, StateProof):
        index = next(i for i, s in enumerate(proof.siblings) if s)
        siblings = list(proof.siblings)
        siblings[index] = _flip(siblings[index])
        return StateProof(proof.leaf, tuple(siblings))
    return [_flip(proof[0])] + list(proof[1:])


def _extra_sibling(proof):
    if isinstance(proof, StateProof):
        return StateProof(proof.leaf, proof.siblings + (b"\x07" * 32,))
    return list(proof) + [b"\x07" * 32]


def _missing_sibling(proof):
    if isinstance(proof, StateProof):
        return StateProof(proof.leaf, proof.siblings[:-1])
    return list(proof)[:-1]


LIES = {
    "altered value": ("tx", _flip),
    "altered proof sibling": ("proof", _alter_sibling),
    "extra sibling": ("proof", _extra_sibling),
    "missing sibling": ("proof", _missing_sibling),
    "leading garbage": ("proof", lambda p: [b"\x00" * 32] + list(p)),
    "short hash": ("proof", lambda p: [p[0][:31]] + list(p[1:])),
    "index moved": ("index", lambda i: i + 1),
    "size shrunk": ("size", lambda s: s - 1),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_node_is_caught_on_a_transaction_proof(lie):
    kind, alter = LIES[lie]
    client = client_following_every_block()
    node = Node(CHAIN_DATA, lambda k, v: alter(v) if k == kind else v)
    a = node.tx(HEIGHTS - 1, 0)  # 3 txs: every proof has 2 siblings
    with pytest.raises(InvalidProof):
        client.verify_tx_inclusion(CHAIN_DATA.headers[HEIGHTS - 1], a["tx"], a["index"], a["size"], a["proof"])


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_node_is_caught_on_a_receipt_proof(lie):
    kind, alter = LIES[lie]
    kind = "receipt" if kind == "tx" else kind
    client = client_following_every_block()
    node = Node(CHAIN_DATA, lambda k, v: alter(v) if k == kind else v)
    block = HEIGHTS - 1
    a = node.receipt(block, 0)
    with pytest.raises(InvalidProof):
        client.verify_receipt(CHAIN_DATA.headers[HEIGHTS], a["receipt"], a["index"], a["size"], a["proof"])


def test_a_real_receipt_of_another_transaction_is_caught_by_its_tx_hash():
    client, node = client_at(HEIGHTS), Node(CHAIN_DATA)
    block = HEIGHTS - 1
    a = node.receipt(block, 1)
    with pytest.raises(InvalidProof):
        client.verify_receipt(CHAIN_DATA.headers[HEIGHTS], a["receipt"], a["index"], a["size"], a["proof"],
                              tx_hash=CHAIN_DATA.txs[block][0].hash)


def test_the_claimed_size_of_a_tx_tree_is_not_authenticated_by_the_header():
    # Known limitation (ledger/light.py docstring): headers do not commit to the
    # number of txs, and leaf 0 of 3 has the same audit path shape as leaf 0 of 4.
    # Membership stays sound; the index/size claim does not. If headers gain a
    # tx count, make this test expect InvalidProof.
    client, node = client_following_every_block(), Node(CHAIN_DATA)
    a = node.tx(HEIGHTS - 1, 0)
    tx = client.verify_tx_inclusion(CHAIN_DATA.headers[HEIGHTS - 1], a["tx"], 0, a["size"] + 1, a["proof"])
    assert tx == CHAIN_DATA.txs[HEIGHTS - 1][0]


def test_a_receipt_checked_against_its_own_block_header_instead_of_the_next_fails():
    client, node = client_following_every_block(), Node(CHAIN_DATA)
    a = node.receipt(HEIGHTS - 1, 0)
    with pytest.raises(InvalidProof):
        client.verify_receipt(CHAIN_DATA.headers[HEIGHTS - 1], a["receipt"], a["index"], a["size"], a["proof"])


STATE_LIES = {
    "altered value": ("value", lambda v: _flip(v)),
    "value claimed absent": ("value", lambda v: None),
    "altered proof sibling": ("proof", _alter_sibling),
    "extra sibling": ("proof", _extra_sibling),
    "missing sibling": ("proof", _missing_sibling),
    "altered leaf": ("proof", lambda p: StateProof((p.leaf[0], _flip(p.leaf[1])), p.siblings)),
    "no leaf": ("proof", lambda p: StateProof(None, p.siblings)),
}


@pytest.mark.parametrize("lie", sorted(STATE_LIES))
def test_a_lying_node_is_caught_on_a_state_proof(lie):
    kind, alter = STATE_LIES[lie]
    client = client_at(HEIGHTS)
    node = Node(CHAIN_DATA, lambda k, v: alter(v) if k == kind else v)
    a = node.state(HEIGHTS, account_key(1))
    assert a["proof"].siblings  # several keys: the proof has siblings to alter
    with pytest.raises(InvalidProof):
        client.verify_state(CHAIN_DATA.headers[HEIGHTS], account_key(1), a["value"], a["proof"])


def test_an_absence_proof_for_a_present_key_is_caught():
    client, node = client_at(HEIGHTS), Node(CHAIN_DATA)
    present = node.state(HEIGHTS, account_key(1))
    with pytest.raises(InvalidProof):
        client.verify_state(CHAIN_DATA.headers[HEIGHTS], account_key(1), None, present["proof"])
    # the absence proof of another key does not prove this one absent either
    other = node.state(HEIGHTS, b"never/written")
    with pytest.raises(InvalidProof):
        client.verify_state(CHAIN_DATA.headers[HEIGHTS], account_key(1), None, other["proof"])


def test_a_deleted_key_is_absent_and_a_stale_value_is_caught():
    client, node = client_at(HEIGHTS), Node(CHAIN_DATA)
    header = CHAIN_DATA.headers[5]  # state after block 4, which deleted account 0
    client.verify_past_header(header, history_inclusion(CHAIN_DATA.hashes(HEIGHTS - 1), 4))
    a = node.state(5, account_key(0))
    assert a["value"] is None
    client.verify_state(header, account_key(0), None, a["proof"])
    with pytest.raises(InvalidProof):
        client.verify_state(header, account_key(0), b"genesis", a["proof"])


# ------------------------------------------------------------ header attacks


def test_a_header_signed_by_fewer_than_a_quorum_is_refused():
    client = client_at(2)
    header = CHAIN_DATA.headers[3]
    with pytest.raises(UntrustedHeader):
        client.verify_header(header, sign_certificate(header, OLD_KEYS[:2]), now_at(3), CHAIN_DATA.history_proof(2, 3))
    assert client.trusted.height == 2


def test_a_header_signed_by_non_validators_is_refused():
    client = client_at(2)
    header = CHAIN_DATA.headers[3]
    cert = sign_certificate(header, OLD_KEYS[:2] + OUTSIDERS)
    with pytest.raises(UntrustedHeader):
        client.verify_header(header, cert, now_at(3), CHAIN_DATA.history_proof(2, 3))


def test_a_certificate_that_repeats_one_signer_is_refused():
    client = client_at(2)
    header = CHAIN_DATA.headers[3]
    cert = sign_certificate(header, OLD_KEYS[:2])
    doubled = CommitCertificate(cert.height, cert.view, cert.block_hash, cert.signatures + cert.signatures[:1])
    with pytest.raises(UntrustedHeader):
        client.verify_header(header, doubled, now_at(3), CHAIN_DATA.history_proof(2, 3))


def test_a_certificate_from_another_height_is_refused():
    client = client_at(2)
    with pytest.raises(UntrustedHeader):
        client.verify_header(CHAIN_DATA.headers[3], CHAIN_DATA.certificates[4], now_at(3), CHAIN_DATA.history_proof(2, 3))
    # the same signatures relabelled with this height do not verify either
    old = CHAIN_DATA.certificates[4]
    relabelled = CommitCertificate(3, old.view, CHAIN_DATA.headers[3].hash, old.signatures)
    with pytest.raises(UntrustedHeader):
        client.verify_header(CHAIN_DATA.headers[3], relabelled, now_at(3), CHAIN_DATA.history_proof(2, 3))


def test_a_certificate_signed_for_another_chain_is_refused():
    client = client_at(2)
    header = CHAIN_DATA.headers[3]
    cert = sign_certificate(header, OLD_KEYS[:3], chain_id="careledger-other")
    with pytest.raises(UntrustedHeader):
        client.verify_header(header, cert, now_at(3), CHAIN_DATA.history_proof(2, 3))


def test_a_header_of_another_chain_is_refused():
    client = client_at(2)
    header = dataclasses.replace(CHAIN_DATA.headers[3], chain_id="careledger-other")
    with pytest.raises(UntrustedHeader):
        client.verify_header(header, sign_certificate(header, OLD_KEYS[:3], "careledger-other"), now_at(3),
                             CHAIN_DATA.history_proof(2, 3))


def test_a_lower_height_not_kept_is_refused_and_heights_only_go_up():
    client = client_at(5)
    with pytest.raises(UntrustedHeader):
        client.verify_header(CHAIN_DATA.headers[4], CHAIN_DATA.certificates[4], now_at(5), None)


def test_a_header_beyond_the_trusting_period_is_refused():
    client = client_at(2)
    late = now_at(2) + OPTIONS.trusting_period_ms + 1
    with pytest.raises(Expired):
        follow(client, Node(CHAIN_DATA), 3, now=late)
    assert client.trusted.height == 2


def test_a_header_from_the_future_is_refused():
    client = client_at(2)
    header = CHAIN_DATA.headers[3]
    with pytest.raises(ClockDrift):
        client.verify_header(header, CHAIN_DATA.certificates[3], header.time - OPTIONS.max_clock_drift_ms - 1,
                             CHAIN_DATA.history_proof(2, 3))
    client.verify_header(header, CHAIN_DATA.certificates[3], header.time - OPTIONS.max_clock_drift_ms,
                         CHAIN_DATA.history_proof(2, 3))


def resign(header: Header, keys=None, **changes) -> tuple[Header, CommitCertificate]:
    """A header altered and certified by `keys` (a quorum of the old set by default)."""
    altered = dataclasses.replace(header, **changes)
    return altered, sign_certificate(altered, OLD_KEYS[:3] if keys is None else keys)


def test_a_certified_header_with_an_inconsistent_history_root_is_refused():
    client = client_at(3)
    header, cert = resign(CHAIN_DATA.headers[5], history_root=merkle.root_from_hashes([b"\x09" * 32] * 4))
    with pytest.raises(InconsistentHistory):
        client.verify_header(header, cert, now_at(5), CHAIN_DATA.history_proof(3, 5))


@pytest.mark.parametrize("part", ["consistency", "inclusion"])
@pytest.mark.parametrize("alter", [_alter_sibling, _extra_sibling, _missing_sibling, lambda p: []])
def test_an_altered_history_proof_is_refused(part, alter):
    client = client_at(3)
    proof = CHAIN_DATA.history_proof(3, 5)
    assert proof.consistency and proof.inclusion
    client_at(3).verify_header(CHAIN_DATA.headers[5], CHAIN_DATA.certificates[5], now_at(5), proof)
    bad = dataclasses.replace(proof, **{part: tuple(alter(list(getattr(proof, part))))})
    with pytest.raises(InconsistentHistory):
        client.verify_header(CHAIN_DATA.headers[5], CHAIN_DATA.certificates[5], now_at(5), bad)


def test_a_history_proof_offered_from_genesis_must_be_empty():
    client = fresh_client()
    with pytest.raises(InconsistentHistory):
        client.verify_header(CHAIN_DATA.headers[3], CHAIN_DATA.certificates[3], now_at(3),
                             HistoryProof((), (b"\x01" * 32,)))


def test_a_validator_set_change_not_signed_by_the_outgoing_set_is_refused():
    client = client_at(2)
    header, cert = resign(CHAIN_DATA.headers[HANDOVER], keys=NEW_KEYS[:3])
    with pytest.raises(UntrustedHeader):
        client.verify_header(header, cert, now_at(HANDOVER), CHAIN_DATA.history_proof(2, HANDOVER), NEW_SET)
    assert client.trusted.validators == OLD_SET


def test_a_handover_to_a_set_other_than_the_announced_one_is_refused():
    client = client_at(2)
    answer = Node(CHAIN_DATA).update(2, HANDOVER)
    rogue = validator_set(OLD_KEYS[:2] + OUTSIDERS)
    with pytest.raises(UnknownValidatorSet):
        client.verify_header(answer["header"], answer["certificate"], now_at(HANDOVER), answer["history"], rogue)
    with pytest.raises(UnknownValidatorSet):
        client.verify_header(answer["header"], answer["certificate"], now_at(HANDOVER), answer["history"], None)


def test_a_header_after_an_unseen_handover_is_refused():
    client = client_at(2)
    with pytest.raises(UnknownValidatorSet):
        follow(client, Node(CHAIN_DATA), HANDOVER + 2)


def test_the_outgoing_set_cannot_sign_after_the_handover():
    client = client_at(HANDOVER)
    header, cert = resign(CHAIN_DATA.headers[HANDOVER + 1], validators_hash=OLD_SET.hash,
                          next_validators_hash=OLD_SET.hash, proposer=OLD_KEYS[0].public_key)
    with pytest.raises(UnknownValidatorSet):
        client.verify_header(header, cert, now_at(HANDOVER + 1), CHAIN_DATA.history_proof(HANDOVER, HANDOVER + 1))


# ------------------------------------------------------------------ forks


def forked(height: int) -> tuple[Header, CommitCertificate]:
    """A different header at `height`, certified by a quorum of the real set."""
    keys = OLD_KEYS if height <= HANDOVER else NEW_KEYS
    return resign(CHAIN_DATA.headers[height], keys=keys[1:4], tx_root=merkle.root([b"double spend"]))


def assert_halted(client: LightClient) -> None:
    node = Node(CHAIN_DATA)
    with pytest.raises(ForkDetected):
        follow(client, node, HEIGHTS)
    a = node.state(4, account_key(1))
    with pytest.raises(ForkDetected):
        client.verify_state(CHAIN_DATA.headers[4], account_key(1), a["value"], a["proof"])
    with pytest.raises(ForkDetected):
        client.cross_check(CHAIN_DATA.headers[4], CHAIN_DATA.headers[4], CHAIN_DATA.certificates[4])
    with pytest.raises(ForkDetected):
        client.verified_header(4)


def test_a_witness_with_a_forked_certified_header_halts_the_client_with_evidence():
    client = client_at(4)
    header, cert = forked(4)
    with pytest.raises(ForkDetected) as caught:
        client.cross_check(CHAIN_DATA.headers[4], header, cert)
    evidence = caught.value.evidence
    assert client.halted and client.evidence == evidence
    assert {evidence.trusted_header, evidence.conflicting_header} == {CHAIN_DATA.headers[4], header}
    assert evidence.trusted_certificate == CHAIN_DATA.certificates[4] and evidence.conflicting_certificate == cert
    assert len(evidence.double_signers) >= OLD_SET.max_faulty + 1
    assert codec.decode(evidence.encode())[1] == 4
    assert_halted(client)


def test_a_forked_header_offered_as_an_update_for_a_verified_height_halts_the_client():
    client = client_at(4)
    header, cert = forked(4)
    with pytest.raises(ForkDetected):
        client.verify_header(header, cert, now_at(4), None)
    assert_halted(client)


def test_a_witness_agreeing_with_the_primary_changes_nothing():
    client = client_at(4)
    client.cross_check(CHAIN_DATA.headers[4], CHAIN_DATA.headers[4].encode(), CHAIN_DATA.certificates[4].encode())
    assert not client.halted


def test_a_witness_with_an_uncertified_different_header_is_refused_without_halting():
    client = client_at(4)
    header, _ = forked(4)
    with pytest.raises(UntrustedHeader):
        client.cross_check(CHAIN_DATA.headers[4], header, sign_certificate(header, OLD_KEYS[:2] + OUTSIDERS))
    with pytest.raises(UntrustedHeader):
        client.cross_check(CHAIN_DATA.headers[4], CHAIN_DATA.headers[5], CHAIN_DATA.certificates[5])
    assert not client.halted
    follow(client, Node(CHAIN_DATA), 5)


def test_a_cross_check_against_an_unverified_primary_is_refused():
    client = client_at(4)
    with pytest.raises(UntrustedHeader):
        client.cross_check(CHAIN_DATA.headers[3], CHAIN_DATA.headers[3], CHAIN_DATA.certificates[3])


# ------------------------------------------------- totality (hypothesis)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
GOOD = {
    "header": CHAIN_DATA.headers[3].encode(),
    "certificate": CHAIN_DATA.certificates[3].encode(),
    "history": CHAIN_DATA.history_proof(2, 3).encode(),
    "validators": NEW_SET.to_wire(),
    "tx_proof": codec.encode(merkle.inclusion_proof([t.encode() for t in CHAIN_DATA.txs[2]], 0)),
    "state_proof": CHAIN_DATA.tree.prove(account_key(1), 1).to_bytes(),
}
ANY_VALUE = st.one_of(
    st.none(), st.booleans(), st.integers(), st.binary(max_size=80), st.text(max_size=20),
    st.lists(st.binary(max_size=40), max_size=4), st.dictionaries(st.text(max_size=8), st.binary(max_size=40), max_size=3),
)


FULL_CLIENT = client_following_every_block()  # only read by the fuzz tests below


def test_the_fuzz_baselines_verify_unmutated():
    client = client_at(2)
    client.verify_header(GOOD["header"], GOOD["certificate"], now_at(3), GOOD["history"])
    FULL_CLIENT.verify_tx_inclusion(CHAIN_DATA.headers[2], CHAIN_DATA.txs[2][0].encode(), 0, 3, GOOD["tx_proof"])
    FULL_CLIENT.verify_state(CHAIN_DATA.headers[2], account_key(1), b"balance 1 at 1", GOOD["state_proof"])
    assert not FULL_CLIENT.halted


@st.composite
def mutated(draw, data: bytes) -> bytes:
    """`data` with one byte changed, inserted or deleted, or truncated."""
    how = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
    i = draw(st.integers(0, len(data) - 1))
    if how == "flip":
        return data[:i] + bytes([data[i] ^ draw(st.integers(1, 255))]) + data[i + 1:]
    if how == "insert":
        return data[:i] + bytes([draw(st.integers(0, 255))]) + data[i:]
    if how == "delete":
        return data[:i] + data[i + 1:]
    return data[:i]


def only_ledger_errors(call: Callable[[], Any]) -> None:
    try:
        call()
    except LedgerError:
        pass


@FUZZ
@given(junk=ANY_VALUE, which=st.sampled_from(["header", "certificate", "now", "history", "next"]))
def test_verify_header_raises_only_ledger_errors_on_junk(junk, which):
    client = client_at(2)
    args = {"header": CHAIN_DATA.headers[3], "certificate": CHAIN_DATA.certificates[3], "now": now_at(3),
            "history": CHAIN_DATA.history_proof(2, 3), "next": None}
    args[which] = junk
    only_ledger_errors(lambda: client.verify_header(args["header"], args["certificate"], args["now"],
                                                    args["history"], args["next"]))


@FUZZ
@given(data=st.data(), which=st.sampled_from(["header", "certificate", "history"]))
def test_verify_header_refuses_every_mutated_encoding(data, which):
    client = client_at(2)
    args = {"header": GOOD["header"], "certificate": GOOD["certificate"], "history": GOOD["history"]}
    args[which] = data.draw(mutated(args[which]))
    with pytest.raises(LedgerError):
        client.verify_header(args["header"], args["certificate"], now_at(3), args["history"])
    assert client.trusted.height == 2


@FUZZ
@given(data=st.data())
def test_data_proofs_refuse_every_mutated_encoding(data):
    client = FULL_CLIENT
    tx = CHAIN_DATA.txs[2][0].encode()
    with pytest.raises(LedgerError):
        client.verify_tx_inclusion(CHAIN_DATA.headers[2], tx, 0, 3, data.draw(mutated(GOOD["tx_proof"])))
    with pytest.raises(LedgerError):
        client.verify_tx_inclusion(CHAIN_DATA.headers[2], data.draw(mutated(tx)), 0, 3, GOOD["tx_proof"])
    with pytest.raises(LedgerError):
        client.verify_state(CHAIN_DATA.headers[2], account_key(1), b"balance 1 at 1",
                            data.draw(mutated(GOOD["state_proof"])))


@FUZZ
@given(args=st.lists(ANY_VALUE, min_size=6, max_size=6), entry=st.integers(0, 8))
def test_every_entry_point_raises_only_ledger_errors_on_junk(args, entry):
    client = client_following_every_block()
    a, b, c, d, e, f = args
    calls = [
        lambda: client.verify_tx_inclusion(a, b, c, d, e),
        lambda: client.verify_tx_inclusion(CHAIN_DATA.headers[2], b, c, d, e),
        lambda: client.verify_receipt(CHAIN_DATA.headers[3], b, c, d, e, f),
        lambda: client.verify_state(CHAIN_DATA.headers[3], b, c, d),
        lambda: client.verify_past_header(a, b, c),
        lambda: client.cross_check(CHAIN_DATA.headers[3], b, c),
        lambda: client.verify_epoch_changes(a, b),
        lambda: LightClient.from_waypoint(a, b, c, d, e),
        lambda: LightClient.from_genesis(a, b, c),
    ]
    only_ledger_errors(calls[entry])
    assert not client.halted


@FUZZ
@given(junk=st.binary(max_size=200))
def test_random_bytes_are_refused_by_every_decoder(junk):
    client = client_at(3)
    for call in (
        lambda: client.verify_header(junk, junk, now_at(3), junk, junk),
        lambda: client.verify_state(CHAIN_DATA.headers[3], account_key(1), None, junk),
        lambda: client.verify_epoch_changes(junk, now_at(3)),
        lambda: client.cross_check(CHAIN_DATA.headers[3], junk, junk),
        lambda: LightClient.from_genesis(CHAIN, junk, T0),
    ):
        with pytest.raises(LedgerError):
            call()


def test_a_hand_built_record_with_wrong_field_types_is_refused():
    client = client_at(2)
    bad_header = dataclasses.replace(CHAIN_DATA.headers[3], height="3")
    with pytest.raises(MalformedInput):
        client.verify_header(bad_header, CHAIN_DATA.certificates[3], now_at(3))
    bad_cert = CommitCertificate(3, 0, CHAIN_DATA.headers[3].hash, (("k", 5),))  # type: ignore[arg-type]
    with pytest.raises(MalformedInput):
        client.verify_header(CHAIN_DATA.headers[3], bad_cert, now_at(3))
    with pytest.raises(MalformedInput):
        client.verify_header(CHAIN_DATA.headers[3], CHAIN_DATA.certificates[3], True)
    with pytest.raises(InvalidProof):
        client.verify_state(CHAIN_DATA.headers[2], account_key(1), None, {1: b"", "leaf": None, "siblings": []})


def test_the_light_client_module_stays_pure():
    import ast
    import pathlib

    import ledger.light

    tree = ast.parse(pathlib.Path(ledger.light.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "dataclasses", "typing", "ledger"}
    assert not any(isinstance(node, ast.Assert) for node in ast.walk(tree))


# ------------------------------------------------------------ results lag L


def test_state_and_receipt_proofs_are_paired_with_the_header_carrying_their_results():
    client, node = client_at(HEIGHTS), Node(CHAIN_DATA)  # L = 1: header h carries block h − 1's results
    assert client.results_lag == 1 and client.results_header_height(HEIGHTS - 1) == HEIGHTS
    a = node.state(HEIGHTS, account_key(0))
    client.verify_state(CHAIN_DATA.headers[HEIGHTS], account_key(0), a["value"], a["proof"], version=HEIGHTS - 1)
    with pytest.raises(InvalidProof, match="does not commit the state after block"):
        client.verify_state(CHAIN_DATA.headers[HEIGHTS], account_key(0), a["value"], a["proof"], version=HEIGHTS)
    r = node.receipt(HEIGHTS - 1, 0)
    client.verify_receipt(CHAIN_DATA.headers[HEIGHTS], r["receipt"], r["index"], r["size"], r["proof"],
                          block_height=HEIGHTS - 1)
    with pytest.raises(InvalidProof, match="does not carry the receipts of block"):
        client.verify_receipt(CHAIN_DATA.headers[HEIGHTS], r["receipt"], r["index"], r["size"], r["proof"],
                              block_height=HEIGHTS - 2)


def test_a_client_with_another_results_lag_refuses_the_pairing_and_bad_lags_are_malformed():
    lagged = LightClient.from_genesis(CHAIN, OLD_SET, 0, results_lag=3)
    assert lagged.results_lag == 3 and lagged.results_header_height(5) == 8 and lagged.results_header_height(0) == 3
    client = client_at(HEIGHTS)
    node = Node(CHAIN_DATA)
    a = node.state(HEIGHTS, account_key(0))
    relagged = LightClient(client.trusted, client.options, results_lag=3)
    relagged._stored = dict(client._stored)  # the same verified headers, another L
    with pytest.raises(InvalidProof):
        relagged.verify_state(CHAIN_DATA.headers[HEIGHTS], account_key(0), a["value"], a["proof"],
                              version=HEIGHTS - 1)
    relagged.verify_state(CHAIN_DATA.headers[HEIGHTS], account_key(0), a["value"], a["proof"])  # root check alone
    for bad in (0, -1, True, "3", 65):
        with pytest.raises(MalformedInput):
            LightClient.from_genesis(CHAIN, OLD_SET, 0, results_lag=bad)
