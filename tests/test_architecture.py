"""The package's shape, read from its own source (no imports run): the rules of
docs/architecture.md ("Layering") that keep the pipeline easy to see and change.

* stages (the sub-packages and ground-level modules of ``qidlab``) import each other without a
  circle, and modules import each other without a circle (the law registry's catalogue may
  import the registry that imports it back);
* nothing below ``qidlab.cli`` imports ``qidlab.cli``;
* a function-local import of a qidlab module is there only to keep ``import qidlab`` light: the
  module it imports loads a heavy library (torch, transformers, pandas, matplotlib, ...) when
  imported;
* SQL lives in ``qidlab.store`` alone.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1] / "src" / "qidlab"
HEAVY = {"torch", "transformers", "tokenizers", "safetensors", "matplotlib", "pandas", "scipy", "pyarrow",
         "ray", "datasets", "huggingface_hub", "triton", "bitsandbytes", "awq", "llmcompressor",
         "submitit", "lm_eval", "compressed_tensors", "selenium"}
REGISTRY = ("qidlab.laws.registry", "qidlab.laws.catalog")  # the law registry loads its catalogue, which registers
SQL = re.compile(r"\b(SELECT\s+.+\s+FROM|INSERT\s+(OR\s+\w+\s+)?INTO|DELETE\s+FROM|UPDATE\s+\w+\s+SET|"
                 r"CREATE\s+(TABLE|VIEW|INDEX)|PRAGMA\s+\w+)\b", re.DOTALL)  # SQL keywords in capitals, as qidlab writes them


def _name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "qidlab"


class Module:
    def __init__(self, path: Path):
        self.path, self.name = path, _name(path)
        self.package = self.name if path.name == "__init__.py" else self.name.rpartition(".")[0]
        self.tree = ast.parse(path.read_text(), filename=str(path))
        self.imports: list[tuple[str, bool, int]] = []  # (module, function-local, line)
        self._walk(self.tree, local=False)

    def _walk(self, node, local: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = local or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                self.imports += [(a.name, local, child.lineno) for a in child.names]
            elif isinstance(child, ast.ImportFrom):
                self.imports += [(m, local, child.lineno) for m in self._from(child)]
            elif not (isinstance(child, ast.If) and _is_type_checking(child.test)):
                self._walk(child, inner)

    def _from(self, node: ast.ImportFrom) -> list[str]:
        if node.level:
            base = self.package.split(".")[: len(self.package.split(".")) - (node.level - 1)]
            mod = ".".join(base + ([node.module] if node.module else []))
        else:
            mod = node.module or ""
        # `from qidlab import data` / `from . import x` import the sub-modules themselves
        out = []
        for a in node.names:
            sub = f"{mod}.{a.name}"
            out.append(sub if (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                       or (ROOT.parent / sub.replace(".", "/")).is_dir() else mod)
        return out


def _is_type_checking(test) -> bool:
    return isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


MODULES = {m.name: m for m in (Module(p) for p in sorted(ROOT.rglob("*.py")))}


def _owner(target: str) -> str | None:
    """The qidlab module that ``target`` names (an attribute import resolves to its module)."""
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def _edges(*, local: bool) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for m in MODULES.values():
        for target, is_local, _ in m.imports:
            owner = _owner(target) if target.startswith("qidlab") else None
            if owner and owner != m.name and (local or not is_local):
                edges[m.name].add(owner)
                # importing a.b.c runs a/__init__ and a/b/__init__ first
                parts = owner.split(".")
                for i in range(2, len(parts)):
                    parent = ".".join(parts[:i])
                    if parent in MODULES and parent != m.name and not m.name.startswith(parent + "."):
                        edges[m.name].add(parent)
    return edges


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)

    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def _heavy_modules() -> set[str]:
    """qidlab modules whose import (their top-level imports, followed) loads a heavy library."""
    top = _edges(local=False)
    direct = {m.name for m in MODULES.values()
              if any(not loc and t.split(".")[0] in HEAVY for t, loc, _ in m.imports)}
    heavy, changed = set(direct), True
    while changed:
        changed = False
        for m, targets in top.items():
            if m not in heavy and targets & heavy:
                heavy.add(m)
                changed = True
    return heavy


def test_no_circle_between_stages():
    stages: dict[str, set[str]] = defaultdict(set)
    for m, targets in _edges(local=True).items():
        for t in targets:
            if _stage(m) != _stage(t):
                stages[_stage(m)].add(_stage(t))
    assert _cycles(stages) == []


def test_no_circle_between_modules():
    cycles = [c for c in _cycles(_edges(local=True)) if not all(m.startswith(REGISTRY) for m in c)]
    assert cycles == []


def test_nothing_below_the_cli_imports_it():
    bad = [f"{m.name}:{line}" for m in MODULES.values() if _stage(m.name) not in ("cli", "__main__")
           for t, _, line in m.imports if t == "qidlab.cli" or t.startswith("qidlab.cli.")]
    assert bad == []


def test_function_local_imports_only_keep_qidlab_light():
    heavy = _heavy_modules()
    bad = [f"{m.name}:{line} imports {t} in a function" for m in MODULES.values()
           for t, loc, line in m.imports if loc and t.startswith("qidlab")
           and _owner(t) not in heavy and _owner(t) != m.name
           and not (m.name.startswith(REGISTRY) and _owner(t).startswith(REGISTRY))]
    assert bad == []


def test_sql_lives_in_the_store():
    bad = []
    for m in MODULES.values():
        if _stage(m.name) == "store":
            continue
        for node in ast.walk(m.tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and SQL.search(node.value):
                bad.append(f"{m.name}:{node.lineno}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and _runs_sql(node):
                bad.append(f"{m.name}:{node.lineno} .{node.func.attr}")
    assert bad == []


def _runs_sql(call: ast.Call) -> bool:
    """A call that hands SQL to a database: pandas' read_sql*, sqlite3's executescript /
    executemany, or ``.execute`` with an argument (a DB-API call; huggingface_hub's cache
    ``strategy.execute()`` takes none)."""
    name = call.func.attr
    return name in ("read_sql", "read_sql_query", "executescript", "executemany") or (
        name == "execute" and bool(call.args))


def test_the_rules_see_what_they_check():
    """The checks above would fail on what they forbid (guards against a parser that sees nothing)."""
    assert len(MODULES) > 50 and "qidlab.sweep.run" in MODULES
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [{"a", "b"}]
    assert {"qidlab.quantize.gptq", "qidlab.train.lowbit"} <= _heavy_modules()
    assert "qidlab.errors" not in _heavy_modules()
    assert SQL.search("SELECT id FROM checkpoints WHERE suite=?") and not SQL.search("select a model from the list")
    call = ast.parse("conn.execute(query, args); strategy.execute()").body
    assert [_runs_sql(stmt.value) for stmt in call] == [True, False]
