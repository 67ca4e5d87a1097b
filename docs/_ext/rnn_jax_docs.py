"""Sphinx directives that write the API reference and the backend pages from the code itself.

- ``.. api:: MODULE``: the module's docstring, a table of its public names
  (``__all__``) and an autodoc entry for each object it is the first page to
  export (every object is described once; the other pages link to it). A
  member module without a page of its own is documented inline.
- ``.. support-matrix::``: every registered cell against every registered
  backend, as ``supports`` answers when the docs are built.
- ``.. supports:: BACKEND``: the cells ``BACKEND`` refuses and why, and
  which kinds of problem it runs for one cell it takes.
- ``.. measured-speed:: BACKEND``: the medians recorded for ``BACKEND`` in
  the newest results file of each suite in ``benchmarks/results/``, with
  ``:against:`` backends or libraries timed on the same cases.
- ``.. compiled-memory::``: the Pallas kernels' plans against what the real
  compilers made of them (shared memory, threads, registers and spills per
  GPU kernel; TPU verdicts), from the newest ``budget_grid`` results file.

Nothing here types a number: tables come from the code and the results files.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import re
from pathlib import Path
from types import ModuleType

from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"

# The pages of the API reference, in the order that decides which page describes an object.
API_PAGES = (
    "rnn_jax",
    "rnn_jax.cells",
    "rnn_jax.layers",
    "rnn_jax.models",
    "rnn_jax.data",
    "rnn_jax.train",
    "rnn_jax.diagnostics",
    "rnn_jax.app",
    "rnn_jax.deploy",
    "rnn_jax.backends",
    "rnn_jax.interop",
    "rnn_jax.interop.torch",
    "rnn_jax.interop.keras",
    "rnn_jax.flax",
    "rnn_jax.equinox",
    "rnn_jax.aot",
)
BACKEND_PAGES = (
    "reference",
    "sequential",
    "checkpointed",
    "parallel",
    "newton",
    "pallas",
    "cudnn",
    "onednn",
    "sharded",
)
# Factory options a registered cell needs beyond its size.
CELL_OPTIONS = {
    "multihead_simple": {"num_heads": 2},
    "multihead_lstm": {"num_heads": 2},
    "multihead_gru": {"num_heads": 2},
}
STEPS, BATCH, FEATURES, HIDDEN = 64, 4, 8, 16
# Cases compared with a record: what makes two records measure the same thing.
CASE_KEYS = ("cell", "B", "T", "I", "H", "dtype", "mode", "group", "devices", "shape_label")


def escaped(text: str) -> str:
    """``text`` as literal reStructuredText (no markup)."""
    return re.sub(r"([\\`*_|])", r"\\\1", text)


def list_table(header: list[str], rows: list[list[str]], widths: str | None = None) -> list[str]:
    """The lines of a ``list-table`` of reStructuredText cells."""
    lines = [".. list-table::", "   :header-rows: 1"]
    if widths:
        lines.append(f"   :widths: {widths}")
    lines.append("")
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return [*lines, ""]


class GeneratedDirective(SphinxDirective):
    """A directive whose content is the reStructuredText its ``lines()`` write."""

    def run(self):
        return self.parse_text_to_nodes("\n".join(self.lines()))


# --------------------------------------------------------------------------- the API reference


def members(module: ModuleType) -> list[str]:
    """The public names of ``module``: its ``__all__``, else the public names it defines."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and getattr(value, "__module__", None) == module.__name__
    ]


def documented_once(value) -> bool:
    """Objects described in one place and linked from the others (not plain values)."""
    return inspect.isfunction(value) or inspect.isclass(value) or inspect.ismodule(value)


def inline(module: ModuleType, value) -> bool:
    """Whether ``value`` is a submodule of ``module`` documented on ``module``'s page."""
    return (
        inspect.ismodule(value)
        and value.__name__.startswith(module.__name__ + ".")
        and not has_page(value.__name__)
    )


@functools.cache
def owners() -> dict[int, str]:
    """``id(object) -> the full name it is described under``: its first page's name for it."""
    found: dict[int, str] = {}

    def visit(module: ModuleType) -> None:
        for name in members(module):
            value = getattr(module, name)
            if documented_once(value) and id(value) not in found:
                own_name = f"{module.__name__}.{name}"
                found[id(value)] = value.__name__ if inspect.ismodule(value) else own_name
        for name in members(module):
            if inline(module, getattr(module, name)):
                visit(getattr(module, name))

    for page in API_PAGES:
        visit(importlib.import_module(page))
    return found


