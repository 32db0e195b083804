"""The closed set of error codes a RunForge daemon reply can carry."""

from __future__ import annotations

import enum


class ErrorCode(str, enum.Enum):
    """Every structured error the daemon returns. Adapters switch on these; never rename."""

    # The message itself
    BAD_REQUEST = "BAD_REQUEST"  # undecodable frame, wrong field type, missing field
    UNKNOWN_REQUEST = "UNKNOWN_REQUEST"  # a tag this daemon does not know
    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    PROTOCOL_MISMATCH = "PROTOCOL_MISMATCH"  # client speaks an incompatible protocol version
    SHUTTING_DOWN = "SHUTTING_DOWN"  # the daemon is stopping and accepts no new work
    INTERNAL_ERROR = "INTERNAL_ERROR"
    # Paths and ids
    INVALID_PATH = "INVALID_PATH"  # not absolute, escapes the workspace, not a directory...
    WORKSPACE_NOT_FOUND = "WORKSPACE_NOT_FOUND"
    INVALID_RUN_ID = "INVALID_RUN_ID"  # hostile or malformed run id ("../../etc")
    RUN_NOT_FOUND = "RUN_NOT_FOUND"
    NO_RUNS = "NO_RUNS"  # "latest" asked of a workspace with an empty index
    ARTIFACT_NOT_FOUND = "ARTIFACT_NOT_FOUND"
    # Settings, trust, interpreters
    SETTINGS_INVALID = "SETTINGS_INVALID"
    WORKSPACE_NOT_TRUSTED = "WORKSPACE_NOT_TRUSTED"
    INTERPRETER_NOT_FOUND = "INTERPRETER_NOT_FOUND"
    INTERPRETER_UNSUPPORTED = "INTERPRETER_UNSUPPORTED"
    INSPECT_FAILED = "INSPECT_FAILED"
    # Runs
    NO_ACTIVE_RUN = "NO_ACTIVE_RUN"
    AMBIGUOUS_ACTIVE_RUN = "AMBIGUOUS_ACTIVE_RUN"
    RUN_NOT_ACTIVE = "RUN_NOT_ACTIVE"  # cancel of a run that already reached a terminal state
    CLUSTER_UNREACHABLE = "CLUSTER_UNREACHABLE"  # executor "ray": the cluster did not answer
    # Index
    INDEX_WRITE_FAILED = "INDEX_WRITE_FAILED"
