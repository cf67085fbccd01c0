"""The package cut (issue 10): imports run one way. Shared code (rknnlink.v1: the protocol; rknnlink.runtime:
the runtime binding) imports neither side; the board package (rknnlink_server) imports only shared code; the
host modules never import the board package (a local simulated board is a `rknnlink serve` process)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SHARED = ("rknnlink.v1", "rknnlink.runtime")



def _imports(path: Path, package: str = ""):
    """Absolute module names imported by `path` (relative imports resolved against its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = package or _package_of(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module
            for alias in node.names:  # `from rknnlink import client` imports rknnlink.client
                yield f"{module}.{alias.name}"


def _package_of(path: Path) -> str:
    for top in ("host", "board_server"):
        root = ROOT / top
        if root in path.parents:
            rel = path.relative_to(root).with_suffix("").parts
            return ".".join(rel[:-1] if rel[-1] != "__init__" else rel[:-1])
    return ""


def _is(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _host_only(module: str) -> bool:
    return _is(module, "rknnlink") and module != "rknnlink" and not any(_is(module, s) for s in SHARED) \
        and module not in ("rknnlink.__version__", "rknnlink.PROTOCOL_VERSION")


def test_board_imports_only_shared_code():
    found = set()
    for path in sorted((ROOT / "board_server").rglob("*.py")):
        for module in _imports(path):
            if _host_only(module):
                found.add((str(path.relative_to(ROOT)), module))
    assert not found, sorted(found)


def test_host_modules_import_nothing_from_the_board_package():
    bad = []
    for path in sorted((ROOT / "host" / "rknnlink").rglob("*.py")):
        if path.name == "cli.py" and path.parent.name == "rknnlink":
            continue  # the `rknnlink` switchboard names subcommand modules (serve lives on the board side)
        bad += [(str(path.relative_to(ROOT)), m) for m in _imports(path) if _is(m, "rknnlink_server")]
    assert not bad, bad


def test_shared_code_imports_neither_side():
    bad = []
    for shared in SHARED:
        for path in sorted((ROOT / "host" / Path(*shared.split("."))).rglob("*.py")):
            bad += [(str(path.relative_to(ROOT)), m) for m in _imports(path)
                    if _is(m, "rknnlink_server") or _host_only(m)]
    assert not bad, bad


def test_the_checker_sees_a_crossing(tmp_path):
    """The rule can fail: a relative and an absolute crossing are both found."""
    probe = tmp_path / "probe.py"
    probe.write_text("from ..client import board\nimport rknnlink_server.service\n")
    found = set(_imports(probe, package="rknnlink.v1"))
    assert "rknnlink.client.board" in found and "rknnlink_server.service" in found
