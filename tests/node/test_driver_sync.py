"""The driver's effect order (guard fsync before any send) and sync's checks."""

import os

import trio

from consensus.effects import Broadcast, Persist, Send
from consensus.persist import PersistedState
from ledger.types import CommitCertificate
from node.driver import Driver, guard_slot_paths, load_guard_state, save_guard_state
from node.sync import BlockSync
from tests.node.chain_helpers import next_block, transfer


class FakeReplica:
    def __init__(self, effects):
        self.effects = effects
        self.committed = 0
        self.ahead_height = 0
        self.ahead_peer = None

    def start(self, now_ms):
        return list(self.effects)

    def handle(self, event, now_ms):
        return []


class RecordingP2P:
    def __init__(self, guard_path):
        self.guard_path = guard_path
        self.sent = []
        self.peers = {}

    def on(self, channel, handler):
        pass

    def peer_keys(self):
        return []

    def broadcast(self, channel, data, exclude=None):
        self.sent.append(("broadcast", data, load_guard_state(self.guard_path)))

    def send(self, key, channel, data):
        self.sent.append(("send", data, load_guard_state(self.guard_path)))
        return True


async def test_the_guard_state_is_on_disk_before_any_later_message_leaves(tmp_path):
    path = str(tmp_path / "priv_validator_state.json")
    state = PersistedState(view=7)
    p2p = RecordingP2P(path)
    replica = FakeReplica([Persist(state.encode()), Broadcast(b"vote"), Send(b"k" * 32, b"reply")])
    driver = Driver(replica, p2p, executor=None, sync=None, guard_path=path)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            nursery.cancel_scope.cancel()
    assert [kind for kind, _, _ in p2p.sent] == ["broadcast", "send"]
    assert all(saved == state for _, _, saved in p2p.sent)
    assert all(oct(os.stat(slot).st_mode & 0o777) == "0o600" for slot in guard_slot_paths(path))


def test_a_corrupt_guard_file_refuses_to_load(tmp_path):
    import pytest

    from consensus.errors import ConsensusError
    path = str(tmp_path / "guard.json")
    save_guard_state(path, PersistedState(view=3).encode())
    assert load_guard_state(path).view == 3
    for slot in guard_slot_paths(path):  # both slot files damaged: no valid record left
        with open(slot, "w") as handle:
            handle.write("{not json")
    with pytest.raises(ConsensusError):
        load_guard_state(path)
    assert load_guard_state(str(tmp_path / "missing.json")) is None


class NoP2P:
    def on(self, channel, handler):
        pass


def chain(length):
    blocks, prev = [], None
    for height in range(1, length + 1):
        block, cert = next_block(prev, height, [transfer(height)])
        blocks.append((block, cert))
        prev = block
    return blocks


def test_sync_keeps_the_valid_prefix_of_a_response():
    sync = BlockSync(NoP2P(), store=None)
    blocks = chain(4)
    wire = [[b.to_wire(), c.to_wire()] for b, c in blocks]
    assert [b.height for b, _ in sync._check(wire, 1)] == [1, 2, 3, 4]
    assert sync._check(wire, 2) == []  # does not start where we asked
    broken = wire[:2] + [wire[3]]  # a gap at height 3
    assert [b.height for b, _ in sync._check(broken, 1)] == [1, 2]
    wrong_cert = list(wire)
    wrong_cert[1] = [wire[1][0], CommitCertificate(2, 0, bytes(32), ()).to_wire()]
    assert [b.height for b, _ in sync._check(wrong_cert, 1)] == [1]
    tampered_txs = list(wire)
    tampered_txs[2] = [[wire[2][0][0], wire[1][0][1]], wire[2][1]]  # txs do not match tx_root
    assert [b.height for b, _ in sync._check(tampered_txs, 1)] == [1, 2]
    assert sync._check([b"garbage"], 1) == [] and sync.counters["bad_blocks"] == 5


async def test_block_executed_reaches_the_replica_only_after_the_block_is_written_and_guard_bytes_are_kept(tmp_path):
    """The replica drops its proposal records' block bytes up to the height a
    BlockExecuted reports (`Replica._strip_proposal_bytes`): the driver must
    hand it over only once the block's write returned (synced), and writes
    each Persist exactly as the replica encoded it."""
    from types import SimpleNamespace

    import trio.testing

    from consensus.effects import Commit
    from consensus.inputs import BlockExecuted
    from consensus.persist import SignedRecord

    (block, cert), = chain(1)
    written = []

    class Executor:
        height = 0

        def prepare(self, b, c):
            return SimpleNamespace(height=b.height, app_hash=b"a" * 32, receipts_root=b"r" * 32,
                                   validator_update=None), ("batch", b.height)

        def write(self, height, batch):
            written.append(height)
            self.height = height

        def finish(self, b, executed):
            pass

    class Replica(FakeReplica):
        def __init__(self, effects):
            super().__init__(effects)
            self.seen = []

        def handle(self, event, now_ms):
            self.seen.append((event, list(written)))
            return []

    path = str(tmp_path / "priv_validator_state.json")
    state = PersistedState(0, True, (SignedRecord("proposal", 0, 1, block.hash, b"block-1-bytes"),)).encode()
    replica = Replica([Persist(state), Broadcast(b"proposal"), Commit(block, cert)])
    driver = Driver(replica, RecordingP2P(path), executor=Executor(), sync=None, guard_path=path)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
    executed = [(event, before) for event, before in replica.seen if isinstance(event, BlockExecuted)]
    assert [(event.height, before) for event, before in executed] == [(1, [1])]
    from node.driver import GuardFile
    assert GuardFile(path).load_bytes() == state  # written as encoded, not re-packed
