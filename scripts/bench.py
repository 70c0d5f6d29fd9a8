"""Throughput benchmark, reported against this machine's signature-verification limit.

    python scripts/bench.py --validators N --duration S

Starts a localnet of N validators, measures single-thread PyNaCl ed25519
verifications per second in the same run, runs `scripts/loadgen.py` at the
maximum rate as a separate process, and ends with exactly one line:

    validators=… committed_tx_per_s=… verify_limit_tx_per_s=… ratio=… p50_ms=… p99_ms=…

verify_limit = cores × verifications/s ÷ validators: every validator on this
machine verifies every transaction once, so no cluster on it can commit
faster. ratio = committed ÷ limit (1.0 would mean verification is the only cost).

On a shared machine the line before it reports the validators' own CPU time
per committed tx (from /proc) and `cpu_bound_tx_per_s` = cores ÷ that: what
the cluster would commit with every core to itself; `cpu_bound_ratio` is that
against the same limit (both ≈ ratio on an idle machine).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

from localnet import start_cluster  # noqa: E402

SUMMARY = re.compile(r"^submitted=(\d+) committed=(\d+) rejected=(\d+) tx_per_s=([\d.]+) "
                     r"p50_ms=([\d.]+) p99_ms=([\d.]+)$")


def verifications_per_second(seconds: float = 1.0) -> float:
    """Single-thread ed25519 verifications per second through PyNaCl (as nodes verify)."""
    return _measure_verifications(seconds)[0]


def _measure_verifications(seconds: float = 1.0) -> tuple[float, float]:
    """(verifications per wall-clock second, CPU seconds per verification) on one thread."""
    import nacl.signing

    key = nacl.signing.SigningKey(bytes(range(32)))
    message = b"careledger/tx/v1\x00bench\x00" + bytes(200)
    signature = key.sign(message).signature
    verify_key = key.verify_key
    count = 0
    start = time.perf_counter()
    cpu_start = time.thread_time()
    while True:
        for _ in range(200):
            verify_key.verify(message, signature)
        count += 200
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed, (time.thread_time() - cpu_start) / count


def cpu_seconds(pids: list[int]) -> float | None:
    """User + system CPU seconds used so far by processes `pids` (Linux /proc), or None."""
    total = 0
    try:
        tick = os.sysconf("SC_CLK_TCK")
        for pid in pids:
            with open("/proc/%d/stat" % pid) as handle:
                fields = handle.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    except (OSError, ValueError, IndexError):
        return None
    return total / tick


def run_loadgen(nodes: list[str], accounts_dir: str, duration: float, max_txs: int) -> re.Match[str]:
    """Run loadgen as its own process; return its parsed summary line. Raises RuntimeError."""
    command = [sys.executable, os.path.join(ROOT, "scripts", "loadgen.py"), "--nodes", ",".join(nodes),
               "--rate", "0", "--duration", str(duration), "--accounts", accounts_dir,
               "--max-txs", str(max_txs)]
    result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = result.stdout.strip().splitlines()
    match = SUMMARY.match(lines[-1]) if lines else None
    if result.returncode != 0 or match is None:
        raise RuntimeError("loadgen failed (%d): %s" % (result.returncode, result.stdout))
    return match


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--accounts-per-org", type=int, default=16,
                        help="Client accounts per organisation (3 organisations); each keeps at most "
                             "loadgen's --window txs uncommitted, so this bounds the offered load.")
    parser.add_argument("--max-txs", type=int, default=30_000)
    parser.add_argument("--pipeline", type=int, default=1, metavar="W",
                        help="Pipelined chain: genesis results_lag = max_in_flight = W (default 1).")
    args = parser.parse_args(argv)

    verify_per_s, verify_cpu_s = _measure_verifications()
    cores = os.cpu_count() or 1
    limit = cores * verify_per_s / args.validators
    with start_cluster(validators=args.validators, accounts_per_org=args.accounts_per_org,
                       pipeline=args.pipeline) as cluster:
        pids = [n.pid for n in cluster.validators if n.pid is not None]
        cpu_before = cpu_seconds(pids)
        match = run_loadgen([n.rpc for n in cluster.validators], cluster.accounts_dir, args.duration,
                            args.max_txs)
        cpu_after = cpu_seconds(pids)
    committed_per_s = float(match.group(4))
    committed = int(match.group(2))
    if cpu_before is not None and cpu_after is not None and committed:
        # The machine may be shared: the nodes' own CPU time per committed tx does
        # not depend on how much CPU other processes took meanwhile.
        # Both sides in CPU time: (cores / per_tx_s) / (cores / verify_cpu_s / validators).
        per_tx_s = (cpu_after - cpu_before) / committed
        cpu_limit = cores / verify_cpu_s / args.validators
        print("node_cpu_us_per_tx=%.0f (sum over %d validators) verify_cpu_us=%.1f cpu_bound_tx_per_s=%.1f "
              "cpu_verify_limit_tx_per_s=%.1f cpu_bound_ratio=%.4f load_avg=%s" % (
                  per_tx_s * 1e6, args.validators, verify_cpu_s * 1e6, cores / per_tx_s, cpu_limit,
                  (cores / per_tx_s) / cpu_limit, " ".join(open("/proc/loadavg").read().split()[:3])),
              flush=True)
    print("validators=%d committed_tx_per_s=%.1f verify_limit_tx_per_s=%.1f ratio=%.4f p50_ms=%s p99_ms=%s" % (
        args.validators, committed_per_s, limit, committed_per_s / limit, match.group(5), match.group(6))
        + ("" if args.pipeline == 1 else " pipeline=%d" % args.pipeline), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
