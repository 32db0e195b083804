"""Reading a training CSV: strict checks with one actionable line per problem.

Standard library only, so that loading (the first, cancellable step) starts before
scikit-learn is imported. Rules: UTF-8 without a byte-order mark, comma-separated, a
header row, a label column (``label`` unless told otherwise), numeric features. Rows with
a missing value (empty, ``NA``, ``NaN``, ``null``) are dropped and counted.
"""

from __future__ import annotations

import csv
import hashlib
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from runforge_runner.contract import ERROR_INVALID_DATASET, EXIT_BAD_DATA, TrainerError

DEFAULT_LABEL_COLUMN = "label"
MISSING_TOKENS = frozenset({"", "na", "nan", "null"})
VALIDATION_FRACTION = 0.2
# How many rows are parsed between two cancel checks while loading.
ROWS_PER_CHECKPOINT = 2000

Label = int | str


class DatasetError(TrainerError):
    """The dataset cannot be used as given; the message says what to change."""

    def __init__(self, message: str) -> None:
        super().__init__(ERROR_INVALID_DATASET, message, EXIT_BAD_DATA)


@dataclass(frozen=True)
class Dataset:
    """A validated dataset: features as rows of floats, one label per row."""

    path: Path
    fingerprint_sha256: str
    label_column: str
    feature_names: list[str]
    features: list[list[float]]
    labels: list[Label]
    rows_dropped: int

    @property
    def classes(self) -> list[Label]:
        return sorted(set(self.labels), key=_label_sort_key)


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
    table = read_csv(path, checkpoint)
    if label_column not in table.header:
        raise DatasetError(
            f"dataset {path} has no {label_column!r} column (columns: "
            f"{', '.join(table.header)}); rename the label column or pass --label"
        )
    if len(table.header) < 2:
        raise DatasetError(f"dataset {path} has only the label column; add feature columns")
    label_index = table.header.index(label_column)
    feature_names = [name for i, name in enumerate(table.header) if i != label_index]
    features: list[list[float]] = []
    raw_labels: list[str] = []
    dropped = 0
    for count, (line, fields) in enumerate(table.rows, start=1):
        raw_label = fields[label_index].strip()
        values: list[float] = []
        missing = raw_label.lower() in MISSING_TOKENS
        for i, field in enumerate(fields):
            if i == label_index:
                continue
            token = field.strip()
            if token.lower() in MISSING_TOKENS:
                missing = True
                continue
            values.append(_parse_number(path, table.header[i], line, token))
        if missing:
            dropped += 1
        else:
            features.append(values)
            raw_labels.append(raw_label)
        if count % ROWS_PER_CHECKPOINT == 0:
            checkpoint()
    if all(fields[label_index].strip().lower() in MISSING_TOKENS for _, fields in table.rows):
        raise DatasetError(
            f"dataset {path}: the label column {label_column!r} is empty in every row; "
            "fill in the labels"
        )
    if not features:
        raise DatasetError(
            f"dataset {path}: every row has a missing value, so no rows are left to train on"
        )
    labels = _typed_labels(raw_labels)
    _check_splittable(path, label_column, labels, dropped)
    return Dataset(
        path=path,
        fingerprint_sha256=table.fingerprint_sha256,
        label_column=label_column,
        feature_names=feature_names,
        features=features,
        labels=labels,
        rows_dropped=dropped,
    )


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


def _label_sort_key(label: Label) -> tuple[int, int | str]:
    return (0, label) if isinstance(label, int) else (1, label)


def _check_splittable(path: Path, label_column: str, labels: list[Label], dropped: int) -> None:
    counts = Counter(labels)
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
