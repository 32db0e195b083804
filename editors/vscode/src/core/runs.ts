// Run state for display, built from a run's events only (the daemon's words, never a
// guess): phase, steps, ETA, the cancel countdown, and the terminal state as classified.

import { EventEmitter } from "node:events";
import type { RunEvent } from "./protocol";

/**
 * Model families whose train_progress.total_epochs is max_iter, a ceiling: the fit stops
 * as soon as it converges by its tol, often far earlier. Their steps show as "iteration
 * N (max_iter M)", with no percentage and an ETA only as the bound "at max_iter". The
 * same list as runforge_contract.trainer_events.CEILING_FAMILIES (PROTOCOL.md).
 */
export const CEILING_FAMILIES: ReadonlySet<string> = new Set(["logistic_regression", "linear_svc"]);

export type Phase = "queued" | "starting" | "training" | "finishing" | "cancelling" | "ended";

export interface RunView {
  workspace: string;
  runId: string;
  phase: Phase;
  lastSeq: number;
  queuePosition: number | null;
  /** The model family (run_start/train_started), "" until known. */
  family: string;
  step: number | null;
  totalSteps: number | null;
  /** True when totalSteps is a ceiling (max_iter): see CEILING_FAMILIES. */
  totalIsCeiling: boolean;
  /** Whether the last progress event carried numbers (loss or val_accuracy). */
  hasNumbers: boolean;
  /** Seconds from train_started to the last progress event (events' own clocks). */
  elapsedSeconds: number | null;
  /** For a ceiling, the time to reach max_iter at the pace so far: an upper bound. */
  etaSeconds: number | null;
  /** Seconds to the daemon's SIGKILL deadline, from cancel_countdown. */
  countdown: number | null;
  cancelRequested: boolean;
  /** The terminal state as the daemon classified it (run_terminal.data.state). */
  terminalState: string | null;
  reason: string;
  finalMetrics: Record<string, number>;
  /** Every event type applied, in order (tests and the log channel read it). */
  history: string[];
}

function num(value: unknown): number | null {
  return typeof value === "number" && Number.isFinite(value) ? value : null;
}

/**
 * Applies events to per-run views. The bridge already delivers each event once and in
 * order; the tracker still ignores an event at or below what it applied (a bridge
 * restarted by the adapter replays from `since`), except a run's first run_terminal.
 * Emits "change" (RunView) after every applied event.
 */
export class RunTracker extends EventEmitter {
  private readonly views = new Map<string, RunView>();
  private readonly firstProgress = new Map<string, { ts: number; step: number }>();
  private readonly trainingStarted = new Map<string, number>();

  get(runId: string): RunView | undefined {
    return this.views.get(runId);
  }

  all(): RunView[] {
    return [...this.views.values()];
  }

  /** run id -> last run_seq applied, for unfinished runs (to resume a new bridge). */
  resumePoints(workspace: string): Record<string, number> {
    const out: Record<string, number> = {};
    for (const view of this.views.values()) {
      if (view.workspace === workspace && view.phase !== "ended") {
        out[view.runId] = view.lastSeq;
      }
    }
    return out;
  }

  apply(event: RunEvent): RunView | undefined {
    if (!event.run_id) {
      return undefined;
    }
    let view = this.views.get(event.run_id);
    if (!view) {
      view = {
        workspace: event.workspace,
        runId: event.run_id,
        phase: "queued",
        lastSeq: 0,
        queuePosition: null,
        family: "",
        step: null,
        totalSteps: null,
        totalIsCeiling: false,
        hasNumbers: false,
        elapsedSeconds: null,
        etaSeconds: null,
        countdown: null,
        cancelRequested: false,
        terminalState: null,
        reason: "",
        finalMetrics: {},
        history: [],
      };
      this.views.set(event.run_id, view);
    }
    const terminal = event.type === "run_terminal";
    if (view.phase === "ended" || (event.run_seq <= view.lastSeq && !terminal)) {
      return undefined;
    }
    view.lastSeq = Math.max(view.lastSeq, event.run_seq);
    view.history.push(event.type);
    const data = event.data;
    switch (event.type) {
      case "run_queued":
        view.queuePosition = num(data.position);
        break;
      case "run_spawned":
        view.queuePosition = null;
        if (view.phase === "queued") {
          view.phase = "starting";
        }
        break;
      case "run_start":
        this.setFamily(view, data.model_family);
        break;
      case "train_started":
        this.setFamily(view, data.model_family);
        this.trainingStarted.set(event.run_id, event.ts);
        if (view.phase !== "cancelling") {
          view.phase = "training";
        }
        break;
      case "train_progress": {
        const step = num(data.epoch);
        const total = num(data.total_epochs);
        view.step = step;
        view.totalSteps = total;
        view.hasNumbers = num(data.loss) !== null || num(data.val_accuracy) !== null;
        if (view.phase !== "cancelling") {
          view.phase = "training";
        }
        const started = this.trainingStarted.get(event.run_id);
        if (started !== undefined) {
          view.elapsedSeconds = Math.max(0, Math.round(event.ts - started));
        }
        if (step !== null) {
          const first = this.firstProgress.get(event.run_id);
          if (!first) {
            this.firstProgress.set(event.run_id, { ts: event.ts, step });
          } else if (total !== null && step > first.step) {
            const perStep = (event.ts - first.ts) / (step - first.step);
            view.etaSeconds = Math.max(0, Math.round(perStep * (total - step)));
          }
        }
        break;
      }
      case "train_finished":
      case "metrics_computed":
      case "artifacts_written":
        if (view.phase !== "cancelling") {
          view.phase = "finishing";
          view.etaSeconds = 0;
        }
        break;
      case "cancel_requested":
        view.cancelRequested = true;
        view.phase = "cancelling";
        view.etaSeconds = null;
        break;
      case "cancel_countdown":
        view.phase = "cancelling";
        view.countdown = num(data.seconds_remaining);
        break;
      case "cancel_escalated":
        view.countdown = 0;
        break;
      case "run_terminal":
        view.phase = "ended";
        view.countdown = null;
        view.etaSeconds = null;
        view.terminalState = typeof data.state === "string" ? data.state : "unknown";
        view.reason = typeof data.reason === "string" ? data.reason : "";
        view.finalMetrics = (data.final_metrics as Record<string, number> | undefined) ?? {};
        this.firstProgress.delete(event.run_id);
        this.trainingStarted.delete(event.run_id);
        break;
      default:
        break;
    }
    this.emit("change", view);
    return view;
  }

