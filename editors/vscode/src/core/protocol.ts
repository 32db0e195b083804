// The wire types the adapter reads: a subset of protocol/schema/*.json (unknown fields
// are ignored, as PROTOCOL.md asks of every client).

export interface ErrorInfo {
  code: string;
  message: string;
  remediation?: string;
  details?: Record<string, unknown>;
}

export interface RunEvent {
  seq: number;
  run_seq: number;
  ts: number;
  type: string;
  workspace: string;
  run_id: string;
  data: Record<string, unknown>;
}

export interface RunSummary {
  run_id: string;
  workspace: string;
  run_dir: string;
  state: string;
  index_status: string;
  name: string;
  model: string | null;
  preset: string | null;
  created_at: string | null;
  finished_at: string | null;
  duration_ms: number | null;
  final_metrics: Record<string, number>;
  reason: string;
  exit_code: number | null;
  partial_artifacts: string[];
  pid: number | null;
  queue_position: number | null;
  last_seq: number;
}

export interface OrphanInfo {
  run_id: string;
  run_dir: string;
  created_at: string | null;
  error: string | null;
}

export interface HelloResult {
  type: "hello";
  protocol: number;
  daemon_version: string;
  pid: number;
  uptime_s: number;
}

export interface RunsResult {
  type: "runs";
  workspace: string;
  runs: RunSummary[];
  orphans: OrphanInfo[];
}

export interface DocumentResult {
  type: "document";
  workspace: string;
  run_id: string;
  kind: string;
  path: string;
  document: unknown;
  run: RunSummary;
  orphans: OrphanInfo[];
}

export interface MarkdownResult {
  type: "markdown";
  workspace: string;
  run_id: string;
  path: string;
  markdown: string;
  orphans: OrphanInfo[];
}

export interface InspectResult {
  type: "inspect";
  workspace: string;
  path: string;
  document: unknown;
  orphans: OrphanInfo[];
}

export interface RecoveryReport {
  scanned_run_dirs: number;
  already_indexed: number;
  recovered: { run_id: string; run_dir: string; reason: string }[];
  skipped: { run_dir: string; error: string; message: string }[];
  cancelled_excluded: { run_id: string; run_dir: string; reason: string }[];
  recovered_at: string;
  in_flight: number | string[];
  corrupt_index_kept_as: string | null;
  index_created: boolean;
}

export interface RecoverResult {
  type: "recover";
  workspace: string;
  report: RecoveryReport;
  orphans: OrphanInfo[];
}

export interface TrainResult {
  type: "train";
  run: RunSummary;
}

export interface CancelResult {
  type: "cancel";
  run: RunSummary;
  already_cancelling: boolean;
  deadline_in_s: number | null;
}

export interface ActiveResult {
  type: "active";
  runs: RunSummary[];
}

export interface TrustResult {
  type: "trust";
  path: string;
  changed: boolean;
  trusted: string[];
}

export interface SettingsResult {
  type: "settings";
  workspace: string;
  settings: Record<string, unknown>;
}

export const TERMINAL_STATES: ReadonlySet<string> = new Set([
  "completed",
  "cancelled_graceful",
  "cancelled_forced",
  "failed",
  "lost",
]);
