"""A user's data file read into checked, padded sequences: CSV, TSV, Parquet, ``.npz``, ``.npy``.

Tables (``.csv``, ``.tsv``, and ``.parquet`` where pyarrow is installed)
have a header of column names and one row per time step: feature columns, a
target column and, optionally, a sequence-id column. The rows of one id, in
file order, form one sequence (sequences in the order their ids first
appear); without an id column the whole table is one sequence.

NumPy files hold the sequences as arrays. An ``.npz`` has

- ``x``: ``[N, T, F]`` (or ``[N, T]``, one feature) numbers, the inputs,
  right-padded: the values past a sequence's length are never read;
- ``length``: ``[N]`` integers in ``1..T``, the valid steps of each sequence
  (optional: without it every sequence is ``T`` steps long);
- ``y``: ``[N]`` targets, one per sequence (class labels, integers or text,
  or numbers), or ``[N, T]``, one per step (a series to forecast);
  optional, as only training needs it;
- ``id``: ``[N]`` names of the sequences (optional: their index).

A ``.npy`` holds ``x`` alone (inputs for ``rnn-jax predict``).

Every problem with a file is a `DataError` of one line naming the file, the
column, row or array, and what was expected; nothing is skipped or cut.
"""

from __future__ import annotations

import csv
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from rnn_jax._extras import require
from rnn_jax.data.base import DataError

DELIMITERS = {".csv": ",", ".tsv": "\t"}
TABLES = (*DELIMITERS, ".parquet")
ARRAYS = (".npz", ".npy")
NPZ_KEYS = ("x", "length", "y", "id")


class Table(NamedTuple):
    """A table's columns as text, ``{name: [rows] str}``, and where each row is in its file."""

    source: str  # the file, as messages name it
    columns: dict[str, np.ndarray]
    rows: np.ndarray  # [rows] int: the line (text tables) or row (Parquet) of each row
    row_word: str  # "line" or "row"


class Sequences(NamedTuple):
    """Sequences read from a file, batch-major and right-padded.

    - ``features``: ``[N, T, F]`` float64, zero past each sequence's length.
    - ``length``: ``[N]`` int64, the valid steps of each sequence (at least 1).
    - ``target``: ``[N, T]`` one value per step, ``[N]`` one per sequence, or
      None; numbers, or text as the file holds it (a table's target is text).
    - ``ids``: ``[N]`` str, the names of the sequences.
    - ``feature_names``, ``target_name``, ``id_name``: the columns (or arrays) read.
    - ``rows``: ``[N, T]`` the line or row of each step in the file (tables), or None.
    """

    source: str
    features: np.ndarray
    length: np.ndarray
    target: np.ndarray | None
    ids: np.ndarray
    feature_names: tuple[str, ...]
    target_name: str | None
    id_name: str | None
    rows: np.ndarray | None = None
    row_word: str = "row"

    @property
    def count(self) -> int:
        return int(self.length.shape[0])

    @property
    def is_table(self) -> bool:
        """Whether the file was a table (its steps have rows), not NumPy arrays."""
        return self.rows is not None

    def at(self, sequence: int, step: int | None = None) -> str:
        """Where a sequence, or one of its steps, is in the file, in words."""
        if step is None:
            return f"{self.source} sequence {str(self.ids[sequence])!r}"
        if not self.is_table:
            return f"{self.source} sequence {str(self.ids[sequence])!r}, step {step}"
        return f"{self.source} {self.row_word} {self.rows[sequence, step]}"


def numbers(values: np.ndarray, place: Callable[[tuple[int, ...]], str]) -> np.ndarray:
    """``values`` (text or numbers, any shape) as float64; a DataError names the first
    entry that is not a finite number, at ``place(index)``.

    Example:
        >>> numbers(np.array(["1.5", "2"]), lambda i: f"row {i[0]}")
        array([1.5, 2. ])
        >>> numbers(np.array(["1", "nan"]), lambda i: f"row {i[0]}")
        Traceback (most recent call last):
        ...
        rnn_jax.data.base.DataError: row 1: expected a finite number; got 'nan'
    """
    values = np.asarray(values)
    try:
        parsed = values.astype(np.float64)
    except ValueError:  # entry by entry, to name the first that is not a number
        parsed = np.empty(values.shape, np.float64)
        for index, value in np.ndenumerate(values):
            text = str(value).strip()
            try:
                parsed[index] = float(text)
            except ValueError:
                got = "an empty field" if not text else repr(str(value))
                raise DataError(f"{place(index)}: expected a number; got {got}") from None
    bad = np.argwhere(~np.isfinite(parsed))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        value = values[index]
        shown = repr(str(value)) if values.dtype.kind not in "biuf" else repr(float(value))
        raise DataError(f"{place(index)}: expected a finite number; got {shown}")
    return parsed