def summary(value) -> str:
    """The first paragraph of ``value``'s docstring, on one line."""
    doc = inspect.getdoc(value) or ""
    return " ".join(doc.split("\n\n", 1)[0].split())


def has_page(module_name: str) -> bool:
    return module_name in API_PAGES or module_name in {
        f"rnn_jax.backends.{name}" for name in BACKEND_PAGES
    }


def entry(module_name: str, name: str, value) -> list[str]:
    """The autodoc lines describing ``module_name.name``."""
    full = f"{module_name}.{name}"
    if inspect.ismodule(value):
        return [
            f".. rubric:: {value.__name__}",
            "",
            f".. automodule:: {value.__name__}",
            "",
            *module_entries(value),
        ]
    if inspect.isclass(value):
        return [f".. autoclass:: {full}", "   :members:", ""]
    if inspect.isfunction(value):
        return [f".. autofunction:: {full}", ""]
    return [f".. py:data:: {full}", f"   :type: {type(value).__name__}", ""]


def module_entries(module: ModuleType) -> list[str]:
    """Entries for the members ``module`` describes (those it exports first, and its values)."""
    lines = []
    for name in members(module):
        value = getattr(module, name)
        if inspect.ismodule(value):
            own = inline(module, value)
        else:
            own = not documented_once(value) or owners()[id(value)] == f"{module.__name__}.{name}"
        if own:
            lines += entry(module.__name__, name, value)
    return lines


class Api(GeneratedDirective):
    """``.. api:: MODULE``: the reference page of one module."""

    required_arguments = 1

    def lines(self) -> list[str]:
        name = self.arguments[0]
        module = importlib.import_module(name)
        rows = []
        for member in members(module):
            value = getattr(module, member)
            if inspect.ismodule(value):
                target = f":py:mod:`{value.__name__}`"
            elif documented_once(value):
                target = f":py:obj:`{member} <{owners()[id(value)]}>`"
            else:
                target = f":py:data:`{member} <{name}.{member}>`"
            rows.append([target, summary(value) if documented_once(value) else ""])
        return [
            f".. automodule:: {name}",
            "",
            *list_table(["name", "summary"], rows, widths="25 75"),
            *module_entries(module),
        ]


