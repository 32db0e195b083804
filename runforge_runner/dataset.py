"""Reading a training CSV: fast through numpy, strict, one actionable line per problem.

Rules: UTF-8 without a byte-order mark, comma-separated, a header row, a label column
(``label`` unless told otherwise), numeric features. Rows with a missing value (empty,
``NA``, ``NaN``, ``null``) are dropped and counted.

Two readers give the same result. The fast one parses blocks of lines with
``numpy.loadtxt`` (a C parser that rounds like ``float()``), checking for a cancel between
blocks; a block it cannot take as plain finite numbers (missing values, odd tokens) is
typed row by row by the careful code instead. The careful reader (the standard library's
``csv`` module, every rule checked in order) reads the whole file whenever the fast one
meets anything it does not handle: quotes, a byte-order mark, non-UTF-8 bytes, and every
error, so each message (with its line number) is exactly the careful reader's. numpy is
imported only when a dataset is loaded, so ``inspect`` stays light.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runforge_runner.contract import ERROR_INVALID_DATASET, EXIT_BAD_DATA, TrainerError

DEFAULT_LABEL_COLUMN = "label"
MISSING_TOKENS = frozenset({"", "na", "nan", "null"})
VALIDATION_FRACTION = 0.2
# How many rows are parsed between two cancel checks while loading (careful reader).
ROWS_PER_CHECKPOINT = 2000
# Bytes of the file parsed between two cancel checks (fast reader): a few hundredths of
# a second; small enough that the per-block buffers stay small beside the arrays.
BLOCK_BYTES = 1 << 20

Label = int | str


class DatasetError(TrainerError):
    """The dataset cannot be used as given; the message says what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(ERROR_INVALID_DATASET, message, EXIT_BAD_DATA)


@dataclass(frozen=True)
class Dataset:
    """A validated dataset: ``features`` a float64 array (rows x features), ``labels`` one
    per row (an int64 array when every label is an integer, else strings as written)."""

    path: Path
    fingerprint_sha256: str
    label_column: str
    feature_names: list[str]
    features: Any
    labels: Any
    rows_dropped: int


@dataclass(frozen=True)
class CsvText:
    """The raw file: its fingerprint, its header and its data lines, not yet typed."""

    path: Path
    fingerprint_sha256: str
    header: list[str]
    rows: list[tuple[int, list[str]]]  # (line number in the file, fields)


