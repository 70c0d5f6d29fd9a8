"""consensus/ is pure: no I/O, clocks, randomness or threads (an AST walk)."""

from __future__ import annotations

import ast
import pathlib

FORBIDDEN = {"trio", "plyvel", "socket", "time", "random", "threading", "asyncio", "datetime", "os", "secrets"}
ROOT = pathlib.Path(__file__).resolve().parents[2] / "consensus"


def test_consensus_imports_no_io_clock_or_randomness() -> None:
    offenders = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += ["%s: %s" % (path.name, n) for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