def first_line(error: BaseException) -> str:
    """An exception's message cut to its first line (messages here are one line)."""
    return (str(error).splitlines() or [type(error).__name__])[0]


def checked_path(path: str | os.PathLike, formats: Sequence[str]) -> Path:
    """``path`` if it is a non-empty file of one of ``formats`` (suffixes); else a DataError."""
    path = Path(path)
    if path.suffix.lower() not in formats:
        raise DataError(
            f"data file {path} must end in one of {', '.join(formats)}; got {path.suffix or 'none'}"
        )
    if not path.exists():
        raise DataError(f"data file {path} does not exist")
    if not path.is_file():
        raise DataError(f"data file {path} is not a regular file")
    if path.stat().st_size == 0:
        raise DataError(f"data file {path} is empty")
    return path


def read_text_table(path: Path) -> Table:
    """A CSV or TSV file: a header, then rows of as many fields (blank lines are skipped)."""
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.reader(file, delimiter=DELIMITERS[path.suffix.lower()])
            header = next(reader, None)
            if header is None or not any(name.strip() for name in header):
                raise DataError(f"data file {path} has no header line of column names")
            lines, records = [], []
            for record in reader:
                if not any(field.strip() for field in record):
                    continue
                if len(record) != len(header):
                    raise DataError(
                        f"{path} line {reader.line_num}: {len(record)} fields; the header has "
                        f"{len(header)}"
                    )
                lines.append(reader.line_num)
                records.append(record)
    except UnicodeDecodeError as error:
        raise DataError(f"data file {path} is not UTF-8 text (offset {error.start})") from None
    except csv.Error as error:
        raise DataError(f"{path} line {reader.line_num}: {error}") from None
    names = [name.strip() for name in header]
    check_names(str(path), names)
    if not records:
        raise DataError(f"data file {path} has a header but no rows")
    fields = np.asarray(records, dtype=str).reshape(len(records), len(names))
    columns = {name: fields[:, i] for i, name in enumerate(names)}
    return Table(str(path), columns, np.asarray(lines), "line")


def read_parquet(path: Path) -> Table:
    """A Parquet file's columns as text (missing values become empty fields)."""
    parquet = require("pyarrow.parquet", f"reading {path}")
    try:
        table = parquet.read_table(path)
    except Exception as error:  # pyarrow raises its own error types for a damaged file
        raise DataError(
            f"data file {path} is not a readable Parquet file ({first_line(error)})"
        ) from None
    names = [str(name) for name in table.column_names]
    check_names(str(path), names)
    if table.num_rows == 0:
        raise DataError(f"data file {path} has columns but no rows")
    columns = {
        name: np.asarray(["" if v is None else str(v) for v in table.column(i).to_pylist()])
        for i, name in enumerate(names)
    }
    return Table(str(path), columns, np.arange(1, table.num_rows + 1), "row")


def check_names(source: str, names: Sequence[str]) -> None:
    """A DataError for an empty or repeated column name."""
    for position, name in enumerate(names):
        if not name:
            raise DataError(f"{source}: column {position + 1} of the header has no name")
        if names.index(name) != position:
            raise DataError(f"{source}: the header names column {name!r} twice")


def read_table(path: str | os.PathLike) -> Table:
    """A CSV, TSV or Parquet file as a `Table`; a DataError when it cannot be read as one."""
    path = checked_path(path, TABLES)
    return read_parquet(path) if path.suffix.lower() == ".parquet" else read_text_table(path)


def column(table: Table, name: str, flag: str) -> np.ndarray:
    """The column ``name`` (asked for by ``flag``); a DataError lists the columns there are."""
    if name not in table.columns:
        raise DataError(
            f"{table.source} has no column {name!r} ({flag}); its columns: "
            f"{', '.join(table.columns)}"
        )
    return table.columns[name]


