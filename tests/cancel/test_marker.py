"""The .cancelled marker counts only when it is valid against cancelled schema v1.0.0."""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from runforge_contract.atomicio import write_bytes_atomic, write_json_atomic
from runforged.run_folder import MARKER_MAX_BYTES, read_cancelled_marker
from tests.contracts import validate

SCHEMA = "cancelled.v1.0.0"
VALID: dict[str, Any] = {
    "schema_version": "cancelled.v1.0.0",
    "run_id": "20250101-120000-abc123",
    "run_dir": ".ml/runs/20250101-120000-abc123",
    "cancelled_at": "2025-01-01T12:00:05.123456Z",
    "step": "training",
    "reason": "user cancelled",
    "partial_artifacts": [".ml/runs/20250101-120000-abc123/checkpoint.partial.json"],
}
REQUIRED = ["schema_version", "run_id", "run_dir", "cancelled_at", "step"]


def test_a_valid_marker_is_read_with_its_step_and_partial_artifacts(tmp_path: Path) -> None:
    validate(SCHEMA, VALID)
    write_json_atomic(tmp_path / ".cancelled", VALID)
    marker = read_cancelled_marker(tmp_path)
    assert marker is not None
    assert marker.step == "training"
    assert marker.partial_artifacts == VALID["partial_artifacts"]
    assert marker.run_id == VALID["run_id"] and marker.reason == "user cancelled"
    assert marker.cancelled_at == datetime.datetime(
        2025, 1, 1, 12, 0, 5, 123456, tzinfo=datetime.timezone.utc
    )


def test_a_marker_with_only_the_required_fields_is_valid(tmp_path: Path) -> None:
    minimal = {key: VALID[key] for key in REQUIRED}
    validate(SCHEMA, minimal)
    write_json_atomic(tmp_path / ".cancelled", minimal)
    marker = read_cancelled_marker(tmp_path)
    assert marker is not None
    assert marker.partial_artifacts == [] and marker.reason == ""


@pytest.mark.parametrize(
    "step", ["dataset_loading", "training", "metrics_computation", "artifact_writing", "shutdown"]
)
def test_every_step_of_the_schema_is_accepted(tmp_path: Path, step: str) -> None:
    write_json_atomic(tmp_path / ".cancelled", {**VALID, "step": step})
    marker = read_cancelled_marker(tmp_path)
    assert marker is not None and marker.step == step


def test_no_marker_is_absent(tmp_path: Path) -> None:
    assert read_cancelled_marker(tmp_path) is None
    assert read_cancelled_marker(tmp_path / "no such run") is None


def without(key: str) -> dict[str, Any]:
    return {k: v for k, v in VALID.items() if k != key}


# Each of these is rejected by the JSON Schema too (checked below), so "valid" means the
# schema's validity, not a looser reading of it.
SCHEMA_INVALID: list[tuple[str, object]] = [
    *((f"missing {key}", without(key)) for key in REQUIRED),
    ("another schema_version", {**VALID, "schema_version": "cancelled.v2.0.0"}),
    ("a step outside the enum", {**VALID, "step": "evaluating"}),
    ("a run_id with a slash", {**VALID, "run_id": "../../etc"}),
    ("an empty run_id", {**VALID, "run_id": ""}),
    ("a run_id longer than 256", {**VALID, "run_id": "r" * 257}),
    ("a field the schema does not have", {**VALID, "graceful": True}),
    ("partial_artifacts not a list", {**VALID, "partial_artifacts": "model.pkl"}),
    ("partial_artifacts not strings", {**VALID, "partial_artifacts": [1, 2]}),
    ("a null reason", {**VALID, "reason": None}),
    ("run_dir not a string", {**VALID, "run_dir": 7}),
    ("an array", [VALID]),
    ("a string", "cancelled"),
]


@pytest.mark.parametrize(
    "document", [c[1] for c in SCHEMA_INVALID], ids=[c[0] for c in SCHEMA_INVALID]
)
def test_a_marker_the_schema_rejects_counts_as_absent(tmp_path: Path, document: object) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(SCHEMA, document)
    write_json_atomic(tmp_path / ".cancelled", document)
    assert read_cancelled_marker(tmp_path) is None


# date-time is RFC 3339: a date, a time and an offset. (The jsonschema package checks
# formats only when optional helpers are installed, so these are checked here alone.)
@pytest.mark.parametrize(
    "cancelled_at", ["yesterday", "2025-01-01", "2025-01-01T12:00:05", "2025-13-01T00:00:00Z", ""]
)
def test_a_cancelled_at_that_is_not_an_rfc3339_date_time_counts_as_absent(
    tmp_path: Path, cancelled_at: str
) -> None:
    write_json_atomic(tmp_path / ".cancelled", {**VALID, "cancelled_at": cancelled_at})
    assert read_cancelled_marker(tmp_path) is None


def test_an_offset_other_than_z_is_a_valid_date_time(tmp_path: Path) -> None:
    write_json_atomic(
        tmp_path / ".cancelled", {**VALID, "cancelled_at": "2025-01-01T14:00:05+02:00"}
    )
    assert read_cancelled_marker(tmp_path) is not None


def write_raw(data: bytes) -> Callable[[Path], None]:
    return lambda run_dir: write_bytes_atomic(run_dir / ".cancelled", data)


def make_directory(run_dir: Path) -> None:
    (run_dir / ".cancelled").mkdir()


def make_fifo(run_dir: Path) -> None:
    os.mkfifo(run_dir / ".cancelled")


def make_symlink(run_dir: Path) -> None:
    target = run_dir / "elsewhere.json"
    write_json_atomic(target, VALID)
    (run_dir / ".cancelled").symlink_to(target)


def make_huge(run_dir: Path) -> None:
    padded = {**VALID, "reason": "x" * MARKER_MAX_BYTES}
    write_bytes_atomic(run_dir / ".cancelled", json.dumps(padded).encode())


CORRUPT: list[tuple[str, Callable[[Path], None]]] = [
    ("empty file", write_raw(b"")),
    ("not JSON", write_raw(b"cancelled at some point\n")),
    ("truncated JSON (a torn write)", write_raw(json.dumps(VALID).encode()[:40])),
    ("not UTF-8", write_raw(b'{"schema_version": "\xff\xfe"}')),
    ("a directory", make_directory),
    ("a FIFO (must not hang the daemon)", make_fifo),
    ("a symlink", make_symlink),
    ("larger than any marker", make_huge),
]


@pytest.mark.parametrize("corrupt", [c[1] for c in CORRUPT], ids=[c[0] for c in CORRUPT])
def test_a_corrupt_marker_counts_as_absent(tmp_path: Path, corrupt: Callable[[Path], None]) -> None:
    corrupt(tmp_path)
    assert read_cancelled_marker(tmp_path) is None
