"""Handlers of observability requests: runs, show, metrics, feature importance,
coefficients, interpretability, export_md, inspect_dataset, inspect_artifact, recover.

Every reply carries the workspace's orphans, so every client can show the banner.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from runforge_contract import layout
from runforge_protocol.errors import ErrorCode
from runforge_protocol.messages import (
    DocumentResult,
    ExportMarkdown,
    GetCoefficients,
    GetFeatureImportance,
    GetInterpretability,
    GetMetrics,
    InspectArtifact,
    InspectDataset,
    InspectResult,
    ListRuns,
    MarkdownResult,
    Recover,
    RecoverResult,
    RunsResult,
    RunSummary,
    ShowRun,
)
from runforge_protocol.records import IndexStatus
from runforged import outcome, paths, run_folder
from runforged.context import DaemonContext
from runforged.disk_formats import IndexEntry
from runforged.errors import RunforgeError
from runforged.index import RunIndex
from runforged.inspection import inspect_artifact as spawn_inspect_artifact
from runforged.inspection import inspect_dataset as spawn_inspect_dataset
from runforged.markdown import render_run_markdown

# --------------------------------------------------------------------------- helpers


def summary_from_disk(workspace: Path, run_id: str, entry: IndexEntry | None) -> RunSummary:
    """A finished run as the files in its folder describe it."""
    folder = paths.run_dir(workspace, run_id)
    result = run_folder.load_result(folder)
    request = run_folder.load_request(folder)
    state = outcome.state_on_disk(
        indexed=entry is not None,
        result=result,
        run_json_usable=entry is None and result is None and run_folder.run_json_usable(folder),
    )
    summary = RunSummary(
        run_id=run_id,
        workspace=str(workspace),
        run_dir=run_folder.relative_run_dir(run_id),
        state=state,
        index_status=IndexStatus.INDEXED
        if entry is not None
        else (result.index_status if result is not None else IndexStatus.NOT_INDEXED),
    )
    if request is not None:
        summary.name = request.name
        summary.model = request.model
        summary.preset = request.preset
        summary.created_at = request.created_at
    if entry is not None:
        summary.name = entry.name or summary.name
        summary.preset = entry.preset_id or summary.preset
        summary.created_at = entry.created_at or summary.created_at
        if entry.summary is not None:
            summary.duration_ms = entry.summary.duration_ms
            summary.final_metrics = dict(entry.summary.final_metrics)
    if result is not None:
        summary.finished_at = result.finished_at
        summary.duration_ms = summary.duration_ms or result.duration_ms
        summary.final_metrics = summary.final_metrics or dict(result.final_metrics)
        summary.reason = result.reason
        summary.exit_code = result.exit_code
        summary.partial_artifacts = list(result.partial_artifacts)
    return summary


async def _resolve_run(ctx: DaemonContext, workspace: Path, run_id: str | None) -> tuple[str, Any]:
    """(run id, index entry or None): ``run_id`` None means the newest index entry."""
    writer = await ctx.indexes.get(workspace)
    await writer.refresh()
    if run_id is None:
        latest = writer.index.latest()
        if latest is None:
            raise RunforgeError(
                ErrorCode.NO_RUNS,
                f"no indexed runs in {workspace}",
                "train one with 'runforgectl train', or name a run id",
                {"workspace": str(workspace)},
            )
        return latest.run_id, latest
    run_id = paths.validate_run_id(run_id)
    if not run_folder.exists(paths.run_dir(workspace, run_id)):
        raise RunforgeError(
            ErrorCode.RUN_NOT_FOUND,
            f"no run {run_id} in {workspace}",
            "list runs with 'runforgectl runs'",
            {"run_id": run_id, "workspace": str(workspace)},
        )
    return run_id, writer.index.get(run_id)


async def _document(
    ctx: DaemonContext,
    workspace_arg: str,
    run_id_arg: str | None,
    kind: str,
    files: tuple[str, ...],
) -> DocumentResult:
    workspace = paths.validate_workspace(workspace_arg)
    run_id, entry = await _resolve_run(ctx, workspace, run_id_arg)
    folder = paths.run_dir(workspace, run_id)
    for name in files:
        document = await asyncio.to_thread(run_folder.read_document, folder, name)
        if document is not None:
            break
    else:
        raise RunforgeError(
            ErrorCode.ARTIFACT_NOT_FOUND,
            f"run {run_id} has no {kind.replace('_', ' ')} ({' or '.join(files)})",
            _artifact_hint(kind),
            {"run_id": run_id, "files": list(files)},
        )
    live = ctx.supervisor.find_live(run_id)
    summary = (
        ctx.supervisor.summary(live)
        if live is not None
        else await asyncio.to_thread(summary_from_disk, workspace, run_id, entry)
    )
    return DocumentResult(
        workspace=str(workspace),
        run_id=run_id,
        kind=kind,
        path=f"{run_folder.relative_run_dir(run_id)}/{name}",
        document=document,
        run=summary,
        orphans=await ctx.orphans(workspace),
    )


def _artifact_hint(kind: str) -> str:
    return {
        "feature_importance": "tree models (random_forest) have feature importance; "
        "linear models have coefficients instead",
        "coefficients": "linear models (logistic_regression, linear_svc) have coefficients; "
        "tree models have feature importance instead",
        "run": "the run did not complete; see 'runforgectl runs' for how it ended",
    }.get(kind, "the run may have been cancelled or failed before writing it")


# --------------------------------------------------------------------------- handlers


async def list_runs(ctx: DaemonContext, request: ListRuns) -> RunsResult:
    workspace = paths.validate_workspace(request.workspace)
    writer = await ctx.indexes.get(workspace)
    await writer.refresh()
    orphans = await ctx.orphans(workspace)
    live = ctx.supervisor.live_runs(workspace)
    live_ids = {r.run_id for r in live}
    orphan_ids = {o.run_id for o in orphans}
    rows = [ctx.supervisor.summary(r) for r in live]
    index = writer.index
    unindexed = await asyncio.to_thread(
        _unindexed_finished_runs, workspace, index, live_ids | orphan_ids
    )
    # The page shown is small (``limit``): read each run's request/result for the details
    # the index does not hold (model, finish time, exit code).
    page = index.newest_first(0, request.limit)
    indexed = await asyncio.to_thread(
        lambda: [summary_from_disk(workspace, e.run_id, e) for e in page]
    )
    merged = sorted(unindexed + indexed, key=lambda r: r.created_at or "", reverse=True)
    return RunsResult(
        workspace=str(workspace),
        runs=rows + merged[: request.limit],
        orphans=orphans,
        corrupt_index_kept_as=list(index.corrupt_kept_as),
    )


def _unindexed_finished_runs(workspace: Path, index: RunIndex, skip: set[str]) -> list[RunSummary]:
    """Cancelled, failed and lost runs: folders the index does not list (orphans and live
    runs aside). One directory listing, then one small read per such folder."""
    out = []
    for name in run_folder.list_run_folders(str(paths.runs_dir(workspace))):
        if name in skip or name in index or index.lists_run_dir(run_folder.relative_run_dir(name)):
            continue
        out.append(summary_from_disk(workspace, name, None))
    return out


async def show(ctx: DaemonContext, request: ShowRun) -> DocumentResult:
    return await _document(
        ctx, request.workspace, request.run_id, "run", (layout.RUN_FILE, layout.RESULT_FILE)
    )


async def metrics(ctx: DaemonContext, request: GetMetrics) -> DocumentResult:
    return await _document(
        ctx,
        request.workspace,
        request.run_id,
        "metrics",
        (layout.METRICS_V1_FILE, layout.METRICS_FILE),
    )


async def feature_importance(ctx: DaemonContext, request: GetFeatureImportance) -> DocumentResult:
    return await _document(
        ctx,
        request.workspace,
        request.run_id,
        "feature_importance",
        (layout.FEATURE_IMPORTANCE_FILE,),
    )


async def coefficients(ctx: DaemonContext, request: GetCoefficients) -> DocumentResult:
    return await _document(
        ctx,
        request.workspace,
        request.run_id,
        "coefficients",
        (layout.LINEAR_COEFFICIENTS_FILE,),
    )


async def interpretability(ctx: DaemonContext, request: GetInterpretability) -> DocumentResult:
    return await _document(
        ctx,
        request.workspace,
        request.run_id,
        "interpretability",
        (layout.INTERPRETABILITY_INDEX_FILE,),
    )


async def export_md(ctx: DaemonContext, request: ExportMarkdown) -> MarkdownResult:
    shown = await _document(
        ctx, request.workspace, request.run_id, "run", (layout.RUN_FILE, layout.RESULT_FILE)
    )
    workspace = Path(shown.workspace)
    folder = paths.run_dir(workspace, shown.run_id)
    read = run_folder.read_document
    metrics_doc = await asyncio.to_thread(read, folder, layout.METRICS_V1_FILE)
    importance = await asyncio.to_thread(read, folder, layout.FEATURE_IMPORTANCE_FILE)
    coefficients_doc = await asyncio.to_thread(read, folder, layout.LINEAR_COEFFICIENTS_FILE)
    text = render_run_markdown(shown.run, shown.document, metrics_doc, importance, coefficients_doc)
    await asyncio.to_thread(
        run_folder.write_document, folder, layout.RUN_SUMMARY_FILE, text.encode("utf-8")
    )
    return MarkdownResult(
        workspace=shown.workspace,
        run_id=shown.run_id,
        path=f"{run_folder.relative_run_dir(shown.run_id)}/{layout.RUN_SUMMARY_FILE}",
        markdown=text,
        orphans=shown.orphans,
    )


async def _inspect(
    ctx: DaemonContext, workspace_arg: str, path: str, spawn: Any, **arguments: Any
) -> InspectResult:
    """Run one of the runner's inspect commands (a trust-gated Python spawn)."""
    workspace = paths.validate_workspace(workspace_arg)
    settings = await ctx.read_settings(workspace)
    trusted = ctx.trust.require(str(workspace))
    inspection = await spawn(
        trusted,
        python_path=settings.python_path,
        runner_module=settings.ml_runner_module,
        env=ctx.child_env(),
        **arguments,
    )
    return InspectResult(
        workspace=str(workspace),
        path=path,
        document=inspection,
        orphans=await ctx.orphans(workspace),
    )


async def inspect_dataset(ctx: DaemonContext, request: InspectDataset) -> InspectResult:
    return await _inspect(
        ctx,
        request.workspace,
        request.path,
        spawn_inspect_dataset,
        dataset=request.path,
        label=request.label,
    )


async def inspect_artifact(ctx: DaemonContext, request: InspectArtifact) -> InspectResult:
    return await _inspect(
        ctx, request.workspace, request.path, spawn_inspect_artifact, artifact=request.path
    )


async def recover(ctx: DaemonContext, request: Recover) -> RecoverResult:
    workspace = paths.validate_workspace(request.workspace)
    writer = await ctx.indexes.get(workspace)
    report = await writer.recover(ctx.supervisor.in_flight_ids(workspace))
    return RecoverResult(
        workspace=str(workspace), report=report, orphans=await ctx.orphans(workspace)
    )
