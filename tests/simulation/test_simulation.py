"""Seeded cluster runs: CI seeds with all faults, named scenarios, and proof the simulator can fail."""

from __future__ import annotations

import pytest

from tests.simulation.sim import Simulation, run_seed


def _assert_clean(result) -> None:  # type: ignore[no-untyped-def]
    assert result.violations == [], "seed %d failed: %s" % (result.seed, result.violations)


@pytest.mark.slow
def test_120_seeds_n4_with_all_faults_keep_every_invariant() -> None:
    for seed in range(120):
        _assert_clean(run_seed(seed, validators=4, heights=8, faults="all"))


@pytest.mark.slow
def test_80_seeds_n7_with_all_faults_keep_every_invariant() -> None:
    for seed in range(1000, 1080):
        _assert_clean(run_seed(seed, validators=7, heights=8, faults="all"))


def test_a_seed_replays_byte_for_byte() -> None:
    first = run_seed(42, validators=4, heights=6, faults="all")
    second = run_seed(42, validators=4, heights=6, faults="all")
    assert first.trace_hash == second.trace_hash and first.messages == second.messages
    assert run_seed(43, validators=4, heights=6, faults="all").trace_hash != first.trace_hash


def test_weakening_the_quorum_to_f_plus_1_is_caught_within_100_seeds() -> None:
    # Proof that the simulator can fail: with f+1 quorums, two blocks get certified at one height.
    for seed in range(100):
        if run_seed(seed, validators=4, heights=10, faults="all", quorum_override=2).violations:
            return
    pytest.fail("an f+1 quorum survived 100 seeds: the simulator cannot see safety bugs")


def test_n4f1_primary_crash() -> None:
    for seed in range(5):
        sim = Simulation(seed, validators=4, heights=10, faults="crash", scenario="primary-crash")
        result = sim.run()
        _assert_clean(result)
        assert any(n.replica.view > 0 for n in sim.nodes if n.alive and n.replica)


def test_n4_twin_primary() -> None:
    for seed in range(10):
        _assert_clean(Simulation(seed, validators=4, heights=10, faults="byzantine", scenario="twin-primary").run())


def test_n7_partition_heal() -> None:
    for seed in range(5):
        _assert_clean(run_seed(seed, validators=7, heights=10, faults="network"))


def test_restart_all() -> None:
    for seed in range(5):
        sim = Simulation(seed, validators=4, heights=12, faults="crash", scenario="restart-all")
        _assert_clean(sim.run())


def test_garbage_and_replayed_messages_are_dropped_and_counted() -> None:
    sim = Simulation(7, validators=4, heights=8, faults="byzantine")
    _assert_clean(sim.run())
    dropped = sum(sum(n.replica.dropped.values()) for n in sim.nodes if n.replica)
    assert dropped > 0
