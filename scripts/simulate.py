#!/usr/bin/env python3
"""Run the deterministic PBFT cluster simulator over a range of seeds.

    scripts/simulate.py --seed-start 0 --seeds 200 --validators 4 --heights 20 --faults all
    scripts/simulate.py --seeds 200 --faults all --pipeline 3   # W = L = 3 heights in flight

Failing seeds are printed (replay one with `--seed-start S --seeds 1`); speed
figures go to stderr; the last stdout line is exactly
`seeds=… heights=… messages=… faults=… checks=… violations=…`.
Exits 1 if any invariant was violated.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.simulation.sim import FAULT_MODES, SCENARIOS, run_seed  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed-start", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--validators", type=int, choices=(4, 7, 10), default=4)
    parser.add_argument("--heights", type=int, default=20)
    parser.add_argument("--faults", choices=FAULT_MODES, default="all")
    parser.add_argument("--scenario", choices=SCENARIOS, default=None,
                        help="a named scenario (e.g. validator-change: a follower joins, then leaves)")
    parser.add_argument("--pipeline", type=int, default=1, metavar="W",
                        help="heights in flight W, with results lag L = W (1: unpipelined)")
    parser.add_argument("--weaken-quorum", action="store_true",
                        help="self-test: use an f+1 quorum; the simulator must report violations")
    args = parser.parse_args(argv)
    f = (args.validators - 1) // 3
    totals = {"heights": 0, "messages": 0, "faults": 0, "checks": 0, "violations": 0}
    events = virtual_ms = prepared_ahead = 0
    longest = 0
    started = time.perf_counter()
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        result = run_seed(seed, validators=args.validators, heights=args.heights, faults=args.faults,
                          quorum_override=f + 1 if args.weaken_quorum else None, scenario=args.scenario,
                          pipeline=args.pipeline)
        totals["heights"] += result.heights
        totals["messages"] += result.messages
        totals["faults"] += result.faults
        totals["checks"] += result.checks
        totals["violations"] += len(result.violations)
        events += result.events
        virtual_ms += result.virtual_ms
        longest = max(longest, result.longest_view_change_ms)
        prepared_ahead += result.prepared_ahead
        if result.violations:
            print("FAIL seed=%d validators=%d faults=%s trace=%s: %s" % (
                seed, args.validators, args.faults, result.trace_hash[:16], "; ".join(result.violations[:3])),
                flush=True)
    wall = max(time.perf_counter() - started, 1e-9)
    print("speed: events=%d wall=%.1fs events_per_s=%.0f virtual_s_per_wall_s=%.1f longest_view_change_ms=%d"
          " prepared_ahead=%d" % (events, wall, events / wall, virtual_ms / 1000 / wall, longest, prepared_ahead),
          file=sys.stderr)
    print("seeds=%d heights=%d messages=%d faults=%d checks=%d violations=%d" % (
        args.seeds, totals["heights"], totals["messages"], totals["faults"], totals["checks"], totals["violations"]))
    return 1 if totals["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
