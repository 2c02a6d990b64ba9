"""No function in the package is longer than a screen (80 lines), argument parsers aside: a
longer one is split into named steps."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "rpq_units"
MAX_LINES = 80
# argument parsers: one add_argument per option, long by nature
PARSER = re.compile(r"^(build_parser|get_parser|_?add_\w*_args|_?add_\w*_arguments)$")


def long_functions(path: Path, max_lines: int = MAX_LINES) -> list[str]:
    """``file.py:line name (N lines)`` of each function (methods and nested ones included) of
    more than ``max_lines`` lines, decorators and docstring counted, argument parsers aside."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not PARSER.match(node.name):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            n = node.end_lineno - first + 1
            if n > max_lines:
                out.append(f"{path.name}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_over_80_lines():
    found = [f for p in sorted(PKG.rglob("*.py")) for f in long_functions(p)]
    assert not found, "functions over 80 lines (split each into named steps): " + "; ".join(found)


def test_the_checker_sees_a_long_function(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("def f():\n" + "    x = 1\n" * 85 + "\n\ndef build_parser():\n" + "    y = 2\n" * 90)
    assert long_functions(src) == ["m.py:1 f (86 lines)"]
