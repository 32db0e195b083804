"""Every request a client can send to runforged, every reply it gets, and the codec.

Wire format: msgspec MessagePack. A request is one frame holding one of the tagged
structs below (the tag lives in the ``type`` field); the reply is one frame holding a
``Reply`` whose ``result`` is the tagged result struct of that request, or whose ``error``
is a structured ``ErrorInfo``. Adding a request means: one Struct here (added to
``Request``), one result Struct (added to ``Result``), one handler in the daemon.

Evolution rule: new fields get defaults; a field's type never changes; a breaking change
bumps ``PROTOCOL_VERSION``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Union, get_args

import msgspec

from runforge_protocol.errors import ErrorCode
from runforge_protocol.payloads import DeviceChoice, GpuProbe, InterpreterInfo, ResolvedSettings
from runforge_protocol.records import IndexStatus, RecoveryReport, RunState

PROTOCOL_VERSION = 1
# Requests larger than this are answered with MESSAGE_TOO_LARGE. Far larger frames are
# cut off by libzmq itself (HARD_MAX_MESSAGE_BYTES) and can only be counted, not answered.
MAX_MESSAGE_BYTES = 1 << 20
HARD_MAX_MESSAGE_BYTES = 16 << 20

# --------------------------------------------------------------------------- field limits
#
# Checked by the decoder, so a request outside them is BAD_REQUEST (naming the field)
# before anything starts. Text reaches command lines, file names, logs and terminals: a
# NUL byte cannot pass through any of them, and control characters (newline, escape...)
# forge log lines or terminal output.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
MAX_TEXT_CHARS = 4096  # PATH_MAX: the longest path the kernel accepts
MAX_GRACE_S = 86_400.0  # a cancel grace window of up to one day
MAX_SEED = 2**32 - 1  # what numpy and scikit-learn accept as a random seed
MAX_COUNT = 2**63 - 1  # sequence numbers and limits: what MessagePack's int64 holds
MAX_PARAMS = 256

# "(?![\s\S])" is the end of the string in every regex dialect; Python's "$" would also
# match before a final newline.
Text = Annotated[
    str,
    msgspec.Meta(pattern=rf"^[^{CONTROL_CHARACTERS}]*(?![\s\S])", max_length=MAX_TEXT_CHARS),
]
GraceSeconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_GRACE_S)]
Seed = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEED)]
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
ProtocolVersion = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]


# --------------------------------------------------------------------------- requests


class RequestBase(msgspec.Struct, tag_field="type", kw_only=True, forbid_unknown_fields=False):
    """Fields every request carries. Unknown fields are ignored, so that a newer client's
    additions never break an older daemon."""

    id: Annotated[str, msgspec.Meta(max_length=MAX_TEXT_CHARS)] = ""  # echoed in the reply
    protocol: ProtocolVersion = PROTOCOL_VERSION


class Hello(RequestBase, tag="hello"):
    """Handshake: the client names itself; the reply reports the daemon's versions."""

    client: Text = ""


class Ping(RequestBase, tag="ping"):
    """Liveness probe; same reply as ``hello``."""


class Status(RequestBase, tag="status"):
    """Daemon status; with ``workspace``, also that workspace's settings and interpreter."""

    workspace: Text | None = None


class Shutdown(RequestBase, tag="shutdown"):
    """Stop the daemon: in-flight runs are cancelled gracefully first, unless
    ``keep_runs``: then they are left to their monitors (and queued runs stay queued on
    disk) for the next daemon to take over."""

    keep_runs: bool = False


class TrustPath(RequestBase, tag="trust"):
    """Trust an existing folder (absolute path) and every folder beneath it."""

    path: Text


class UntrustPath(RequestBase, tag="untrust"):
    """Withdraw trust from a folder that was trusted by that exact path."""

    path: Text


class ListTrusted(RequestBase, tag="list_trusted"):
    """The trusted folders."""


class GetSettings(RequestBase, tag="settings"):
    """A workspace's resolved settings and where each value came from."""

    workspace: Text


class Train(RequestBase, tag="train"):
    """Start (or queue) a training run. Unset fields come from the workspace settings."""

    workspace: Text
    preset: Text | None = None
    model: Text | None = None
    profile: Text | None = None
    dataset: Text | None = None
    name: Text | None = None
    seed: Seed | None = None
    params: Annotated[dict[Text, Text], msgspec.Meta(max_length=MAX_PARAMS)] = {}
    grace_s: GraceSeconds | None = None
    device: Text | None = None
    executor: Text | None = None  # "local" or "ray" (the setting ``executor``)
    ray_address: Text | None = None  # the Ray dashboard's URL (the setting ``rayAddress``)
    label: Text | None = None
    # A retry of the same request (same key, same workspace) is answered with the run the
    # first one created instead of starting another; runforgectl sends a fresh key per call.
    request_key: Text | None = None


