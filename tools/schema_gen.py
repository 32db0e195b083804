"""Generates the language-neutral contract: JSON Schema of every request, reply and event,
and golden MessagePack examples for adapter authors to test their codecs against.

A developer tool, not part of the installed package: run ``python -m tools.schema_gen``
from the repository root after changing a type in ``protocol/messages.py``; it rewrites
``protocol/schema/*.schema.json`` and ``protocol/examples/*.json``. The test suite fails
while the committed files differ from what this module generates.

The output does not depend on which supported msgspec is installed (``_normalise``):
releases differ in whether a docstring used as a description keeps its indentation, and
in where ``{"type": "null"}`` goes in the ``anyOf`` of an optional field.
"""

from __future__ import annotations

import inspect
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import msgspec

import runforge_protocol
from runforge_contract.atomicio import write_bytes_atomic
from runforge_protocol import events as ev
from runforge_protocol import messages as m
from runforge_protocol.errors import ErrorCode
from runforge_protocol.payloads import (
    ArtifactInspection,
    DatasetInspection,
    DeviceChoice,
    GpuProbe,
    InterpreterInfo,
    ResolvedSettings,
    SettingOrigin,
    SettingSource,
)
from runforge_protocol.records import (
    IndexErrorInfo,
    IndexStatus,
    RecoveryItem,
    RecoveryReason,
    RecoveryReport,
    RecoverySkip,
    RecoverySkipError,
    ResultRecord,
    RunState,
)

# protocol/ in a checkout (runforge_protocol is a symlink to it), the unpacked package in
# an sdist.
PACKAGE_DIR = Path(runforge_protocol.__file__).resolve().parent
SCHEMA_DIR = PACKAGE_DIR / "schema"
EXAMPLES_DIR = PACKAGE_DIR / "examples"
REGENERATE_COMMAND = "python -m tools.schema_gen"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
GENERATED_NOTE = f"Generated from protocol/messages.py by `{REGENERATE_COMMAND}`; do not edit."

# The values every example shares, so that the examples read as one story: a workspace,
# a run that completes, a run that is cancelled by force, a run whose index update failed.
WORKSPACE = "/home/ada/projects/iris"
COMPLETED_RUN = "20250301-101500-1a2b3c4d"
CANCELLED_RUN = "20250301-102210-9f8e7d6c"
ORPHANED_RUN = "20250301-104500-0badc0de"
DAEMON_PID = 4242
DAEMON_VERSION = "0.1.0"
STARTED_AT = 1740823200.0  # 2025-03-01T10:00:00Z, the daemon's start in the story


# --------------------------------------------------------------------------- JSON Schema


