"""Reading a workspace's runs: ``runs``, ``active``, ``recover``, the per-run documents
(``show``, ``metrics``, ...), ``export-md`` and the two ``inspect-*`` commands."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

import msgspec

from runforge_protocol import messages as m
from runforgectl import output
from runforgectl.context import Context
from runforgectl.exits import EXIT_OK


def cmd_active(ctx: Context) -> int:
    workspace = ctx.workspace() if ctx.args.workspace else None
    result: m.ActiveResult = ctx.call(m.Active(workspace=workspace))
    if ctx.json:
        output.print_json(result)
    elif not result.runs:
        print("no active runs")
    else:
        output.table(
            ["run", "state", "model", "pid", "queue", "workspace"],
            [
                [r.run_id, r.state.value, r.model, r.pid, r.queue_position, r.workspace]
                for r in result.runs
            ],
        )
    return EXIT_OK


def cmd_runs(ctx: Context) -> int:
    if ctx.args.recover:
        report: m.RecoverResult = ctx.call(m.Recover(workspace=ctx.workspace()), timeout_s=300)
        if not ctx.json:
            print(f"recovered {len(report.report.recovered)} run(s)\n")
    result: m.RunsResult = ctx.call(m.ListRuns(workspace=ctx.workspace()))
    if ctx.json:
        output.print_json(result)
        return EXIT_OK
    output.orphan_banner(result.orphans)
    for kept in result.corrupt_index_kept_as:
        print(
            f"! the index was unreadable and was moved aside to {kept} (kept, not deleted); "
            f"its runs are listed as orphans until 'runforgectl recover'\n"
        )
    rows: list[list[Any]] = []
    for o in result.orphans:
        rows.append([o.run_id, "ORPHANED", "", o.created_at, None, o.error or "not in index"])
    for r in result.runs:
        metric = r.final_metrics.get("accuracy")
        note = r.reason or ("" if r.index_status.value == "indexed" else r.index_status.value)
        # The daemon names an unnamed run after its id: do not say it twice.
        name = "" if r.name == r.run_id else r.name
        rows.append([r.run_id, r.state.value, name, r.created_at, metric, note])
    if not rows:
        print(f"no runs in {result.workspace}")
        return EXIT_OK
    output.table(["run", "state", "name", "created", "accuracy", "note"], rows)
    return EXIT_OK


DOCUMENT_REQUESTS: dict[str, type[m.RequestBase]] = {
    "show": m.ShowRun,
    "metrics": m.GetMetrics,
    "feature-importance": m.GetFeatureImportance,
    "coefficients": m.GetCoefficients,
    "interpretability": m.GetInterpretability,
}


def _document_command(kind: type[m.RequestBase]) -> Callable[[Context], int]:
    def run(ctx: Context) -> int:
        request = kind(workspace=ctx.workspace(), run_id=ctx.args.run_id)  # type: ignore[call-arg]
        result: m.DocumentResult = ctx.call(request)
        if ctx.json:
            output.print_json(result)
            return EXIT_OK
        output.orphan_banner(result.orphans)
        print(f"{document_title(result.kind, result.run_id)} ({result.path})")
        _print_document(result.kind, result.document)
        return EXIT_OK

    return run


def document_title(kind: str, run_id: str) -> str:
    """``run 2024...`` for ``show``, ``feature importance of run 2024...`` for the rest."""
    return f"run {run_id}" if kind == "run" else f"{kind.replace('_', ' ')} of run {run_id}"


def _print_document(kind: str, document: Any) -> None:
    """RunForge's interpretability documents as ranked tables; anything else as key/value
    rows."""
    if kind == "feature_importance" and isinstance(document, dict):
        features = document.get("features_by_importance")
        if isinstance(features, list) and features:
            output.table(
                ["feature", "value"], [[f.get("name"), f.get("importance")] for f in features]
            )
            return
    if kind == "coefficients" and isinstance(document, dict):
        by_class = document.get("coefficients_by_class")
        if isinstance(by_class, list) and by_class:
            output.table(
                ["class", "feature", "coefficient"],
                [
                    [group.get("class"), f.get("name"), f.get("coefficient")]
                    for group in by_class
                    for f in group.get("features", [])
                ],
            )
            return
    output.key_values(output.flatten(document))


def cmd_export_md(ctx: Context) -> int:
    result: m.MarkdownResult = ctx.call(
        m.ExportMarkdown(workspace=ctx.workspace(), run_id=ctx.args.run_id)
    )
    if ctx.json:
        output.print_json(result)
    else:
        output.orphan_banner(result.orphans)
        print(f"wrote {result.path}")
    return EXIT_OK


def cmd_inspect_dataset(ctx: Context) -> int:
    request = m.InspectDataset(
        workspace=ctx.workspace(), path=os.path.abspath(ctx.args.csv), label=ctx.args.label
    )
    result: m.InspectResult = ctx.call(request, timeout_s=max(ctx.args.timeout, 60))
    return _print_inspect(ctx, result)


def cmd_inspect_artifact(ctx: Context) -> int:
    request = m.InspectArtifact(workspace=ctx.workspace(), path=os.path.abspath(ctx.args.pkl))
    result: m.InspectResult = ctx.call(request, timeout_s=max(ctx.args.timeout, 60))
    return _print_inspect(ctx, result)


def _print_inspect(ctx: Context, result: m.InspectResult) -> int:
    if ctx.json:
        output.print_json(result)
    else:
        output.orphan_banner(result.orphans)
        print(result.path)
        output.key_values(output.flatten(result.document))
    return EXIT_OK


def cmd_recover(ctx: Context) -> int:
    result: m.RecoverResult = ctx.call(
        m.Recover(workspace=ctx.workspace()), timeout_s=max(ctx.args.timeout, 300)
    )
    if ctx.json:
        output.print_json(result.report)
        return EXIT_OK
    from runforgectl.recovery_report import render_markdown, render_text

    report = msgspec.to_builtins(result.report)
    output.orphan_banner(result.orphans)
    if ctx.args.markdown:
        sys.stdout.write(render_markdown(result.workspace, report))
    else:
        render_text(result.workspace, report)
    return EXIT_OK


def configure(name: str, parser: argparse.ArgumentParser, common: argparse.ArgumentParser) -> None:
    p = parser
    if name == "recover":
        p.add_argument("--markdown", action="store_true", help="render the report as Markdown")
        p.set_defaults(fn=cmd_recover)
    elif name == "runs":
        p.add_argument("--recover", action="store_true", help="recover orphans first, then list")
        p.set_defaults(fn=cmd_runs)
    elif name in DOCUMENT_REQUESTS:
        p.add_argument("run_id", nargs="?", help="run id (default: the latest run)")
        p.set_defaults(fn=_document_command(DOCUMENT_REQUESTS[name]))
    elif name == "export-md":
        p.add_argument("run_id", nargs="?", help="run id (default: the latest run)")
        p.set_defaults(fn=cmd_export_md)
    elif name == "inspect-dataset":
        p.add_argument("csv", help="CSV file")
        p.add_argument("--label", help="label column (default: the last column)")
        p.set_defaults(fn=cmd_inspect_dataset)
    elif name == "inspect-artifact":
        p.add_argument("pkl", help="model artifact (.pkl) inside the workspace")
        p.set_defaults(fn=cmd_inspect_artifact)
    elif name == "active":
        p.set_defaults(fn=cmd_active)
