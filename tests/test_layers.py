"""The package's layers depend one way: errors <- files <- quant <- ssl <- pipeline <- evaluation
<- cli, and no modules import each other in a circle.

Read from the source (every import statement, those inside functions included), so a lazy
import that crosses a layer upwards, or closes a circle, fails here as well as a top-level one.
Every module's layer is its folder's (or, at the top, its own name's): there is no exception list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "rpq_units"

LAYERS = ["errors", "files", "quant", "ssl", "pipeline", "evaluation", "cli"]
# the quantizer math reads and writes no files
IO_CALLS = {"open", "torch.save", "torch.load", "np.load", "np.save", "np.savez", "kaldiio"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in ("cli", "__main__"):
        return LAYERS.index("cli")  # the package facade and the command line sit on top
    return LAYERS.index(parts[1])


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every rpq_units import in a file; ``from rpq_units.x import y`` counts
    as rpq_units.x.y when y is a module."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rpq_units"]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] != "rpq_units":
                continue
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                is_module = any((PKG.parent / Path(*sub.split("."))).with_suffix(s).exists()
                                for s in (".py", ""))
                out.append((node.lineno, sub if is_module else node.module))
    return out


SOURCES = sorted(PKG.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in SOURCES:
        assert 0 <= layer_of(module_name(path)) < len(LAYERS), path


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: module_name(p))
def test_imports_go_down_the_layers(path):
    me = module_name(path)
    bad = [f"{path.relative_to(PKG.parent)}:{line} imports {dep} ({LAYERS[layer_of(dep)]})"
           for line, dep in imports_of(path) if layer_of(dep) > layer_of(me)]
    assert not bad, f"{me} ({LAYERS[layer_of(me)]}) reaches up: " + "; ".join(bad)


def module_graph(sources: list[Path]) -> dict[str, set[str]]:
    """Module -> the package modules it imports (a name imported from a package module counts
    as that module)."""
    mods = {module_name(p) for p in sources}
    graph = {}
    for path in sources:
        me, deps = module_name(path), set()
        for _, dep in imports_of(path):
            while dep not in mods and "." in dep:
                dep = dep.rsplit(".", 1)[0]
            if dep in mods and dep != me:
                deps.add(dep)
        graph[me] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of ``graph``: its strongly connected parts of more than one module
    (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        while work:
            v, deps = work[-1]
            w = next(deps, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                part = stack[stack.index(v):]
                del stack[stack.index(v):]
                if len(part) > 1:
                    out.append(sorted(part))
    return out


def test_no_import_circle():
    assert circles(module_graph(SOURCES)) == []


def test_the_checker_sees_an_import_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]


def test_quantizer_math_does_no_file_io():
    for path in sorted((PKG / "quant").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                assert name not in IO_CALLS, f"{path.name}:{node.lineno} calls {name}"
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert "kaldiio" not in names and "soundfile" not in names, f"{path.name}:{node.lineno}"


def test_quantizers_do_not_import_the_file_acts():
    for path in sorted((PKG / "quant").rglob("*.py")):
        bad = [line for line, dep in imports_of(path) if dep == "rpq_units.files"]
        assert not bad, f"{path.name}:{bad} imports rpq_units.files (the quantizers write no files)"


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    """The scan catches a lazy, upward import (a constructed case, so the tests above can fail)."""
    fake = PKG / "quant" / "search.py"
    src = "def f():\n    from rpq_units.pipeline.shards import FeatureShards\n"
    probe = tmp_path / "probe.py"
    probe.write_text(src)
    deps = imports_of(probe)
    assert deps == [(2, "rpq_units.pipeline.shards")]
    assert layer_of("rpq_units.pipeline.shards") > layer_of(module_name(fake))
