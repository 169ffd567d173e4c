"""The house's shape: no import circles between modules, and the package's rooms (``model``,
``train``, ``index``...) import each other in one direction only, function-local imports
included (DESIGN.md §3: "no import cycles and no imports that climb back up: keep it so").
Imports under ``if TYPE_CHECKING:`` are annotations only and do not count."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for f in sorted((SRC / "diffembed").rglob("*.py")):
        parts = f.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imports(name: str, file: Path, modules: dict[str, Path], local: bool) -> set[str]:
    """The package's modules that ``name`` imports at module level (and, with ``local``, in its
    functions too)."""
    found: set[str] = set()
    package = name.split(".") if file.name == "__init__.py" else name.split(".")[:-1]

    def resolve(target: str) -> None:
        while target and target not in modules:  # `from a.b import c`: c may be a name
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    resolve(alias.name)
            elif isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                for alias in node.names:
                    resolve(f"{module}.{alias.name}")
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if local:
                    visit(node.body)
            else:
                for field in ("body", "orelse", "finalbody", "handlers"):
                    sub = getattr(node, field, None)
                    if isinstance(sub, list):
                        visit(sub)

    visit(ast.parse(file.read_text(encoding="utf-8")).body)
    return {m for m in found if m.startswith("diffembed")}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as e:
        return list(e.args[1])
    return None


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def test_no_module_imports_itself_back() -> None:
    modules = _modules()
    graph = {m: _imports(m, f, modules, local=False) for m, f in modules.items()}
    assert _cycle(graph) is None


def test_rooms_import_each_other_one_way() -> None:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for m, f in modules.items():
        targets = {_room(t) for t in _imports(m, f, modules, local=True)} - {_room(m)}
        graph.setdefault(_room(m), set()).update(targets)
    assert _cycle(graph) is None
    assert not graph["model"] & {"train", "index", "eval", "serve", "study", "cli"}
    assert all("cli" not in targets for room, targets in graph.items() if room != "__main__")


def test_the_checker_sees_a_circle(tmp_path: Path) -> None:
    # the helpers find a function-local import and a relative one (the test can fail)
    pkg = tmp_path / "diffembed"
    (pkg / "a").mkdir(parents=True)
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from diffembed.b.y import g\n")
    (pkg / "a" / "z.py").write_text("from . import x\n")
    modules = {"diffembed.a.x": pkg / "a" / "x.py", "diffembed.b.y": Path("y.py")}
    modules["diffembed.a.z"] = pkg / "a" / "z.py"
    assert _imports("diffembed.a.x", pkg / "a" / "x.py", modules, local=True) == {"diffembed.b.y"}
    assert _imports("diffembed.a.x", pkg / "a" / "x.py", modules, local=False) == set()
    assert _imports("diffembed.a.z", pkg / "a" / "z.py", modules, local=False) == {"diffembed.a.x"}
    assert _cycle({"a": {"b"}, "b": {"a"}}) is not None
