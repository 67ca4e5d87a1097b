"""No function in the package holds more than one idea's worth of code: at most 60 lines of
code (docstrings, comments and blank lines not counted; closures count towards the function
that holds them), as `benchmarks/function_lengths.py` counts them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import function_lengths  # noqa: E402

LIMIT = 60


def test_no_function_is_over_60_lines_of_code():
    over = [x for x in function_lengths.all_lengths() if x.lines > LIMIT]
    assert not over, "\n".join(f"{x.path}:{x.line} {x.name}: {x.lines} lines" for x in over)


def test_the_count_skips_docstrings_comments_and_blank_lines(tmp_path):
    source = tmp_path / "example.py"
    source.write_text(
        "def f(x):\n"
        '    """A docstring\n\n    of three lines."""\n'
        "    # a comment\n"
        "\n"
        "    def inner(y):\n"
        '        """Inner."""\n'
        "        return y\n"
        "    return inner(x)\n"
    )
    found = {x.name: x.lines for x in function_lengths.lengths_in(source, root=tmp_path)}
    assert found == {"f": 4, "inner": 2}
