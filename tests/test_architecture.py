"""The pure cores (ledger/, consensus/, contracts/) import no I/O, clocks,
threads or randomness, and contracts/ uses no floats: an AST walk."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PURE_PACKAGES = ("ledger", "consensus", "contracts")
FORBIDDEN = {"trio", "plyvel", "socket", "time", "random", "threading", "asyncio", "datetime", "node", "os", "subprocess"}


def _python_files(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, "package %s has no modules" % package
    return files


def _imported_roots(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno


@pytest.mark.parametrize("package", PURE_PACKAGES)
def test_pure_packages_import_no_io_clock_thread_or_randomness(package):
    offenders = []
    for path in _python_files(package):
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, line in _imported_roots(tree):
            if name in FORBIDDEN:
                offenders.append("%s:%d imports %s" % (path.relative_to(ROOT), line, name))
    assert offenders == []


def test_lower_layers_never_import_higher_ones():
    # ledger is the kernel: it may not import consensus or contracts.
    offenders = []
    for path in _python_files("ledger"):
        for name, line in _imported_roots(ast.parse(path.read_text())):
            if name in {"consensus", "contracts", "node"}:
                offenders.append("%s:%d imports %s" % (path.relative_to(ROOT), line, name))
    assert offenders == []


def test_contracts_compute_without_floats():
    offenders = []
    for path in _python_files("contracts"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, float):
                offenders.append("%s:%d float literal" % (path.relative_to(ROOT), node.lineno))
            if isinstance(node, ast.Name) and node.id in {"float", "round"}:
                offenders.append("%s:%d uses %s" % (path.relative_to(ROOT), node.lineno, node.id))
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow) and isinstance(node.right, ast.UnaryOp):
                offenders.append("%s:%d negative power" % (path.relative_to(ROOT), node.lineno))
    assert offenders == []


def test_the_architecture_check_detects_a_forbidden_import():
    tree = ast.parse("import time\nfrom trio import sleep\nfrom ledger import codec\n")
    assert [name for name, _ in _imported_roots(tree) if name in FORBIDDEN] == ["time", "trio"]