def table_sequences(
    table: Table, *, target: str | None, id: str | None, features: Sequence[str] | None
) -> Sequences:
    """The sequences of ``table``: grouped by the ``id`` column, features parsed as numbers.

    ``features`` None takes every column but ``id`` and ``target``.
    """
    named = [(target, "--target"), (id, "--id"), *((name, "--features") for name in features or ())]
    for name, flag in named:
        if name is not None:
            column(table, name, flag)
    if id is not None and id == target:
        raise DataError(f"{table.source}: --id and --target name the same column {id!r}")
    if features is None:
        features = [name for name in table.columns if name not in (id, target)]
    elif id in features:
        raise DataError(f"{table.source}: --features holds the id column {id!r}")
    size = table.rows.shape[0]
    if id is None:
        ids = np.asarray(["0"])
        sequence, step = np.zeros(size, np.int64), np.arange(size)
    else:
        keys = table.columns[id]
        ids, first, sequence = np.unique(keys, return_index=True, return_inverse=True)
        order = np.argsort(first)  # ids in the order they first appear
        rank = np.empty_like(order)
        rank[order] = np.arange(order.size)
        ids, sequence = ids[order], rank[sequence]
        by_sequence = np.argsort(sequence, kind="stable")
        starts = np.searchsorted(sequence[by_sequence], np.arange(ids.size))
        step = np.empty(size, np.int64)
        step[by_sequence] = np.arange(size) - starts[sequence[by_sequence]]
    length = np.bincount(sequence, minlength=ids.size).astype(np.int64)
    shape = (ids.size, int(length.max()))

    def padded(values: np.ndarray, fill) -> np.ndarray:
        grid = np.full(shape, fill, dtype=values.dtype)
        grid[sequence, step] = values
        return grid

    rows = padded(table.rows, -1)
    stacked = np.zeros((*shape, len(features)), np.float64)
    for i, name in enumerate(features):
        stacked[sequence, step, i] = numbers(table.columns[name], cell_place(table, name))
    return Sequences(
        source=table.source,
        features=stacked,
        length=length,
        target=None if target is None else padded(table.columns[target], ""),
        ids=ids.astype(str),
        feature_names=tuple(features),
        target_name=target,
        id_name=id,
        rows=rows,
        row_word=table.row_word,
    )


def cell_place(table: Table, name: str) -> Callable[[tuple[int, ...]], str]:
    """Where entry ``(row,)`` of column ``name`` is, in words (for `numbers`)."""
    return lambda index: f"{table.source} {table.row_word} {table.rows[index[0]]}, column {name!r}"