  private setFamily(view: RunView, family: unknown): void {
    if (typeof family === "string" && family) {
      view.family = family;
      view.totalIsCeiling = CEILING_FAMILIES.has(family);
    }
  }
}

const STATE_WORDS: Record<string, string> = {
  completed: "completed",
  cancelled_graceful: "cancelled (gracefully: partial artifacts kept)",
  cancelled_forced: "cancelled by force (killed at the grace deadline)",
  failed: "failed",
  lost: "lost (the daemon died while it ran)",
};

/** One line for a progress notification or a status line. */
export function describeRun(view: RunView): string {
  switch (view.phase) {
    case "queued":
      return view.queuePosition ? `queued (#${view.queuePosition})` : "queued";
    case "starting":
      return "starting…";
    case "training":
      return describeTraining(view);
    case "finishing":
      return `${fitOutcome(view)}writing metrics and artifacts…`;
    case "cancelling":
      return view.countdown === null ? "Cancelling…" : `Cancelling… ${view.countdown} s`;
    case "ended": {
      const state = view.terminalState ?? "unknown";
      const words = STATE_WORDS[state] ?? state;
      return view.reason && state !== "completed" ? `${words}: ${view.reason}` : words;
    }
  }
}

/**
 * Steps done, elapsed, and an ETA only where it means something: for a fixed amount of
 * work ("training 3/10, 4 s elapsed, ETA 9 s"); for a fit that stops when it converges,
 * the iterations and the time to max_iter as the bound it is ("training iteration 7
 * (max_iter 1000), 2 s elapsed, ETA ≤ 4 min 40 s (at max_iter)").
 */
function describeTraining(view: RunView): string {
  if (view.step === null || view.totalSteps === null) {
    return "training…";
  }
  const elapsed = view.elapsedSeconds === null ? "" : `, ${formatSeconds(view.elapsedSeconds)} elapsed`;
  const remaining = view.step > 0 && view.totalSteps > view.step ? view.etaSeconds : null;
  if (!view.totalIsCeiling) {
    const eta = remaining === null ? "" : `, ETA ${formatSeconds(remaining)}`;
    return `training ${view.step}/${view.totalSteps}${elapsed}${eta}`;
  }
  if (view.step === 0 && !view.hasNumbers) {
    return `training (no iteration reported yet; max_iter ${view.totalSteps})${elapsed}`;
  }
  const bound = remaining === null ? "" : `, ETA ≤ ${formatSeconds(remaining)} (at max_iter)`;
  return `training iteration ${view.step} (max_iter ${view.totalSteps})${elapsed}${bound}`;
}

/** How a fit that stops when it converges ended, from its last progress event. */
function fitOutcome(view: RunView): string {
  if (!view.totalIsCeiling || view.step === null || view.totalSteps === null) {
    return "";
  }
  return view.step < view.totalSteps
    ? `converged after ${view.step} iterations; `
    : `stopped at max_iter (${view.totalSteps}) before converging; `;
}

/**
 * Percent done, for progress bars (null when unknown: also while a fit that stops when
 * it converges is running, since max_iter is only its ceiling).
 */
export function percentDone(view: RunView): number | null {
  if (view.phase === "ended" || view.phase === "finishing") {
    return 100;
  }
  if (view.step === null || !view.totalSteps || view.totalIsCeiling) {
    return null;
  }
  return Math.min(100, Math.round((100 * view.step) / view.totalSteps));
}

export function formatSeconds(seconds: number): string {
  if (seconds < 60) {
    return `${seconds} s`;
  }
  const m = Math.floor(seconds / 60);
  return `${m} min ${seconds % 60} s`;
}
