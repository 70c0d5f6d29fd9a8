"""Run a local CareLedger network: one OS process per node, all on 127.0.0.1.

    python scripts/localnet.py --validators 4 [--observers 1] [--dir DIR] [--json]

Writes a testnet with `careledger testnet` (into a fresh temp dir unless
--dir), starts `python -m node.cli start|observe --home …` per node (logs in
`<home>/node.log`), waits (bounded) until every `/health` answers 200, prints
the cluster — with --json exactly one line
`{"dir", "nodes": [{"name", "role", "rpc", "metrics", "pid", "home"}]}` —
and runs until SIGINT/SIGTERM, then stops every child: SIGTERM, then SIGKILL
after a grace period.

Integration tests import `start_cluster` (a context manager) and drive the
`NodeProcess` handles: `kill()` (SIGKILL), `terminate()`, `restart()`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from node.config import load_config  # noqa: E402

HEALTH_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0
PORTS_PER_NODE = 10  # matches `careledger testnet`: P+10i (p2p), +1 (rpc), +2 (metrics)
LOG_NAME = "node.log"


class ClusterError(RuntimeError):
    """A node did not start or become healthy in time (message carries its log tail)."""


@dataclass
class NodeProcess:
    """One node's process and addresses; `restart()` reuses its home (its data survives)."""

    name: str
    role: str
    home: str
    rpc: str
    metrics: str
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    @property
    def log_path(self) -> str:
        return os.path.join(self.home, LOG_NAME)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        if self.is_running():
            raise ClusterError("%s is already running" % self.name)
        command = "start" if self.role == "validator" else "observe"
        env = dict(os.environ)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "node.cli", command, "--home", self.home],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT, env=env,
                start_new_session=True,  # a Ctrl-C on the terminal reaches us, not every child
            )

    def kill(self) -> None:
        """SIGKILL (the crash test's kill -9) and reap."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def terminate(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM, then SIGKILL after `grace_s`; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def restart(self) -> None:
        self.terminate()
        self.restarts += 1
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        try:
            with open(self.log_path, "rb") as handle:
                return b"\n".join(handle.read().splitlines()[-lines:]).decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "rpc": self.rpc, "metrics": self.metrics,
                "pid": self.pid, "home": self.home}


@dataclass
class Cluster:
    dir: str
    nodes: list[NodeProcess] = field(default_factory=list)

    @property
    def validators(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.role == "validator"]

    @property
    def observers(self) -> list[NodeProcess]:
        return [n for n in self.nodes if n.role == "observer"]

    @property
    def accounts_dir(self) -> str:
        return os.path.join(self.dir, "accounts")

    def node(self, name: str) -> NodeProcess:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def describe(self) -> dict[str, Any]:
        return {"dir": self.dir, "nodes": [n.describe() for n in self.nodes]}


def _ports_free(ports: list[int]) -> bool:
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def find_starting_port(nodes: int, low: int = 20000, high: int = 32000) -> int:
    """A base port P such that every port of `nodes` nodes (P+10i+{0,1,2}) is free now.

    The range stays below Linux's ephemeral ports (32768+), so a restarted node
    never finds its listen port taken by some outgoing connection."""
    import random

    rng = random.Random(os.getpid() ^ int(time.time()))
    for _ in range(200):
        base = rng.randrange(low, high - PORTS_PER_NODE * nodes)
        if _ports_free([base + PORTS_PER_NODE * i + k for i in range(nodes) for k in range(3)]):
            return base
    raise ClusterError("no free port range found")


def create_testnet(directory: str, validators: int, observers: int = 0, starting_port: int | None = None,
                   chain_id: str | None = None, accounts_per_org: int = 1, organisations: int = 3,
                   pipeline: int = 1) -> None:
    """Run `careledger testnet` into `directory` (a subprocess, as an operator would)."""
    if starting_port is None:
        starting_port = find_starting_port(validators + observers)
    command = [sys.executable, "-m", "node.cli", "testnet", "--v", str(validators), "--observers",
               str(observers), "--o", directory, "--starting-port", str(starting_port),
               "--organisations", str(organisations), "--accounts-per-org", str(accounts_per_org)]
    if chain_id:
        command += ["--chain-id", chain_id]
    if pipeline != 1:
        command += ["--pipeline", str(pipeline)]
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise ClusterError("careledger testnet failed: %s" % (result.stderr or result.stdout))


def load_cluster(directory: str) -> Cluster:
    """The node handles (not yet started) of a testnet directory, validators first."""
    directory = os.path.abspath(directory)
    names = sorted((n for n in os.listdir(directory)
                    if os.path.exists(os.path.join(directory, n, "config", "config.toml"))),
                   key=lambda n: (not n.startswith("node"), int("".join(c for c in n if c.isdigit()) or 0)))
    nodes = []
    for name in names:
        config = load_config(os.path.join(directory, name))
        host = config.rpc.listen_host
        nodes.append(NodeProcess(
            name=name, role=config.role, home=config.home,
            rpc="http://%s:%d" % (host, config.rpc.listen_port),
            metrics="http://%s:%d/metrics" % (config.instrumentation.prometheus_listen_host,
                                              config.instrumentation.prometheus_port)))
    return Cluster(directory, nodes)


def wait_healthy(nodes: list[NodeProcess], timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Return once every node's /health answers 200. Raises ClusterError on a
    node that exits or after `timeout_s` (with the laggards' log tails)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    pending = list(nodes)
    with httpx.Client(timeout=2.0) as client:
        while pending:
            for node in list(pending):
                if not node.is_running():
                    raise ClusterError("%s exited with %s:\n%s" % (
                        node.name, node.process.returncode if node.process else None, node.log_tail()))
                try:
                    if client.get(node.rpc + "/health").status_code == 200:
                        pending.remove(node)
                except httpx.HTTPError:
                    pass
            if not pending:
                return
            if time.monotonic() > deadline:
                raise ClusterError("not healthy after %.0f s: %s\n%s" % (
                    timeout_s, ", ".join(n.name for n in pending),
                    "\n".join("--- %s\n%s" % (n.name, n.log_tail()) for n in pending)))
            time.sleep(0.1)


def stop_cluster(cluster: Cluster, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM every running node at once, then SIGKILL whatever outlives `grace_s`."""
    running = [n for n in cluster.nodes if n.is_running()]
    for node in running:
        assert node.process is not None
        node.process.terminate()
    deadline = time.monotonic() + grace_s
    for node in running:
        assert node.process is not None
        try:
            node.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            node.process.kill()
            node.process.wait()