class Cancel(RequestBase, tag="cancel"):
    """Cancel ``run_id``, or the workspace's active run when no id is given."""

    workspace: Text | None = None
    run_id: Text | None = None
    grace_s: GraceSeconds | None = None


class Replay(RequestBase, tag="replay"):
    """A run's persisted events with ``run_seq > since``, oldest first."""

    workspace: Text
    run_id: Text
    since: Count = 0
    limit: Count = 10_000


class Active(RequestBase, tag="active"):
    """Queued, running and cancelling runs (of one workspace, or all)."""

    workspace: Text | None = None


class ListRuns(RequestBase, tag="runs"):
    """Live runs, orphans, then finished runs newest first (at most ``limit`` of those)."""

    workspace: Text
    limit: Count = 200


class ShowRun(RequestBase, tag="show"):
    """A run's metadata; ``run_id`` None means the newest index entry."""

    workspace: Text
    run_id: Text | None = None


class GetMetrics(RequestBase, tag="metrics"):
    """A run's ``metrics.v1.json`` (else ``metrics.json``); ``run_id`` None: the newest."""

    workspace: Text
    run_id: Text | None = None


class GetFeatureImportance(RequestBase, tag="feature_importance"):
    """A tree model's feature importance document; ``run_id`` None: the newest run."""

    workspace: Text
    run_id: Text | None = None


class GetCoefficients(RequestBase, tag="coefficients"):
    """A linear model's coefficients document; ``run_id`` None: the newest run."""

    workspace: Text
    run_id: Text | None = None


class GetInterpretability(RequestBase, tag="interpretability"):
    """A run's interpretability index; ``run_id`` None: the newest run."""

    workspace: Text
    run_id: Text | None = None


class ExportMarkdown(RequestBase, tag="export_md"):
    """Render a run as Markdown and write ``run-summary.md`` in its run folder."""

    workspace: Text
    run_id: Text | None = None


class InspectDataset(RequestBase, tag="inspect_dataset"):
    """Describe a CSV inside the workspace (runs the workspace's Python: trust needed)."""

    workspace: Text
    path: Text
    label: Text | None = None


class InspectArtifact(RequestBase, tag="inspect_artifact"):
    """Describe a model artifact inside the workspace (runs the workspace's Python: trust
    needed)."""

    workspace: Text
    path: Text


class Recover(RequestBase, tag="recover"):
    """Re-add runs that are on disk but missing from the workspace index."""

    workspace: Text


Request = Union[  # noqa: UP007 - msgspec needs a runtime Union object for the decoder
    Hello,
    Ping,
    Status,
    Shutdown,
    TrustPath,
    UntrustPath,
    ListTrusted,
    GetSettings,
    Train,
    Cancel,
    Replay,
    Active,
    ListRuns,
    ShowRun,
    GetMetrics,
    GetFeatureImportance,
    GetCoefficients,
    GetInterpretability,
    ExportMarkdown,
    InspectDataset,
    InspectArtifact,
    Recover,
]

REQUEST_TAGS = frozenset(t.__struct_config__.tag for t in get_args(Request))


# --------------------------------------------------------------------------- results


class ResultBase(msgspec.Struct, tag_field="type", kw_only=True):
    """A result is tagged by ``type`` like a request; several requests share one type."""


class OrphanInfo(msgspec.Struct, kw_only=True):
    """A run on disk (with ``run.json``) that the index does not list."""

    run_id: str
    run_dir: str
    created_at: str | None = None
    error: str | None = None  # from its ``.index-orphan`` marker, when there is one


class HelloResult(ResultBase, tag="hello"):
    """The daemon's protocol and version: the answer to ``hello`` and ``ping``."""

    protocol: int
    daemon_version: str
    pid: int
    uptime_s: float


class Counters(msgspec.Struct, kw_only=True):
    """What the daemon has handled since it started."""

    requests: int = 0
    errors: int = 0
    dropped_frames: int = 0  # frames that could not be answered at all
    events_published: int = 0
    invalid_trainer_lines: int = 0


class StatusResult(ResultBase, tag="status"):
    """The daemon's state; ``workspace`` is set when the request named one."""

    protocol: int
    daemon_version: str
    pid: int
    uptime_s: float
    runtime_dir: str
    control_endpoint: str
    events_endpoint: str
    stopping: bool
    counters: Counters
    active_runs: int = 0
    queued_runs: int = 0
    subscriptions: int = 0  # event subscriptions currently open on the XPUB socket
    workspace: WorkspaceStatus | None = None


