"""The double-sign guard's slot files: one fdatasync per write, and a torn or
corrupt newest record never loses the previous one (so a restart never signs
a message conflicting with one that left the node)."""

from __future__ import annotations

import json
import os

import pytest

from consensus.effects import Broadcast, Persist
from consensus.errors import ConsensusError
from consensus.inputs import MessageReceived
from consensus.messages import CommitVote, Prepare, decode_message
from consensus.persist import PersistedState
from consensus.replica import Replica
from node.driver import (
    GUARD_FORMAT, GUARD_HEADER, GuardFile, decode_guard_record, encode_guard_record, guard_slot_paths, load_guard_state,
    save_guard_state,
)
from tests.consensus.helpers import KEYS, block, config, prepare, proposal, replica


def test_the_newest_record_wins_and_writes_alternate_between_the_slots(tmp_path) -> None:
    path = str(tmp_path / "priv_validator_state.json")
    guard = GuardFile(path)
    for view in range(1, 6):
        guard.save(PersistedState(view=view).encode())
        assert load_guard_state(path).view == view
    sequences = [decode_guard_record(open(slot, "rb").read())[0] for slot in guard_slot_paths(path)]
    assert sorted(sequences) == [4, 5]  # slot files hold the last two writes
    assert all(oct(os.stat(slot).st_mode & 0o777) == "0o600" for slot in guard_slot_paths(path))
    # a new writer (a restarted node) continues after the newest record
    GuardFile(path).save(PersistedState(view=9).encode())
    assert load_guard_state(path).view == 9


def test_a_record_shorter_than_the_stale_bytes_after_it_loads_exactly(tmp_path) -> None:
    path = str(tmp_path / "g.json")
    guard = GuardFile(path)
    guard.save(b"x" * 5000)
    guard.save(b"y" * 5000)
    guard.save(b"z" * 10)  # overwrites the 5000-byte record of the same slot, no truncation
    assert GuardFile(path).load_bytes() == b"z" * 10


@pytest.mark.parametrize("damage", ["truncated", "empty", "bit-flip", "stale-header"])
def test_a_torn_or_corrupt_newest_slot_falls_back_to_the_older_one(tmp_path, damage) -> None:
    path = str(tmp_path / "priv_validator_state.json")
    guard = GuardFile(path)
    guard.save(PersistedState(view=1).encode())
    guard.save(PersistedState(view=2).encode())
    newest = guard.slots[guard._newest_slot]
    raw = open(newest, "rb").read()
    if damage == "truncated":
        raw = raw[:len(raw) - 3]
    elif damage == "empty":
        raw = b""
    elif damage == "bit-flip":
        raw = raw[:-1] + bytes([raw[-1] ^ 1])
    else:  # the new header landed, the payload bytes are still an older write's
        older = PersistedState(view=1).encode()
        assert len(older) == len(raw) - GUARD_HEADER.size
        raw = raw[:GUARD_HEADER.size] + older
    with open(newest, "wb") as handle:
        handle.write(raw)
    assert load_guard_state(path).view == 1
    # the next write replaces the damaged slot, never the surviving one
    GuardFile(path).save(PersistedState(view=3).encode())
    assert load_guard_state(path).view == 3
    assert decode_guard_record(open(newest, "rb").read())[0] == 2  # older survivor was seq 1


def test_no_valid_record_in_either_slot_refuses_to_load(tmp_path) -> None:
    path = str(tmp_path / "guard.json")
    save_guard_state(path, PersistedState(view=3).encode())
    for slot in guard_slot_paths(path):
        with open(slot, "wb") as handle:
            handle.write(b"\x00garbage")
    with pytest.raises(ConsensusError):
        load_guard_state(path)
    with pytest.raises(ConsensusError):
        GuardFile(path).save(PersistedState(view=4).encode())
    assert load_guard_state(str(tmp_path / "missing.json")) is None


def test_a_v1_json_guard_file_is_migrated_into_the_slots(tmp_path) -> None:
    path = str(tmp_path / "priv_validator_state.json")
    with open(path, "w") as handle:
        json.dump({"format": GUARD_FORMAT, "state": PersistedState(view=5).encode().hex()}, handle)
    assert load_guard_state(path).view == 5
    GuardFile(path).save(PersistedState(view=6).encode())
    assert load_guard_state(path).view == 6
    assert not os.path.exists(path)  # migrated: no stale v1 file left to mislead
    other = str(tmp_path / "other.json")  # a corrupt v1 file (no slots yet) refuses to start
    with open(other, "w") as handle:
        handle.write("{not json")
    with pytest.raises(ConsensusError):
        load_guard_state(other)


def _signed_votes(effects) -> list:  # type: ignore[no-untyped-def]
    return [m for m in (decode_message(e.data) for e in effects if isinstance(e, Broadcast))
            if isinstance(m, (Prepare, CommitVote))]


def test_a_restart_after_any_write_point_never_signs_a_conflicting_vote(tmp_path) -> None:
    """Drive a backup through PREPARE and COMMIT at height 1, writing each Persist
    as the driver does (before the messages after it leave). Crash at every point:
    after each complete write, and inside each write (torn at several offsets).
    The restarted replica, offered a conflicting block for the same slot, must
    sign nothing that conflicts with a vote that had already left."""
    a, b = block(time=5), block(time=6)
    inputs = [(0, proposal(a)), (2, prepare(a, 2))]
    # the record of writes and departures: ("write", state) / ("sent", vote)
    script: list[tuple[str, object]] = []
    r = replica(1)
    for now, (sender, data) in enumerate(inputs, start=10):
        effects = r.handle(MessageReceived(KEYS[sender].public_key, data), now)
        for effect in effects:
            if isinstance(effect, Persist):
                script.append(("write", effect.state))
            elif isinstance(effect, Broadcast):
                script.extend(("sent", vote) for vote in _signed_votes([effect]))
    assert [kind for kind, _ in script].count("write") >= 2
    assert {type(v) for kind, v in script if kind == "sent"} == {Prepare, CommitVote}

    crash_points = []
    for cut in range(len(script) + 1):
        crash_points.append((cut, None))
        if cut < len(script) and script[cut][0] == "write":
            for offset in (0, 1, 20, 52, 53, 200, -1):
                crash_points.append((cut, offset))
    for number, (cut, torn_at) in enumerate(crash_points):
        path = str(tmp_path / ("guard-%d.json" % number))
        guard = GuardFile(path)
        left = []
        for kind, item in script[:cut]:
            if kind == "write":
                guard.save(item)
            else:
                left.append(item)
        if torn_at is not None:  # the crash tears the next write in the slot it targets
            guard_state = script[cut][1]
            if guard._sequence is None:
                guard._open()
            record = encode_guard_record(guard._sequence + 1, guard_state)
            slot = guard.slots[1 - guard._newest_slot]
            with open(slot, "r+b") as handle:
                handle.write(record[:torn_at if torn_at >= 0 else len(record) - 1])
        restored = load_guard_state(path)
        restarted = Replica(config(), KEYS[1], restored=restored)
        restarted.start(100)
        signed = []
        for now, data in enumerate([proposal(b), prepare(b, 2), prepare(b, 3)], start=110):
            effects = restarted.handle(MessageReceived(KEYS[0].public_key if now == 110 else
                                                       KEYS[2 if now == 111 else 3].public_key, data), now)
            signed.extend(_signed_votes(effects))
        for vote in left:
            conflicting = [s for s in signed if type(s) is type(vote) and s.view == vote.view
                           and s.height == vote.height and s.block_hash != vote.block_hash]
            assert conflicting == [], (cut, torn_at, vote)