def skip_named_tuple_fields(app, what, name, obj, skip, options):
    """NamedTuple fields say only "Alias for field number N": the class docstring names them."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


# --------------------------------------------------------------------------- what backends run


def registered_cells() -> dict:
    from rnn_jax.cells import cell_names, get_cell

    return {name: get_cell(name, HIDDEN, **CELL_OPTIONS.get(name, {})) for name in cell_names()}


def problem(cell, *, reverse=False, gradient=False, **arrays):
    """The `Problem` ``rj.scan`` hands a backend for ``cell`` on ``[64, 4, 8]`` inputs."""
    import jax

    from rnn_jax.backends.problem import describe

    params = jax.eval_shape(lambda: cell.init(jax.random.key(0), FEATURES))
    xs = jax.ShapeDtypeStruct((STEPS, BATCH, FEATURES), "float32")
    return describe(cell, params, xs, reverse=reverse, gradient=gradient, **arrays)


def variants() -> dict[str, dict]:
    """Kinds of problem, by what they add to the plain one."""
    import jax
    import jax.numpy as jnp

    steps = jax.ShapeDtypeStruct((STEPS, BATCH), jnp.bool_)
    return {
        "all steps valid": {},
        "right padding (``length``)": {"length": jax.ShapeDtypeStruct((BATCH,), jnp.int32)},
        "a mask with holes (``mask``)": {"mask": steps},
        "segments (``resets``)": {"resets": steps},
        "``reverse=True``": {"reverse": True},
        "under a gradient": {"gradient": True},
    }


@functools.cache
def refusals() -> dict[tuple[str, str], str | None]:
    """``(backend, cell) -> the reason supports gives, or None``, on the plain problem."""
    from rnn_jax.backends import get, names

    cells = registered_cells()
    plain = {name: problem(cell) for name, cell in cells.items()}
    return {
        (backend, name): get(backend).supports(cell, plain[name])
        for backend in names()
        for name, cell in cells.items()
    }


def platform_note() -> str:
    import jax

    return (
        f"Answered by each backend's ``supports`` when these pages were built, on the "
        f"``{jax.default_backend()}`` platform, for {STEPS} steps of {BATCH} sequences of "
        f"{FEATURES} features and cells of {HIDDEN} units (the multi-head cells with 2 heads)."
    )


class SupportMatrix(GeneratedDirective):
    """``.. support-matrix::``: every cell against every backend."""

    def lines(self) -> list[str]:
        from rnn_jax.backends import names

        answers = refusals()
        cells = sorted({cell for _, cell in answers})
        rows = [
            [f"``{cell}``", *["yes" if answers[b, cell] is None else "--" for b in names()]]
            for cell in cells
        ]
        return [platform_note(), "", *list_table(["cell", *names()], rows)]


class Supports(GeneratedDirective):
    """``.. supports:: BACKEND``: the cells it refuses (and why) and the problems it runs."""

    required_arguments = 1

    def lines(self) -> list[str]:
        from rnn_jax.backends import get

        backend = self.arguments[0]
        answers = {cell: why for (b, cell), why in refusals().items() if b == backend}
        runs = [cell for cell, why in sorted(answers.items()) if why is None]
        refused = [[f"``{c}``", escaped(why)] for c, why in sorted(answers.items()) if why]
        ran = ", ".join(f"``{cell}``" for cell in runs) or "none of the registered cells"
        lines = [platform_note(), "", f"Runs: {ran}.", ""]
        if refused:
            lines += ["Refuses:", "", *list_table(["cell", "reason"], refused, "20 80")]
        if not runs:
            return lines
        name = "lstm" if "lstm" in runs else runs[0]
        cell = registered_cells()[name]
        rows = []
        for label, options in variants().items():
            why = get(backend).supports(cell, problem(cell, **options))
            rows.append([label, "yes" if why is None else escaped(why)])
        return [
            *lines,
            f"The kinds of problem it runs, for ``{name}``:",
            "",
            *list_table(["problem", "runs?"], rows, "30 70"),
        ]


# --------------------------------------------------------------------------- measured speed


def newest_documents() -> list[dict]:
    """The newest results document of each suite (``--quick`` runs left out), by suite."""
    newest: dict[str, dict] = {}
    for path in sorted(RESULTS.glob("*.json")):
        document = json.loads(path.read_text())
        if document.get("quick") or not document.get("records"):
            continue
        document["file"] = path.name
        suite = document["suite"]
        if suite not in newest or document["created"] > newest[suite]["created"]:
            newest[suite] = document
    return [newest[suite] for suite in sorted(newest)]


def who(record: dict) -> str:
    return record.get("backend") or record["library"]


def case(record: dict) -> tuple:
    return tuple(record.get(key) for key in CASE_KEYS)


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:.3g}"


class MeasuredSpeed(GeneratedDirective):
    """``.. measured-speed:: BACKEND`` with ``:against: NAME,...``."""

    required_arguments = 1
    option_spec = {"against": directives.unchanged}

    def lines(self) -> list[str]:
        backend = self.arguments[0]
        against = [n for n in self.options.get("against", "").split(",") if n]
        lines = []
        for document in newest_documents():
            # a backend's default settings (not its thread-count variants)
            mine = [
                r for r in document["records"] if r.get("backend") == backend and "threads" not in r
            ]
            if not mine:
                continue
            timed = {(who(r), case(r)): r["median_s"] for r in document["records"]}
            others = [n for n in against if any(w == n for w, _ in timed)]
            extra = [k for k in ("devices", "group") if any(k in r for r in mine)]
            header = ["cell", "B", "T", "I", "H", *extra, "mode", "median ms"]
            header += [f"{other} / {backend}" for other in others]
            rows = []
            for record in mine:
                ratios = []
                for other in others:
                    seconds = timed.get((other, case(record)))
                    ratios.append("" if seconds is None else f"{seconds / record['median_s']:.2f}")
                shape = [str(record[k]) for k in ("cell", "B", "T", "I", "H")]
                shape += [str(record.get(k, "")) for k in extra]
                rows.append([*shape, record["mode"], milliseconds(record["median_s"]), *ratios])
            machine = document["machine"]
            lines += [
                f"``benchmarks/results/{document['file']}``: ``{escaped(document['command'])}``, "
                f"{document['created']}, {machine.get('cpu') or machine['device_kind']} "
                f"({machine.get('cores', '?')} cores, platform ``{machine['platform']}``).",
                "",
            ]
            if document.get("caveat"):
                lines += [f"The suite's caveat: {escaped(document['caveat'])}.", ""]
            lines += list_table(header, rows)
        if not lines:
            return [
                f"No results file in ``benchmarks/results/`` records the ``{backend}`` backend "
                "yet, so no speed is shown here.",
                "",
            ]
        ratio = (
            [f"A ratio above 1 means the ``{backend}`` backend took less time.", ""]
            if against
            else []
        )
        return [
            "Medians after compilation, as the suites recorded them "
            "(forward+backward: the gradient of a mean squared error on the outputs).",
            "",
            *ratio,
            *lines,
        ]


# --------------------------------------------------------------------------- compiled memory


def newest_grid() -> dict | None:
    """The newest full results file of ``benchmarks/budget_grid.py``, or None."""
    found = [p for p in sorted(RESULTS.glob("budget_grid-*.json")) if "quick" not in p.name]
    if not found:
        return None
    document = json.loads(found[-1].read_text())
    document["file"] = found[-1].name
    return document


def planned(plan: dict) -> str:
    if "refused" in plan:
        return "refused"
    if "expected_shared_bytes" not in plan:
        return f"{plan['rows']} rows, {plan['block_time']} steps"
    where = "resident" if plan["resident_weights"] else "streamed"
    return f"{where}, {plan['expected_shared_bytes'] // 1024} KB"


def kernel_cell(result: dict, kind: str) -> str:
    if "error" in result:
        requested = result.get("requested_shared_bytes")
        return f"refused ({requested // 1024} KB)" if requested else "refused"
    found = [k for k in result.get("kernels", []) if k["name"].startswith(f"rnn_jax_fused_{kind}")]
    if not found:
        return "compiled" if result.get("compiled") else ""
    k = found[0]
    return (
        f"{k['shared_bytes'] // 1024} KB, {k['threads']} threads, {k['registers']} registers, "
        f"{k['spilled_bytes']} B spilled"
    )


class CompiledMemory(GeneratedDirective):
    """``.. compiled-memory::``: the budget grid's cases, plan against compiler."""

    def lines(self) -> list[str]:
        document = newest_grid()
        if document is None:
            return ["No ``budget_grid`` results file in ``benchmarks/results/`` yet.", ""]
        lines = [
            f"``benchmarks/results/{document['file']}`` (``{escaped(document['command'])}``, "
            f"{document['created']}); every case agrees: "
            f"{all(entry['agrees'] for entry in document['cases'])}.",
            "",
        ]
        for chip, description in document["chips"].items():
            entries = [e for e in document["cases"] if e["chip"] == chip]
            gpu = any("kernels" in e["compiled"]["gradient"] for e in entries)
            header = ["case", "plan forward", "plan backward"]
            header += ["forward kernel", "backward kernel"] if gpu else ["gradient compiled"]
            header += ["plan's checks lifted"]
            rows = []
            for entry in entries:
                gradient = entry["compiled"]["gradient"]
                lifted = entry.get("compiled_without_plan_checks", {}).get("gradient", {})
                row = [entry["case"], planned(entry["plan"]["forward"])]
                row.append(planned(entry["plan"]["backward"]))
                kinds = ("forward", "backward") if gpu else ("gradient",)
                row += [kernel_cell(gradient, kind) for kind in kinds]
                row.append(kernel_cell(lifted, "backward" if gpu else "gradient") if lifted else "")
                rows.append(row)
            lines += [f"**{escaped(description)}**", "", *list_table(header, rows)]
        return lines


def setup(app):
    app.add_directive("api", Api)
    app.add_directive("support-matrix", SupportMatrix)
    app.add_directive("supports", Supports)
    app.add_directive("measured-speed", MeasuredSpeed)
    app.add_directive("compiled-memory", CompiledMemory)
    app.connect("autodoc-skip-member", skip_named_tuple_fields)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