class WorkspaceStatus(msgspec.Struct, kw_only=True):
    """A workspace as the daemon sees it. ``settings`` is the resolved settings document:
    one key per setting (``pythonPath``...), ``origins`` (where each value came from:
    source, file, line) and ``warnings``. ``interpreter``, ``gpu`` and ``device`` are the
    probe results (None when the workspace is not trusted: probing runs Python);
    ``problems`` lists what stops a run from starting here."""

    workspace: str
    trusted: bool
    settings: ResolvedSettings | None = None
    interpreter: InterpreterInfo | None = None
    gpu: GpuProbe | None = None
    device: DeviceChoice | None = None
    problems: list[ErrorInfo] = []
    orphans: list[OrphanInfo] = []


class ShutdownResult(ResultBase, tag="shutdown"):
    """The stop has begun; these runs are being cancelled gracefully first."""

    cancelling_runs: list[str] = []
    pid: int = 0  # the daemon's pid, so a client can wait for the process to be gone
    kept_runs: list[str] = []  # with keep_runs: the runs left running (or queued)


class TrustResult(ResultBase, tag="trust"):
    """The answer to ``trust``, ``untrust`` and ``list_trusted``: the folder acted on ("" for
    a listing), whether the store changed, and every trusted folder afterwards."""

    path: str
    changed: bool
    trusted: list[str] = []


class SettingsResult(ResultBase, tag="settings"):
    """The resolved settings document (see ``WorkspaceStatus.settings``)."""

    workspace: str
    settings: ResolvedSettings


class RunSummary(msgspec.Struct, kw_only=True):
    """One run as lists show it: from the daemon's memory for live runs, else from disk."""

    run_id: str
    workspace: str
    run_dir: str
    state: RunState
    index_status: IndexStatus = IndexStatus.NOT_INDEXED
    name: str = ""
    model: str | None = None
    preset: str | None = None
    created_at: str | None = None
    finished_at: str | None = None
    duration_ms: int | None = None
    final_metrics: dict[str, float] = {}
    reason: str = ""
    exit_code: int | None = None
    partial_artifacts: list[str] = []
    pid: int | None = None
    queue_position: int | None = None
    last_seq: int = 0  # the run's highest per-run event sequence number so far


class TrainResult(ResultBase, tag="train"):
    """The new run, queued or already running; follow it by its ``run_id``."""

    run: RunSummary


class CancelResult(ResultBase, tag="cancel"):
    """The cancel is under way (a queued run is already terminal: it never starts)."""

    run: RunSummary
    already_cancelling: bool = False
    deadline_in_s: float | None = None  # seconds from the reply to the SIGKILL deadline


# Open-ended on purpose: the daemon's own events have the fixed fields PROTOCOL.md lists
# per type, but a trainer's event is the trainer's whole object, whose fields (metrics,
# progress...) the trainer defines; a type is always named by the envelope's ``type``.
EventData = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description="The payload of the event `type`: for the daemon's own events the "
        "fields protocol/PROTOCOL.md lists per type; for a trainer's event its whole "
        "object (event, timestamp, run_id, and fields the trainer defines: open-ended)."
    ),
]


class Event(msgspec.Struct, kw_only=True):
    """What the daemon publishes (frame 2 of ``[topic, payload]``) and persists per run."""

    seq: int  # daemon-wide, strictly increasing within one daemon process
    run_seq: int  # per run, 1, 2, 3... with no gaps; 0 for daemon events
    ts: float  # UNIX seconds
    type: str
    workspace: str = ""
    run_id: str = ""
    data: EventData = {}


class ReplayResult(ResultBase, tag="replay"):
    """Persisted events of one run, oldest first. Ask again from the last ``run_seq`` while
    it is below ``last_run_seq``; ``terminal`` means the run has ended and all its events
    are on disk."""

    run_id: str
    events: list[Event]
    last_run_seq: int  # the run's highest per-run sequence number right now
    terminal: bool  # no further events will follow


class ActiveResult(ResultBase, tag="active"):
    """Queued, running and cancelling runs."""

    runs: list[RunSummary]


class RunsResult(ResultBase, tag="runs"):
    """Live runs first, then finished runs newest first; orphans listed apart."""

    workspace: str
    runs: list[RunSummary]
    orphans: list[OrphanInfo] = []
    # Unreadable index files moved aside (workspace-relative) and not yet reported by a
    # recovery: their runs show as orphans until `recover`.
    corrupt_index_kept_as: list[str] = []


class DocumentResult(ResultBase, tag="document"):
    """A run's JSON document (run.json, metrics, importance...) as found on disk."""

    workspace: str
    run_id: str
    kind: str  # "run" | "metrics" | "feature_importance" | "coefficients" | "interpretability"
    path: str  # workspace-relative file it came from
    document: Any
    run: RunSummary | None = None
    orphans: list[OrphanInfo] = []


