"""The execution engine's rules for every transaction: chain, account, nonce,
permission, rollback of failed handlers, deterministic receipts."""

import pytest

from ledger import codec
from ledger.errors import EncodeError
from ledger.types import Tx

from contracts import accounts, transfer
from contracts.engine import BlockContext, Receipt, apply_block
from contracts.state import StateView

CHAIN = "careledger-test"
ALICE, BOB, CAROL = (bytes([i]) * 32 for i in (1, 2, 3))


def genesis() -> dict[bytes, bytes | None]:
    state = StateView(lambda k: None)
    accounts.put_account(state, ALICE, "payer-a", "payer")
    accounts.put_account(state, BOB, "clinic", "provider")
    accounts.put_account(state, CAROL, "board", "regulator")
    state.put(transfer.balance_key(ALICE), 1_000)
    return state.writes()


def run(txs, base=None):
    base = genesis() if base is None else base
    return apply_block(base.get, BlockContext(CHAIN, 1, 0), txs)


def tx(sender, nonce, tx_type="transfer", body=None, chain=CHAIN):
    body = {"to": BOB, "amount": 10} if body is None else body
    return Tx(chain, sender, nonce, tx_type, body, bytes(64))


def test_a_valid_transfer_moves_cents_and_emits_an_event():
    result = run([tx(ALICE, 1)])
    assert [r.code for r in result.receipts] == ["ok"]
    assert codec.decode(result.writes[transfer.balance_key(BOB)]) == 10
    assert result.receipts[0].events[0]["type"] == "transfer"


@pytest.mark.parametrize(
    "bad, code",
    [
        (tx(ALICE, 2), "bad_nonce"),
        (tx(ALICE, 0), "bad_nonce"),
        (tx(bytes(32), 1), "unknown_account"),
        (tx(ALICE, 1, chain="other-chain"), "wrong_chain"),
    ],
)
def test_a_transaction_refused_before_its_handler_writes_nothing(bad, code):
    result = run([bad])
    assert result.receipts[0].code == code and not result.receipts[0].ok
    assert result.writes == {}


@pytest.mark.parametrize(
    "bad, code",
    [
        (tx(ALICE, 1, "no_such_type"), "unknown_tx_type"),
        (tx(CAROL, 1), "not_permitted"),  # a regulator may not transfer
        (tx(ALICE, 1, body={"to": BOB, "amount": 5_000}), "insufficient_funds"),
        (tx(ALICE, 1, body={"to": BOB, "amount": -1}), "invalid_value"),
    ],
)
def test_a_failed_handler_is_rolled_back_but_consumes_the_nonce(bad, code):
    result = run([bad])
    assert result.receipts[0].code == code
    assert set(result.writes) == {b"nonce/" + bad.sender.hex().encode()}


def test_a_replayed_transaction_fails_with_bad_nonce():
    first = tx(ALICE, 1)
    result = run([first, first])
    assert [r.code for r in result.receipts] == ["ok", "bad_nonce"]
    assert codec.decode(result.writes[transfer.balance_key(BOB)]) == 10


def test_a_failed_transaction_does_not_disturb_the_next_ones_events():
    result = run([tx(ALICE, 1, body={"to": BOB, "amount": 5_000}), tx(ALICE, 2)])
    assert [r.code for r in result.receipts] == ["insufficient_funds", "ok"]
    assert [e["type"] for e in result.receipts[1].events] == ["transfer"]


def test_the_same_block_on_two_fresh_states_gives_identical_results():
    txs = [tx(ALICE, 1), tx(ALICE, 2, body={"to": CAROL, "amount": 3}), tx(BOB, 1, body={"to": ALICE, "amount": 99})]
    first, second = run(txs), run(txs)
    assert first.writes == second.writes
    assert first.receipts_root == second.receipts_root
    assert list(first.writes) == sorted(first.writes)


def test_a_rollback_past_events_already_taken_is_refused():
    state = StateView(lambda k: None)
    mark = state.snapshot()
    state.emit("something")
    state.take_events()
    with pytest.raises(RuntimeError):
        state.rollback(mark)


def test_the_permission_table_lists_every_registered_type_with_its_roles():
    from contracts.engine import REGISTRY
    from contracts import modules  # noqa: F401

    table = REGISTRY.permission_table()
    assert table["transfer"] == ["auditor", "patient_agent", "payer", "provider"]
    assert all(roles and set(roles) <= accounts.ROLES for roles in table.values())
    assert len(table) > 50


_EVENT = {"type": "transfer", "sender": ALICE, "to": BOB, "amount": 10}  # keys not in canonical order


@pytest.mark.parametrize(
    "receipt",
    [
        Receipt(bytes(32), True, "ok", "", (_EVENT,)),
        Receipt(bytes(32), True, "ok", "", ()),
        Receipt(bytes(32), False, "insufficient_funds", "balance 3 < 10", ()),
        Receipt(bytes(32), False, "invalid_value", "ünïcode ☃ message", ()),
        Receipt(b"short", True, "ok", "", ({"nested": {"b": [1, b"x"], "a": None}, "n": -2**63},)),
        Receipt(bytes(32), True, "ok", "a message", (_EVENT,)),
        Receipt(bytes(32), False, "ok", "", (_EVENT, _EVENT)),
        *(Receipt(bytes(32), True, "ok", "", tuple({"i": i} for i in range(n))) for n in (15, 16, 17, 70_000)),
    ],
    ids=lambda receipt: "%d events, %s" % (len(receipt.events), receipt.code),
)
def test_a_receipt_encodes_exactly_as_the_canonical_encoding_of_its_wire(receipt):
    assert receipt.encode() == codec.encode(receipt.to_wire())
    assert Receipt.from_wire(codec.decode(receipt.encode())) == receipt


def test_a_receipt_that_codec_refuses_is_refused_with_codecs_error():
    for receipt in (Receipt(bytes(32), False, "bad", "\ud800", ()),  # not UTF-8
                    Receipt(bytes(32), True, "ok", "", ({"amount": 2**64},)),  # out of range
                    Receipt(bytes(32), True, "ok", "", tuple({"b": bytes(200_000)} for _ in range(21)))):  # > 4 MiB
        with pytest.raises(EncodeError):
            receipt.encode()
        with pytest.raises(EncodeError):
            codec.encode(receipt.to_wire())


def test_the_receipts_of_a_block_encode_as_codec_encodes_them():
    result = run([tx(ALICE, 1), tx(ALICE, 1), tx(CAROL, 1), tx(ALICE, 2, body={"to": BOB, "amount": 5_000})])
    assert [r.code for r in result.receipts] == ["ok", "bad_nonce", "not_permitted", "insufficient_funds"]
    assert [r.encode() for r in result.receipts] == [codec.encode(r.to_wire()) for r in result.receipts]
