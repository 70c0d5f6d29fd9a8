"""Consensus errors: one root, `ConsensusError`.

Bad input from a peer is never raised out of `Replica.handle`: it is dropped
and counted in `Replica.dropped`. What is raised is either a driver bug
(`InputError`: the driver fed something impossible, e.g. BlockExecuted for a
height that was never committed) or a broken internal invariant
(`InvariantViolation`: halt the node loudly, as tendermint does).
"""


class ConsensusError(Exception):
    """Root of every error raised by `consensus/`."""


class InputError(ConsensusError):
    """The driver fed the replica an input that breaks the driver contract."""


class InvariantViolation(ConsensusError):
    """An internal invariant broke (e.g. our executed state disagrees with a
    certified header): the node must halt rather than run on."""


class MessageError(ConsensusError):
    """A peer message is malformed, badly signed or not acceptable (internal:
    caught inside `handle` and counted, never raised out of it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
