"""PBFT consensus as a sans-I/O state machine (no trio, sockets, clocks or randomness).

Public API (stable; add, don't rename):

    from consensus.config import ConsensusConfig
    from consensus.replica import Replica
    from consensus.persist import PersistedState, ChainTip
    from consensus.inputs import MessageReceived, TimeoutFired, TransactionsVerified, BlockExecuted, BlocksFetched
    from consensus.effects import Broadcast, Send, Persist, Commit, ScheduleTimeout, Evidence, FetchBlocks

    replica = Replica(config, private_key, restored=PersistedState.decode(saved) or None,
                      last_commit=ChainTip(...) or None)
    effects = replica.start(now_ms)            # once, after construction
    effects = replica.handle(input, now_ms)    # for every input; perform effects in order

Driver contract:
- Perform effects in list order; `Persist` must be fsync'd before anything after it.
- `Commit(block, certificate)`: store both, execute the block, feed back
  `BlockExecuted(height, app_hash, receipts_root, validator_update=None)`.
- `ScheduleTimeout(delay_ms, timeout)`: deliver `timeout` later; never cancel.
- `FetchBlocks(peer, a, b)`: ask peer for certified blocks a..b; feed back `BlocksFetched`.
- `Evidence(...)`: keep and expose (RPC, metric `consensus_byzantine_validators`).
- Counters for metrics: `replica.dropped[reason]`, `replica.counters[name]`, `replica.status()`.
- Header rule: header h carries the results of executing h−1; history_root is
  `ledger.merkle.root_from_hashes(block hashes 1..h−1)` (block hashes are leaf hashes).

See `consensus.replica` for the protocol rules (and why one height is voted at a time)
and `consensus.messages` for the wire format and what each signature covers.
"""
