"""The daemon's own on-disk formats that never travel on the wire: ``request.json`` of a
run folder, ``.ml/outputs/index.json`` and a run's ``.index-orphan`` marker. (A run's
``result.json`` is ``runforge_protocol.records.ResultRecord``: it is also the
``run_terminal`` event's data.)"""

from __future__ import annotations

import msgspec

from runforge_protocol.records import IndexErrorInfo


class RequestRecord(msgspec.Struct, kw_only=True):
    """``<run dir>/request.json``: what was asked for and what was resolved, written by the
    daemon before the runner starts."""

    schema_version: str = "runforge.request.v1"
    run_id: str
    workspace: str  # absolute, symlinks resolved
    run_dir: str  # workspace-relative, forward slashes: ".ml/runs/<run_id>"
    created_at: str  # ISO 8601 UTC
    name: str
    preset: str
    model: str | None = None
    profile: str | None = None
    seed: int | None = None
    params: dict[str, str] = {}
    device: str = "cpu"
    dataset_path: str = ""  # absolute
    python_path: str = ""
    runner_module: str = ""
    cancel_grace_s: float = 5.0
    argv: list[str] = []


# --------------------------------------------------------------------------- the index


class IndexSummary(msgspec.Struct, kw_only=True, gc=False):
    """``summary`` of an index entry (index schema v1.0.0)."""

    duration_ms: int
    final_metrics: dict[str, float]
    device: str  # "cpu" | "cuda"


class IndexEntry(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One run in ``.ml/outputs/index.json``.

    Entries the daemon writes carry all ten fields of index schema v1.0.0. Entries written
    by older RunForge versions (schema v0.2.2.1: six fields, or the legacy bare array) are
    read and kept as they are, so every field but ``run_id`` may be absent; absent fields
    are omitted again when the index is rewritten. Field order is the schema's.
    ``gc=False``: an index holds up to 10^5 of these and none can be part of a cycle.
    """

    run_id: str
    created_at: str | None = None
    name: str | None = None
    preset_id: str | None = None  # "std-train" | "hq-train"
    status: str | None = None  # "succeeded" | "failed"
    summary: IndexSummary | None = None
    run_dir: str | None = None  # workspace-relative, forward slashes
    dataset_fingerprint_sha256: str | None = None
    label_column: str | None = None
    model_pkl: str | None = None  # workspace-relative


class IndexFile(msgspec.Struct, kw_only=True):
    """``.ml/outputs/index.json`` in its canonical envelope (the daemon always writes this)."""

    schema_version: str  # "1.0.0"; "0.2.2.1" in indexes written by older RunForge versions
    runs: list[IndexEntry]


class IndexOrphanMarker(msgspec.Struct, kw_only=True):
    """``<run dir>/.index-orphan`` (index-orphan schema v1.0.0): the run completed but its
    index update failed."""

    schema_version: str = "index-orphan.v1.0.0"
    run_id: str
    run_dir: str  # workspace-relative, forward slashes
    written_at: str  # ISO 8601 UTC
    error: IndexErrorInfo
    index_path: str  # workspace-relative, forward slashes
