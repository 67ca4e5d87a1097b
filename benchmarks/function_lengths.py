"""Lines of code per function in ``rnn_jax/``: the longest ones, and those over a limit.

A function's length is the number of lines of its definition that hold code:
blank lines, comment lines and its docstring do not count; nested functions
count towards the function that holds them (a closure is part of its idea).

    python benchmarks/function_lengths.py            # the 20 longest
    python benchmarks/function_lengths.py --over 60  # those over 60 lines, exit 1 if any
"""

from __future__ import annotations

import argparse
import ast
import io
import sys
import tokenize
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Length(NamedTuple):
    path: str
    name: str
    line: int
    lines: int


def code_lines(source: str) -> set[int]:
    """Line numbers that hold a token other than a comment, a newline or an indent."""
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return lines


def docstring_lines(node: ast.AST) -> set[int]:
    body = getattr(node, "body", [])
    first = body[0] if body else None
    if isinstance(first, ast.Expr) and isinstance(getattr(first.value, "value", None), str):
        return set(range(first.lineno, first.end_lineno + 1))
    return set()


def lengths_in(path: Path, root: Path = ROOT) -> list[Length]:
    source = path.read_text()
    tree = ast.parse(source)
    code = code_lines(source)
    found = []
    outer = [
        node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]
    for node in outer:
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        span = set(range(first, node.end_lineno + 1))
        docs = set().union(
            *(
                docstring_lines(inner)
                for inner in ast.walk(node)
                if isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
            )
        )
        count = len((span & code) - docs)
        found.append(Length(str(path.relative_to(root)), node.name, node.lineno, count))
    return found


def all_lengths(package: Path = ROOT / "rnn_jax") -> list[Length]:
    return sorted(
        (length for path in sorted(package.rglob("*.py")) for length in lengths_in(path)),
        key=lambda length: -length.lines,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--over", type=int, help="list the functions longer than this")
    parser.add_argument("--top", type=int, default=20, help="how many of the longest to list")
    args = parser.parse_args(argv)
    lengths = all_lengths()
    shown = [x for x in lengths if x.lines > args.over] if args.over else lengths[: args.top]
    for x in shown:
        print(f"{x.lines:4d}  {x.path}:{x.line}  {x.name}")
    return 1 if args.over and shown else 0


if __name__ == "__main__":
    sys.exit(main())