@contextlib.contextmanager
def start_cluster(validators: int = 4, observers: int = 0, directory: str | None = None,
                  starting_port: int | None = None, chain_id: str | None = None,
                  accounts_per_org: int = 1, health_timeout_s: float = HEALTH_TIMEOUT_S,
                  pipeline: int = 1) -> Iterator[Cluster]:
    """Create a testnet (unless `directory` already holds one), start every
    node, wait until healthy, yield the `Cluster`, and always stop it."""
    made_temp = directory is None
    directory = os.path.abspath(directory or tempfile.mkdtemp(prefix="careledger-localnet-"))
    if not any(os.path.exists(os.path.join(directory, n, "config", "config.toml"))
               for n in (os.listdir(directory) if os.path.isdir(directory) else [])):
        create_testnet(directory, validators, observers, starting_port, chain_id, accounts_per_org,
                       pipeline=pipeline)
    cluster = load_cluster(directory)
    try:
        for node in cluster.nodes:
            node.start()
        wait_healthy(cluster.nodes, health_timeout_s)
        yield cluster
    finally:
        stop_cluster(cluster)
        if made_temp and os.environ.get("CARELEDGER_KEEP_LOCALNET") != "1":
            import shutil

            shutil.rmtree(directory, ignore_errors=True)


def _print_table(cluster: Cluster) -> None:
    print("localnet in %s" % cluster.dir)
    print("%-11s %-10s %-7s %-28s %s" % ("NAME", "ROLE", "PID", "RPC", "METRICS"))
    for node in cluster.nodes:
        print("%-11s %-10s %-7s %-28s %s" % (node.name, node.role, node.pid, node.rpc, node.metrics))
    print("Ctrl-C to stop.")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--observers", type=int, default=0)
    parser.add_argument("--dir", default=None, help="Testnet directory (default: a fresh temp dir, kept).")
    parser.add_argument("--starting-port", type=int, default=None)
    parser.add_argument("--chain-id", default=None)
    parser.add_argument("--accounts-per-org", type=int, default=1)
    parser.add_argument("--health-timeout", type=float, default=HEALTH_TIMEOUT_S)
    parser.add_argument("--json", action="store_true", help="Print one JSON line instead of a table.")
    parser.add_argument("--pipeline", type=int, default=1, metavar="W",
                        help="Pipelined chain: genesis results_lag = max_in_flight = W (default 1).")
    args = parser.parse_args(argv)

    stop = {"requested": False}

    def request_stop(signum: int, frame: Any) -> None:
        stop["requested"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    directory = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="careledger-localnet-"))
    os.environ["CARELEDGER_KEEP_LOCALNET"] = "1"  # an operator's net keeps its directory
    try:
        with start_cluster(args.validators, args.observers, directory, args.starting_port, args.chain_id,
                           args.accounts_per_org, args.health_timeout, pipeline=args.pipeline) as cluster:
            if args.json:
                print(json.dumps(cluster.describe()), flush=True)
            else:
                _print_table(cluster)
            reported: set[str] = set()
            while not stop["requested"]:
                time.sleep(0.2)
                for node in cluster.nodes:
                    if not node.is_running() and node.name not in reported:
                        reported.add(node.name)
                        print("warning: %s exited (see %s)" % (node.name, node.log_path), file=sys.stderr)
    except ClusterError as exc:
        print("error: %s" % exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
