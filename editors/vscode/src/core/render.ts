// Text the adapters show: the orphan banner, the Recovery Report, documents, run lists.

import type { OrphanInfo, RecoveryReport, RunSummary } from "./protocol";

/** The banner every observability command shows when the index misses runs on disk. */
export function orphanBanner(orphans: OrphanInfo[]): string | null {
  if (orphans.length === 0) {
    return null;
  }
  const ids = orphans
    .slice(0, 3)
    .map((o) => o.run_id)
    .join(", ");
  const more = orphans.length > 3 ? ` and ${orphans.length - 3} more` : "";
  const noun = orphans.length === 1 ? "run is" : "runs are";
  return `${orphans.length} ${noun} on disk but missing from the index (${ids}${more}). Recover Index re-adds them.`;
}

function inFlightCount(value: number | string[]): number {
  return Array.isArray(value) ? value.length : value;
}

/** The Recovery Report as Markdown. */
export function recoveryReportMarkdown(workspace: string, report: RecoveryReport): string {
  const lines = [
    "# RunForge Recovery Report",
    "",
    `Workspace: \`${workspace}\`  `,
    `Recovered at: ${report.recovered_at}`,
    "",
    "| | count |",
    "|---|---|",
    `| run folders scanned | ${report.scanned_run_dirs} |`,
    `| already indexed | ${report.already_indexed} |`,
    `| recovered | ${report.recovered.length} |`,
    `| skipped | ${report.skipped.length} |`,
    `| cancelled (left out) | ${report.cancelled_excluded.length} |`,
    `| in flight (left alone) | ${inFlightCount(report.in_flight)} |`,
    "",
  ];
  if (report.index_created) {
    lines.push("The index did not exist: it was created.", "");
  }
  if (report.corrupt_index_kept_as) {
    lines.push(`The old index was corrupt and was kept as \`${report.corrupt_index_kept_as}\`.`, "");
  }
  if (report.recovered.length) {
    lines.push("## Recovered", "", ...report.recovered.map((r) => `- \`${r.run_id}\` (${r.reason})`), "");
  }
  if (report.skipped.length) {
    lines.push(
      "## Skipped",
      "",
      ...report.skipped.map((s) => `- \`${s.run_dir}\`: ${s.error} — ${s.message}`),
      "",
    );
  }
  if (report.cancelled_excluded.length) {
    lines.push(
      "## Cancelled runs (never indexed)",
      "",
      ...report.cancelled_excluded.map((c) => `- \`${c.run_id}\``),
      "",
    );
  }
  return lines.join("\n");
}

/** One line per run for pickers and lists. */
export function runLabel(run: RunSummary): string {
  const metric = Object.entries(run.final_metrics)
    .slice(0, 1)
    .map(([k, v]) => ` ${k}=${v.toFixed(3)}`)
    .join("");
  const model = run.model ? ` ${run.model}` : "";
  const queued = run.queue_position ? ` #${run.queue_position}` : "";
  return `${run.run_id} [${run.state}${queued}]${model}${metric}`;
}

export function prettyJson(value: unknown): string {
  return JSON.stringify(value, null, 2);
}
