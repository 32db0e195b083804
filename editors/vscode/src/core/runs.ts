// Run state for display, built from a run's events only (the daemon's words, never a
// guess): phase, steps, ETA, the cancel countdown, and the terminal state as classified.

import { EventEmitter } from "node:events";
import type { RunEvent } from "./protocol";

export type Phase = "queued" | "starting" | "training" | "finishing" | "cancelling" | "ended";

export interface RunView {
  workspace: string;
  runId: string;
  phase: Phase;
  lastSeq: number;
  queuePosition: number | null;
  step: number | null;
  totalSteps: number | null;
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
        step: null,
        totalSteps: null,
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
      case "train_started":
        if (view.phase !== "cancelling") {
          view.phase = "training";
        }
        break;
      case "train_progress": {
        const step = num(data.epoch);
        const total = num(data.total_epochs);
        view.step = step;
        view.totalSteps = total;
        if (view.phase !== "cancelling") {
          view.phase = "training";
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
        break;
      default:
        break;
    }
    this.emit("change", view);
    return view;
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
    case "training": {
      if (view.step === null || view.totalSteps === null) {
        return "training…";
      }
      const eta = view.etaSeconds === null ? "" : `, ETA ${formatSeconds(view.etaSeconds)}`;
      return `training ${view.step}/${view.totalSteps}${eta}`;
    }
    case "finishing":
      return "writing metrics and artifacts…";
    case "cancelling":
      return view.countdown === null ? "Cancelling…" : `Cancelling… ${view.countdown} s`;
    case "ended": {
      const state = view.terminalState ?? "unknown";
      const words = STATE_WORDS[state] ?? state;
      return view.reason && state !== "completed" ? `${words}: ${view.reason}` : words;
    }
  }
}

/** Percent done, for progress bars (null when unknown). */
export function percentDone(view: RunView): number | null {
  if (view.phase === "ended" || view.phase === "finishing") {
    return 100;
  }
  if (view.step === null || !view.totalSteps) {
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
