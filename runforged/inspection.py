"""Dataset and model-artifact inspection, run by the runner under the user's interpreter.

The daemon never unpickles an artifact or parses a user's CSV itself: the runner does,
in a child process in the trusted workspace, and prints one JSON document that is decoded
here into the RunForge formats (``inspect.schema.v0.2.2.1`` and
``pipeline.inspect.schema.v0.2.2.2``). Unknown extra fields from a newer runner are
dropped rather than refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeVar

import msgspec
import structlog

from runforge_protocol.errors import ErrorCode
from runforge_protocol.payloads import ArtifactInspection, DatasetInspection
from runforged.errors import RunforgeError
from runforged.paths import resolve_inside
from runforged.trust import TrustedWorkspace
from runforged.workspace_python import interpreter_not_found, locate_interpreter, run_in_workspace

log = structlog.get_logger(__name__)

INSPECT_TIMEOUT_S = 60.0


_Inspection = TypeVar("_Inspection", DatasetInspection, ArtifactInspection)


def _inspect_failed(what: str, message: str, **details: str) -> RunforgeError:
    return RunforgeError(ErrorCode.INSPECT_FAILED, f"{what} failed: {message}", details=details)


async def _run_runner(
    workspace: TrustedWorkspace,
    *,
    python_path: str,
    runner_module: str,
    command: Sequence[str],
    result_type: type[_Inspection],
    what: str,
    env: Mapping[str, str],
    timeout_s: float,
) -> _Inspection:
    executable = str(locate_interpreter(python_path, workspace, env))
    argv = [executable, "-m", runner_module, *command]
    try:
        output = await run_in_workspace(workspace, argv, env=env, timeout_s=timeout_s)
    except OSError as exc:
        raise interpreter_not_found(executable, f"could not be started: {exc}") from exc
    if output.timed_out:
        raise _inspect_failed(what, f"the runner did not finish within {timeout_s:g} s")
    if output.returncode != 0:
        log.info("inspect_failed", command=command[0], error=output.last_error_line())
        raise _inspect_failed(what, output.last_error_line())
    try:
        return msgspec.json.decode(output.stdout, type=result_type)
    except (msgspec.DecodeError, RecursionError) as exc:
        shown = output.stdout[:200].decode("utf-8", "replace")
        raise _inspect_failed(
            what, f"the runner's output is not a valid {what} document: {exc}", stdout=shown
        ) from exc


async def inspect_dataset(
    workspace: TrustedWorkspace,
    *,
    python_path: str,
    runner_module: str,
    dataset: str,
    label: str | None = None,
    env: Mapping[str, str],
    timeout_s: float = INSPECT_TIMEOUT_S,
) -> DatasetInspection:
    """Run ``<python> -m <runner> inspect --dataset <csv> [--label <col>]``.

    ``dataset`` is workspace-relative or absolute and must stay inside the workspace
    (``INVALID_PATH`` otherwise, or when it is not a file). A runner error, a timeout or
    output that is not an inspect document is ``INSPECT_FAILED``.
    """
    workspace.recheck()
    csv = resolve_inside(workspace.path, dataset)
    if not csv.is_file():
        raise RunforgeError(
            ErrorCode.INVALID_PATH,
            f"the dataset {csv} does not exist or is not a file",
            details={"path": dataset},
        )
    # `--opt=value` keeps a value that starts with "-" from being read as an option.
    command = ["inspect", f"--dataset={csv}"]
    if label is not None:
        command.append(f"--label={label}")
    return await _run_runner(
        workspace,
        python_path=python_path,
        runner_module=runner_module,
        command=command,
        result_type=DatasetInspection,
        what="dataset inspection",
        env=env,
        timeout_s=timeout_s,
    )


async def inspect_artifact(
    workspace: TrustedWorkspace,
    *,
    python_path: str,
    runner_module: str,
    artifact: str,
    env: Mapping[str, str],
    timeout_s: float = INSPECT_TIMEOUT_S,
) -> ArtifactInspection:
    """Run ``<python> -m <runner> inspect-artifact --artifact <pkl>``.

    ``artifact`` must stay inside the workspace (``INVALID_PATH``) and exist
    (``ARTIFACT_NOT_FOUND``); it is passed workspace-relative, as RunForge reports it.
    """
    workspace.recheck()
    pickle_file = resolve_inside(workspace.path, artifact)
    if not pickle_file.is_file():
        raise RunforgeError(
            ErrorCode.ARTIFACT_NOT_FOUND,
            f"the model artifact {pickle_file} does not exist",
            details={"path": artifact},
        )
    relative = pickle_file.relative_to(workspace.path)
    return await _run_runner(
        workspace,
        python_path=python_path,
        runner_module=runner_module,
        command=["inspect-artifact", f"--artifact={relative}"],
        result_type=ArtifactInspection,
        what="artifact inspection",
        env=env,
        timeout_s=timeout_s,
    )