def holds_objects(path: Path) -> bool:
    """Whether the ``.npy`` file or any array of the ``.npz`` at ``path`` has an object dtype,
    read from the arrays' headers alone (loading them would need pickle)."""

    def object_dtype(stream) -> bool:
        version = np.lib.format.read_magic(stream)
        read = {(1, 0): np.lib.format.read_array_header_1_0}.get(
            version, np.lib.format.read_array_header_2_0
        )
        return read(stream)[2].hasobject

    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as stream:
                return object_dtype(stream)
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(".npy")]
            return any(object_dtype(archive.open(name)) for name in names)
    except (OSError, ValueError, zipfile.BadZipFile):
        return False


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (or the one of a ``.npy``, as ``x``), without unpickling."""
    try:
        if path.suffix.lower() == ".npy":
            return {"x": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as archive:
            unknown = sorted(set(archive.files) - set(NPZ_KEYS))
            if unknown:
                raise DataError(
                    f"{path} holds arrays {unknown} it should not; an .npz holds x, and "
                    f"optionally length, y and id"
                )
            return {key: archive[key] for key in archive.files}
    except DataError:
        raise
    except ValueError as error:
        if holds_objects(path):
            raise DataError(
                f"{path} holds an object array (ragged sequences?); pad x to [N, T, F] and give "
                f"each sequence's valid steps in 'length' [N]"
            ) from None
        raise DataError(
            f"data file {path} is not a NumPy {path.suffix} file ({first_line(error)})"
        ) from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(
            f"data file {path} is not a NumPy {path.suffix} file ({first_line(error)})"
        ) from None


def array_sequences(path: str | os.PathLike) -> Sequences:
    """The sequences of an ``.npz`` or ``.npy`` file, checked as the module docstring says."""
    path = checked_path(path, ARRAYS)
    arrays = load_arrays(path)
    if "x" not in arrays:
        raise DataError(
            f"{path} has no array 'x' (the inputs, [N, T, F]); it holds {sorted(arrays)}"
        )
    x = arrays["x"]
    if x.dtype.kind not in "biuf":
        raise DataError(f"{path}: array 'x' must hold numbers; got dtype {x.dtype}")
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or 0 in x.shape:
        raise DataError(f"{path}: array 'x' must be [N, T, F] (or [N, T]); got shape {x.shape}")
    count, steps, width = x.shape
    length = sizes(path, arrays.get("length"), count, steps)
    valid = np.arange(steps)[None, :] < length[:, None]
    where = lambda index: (
        f"{path}: x at sequence {index[0]}, step {index[1]}, feature {index[2]} (within its "
        f"length; NaN padding needs 'length' [N])"
    )
    features = np.where(valid[..., None], x, 0).astype(np.float64)
    numbers(features, where)
    target = arrays.get("y")
    if target is not None:
        shapes = ((count,), (count, steps))
        if target.shape not in shapes or target.dtype.kind not in "biufU":
            raise DataError(
                f"{path}: array 'y' must be numbers or text of shape [N] = {shapes[0]} or "
                f"[N, T] = {shapes[1]}; got {target.dtype} of shape {target.shape}"
            )
    ids = arrays.get("id", np.arange(count))
    if ids.shape != (count,):
        raise DataError(f"{path}: array 'id' must be [N] = ({count},); got shape {ids.shape}")
    return Sequences(
        source=str(path),
        features=features,
        length=length,
        target=target,
        ids=ids.astype(str),
        feature_names=tuple(str(i) for i in range(width)),
        target_name=None if target is None else "y",
        id_name="id" if "id" in arrays else None,
    )


def sizes(path: Path, length: np.ndarray | None, count: int, steps: int) -> np.ndarray:
    """An ``.npz``'s ``length`` checked against ``x [N, T, F]``: ``[N]`` integers in ``1..T``."""
    if length is None:
        return np.full(count, steps, np.int64)
    if length.shape != (count,) or length.dtype.kind not in "iu":
        raise DataError(
            f"{path}: array 'length' must be [N] = ({count},) integers; got {length.dtype} of "
            f"shape {length.shape}"
        )
    bad = np.flatnonzero((length < 1) | (length > steps))
    if bad.size:
        raise DataError(
            f"{path}: length of sequence {bad[0]} must be in 1..{steps} (x's T); got "
            f"{length[bad[0]]}"
        )
    return length.astype(np.int64)


def read_sequences(
    path: str | os.PathLike,
    *,
    target: str | None = None,
    id: str | None = None,
    features: Sequence[str] | None = None,
) -> Sequences:
    """The sequences in the file at ``path``, checked; a DataError in one line otherwise.

    For a table, ``target``, ``id`` and ``features`` name its columns (``features``
    None: every column but the id and the target); an ``.npz`` or ``.npy``
    names its arrays itself, so they must be None.

    Example:
        >>> import pathlib, tempfile
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "walks.csv"
        >>> _ = path.write_text("walk,x,label\\na,0.5,up\\na,0.7,up\\nb,0.1,down\\n")
        >>> data = read_sequences(path, target="label", id="walk")
        >>> data.features.shape, data.length.tolist(), data.target[:, 0].tolist()
        ((2, 2, 1), [2, 1], ['up', 'down'])
    """
    if checked_path(path, (*TABLES, *ARRAYS)).suffix.lower() in ARRAYS:
        given = [
            flag
            for flag, value in (("--target", target), ("--id", id), ("--features", features))
            if value is not None
        ]
        if given:
            raise DataError(
                f"{path} is a NumPy file, whose arrays are x, length, y and id; {given[0]} names "
                f"a column of a table (CSV, TSV, Parquet)"
            )
        return array_sequences(path)
    return table_sequences(read_table(path), target=target, id=id, features=features)