def _normalise(node: Any) -> Any:
    """``node`` in one canonical form whatever the msgspec release: every ``description``
    cleaned as ``inspect.cleandoc`` does, and ``{"type": "null"}`` last in each ``anyOf``
    (the order of the other alternatives is the type's own)."""
    if isinstance(node, list):
        return [_normalise(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "description" and isinstance(value, str):
            out[key] = inspect.cleandoc(value)
        elif key == "anyOf" and isinstance(value, list):
            null = {"type": "null"}
            out[key] = [_normalise(v) for v in value if v != null] + [
                null for v in value if v == null
            ]
        else:
            out[key] = _normalise(value)
    return out


# (file, root types, what one message is, description): one JSON Schema file each; the
# types after the first are the ones a field refers to by name without decoding into
# them (InspectResult.document).
_SCHEMA_FILES: list[tuple[str, tuple[Any, ...], str, str]] = [
    (
        "requests.schema.json",
        (m.Request,),
        "request",
        "One request frame sent to the daemon's control socket, MessagePack-encoded. "
        "The `type` field selects the request.",
    ),
    (
        "replies.schema.json",
        (m.Reply, DatasetInspection, ArtifactInspection),
        "reply",
        "The one reply frame to each request. `ok` true: `result` holds the result "
        "(tagged by `type`) and `error` is null; `ok` false: `error` holds the "
        "structured error and `result` is null.",
    ),
    (
        "events.schema.json",
        (m.Event,),
        "event",
        "The payload frame of a published event `[topic, payload]`, and one line of a "
        "run's events.jsonl. `data` depends on `type` (see protocol/PROTOCOL.md).",
    ),
]


def json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema (draft 2020-12) of requests, replies and events."""
    documents = {}
    for file, roots, noun, description in _SCHEMA_FILES:
        (schema, *_), components = msgspec.json.schema_components(
            roots, ref_template="#/$defs/{name}"
        )
        documents[file] = {
            "$schema": JSON_SCHEMA_DIALECT,
            "$comment": GENERATED_NOTE,
            "title": f"RunForge protocol {m.PROTOCOL_VERSION}: {noun}",
            "description": description,
            **_normalise(schema),
            "$defs": _normalise(components),
        }
    return documents


# --------------------------------------------------------------------------- examples


class GoldenExample(msgspec.Struct, kw_only=True):
    """One message as the daemon's own codec encodes it."""

    name: str
    message: msgspec.Struct
    topic: bytes | None = None  # events only: the first frame of ``[topic, payload]``

    def document(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.topic is not None:
            out["topic"] = self.topic.decode()
        out["msgpack_hex"] = m.encode(self.message).hex()
        out["json"] = msgspec.to_builtins(self.message)
        return out


def request_examples() -> list[GoldenExample]:
    """One example of every request type, named by its tag."""
    ids = (f"vscode-{n}" for n in range(1, 100))
    requests: list[m.RequestBase] = [
        m.Hello(id=next(ids), client="runforge-vscode/0.4.0"),
        m.Ping(id=next(ids)),
        m.Status(id=next(ids), workspace=WORKSPACE),
        m.Shutdown(id=next(ids)),
        m.TrustPath(id=next(ids), path=WORKSPACE),
        m.UntrustPath(id=next(ids), path=WORKSPACE),
        m.ListTrusted(id=next(ids)),
        m.GetSettings(id=next(ids), workspace=WORKSPACE),
        m.Train(
            id=next(ids),
            workspace=WORKSPACE,
            preset="std-train",
            model="random_forest",
            dataset="data/iris.csv",
            name="iris baseline",
            seed=42,
            params={"n_estimators": "200"},
            grace_s=5.0,
        ),
        m.Cancel(id=next(ids), workspace=WORKSPACE, run_id=CANCELLED_RUN, grace_s=1.0),
        m.Replay(id=next(ids), workspace=WORKSPACE, run_id=COMPLETED_RUN, since=6),
        m.Active(id=next(ids), workspace=WORKSPACE),
        m.ListRuns(id=next(ids), workspace=WORKSPACE, limit=50),
        m.ShowRun(id=next(ids), workspace=WORKSPACE),
        m.GetMetrics(id=next(ids), workspace=WORKSPACE, run_id=COMPLETED_RUN),
        m.GetFeatureImportance(id=next(ids), workspace=WORKSPACE, run_id=COMPLETED_RUN),
        m.GetCoefficients(id=next(ids), workspace=WORKSPACE),
        m.GetInterpretability(id=next(ids), workspace=WORKSPACE, run_id=COMPLETED_RUN),
        m.ExportMarkdown(id=next(ids), workspace=WORKSPACE, run_id=COMPLETED_RUN),
        m.InspectDataset(
            id=next(ids), workspace=WORKSPACE, path=f"{WORKSPACE}/data/iris.csv", label="species"
        ),
        m.InspectArtifact(
            id=next(ids),
            workspace=WORKSPACE,
            path=f"{WORKSPACE}/.ml/runs/{COMPLETED_RUN}/model.pkl",
        ),
        m.Recover(id=next(ids), workspace=WORKSPACE),
    ]
    return [GoldenExample(name=str(r.__struct_config__.tag), message=r) for r in requests]


def _run_summary(run_id: str, state: RunState, **fields: Any) -> m.RunSummary:
    return m.RunSummary(
        run_id=run_id,
        workspace=WORKSPACE,
        run_dir=f".ml/runs/{run_id}",
        state=state,
        model="random_forest",
        preset="std-train",
        **fields,
    )


def reply_examples() -> list[GoldenExample]:
    """A reply of every result type, and errors of the kinds an adapter must handle."""
    completed = _run_summary(
        COMPLETED_RUN,
        RunState.COMPLETED,
        index_status=IndexStatus.INDEXED,
        name="iris baseline",
        created_at="2025-03-01T10:15:00.120Z",
        finished_at="2025-03-01T10:15:09.870Z",
        duration_ms=9620,
        final_metrics={"accuracy": 0.9667},
        exit_code=0,
        last_seq=11,
    )
    running = _run_summary(
        CANCELLED_RUN,
        RunState.RUNNING,
        name="iris hq",
        created_at="2025-03-01T10:22:10.004Z",
        pid=5120,
        last_seq=6,
    )
    orphan = m.OrphanInfo(
        run_id=ORPHANED_RUN,
        run_dir=f".ml/runs/{ORPHANED_RUN}",
        created_at="2025-03-01T10:45:00.020Z",
        error="OSError: [Errno 28] No space left on device",
    )
    settings = ResolvedSettings(
        workspace=WORKSPACE,
        python_path=f"{WORKSPACE}/.venv/bin/python",
        ml_runner_module="runforge_runner",
        dataset_path=f"{WORKSPACE}/data/iris.csv",
        label_column=None,
        model_family="random_forest",
        profile="default",
        preset="std-train",
        device="auto",
        cancel_grace_seconds=5.0,
        max_concurrent_runs=1,
        max_concurrent_runs_global=4,
        origins={
            "pythonPath": SettingOrigin(
                source=SettingSource.WORKSPACE,
                file=f"{WORKSPACE}/.vscode/settings.json",
                line=2,
            ),
            "modelFamily": SettingOrigin(source=SettingSource.DEFAULT),
        },
        user_config_file="/home/ada/.config/runforge/config.json",
        workspace_settings_file=f"{WORKSPACE}/.vscode/settings.json",
    )
    events = [e.message for e in event_examples() if isinstance(e.message, m.Event)]
    replayed = [e for e in events if e.run_id == COMPLETED_RUN and e.run_seq > 6]
    results: list[tuple[str, str, m.ResultBase]] = [
        (
            "hello",
            "vscode-1",
            m.HelloResult(
                protocol=m.PROTOCOL_VERSION,
                daemon_version=DAEMON_VERSION,
                pid=DAEMON_PID,
                uptime_s=1312.5,
            ),
        ),
        (
            "status",
            "vscode-3",
            m.StatusResult(
                protocol=m.PROTOCOL_VERSION,
                daemon_version=DAEMON_VERSION,
                pid=DAEMON_PID,
                uptime_s=1314.25,
                runtime_dir="/run/user/1000/runforge",
                control_endpoint="ipc:///run/user/1000/runforge/control.sock",
                events_endpoint="ipc:///run/user/1000/runforge/events.sock",
                stopping=False,
                counters=m.Counters(requests=120, errors=3, events_published=57),
                active_runs=1,
                subscriptions=2,
                workspace=m.WorkspaceStatus(
                    workspace=WORKSPACE,
                    trusted=True,
                    settings=settings,
                    interpreter=InterpreterInfo(
                        python_path=f"{WORKSPACE}/.venv/bin/python",
                        executable=f"{WORKSPACE}/.venv/bin/python",
                        resolved_executable="/usr/bin/python3.11",
                        version="3.11.9",
                        implementation="cpython",
                    ),
                    gpu=GpuProbe(
                        interpreter=f"{WORKSPACE}/.venv/bin/python",
                        source="none",
                        notes=["torch is not installed", "nvidia-smi was not found"],
                    ),
                    device=DeviceChoice(requested="auto", device="cpu", reason="no GPU found"),
                    orphans=[orphan],
                ),
            ),
        ),
        ("shutdown", "vscode-4", m.ShutdownResult(cancelling_runs=[CANCELLED_RUN], pid=DAEMON_PID)),
        ("trust", "vscode-5", m.TrustResult(path=WORKSPACE, changed=True, trusted=[WORKSPACE])),
        ("settings", "vscode-8", m.SettingsResult(workspace=WORKSPACE, settings=settings)),
        (
            "train",
            "vscode-9",
            m.TrainResult(
                run=_run_summary(
                    COMPLETED_RUN,
                    RunState.QUEUED,
                    name="iris baseline",
                    created_at="2025-03-01T10:15:00.120Z",
                    last_seq=1,
                )
            ),
        ),
        (
            "cancel",
            "vscode-10",
            m.CancelResult(
                run=msgspec.structs.replace(running, state=RunState.CANCELLING, last_seq=7),
                deadline_in_s=1.0,
            ),
        ),
        (
            "replay",
            "vscode-11",
            m.ReplayResult(run_id=COMPLETED_RUN, events=replayed, last_run_seq=11, terminal=True),
        ),
        ("active", "vscode-12", m.ActiveResult(runs=[running])),
        (
            "runs",
            "vscode-13",
            m.RunsResult(workspace=WORKSPACE, runs=[running, completed], orphans=[orphan]),
        ),
        (
            "document",
            "vscode-15",
            m.DocumentResult(
                workspace=WORKSPACE,
                run_id=COMPLETED_RUN,
                kind="metrics",
                path=f".ml/runs/{COMPLETED_RUN}/metrics.v1.json",
                document={
                    "schema_version": "metrics.v1",
                    "metrics_profile": "classification.base.v1",
                    "accuracy": 0.9667,
                },
                run=completed,
            ),
        ),
        (
            "markdown",
            "vscode-19",
            m.MarkdownResult(
                workspace=WORKSPACE,
                run_id=COMPLETED_RUN,
                path=f".ml/runs/{COMPLETED_RUN}/run-summary.md",
                markdown="# Run iris baseline\n\n| metric | value |\n|---|---|\n"
                "| accuracy | 0.9667 |\n",
            ),
        ),
        (
            "inspect",
            "vscode-20",
            m.InspectResult(
                workspace=WORKSPACE,
                path=f"{WORKSPACE}/data/iris.csv",
                document=DatasetInspection(
                    dataset_path=f"{WORKSPACE}/data/iris.csv",
                    fingerprint_sha256="5" * 64,
                    columns=["sepal_length", "sepal_width", "petal_length", "species"],
                    num_rows=150,
                    label_column="species",
                    num_features_excluding_label=3,
                    label_present=True,
                ),
            ),
        ),
        (
            "recover",
            "vscode-22",
            m.RecoverResult(
                workspace=WORKSPACE,
                report=RecoveryReport(
                    scanned_run_dirs=4,
                    already_indexed=2,
                    recovered=[
                        RecoveryItem(
                            run_id=orphan.run_id,
                            run_dir=orphan.run_dir,
                            reason=RecoveryReason.INDEX_ORPHAN_MARKER,
                        )
                    ],
                    skipped=[
                        RecoverySkip(
                            run_dir=".ml/runs/20250227-090000-00ddba11",
                            error=RecoverySkipError.MISSING_RUN_JSON,
                            message="run.json is missing: the run never completed",
                        )
                    ],
                    cancelled_excluded=[],
                    recovered_at="2025-03-01T10:30:00.000Z",
                ),
            ),
        ),
    ]
    examples = [
        GoldenExample(name=f"{name}_result", message=m.ok(request_id, result))
        for name, request_id, result in results
    ]
    errors = [
        (
            "error_unknown_request",
            m.error(
                "vscode-30",
                ErrorCode.UNKNOWN_REQUEST,
                "unknown request type 'frobnicate'",
                "see protocol/PROTOCOL.md for the request types and their fields",
                {"known_types": sorted(m.REQUEST_TAGS)},
            ),
        ),
        (
            "error_undecodable",
            m.error(
                "",
                ErrorCode.BAD_REQUEST,
                "undecodable request (expected MessagePack): MessagePack data is malformed: "
                "invalid opcode '\\xc1' (byte 0)",
                "encode requests with MessagePack as described in protocol/PROTOCOL.md",
            ),
        ),
        (
            "error_protocol_mismatch",
            m.error(
                "vscode-1",
                ErrorCode.PROTOCOL_MISMATCH,
                f"client speaks protocol {m.PROTOCOL_VERSION + 1}, this daemon speaks "
                f"{m.PROTOCOL_VERSION}",
                "upgrade the client (or the daemon) so that both speak the same version",
                {"client": m.PROTOCOL_VERSION + 1, "daemon": m.PROTOCOL_VERSION},
            ),
        ),
        (
            "error_workspace_not_trusted",
            m.error(
                "vscode-9",
                ErrorCode.WORKSPACE_NOT_TRUSTED,
                f"the workspace {WORKSPACE} is not trusted, so RunForge will not run its "
                "Python interpreter or code",
                f"runforgectl trust {WORKSPACE}",
                {"workspace": WORKSPACE},
            ),
        ),
    ]
    return examples + [GoldenExample(name=name, message=reply) for name, reply in errors]


class _EventStory:
    """Stamps events the way the daemon does: ``seq`` daemon-wide, ``run_seq`` per run,
    one example per published event, each named by its type (plus a suffix for a type's
    later appearances)."""

    def __init__(self) -> None:
        self.seq = 0
        self.run_seqs: dict[str, int] = {}
        self.examples: list[GoldenExample] = []

    def daemon(self, kind: str, data: dict[str, Any], at: float) -> None:
        self.seq += 1
        event = m.Event(seq=self.seq, run_seq=0, ts=at, type=kind, data=data)
        self.examples.append(GoldenExample(name=kind, message=event, topic=ev.daemon_topic(kind)))

    def run(self, run_id: str, kind: str, data: dict[str, Any], at: float, name: str = "") -> None:
        self.seq += 1
        run_seq = self.run_seqs[run_id] = self.run_seqs.get(run_id, 0) + 1
        event = m.Event(
            seq=self.seq,
            run_seq=run_seq,
            ts=at,
            type=kind,
            workspace=WORKSPACE,
            run_id=run_id,
            data=data,
        )
        topic = ev.run_topic(WORKSPACE, run_id, kind)
        self.examples.append(GoldenExample(name=name or kind, message=event, topic=topic))

    def trainer(self, run_id: str, kind: str, fields: dict[str, Any], at: float) -> None:
        """A runner's stderr event: relayed with the runner's own object as ``data``."""
        data = {"event": kind, "timestamp": _iso(at), "run_id": run_id, **fields}
        self.run(run_id, kind, data, at)

    def terminal(self, name: str, result: ResultRecord, at: float) -> None:
        self.run(result.run_id, ev.RUN_TERMINAL, msgspec.to_builtins(result), at, name)

    def elide(self, run_id: str, count: int) -> None:
        """Events of ``run_id`` published but not shown (they have examples elsewhere)."""
        self.seq += count
        self.run_seqs[run_id] = self.run_seqs.get(run_id, 0) + count


def _iso(at: float) -> str:
    stamp = datetime.fromtimestamp(at, timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def event_examples() -> list[GoldenExample]:
    """Every event type the daemon publishes, in the order a daemon could publish them:
    it starts; a run completes and is indexed; a run is cancelled and killed at its
    deadline; a run is cancelled and stops gracefully; a run writes an invalid event line
    and fails; a completed run's index update fails; the daemon stops."""
    t = STARTED_AT
    s = _EventStory()
    s.daemon(ev.DAEMON_STARTED, {"pid": DAEMON_PID}, t)

    done = COMPLETED_RUN
    argv = [
        f"{WORKSPACE}/.venv/bin/python",
        "-u",
        "-m",
        "runforge_runner",
        "train",
        "--preset=std-train",
        f"--out={WORKSPACE}/.ml/runs/{done}",
        "--device=cpu",
        "--model=random_forest",
        "--profile=default",
        "--name=iris baseline",
        "--seed=42",
        "--param=n_estimators=200",
    ]
    s.run(done, ev.RUN_QUEUED, {"position": 1}, t + 900.125)
    s.run(done, ev.RUN_SPAWNED, {"pid": 5001, "argv": argv}, t + 900.25)
    s.trainer(
        done,
        "run_start",
        {"preset_id": "std-train", "model_family": "random_forest", "out_dir": f".ml/runs/{done}"},
        t + 900.5,
    )
    s.trainer(
        done,
        "dataset_loaded",
        {
            "num_samples": 150,
            "num_features": 4,
            "rows_dropped": 0,
            "label_column": "species",
            "dataset_fingerprint_sha256": "5" * 64,
        },
        t + 901.0,
    )
    s.trainer(done, "train_started", {"model_family": "random_forest"}, t + 901.25)
    s.trainer(
        done,
        "train_progress",
        {"epoch": 1, "total_epochs": 4, "loss": 0.41, "val_accuracy": 0.9},
        t + 903.5,
    )
    s.trainer(done, "train_finished", {"duration_seconds": 7.5}, t + 908.75)
    s.trainer(
        done,
        "metrics_computed",
        {"metrics_profile": "classification.base.v1", "accuracy": 0.9667},
        t + 909.25,
    )
    s.trainer(
        done, "artifacts_written", {"artifact_count": 5, "run_dir": f".ml/runs/{done}"}, t + 909.5
    )
    s.run(done, ev.INDEX_UPDATED, {"run_id": done}, t + 909.875)
    s.terminal(
        ev.RUN_TERMINAL,
        ResultRecord(
            run_id=done,
            run_dir=f".ml/runs/{done}",
            state=RunState.COMPLETED,
            exit_code=0,
            started_at="2025-03-01T10:15:00.250Z",
            finished_at="2025-03-01T10:15:09.870Z",
            duration_ms=9620,
            final_metrics={"accuracy": 0.9667},
            index_status=IndexStatus.INDEXED,
        ),
        t + 909.875,
    )

    killed = CANCELLED_RUN
    s.elide(killed, 6)  # queued ... train_progress
    s.run(killed, ev.CANCEL_REQUESTED, {"grace_s": 1.0}, t + 1340.0)
    s.run(killed, ev.CANCEL_COUNTDOWN, {"seconds_remaining": 1}, t + 1340.0)
    s.trainer(killed, "cancelling", {"seconds_remaining": 1, "step": "training"}, t + 1340.125)
    s.run(killed, ev.CANCEL_ESCALATED, {"signal": "SIGKILL", "processes": 3}, t + 1341.0)
    s.terminal(
        "run_terminal_cancelled_forced",
        ResultRecord(
            run_id=killed,
            run_dir=f".ml/runs/{killed}",
            state=RunState.CANCELLED_FORCED,
            exit_code=-9,
            started_at="2025-03-01T10:22:10.250Z",
            finished_at="2025-03-01T10:22:21.060Z",
            duration_ms=10810,
            reason="cancelled by force: still running at the grace deadline, process tree killed",
            cancel_requested=True,
        ),
        t + 1341.0625,
    )

    graceful = "20250301-102500-0cafe0ff"
    s.elide(graceful, 9)  # queued ... cancel_requested, cancel_countdown, cancelling
    s.trainer(
        graceful,
        "run_cancelled",
        {"step": "training", "reason": "SIGTERM", "graceful": True},
        t + 1502.0,
    )
    s.terminal(
        "run_terminal_cancelled_graceful",
        ResultRecord(
            run_id=graceful,
            run_dir=f".ml/runs/{graceful}",
            state=RunState.CANCELLED_GRACEFUL,
            exit_code=143,
            started_at="2025-03-01T10:25:00.250Z",
            finished_at="2025-03-01T10:25:02.040Z",
            duration_ms=1790,
            reason="cancelled gracefully: .cancelled marker written and run_cancelled reported",
            cancel_requested=True,
            partial_artifacts=[f".ml/runs/{graceful}/checkpoint.partial.json"],
        ),
        t + 1502.0625,
    )

    failed = "20250301-103000-5eed5eed"
    s.elide(failed, 2)  # queued, spawned
    s.run(
        failed,
        ev.INVALID_EVENT_LINE,
        {
            "reason": "train_progress: missing or mistyped field 'total_epochs'",
            "line": '{"event": "train_progress", "timestamp": "2025-03-01T10:30:01Z", '
            f'"run_id": "{failed}", "epoch": 1}}',
        },
        t + 1801.0,
    )
    s.run(
        failed,
        ev.LOGS_TRUNCATED,
        {"max_log_bytes": 67108864, "logged_bytes": 67108800},
        t + 1801.25,
    )
    s.trainer(
        failed,
        "run_failed",
        {
            "error": {"code": "INVALID_DATASET", "message": "label column 'species' not found"},
            "step": "dataset_loading",
        },
        t + 1801.25,
    )
    s.terminal(
        "run_terminal_failed",
        ResultRecord(
            run_id=failed,
            run_dir=f".ml/runs/{failed}",
            state=RunState.FAILED,
            exit_code=3,
            started_at="2025-03-01T10:30:00.250Z",
            finished_at="2025-03-01T10:30:01.310Z",
            duration_ms=1060,
            reason="label column 'species' not found (exited with code 3)",
        ),
        t + 1801.3125,
    )

    orphaned = ORPHANED_RUN
    s.elide(orphaned, 9)  # queued ... artifacts_written
    index_error = IndexErrorInfo(type="OSError", message="[Errno 28] No space left on device")
    s.run(orphaned, ev.INDEX_ORPHANED, {"error": msgspec.to_builtins(index_error)}, t + 2709.5)
    s.terminal(
        "run_terminal_orphaned",
        ResultRecord(
            run_id=orphaned,
            run_dir=f".ml/runs/{orphaned}",
            state=RunState.COMPLETED,
            exit_code=0,
            started_at="2025-03-01T10:45:00.250Z",
            finished_at="2025-03-01T10:45:09.560Z",
            duration_ms=9310,
            final_metrics={"accuracy": 0.9333},
            index_status=IndexStatus.ORPHANED,
            index_error=index_error,
        ),
        t + 2709.5625,
    )
    s.daemon(ev.DAEMON_STOPPING, {"pid": DAEMON_PID}, t + 3600.0)
    return s.examples


def golden_examples() -> dict[str, list[GoldenExample]]:
    """File name -> examples: requests, replies and events."""
    return {
        "requests.json": request_examples(),
        "replies.json": reply_examples(),
        "events.json": event_examples(),
    }


# --------------------------------------------------------------------------- files


def _json_text(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def _examples_document(kind: str, examples: list[GoldenExample]) -> dict[str, Any]:
    return {
        "$comment": GENERATED_NOTE,
        "protocol": m.PROTOCOL_VERSION,
        "description": f"Golden {kind}: `msgpack_hex` is the exact MessagePack encoding "
        "runforged produces (keys in declaration order, floats as float64); `json` is the "
        "same message decoded, the form the JSON Schema describes.",
        "examples": [example.document() for example in examples],
    }


def render() -> dict[Path, str]:
    """Every generated file (path relative to ``protocol/``) and its exact text."""
    files = {Path("schema") / name: _json_text(doc) for name, doc in json_schemas().items()}
    for name, examples in golden_examples().items():
        kind = name.removesuffix(".json")
        files[Path("examples") / name] = _json_text(_examples_document(kind, examples))
    return files


def write() -> list[Path]:
    """Write the files whose content changed; return them."""
    changed = []
    for relative, text in render().items():
        target = PACKAGE_DIR / relative
        data = text.encode("utf-8")
        if target.is_file() and target.read_bytes() == data:
            continue
        target.parent.mkdir(exist_ok=True)
        write_bytes_atomic(target, data)
        changed.append(target)
    return changed


def main() -> int:
    for path in write():
        print(f"wrote {path.relative_to(PACKAGE_DIR.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
