"""The layout: one installed package, and imports that only go down the layers
(ground → storage → ingest | enrich → dashboards → wiring), with no cycles."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Where each installed package's source lives (the pyproject's package-dir mapping).
FOLDERS = {
    "weftline": REPO / "weftline",
    "weftline.storage": REPO / "storage",
    "weftline.ingest": REPO / "ingest",
    "weftline.enrich": REPO / "enrich",
    "weftline.dashboards": REPO / "dashboards",
}

# A layer may import itself and the layers listed for it, nothing else.
MAY_IMPORT = {
    "ground": {"ground"},
    "storage": {"ground", "storage"},
    "ingest": {"ground", "storage", "ingest"},
    "enrich": {"ground", "storage", "enrich"},
    "dashboards": {"ground", "storage", "ingest", "enrich", "dashboards"},
    "wiring": {"ground", "storage", "ingest", "enrich", "dashboards", "wiring"},
}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("ground", "storage", "ingest", "enrich", "dashboards"):
        return parts[1]
    return "wiring"


def modules() -> dict[str, Path]:
    """Every module of the installed package, by its dotted name."""
    out: dict[str, Path] = {}
    for pkg, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            if pkg == "weftline" and rel.parts[0] in ("storage", "ingest", "enrich", "dashboards"):
                continue
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([pkg, *parts])] = path
    return out


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `name` imports (function-level imports included)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        for t in targets:
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports_of(name, path, known) for name, path in mods.items()}


def test_generic_top_level_packages_are_not_importable_on_their_own():
    assert "weftline.storage" in graph()
    for name in ("storage", "ingest", "enrich", "dashboards"):
        assert not (REPO / "weftline" / name).exists()


def test_imports_go_down_the_layers_only():
    uphill = []
    for name, deps in graph().items():
        for dep in deps:
            if dep == "weftline":  # the package root holds only __version__
                continue
            if layer_of(dep) not in MAY_IMPORT[layer_of(name)]:
                uphill.append(f"{name} ({layer_of(name)}) imports {dep} ({layer_of(dep)})")
    assert uphill == []


def find_cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                cycles.append([*stack[stack.index(m) :], m])
            elif m not in state:
                visit(m, [*stack, m])
        state[n] = 2

    for n in sorted(edges):
        if n not in state:
            visit(n, [n])
    return cycles


def package_of(module: str) -> str:
    return module if module in FOLDERS or module.count(".") <= 1 else module.rsplit(".", 1)[0]


def test_no_import_cycles():
    g = graph()
    # Between modules, and between sub-packages (folders).
    for collapse in (lambda m: m, package_of):
        edges: dict[str, set[str]] = {}
        for a, deps in g.items():
            for b in deps:
                ca, cb = collapse(a), collapse(b)
                if ca != cb and cb != "weftline":
                    edges.setdefault(ca, set()).add(cb)
        assert find_cycles(edges) == []


def test_pyproject_lists_every_package_folder():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    on_disk = {m for m, p in modules().items() if p.name == "__init__.py"}
    assert on_disk == listed
    assert cfg["package-dir"] == {k: str(v.relative_to(REPO)) for k, v in FOLDERS.items()}


def test_a_built_wheel_holds_weftline_alone(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "--disable-pip-version-check",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("weftline-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"weftline"}
    # The data files the code opens at run time ship inside it.
    for needed in (
        "weftline/storage/migrations/0001_",
        "weftline/dashboards/debug/templates/session.html",
        "weftline/dashboards/alerting/rules/pipeline.yaml",
        "weftline/dashboards/grafana/dashboards/weftline-overview.json",
        "weftline/dashboards/grafana/provisioning/datasources/weftline.yaml",
        "weftline/ground/otlp_wire.py",
    ):
        assert any(n.startswith(needed) for n in names), needed