class MarkdownResult(ResultBase, tag="markdown"):
    """The run as Markdown, also written to ``path`` (workspace-relative)."""

    workspace: str
    run_id: str
    path: str
    markdown: str
    orphans: list[OrphanInfo] = []


# Both shapes have no tag of their own (a union of two untagged structs cannot be
# decoded), so the type says which is which and the schema lists both.
InspectDocument = Annotated[
    Any,
    msgspec.Meta(
        description="inspect_dataset: a DatasetInspection; inspect_artifact: an "
        "ArtifactInspection (protocol/payloads.py).",
        extra_json_schema={
            "anyOf": [
                {"$ref": "#/$defs/DatasetInspection"},
                {"$ref": "#/$defs/ArtifactInspection"},
            ]
        },
    ),
]


class InspectResult(ResultBase, tag="inspect"):
    """The runner's ``inspect`` / ``inspect-artifact`` output as ``document``: a
    ``DatasetInspection`` or an ``ArtifactInspection`` (decoded as a plain map)."""

    workspace: str
    path: str
    document: InspectDocument
    orphans: list[OrphanInfo] = []


class RecoverResult(ResultBase, tag="recover"):
    """What recovery did, and the orphans that remain."""

    workspace: str
    report: RecoveryReport
    orphans: list[OrphanInfo] = []


Result = Union[  # noqa: UP007
    HelloResult,
    StatusResult,
    ShutdownResult,
    TrustResult,
    SettingsResult,
    TrainResult,
    CancelResult,
    ReplayResult,
    ActiveResult,
    RunsResult,
    DocumentResult,
    MarkdownResult,
    InspectResult,
    RecoverResult,
]


class ErrorInfo(msgspec.Struct, kw_only=True):
    """A structured error: a stable ``code`` to switch on, a ``message`` for people, the
    ``remediation`` to show or run, and machine-readable ``details``."""

    code: ErrorCode
    message: str
    remediation: str = ""
    details: dict[str, Any] = {}


class Reply(msgspec.Struct, kw_only=True):
    """The one reply to a request: ``id`` echoed; ``result`` when ``ok``, else ``error``."""

    id: str
    ok: bool
    result: Result | None = None
    error: ErrorInfo | None = None


# --------------------------------------------------------------------------- codec

_encoder = msgspec.msgpack.Encoder()
request_decoder = msgspec.msgpack.Decoder(Request)
reply_decoder = msgspec.msgpack.Decoder(Reply)
event_decoder = msgspec.msgpack.Decoder(Event)


def encode(message: msgspec.Struct) -> bytes:
    return _encoder.encode(message)


class NestingTooDeep(msgspec.DecodeError):
    """A message nested deeper than the decoder's recursion allows (about 1,000 levels):
    undecodable, like any other malformed message."""


def decode_request(payload: bytes) -> Request:
    """The request in ``payload``. Raises ``msgspec.ValidationError`` for well-formed
    MessagePack that is not a valid request (``invalid_field`` names the field), else
    ``msgspec.DecodeError`` (``NestingTooDeep`` included): never anything else."""
    try:
        request: Request = request_decoder.decode(payload)
    except RecursionError:
        raise NestingTooDeep("message nested too deeply") from None
    return request


def decode_loose(payload: bytes) -> dict[Any, Any]:
    """``payload`` as a plain map, to salvage the id and type of an invalid request; {}
    when it is not a MessagePack map."""
    try:
        loose: dict[Any, Any] = _loose_decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return {}
    return loose


_loose_decoder = msgspec.msgpack.Decoder(dict)
# msgspec ends a validation error with where it happened: "- at `$.name`", or
# "- at `key` in `$.params`" for a map's key.
_ERROR_LOCATION = re.compile(r" - at `(?:key` in `)?\$\.?([A-Za-z_]\w*)?[^`]*`$")
_MISSING_FIELD = re.compile(r"Object missing required field `(\w+)`")


def invalid_field(exc: msgspec.ValidationError) -> tuple[str, str]:
    """The top-level request field a validation error is about ("" when it is about the
    message as a whole) and the error said for people."""
    text = str(exc)
    match = _ERROR_LOCATION.search(text)
    field = (match.group(1) or "") if match else ""
    missing = _MISSING_FIELD.match(text)
    if missing and not field:
        field = missing.group(1)
    if "matching regex" in text and field:
        return field, (
            f"field {field!r} contains a control character (NUL, newline, escape...), "
            "which no request field may hold"
        )
    return field, text


def ok(request_id: str, result: Any) -> Reply:
    return Reply(id=request_id, ok=True, result=result)


def error(
    request_id: str,
    code: ErrorCode,
    message: str,
    remediation: str = "",
    details: dict[str, Any] | None = None,
) -> Reply:
    info = ErrorInfo(code=code, message=message, remediation=remediation, details=details or {})
    return Reply(id=request_id, ok=False, error=info)