def read_csv(
    path: Path, checkpoint: Callable[[], None] = lambda: None, *, allow_no_rows: bool = False
) -> CsvText:
    """Read and structurally check a CSV (encoding, delimiter, header, row widths)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"dataset {path} does not exist; check RUNFORGE_DATASET") from None
    except IsADirectoryError:
        raise DatasetError(f"dataset {path} is a directory; point to a .csv file") from None
    except OSError as error:
        raise DatasetError(f"cannot read dataset {path}: {error.strerror}") from None
    fingerprint = hashlib.sha256(data).hexdigest()
    if data.startswith(b"\xef\xbb\xbf"):
        raise DatasetError(
            f"dataset {path} starts with a UTF-8 byte-order mark; save it as UTF-8 without BOM"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DatasetError(
            f"dataset {path} is not UTF-8 (byte 0x{data[error.start]:02x} at offset "
            f"{error.start}); re-save it as UTF-8"
        ) from None
    if not text.strip():
        raise DatasetError(f"dataset {path} is empty; it needs a header row and data rows")
    reader = csv.reader(text.splitlines())
    header: list[str] | None = None
    rows: list[tuple[int, list[str]]] = []
    try:
        for fields in reader:
            if not fields or all(not field.strip() for field in fields):
                continue
            if header is None:
                header = [field.strip() for field in fields]
                _check_header(path, header)
                continue
            line = reader.line_num
            if len(fields) != len(header):
                raise DatasetError(
                    f"dataset {path} line {line} has {len(fields)} fields but the header has "
                    f"{len(header)}; every row needs one value per column"
                )
            rows.append((line, fields))
            if len(rows) % ROWS_PER_CHECKPOINT == 0:
                checkpoint()
    except csv.Error as error:
        raise DatasetError(f"dataset {path} line {reader.line_num}: {error}") from None
    assert header is not None
    if not rows and not allow_no_rows:
        raise DatasetError(f"dataset {path} has a header but no data rows")
    return CsvText(path, fingerprint, header, rows)


def _check_header(path: Path, header: list[str]) -> None:
    if len(header) == 1:
        for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
            if delimiter in header[0]:
                raise DatasetError(
                    f"dataset {path} is separated by {name}, not commas; "
                    "save it as comma-separated CSV"
                )
    if any(not name for name in header):
        raise DatasetError(f"dataset {path} has an unnamed column in its header; name every column")
    duplicates = sorted(name for name, count in Counter(header).items() if count > 1)
    if duplicates:
        raise DatasetError(
            f"dataset {path} repeats column {duplicates[0]!r} in its header; names must be unique"
        )


def load_dataset(
    path: Path,
    label_column: str = DEFAULT_LABEL_COLUMN,
    checkpoint: Callable[[], None] = lambda: None,
) -> Dataset:
    """Read, type and validate a training dataset; ``checkpoint`` is called as rows go by."""
    fast = _load_fast(path, label_column, checkpoint)
    if fast is not None:
        return fast
    return _load_careful(path, label_column, checkpoint)


@dataclass
class _TypedRows:
    """Rows typed by the careful code: kept features and labels, and what was dropped."""

    features: list[list[float]]
    labels: list[str]
    dropped: int
    unlabeled: int  # rows whose label is missing (dropped too)


def _type_rows(
    path: Path,
    header: list[str],
    label_index: int,
    rows: list[tuple[int, list[str]]],
    checkpoint: Callable[[], None],
) -> _TypedRows:
    typed = _TypedRows([], [], 0, 0)
    for count, (line, fields) in enumerate(rows, start=1):
        raw_label = fields[label_index].strip()
        values: list[float] = []
        missing = unlabeled = raw_label.lower() in MISSING_TOKENS
        for i, field in enumerate(fields):
            if i == label_index:
                continue
            token = field.strip()
            if token.lower() in MISSING_TOKENS:
                missing = True
                continue
            values.append(_parse_number(path, header[i], line, token))
        typed.unlabeled += unlabeled
        if missing:
            typed.dropped += 1
        else:
            typed.features.append(values)
            typed.labels.append(raw_label)
        if count % ROWS_PER_CHECKPOINT == 0:
            checkpoint()
    return typed


def _load_careful(path: Path, label_column: str, checkpoint: Callable[[], None]) -> Dataset:
    """The careful reader: every rule in order, so every message is the reference one."""
    import numpy as np

    table = read_csv(path, checkpoint)
    label_index = _label_index(path, table.header, label_column)
    typed = _type_rows(path, table.header, label_index, table.rows, checkpoint)
    _check_labelled(path, label_column, typed.unlabeled, len(table.rows), bool(typed.labels))
    labels = np.asarray(_typed_labels(typed.labels))
    _check_splittable(path, label_column, labels, typed.dropped)
    return Dataset(
        path=path,
        fingerprint_sha256=table.fingerprint_sha256,
        label_column=label_column,
        feature_names=[name for i, name in enumerate(table.header) if i != label_index],
        features=np.array(typed.features, dtype=np.float64).reshape(
            len(labels), len(table.header) - 1
        ),
        labels=labels,
        rows_dropped=typed.dropped,
    )


def _label_index(path: Path, header: list[str], label_column: str) -> int:
    if label_column not in header:
        raise DatasetError(
            f"dataset {path} has no {label_column!r} column (columns: "
            f"{', '.join(header)}); rename the label column or pass --label"
        )
    if len(header) < 2:
        raise DatasetError(f"dataset {path} has only the label column; add feature columns")
    return header.index(label_column)


def _check_labelled(path: Path, label_column: str, unlabeled: int, rows: int, kept: bool) -> None:
    if unlabeled == rows:
        raise DatasetError(
            f"dataset {path}: the label column {label_column!r} is empty in every row; "
            "fill in the labels"
        )
    if not kept:
        raise DatasetError(
            f"dataset {path}: every row has a missing value, so no rows are left to train on"
        )


@dataclass(frozen=True)
class _Survey:
    """The first, streaming pass over the file: its fingerprint and a bound on its lines."""

    fingerprint_sha256: str
    max_lines: int


def _survey(path: Path, checkpoint: Callable[[], None]) -> _Survey | None:
    """Hash the file and bound its line count; None if the careful reader must decide:
    quotes (fields may then hold commas or line breaks), a byte-order mark, NUL bytes, an
    empty or unreadable file."""
    digest = hashlib.sha256()
    lines = 1
    blank = True
    try:
        with path.open("rb") as handle:
            first = True
            while piece := handle.read(BLOCK_BYTES):
                if first and piece.startswith(b"\xef\xbb\xbf"):
                    return None
                first = False
                if b'"' in piece or b"\x00" in piece:
                    return None
                digest.update(piece)
                # Lines end at \n, \r\n or a lone \r; rarer separators overflow the bound
                # and send the file to the careful reader.
                lines += piece.count(b"\n") + piece.count(b"\r") - piece.count(b"\r\n")
                blank = blank and not piece.strip()
                checkpoint()
    except OSError:
        return None
    return None if blank else _Survey(digest.hexdigest(), lines)


def _read_blocks(path: Path) -> Iterator[bytes]:
    """The file in blocks of about BLOCK_BYTES that end at a line break (the last at EOF)."""
    with path.open("rb") as handle:
        carry = b""
        while piece := handle.read(BLOCK_BYTES):
            data = carry + piece
            cut = data.rfind(b"\n") + 1
            carry = data[cut:]
            if cut:
                yield data[:cut]
        if carry:
            yield carry


def _load_fast(path: Path, label_column: str, checkpoint: Callable[[], None]) -> Dataset | None:
    """The fast reader; None whenever the careful one must decide (see the module doc).

    Two streaming passes: the first hashes the file and bounds its lines, so the second
    parses straight into arrays allocated once (peak memory about the arrays' size)."""
    import warnings

    import numpy as np

    survey = _survey(path, checkpoint)
    if survey is None:
        return None
    header: list[str] | None = None
    label_index = 0
    codes: dict[str, int] = {}

    def label_code(token: str | bytes) -> float:
        # numpy < 1.25 hands converters the field as bytes, later releases as str.
        key = (token.decode("utf-8") if isinstance(token, bytes) else token).strip()
        if key.lower() in MISSING_TOKENS:
            return math.nan  # not finite: the block goes to the careful code
        code = codes.get(key)
        if code is None:
            code = codes[key] = len(codes)
        return float(code)

    features: Any = None
    label_codes = np.empty(survey.max_lines, dtype=np.int64)
    kept = rows = dropped = unlabeled = 0
    lines_before = 0  # lines of the file before the current block
    try:
        for raw in _read_blocks(path):
            try:
                lines = raw.decode("utf-8").splitlines()
            except UnicodeDecodeError:
                return None
            first = 0  # first data line of this block
            if header is None:
                found = _find_header(lines)
                if found is None:
                    lines_before += len(lines)
                    continue
                first, header = found
                _check_header(path, header)
                if label_column not in header or len(header) < 2:
                    return None
                label_index = header.index(label_column)
                features = np.empty((survey.max_lines, len(header) - 1), dtype=np.float64)
            body = lines[first:]
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # "input contained no data": blank lines
                    block = np.loadtxt(
                        body, delimiter=",", comments=None, dtype=np.float64, ndmin=2,
                        converters={label_index: label_code},
                    )  # fmt: skip
                plain = len(block) == 0 or (
                    block.shape[1] == len(header) and bool(np.isfinite(block).all())
                )
            except ValueError:
                plain = False
            block_features: Any
            block_codes: Any
            if plain and len(block) == 0:
                block_features, block_codes = [], []  # only blank lines
            elif plain:
                block_features = np.delete(block, label_index, axis=1)
                block_codes = block[:, label_index]
                rows += len(block)
            else:
                typed = _type_block(
                    path, header, label_index, body, lines_before + first, checkpoint
                )
                if typed is None:
                    return None
                block_features = typed.features
                block_codes = [label_code(label) for label in typed.labels]
                rows += typed.rows
                dropped += typed.dropped
                unlabeled += typed.unlabeled
            count = len(block_codes)
            if kept + count > survey.max_lines:
                return None  # line breaks the survey did not count
            if count:
                features[kept : kept + count] = block_features
                label_codes[kept : kept + count] = block_codes
            kept += count
            lines_before += len(lines)
            checkpoint()
    except OSError:
        return None
    if header is None or rows == 0 or unlabeled == rows or kept == 0:
        return None
    # Typed from the labels of kept rows only (a dropped row's label may be anything).
    keys = list(codes)
    used = np.unique(label_codes[:kept])
    compact = np.zeros(len(keys), dtype=np.int64)
    compact[used] = np.arange(len(used))
    try:
        values: Any = np.array([int(keys[code]) for code in used], dtype=np.int64)
    except (ValueError, OverflowError):
        values = np.array([keys[code] for code in used])
    labels = values[compact[label_codes[:kept]]]
    try:
        _check_splittable(path, label_column, labels, dropped)
    except DatasetError:
        return None
    return Dataset(
        path=path,
        fingerprint_sha256=survey.fingerprint_sha256,
        label_column=label_column,
        feature_names=[name for i, name in enumerate(header) if i != label_index],
        features=features[:kept],
        labels=labels,
        rows_dropped=dropped,
    )


def _find_header(lines: list[str]) -> tuple[int, list[str]] | None:
    """(index of the line after the header, the header) or None if all lines are blank."""
    for index, line in enumerate(lines):
        fields = line.split(",")
        if any(field.strip() for field in fields):
            return index + 1, [field.strip() for field in fields]
    return None


@dataclass
class _TypedBlock(_TypedRows):
    rows: int = 0


def _type_block(
    path: Path,
    header: list[str],
    label_index: int,
    lines: list[str],
    lines_before: int,
    checkpoint: Callable[[], None],
) -> _TypedBlock | None:
    """A block of lines typed row by row (missing values); None on any error."""
    rows: list[tuple[int, list[str]]] = []
    for offset, line in enumerate(lines, start=1):
        fields = line.split(",")
        if not any(field.strip() for field in fields):
            continue
        if len(fields) != len(header):
            return None
        rows.append((lines_before + offset, fields))
    try:
        typed = _type_rows(path, header, label_index, rows, checkpoint)
    except DatasetError:
        return None
    return _TypedBlock(typed.features, typed.labels, typed.dropped, typed.unlabeled, len(rows))


def _parse_number(path: Path, column: str, line: int, token: str) -> float:
    try:
        value = float(token)
    except ValueError:
        raise DatasetError(
            f"dataset {path} column {column!r} line {line}: {token!r} is not a number; "
            "features must be numeric"
        ) from None
    if not math.isfinite(value):
        raise DatasetError(
            f"dataset {path} column {column!r} line {line}: {token!r} is not a finite number"
        )
    return value


def _typed_labels(raw: list[str]) -> list[Label]:
    """Integer labels when every label is an integer, otherwise the strings as written."""
    try:
        return [int(value) for value in raw]
    except ValueError:
        return list(raw)


def _check_splittable(path: Path, label_column: str, labels: Any, dropped: int) -> None:
    import numpy as np

    values, frequencies = np.unique(labels, return_counts=True)
    counts = Counter({value.item(): int(n) for value, n in zip(values, frequencies, strict=True)})
    if len(counts) < 2:
        only = next(iter(counts))
        raise DatasetError(
            f"dataset {path}: the label column {label_column!r} has a single class ({only!r}); "
            "a classifier needs at least two"
        )
    validation_rows = math.ceil(len(labels) * VALIDATION_FRACTION)
    rarest, rarest_count = min(counts.items(), key=lambda item: (item[1], str(item[0])))
    if (
        rarest_count < 2
        or validation_rows < len(counts)
        or len(labels) - validation_rows < len(counts)
    ):
        after = f" after dropping {dropped} with missing values" if dropped else ""
        raise DatasetError(
            f"dataset {path} has {len(labels)} usable rows{after} for {len(counts)} classes "
            f"(class {rarest!r} has {rarest_count}): too few to split 80/20 for validation; "
            f"provide at least {math.ceil(len(counts) / VALIDATION_FRACTION)} rows with two or "
            "more per class"
        )


def inspect_dataset(path: Path, label_column: str = DEFAULT_LABEL_COLUMN) -> dict[str, object]:
    """The ``inspect`` document (inspect schema v0.2.2.1): columns, rows, label presence."""
    table = read_csv(path, allow_no_rows=True)
    present = label_column in table.header
    return {
        "dataset_path": str(path),
        "fingerprint_sha256": table.fingerprint_sha256,
        "columns": table.header,
        "num_rows": len(table.rows),
        "label_column": label_column,
        "num_features_excluding_label": len(table.header) - (1 if present else 0),
        "label_present": present,
    }
