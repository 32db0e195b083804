// The adapter's core, free of any editor API: requests, trust handling, watched
// workspaces with their runs, daemon presence, and a bridge that comes back by itself.

import { EventEmitter } from "node:events";
import { BridgeClient, type BridgeOptions, type Notice } from "./bridge";
import { RunForgeError, WORKSPACE_NOT_TRUSTED, asRunForgeError } from "./errors";
import type {
  ActiveResult,
  CancelResult,
  DocumentResult,
  InspectResult,
  MarkdownResult,
  RecoverResult,
  RunEvent,
  RunsResult,
  SettingsResult,
  TrainResult,
  TrustResult,
} from "./protocol";
import { RunTracker, type RunView } from "./runs";

export const EDITOR_WORKSPACE_UNTRUSTED = "EDITOR_WORKSPACE_UNTRUSTED";

export type DocumentKind = "show" | "metrics" | "feature_importance" | "coefficients" | "interpretability";

export interface ServiceOptions extends BridgeOptions {
  /** Whether the editor trusts the workspace (VS Code's workspace trust). */
  editorTrusted?: () => boolean;
  /** Ask the user whether the daemon may trust `folder` (never answered silently). */
  confirmTrust?: (folder: string, message: string) => Promise<boolean>;
  /** Delay before a bridge that died is started again. */
  restartDelayMs?: number;
}

export interface TrainOptions {
  preset?: "std-train" | "hq-train";
  model?: string;
  profile?: string;
  dataset?: string;
  name?: string;
  seed?: number;
  grace_s?: number;
  device?: string;
  params?: Record<string, string>;
}

export type DaemonState = "connecting" | "connected" | "lost";

/**
 * Events: "run" (RunView) on every applied event, "daemon" (DaemonState, detail),
 * "daemonEvent" (RunEvent without a run), "bridgeExit" (code, stderr).
 */
export class RunForgeService extends EventEmitter {
  readonly tracker = new RunTracker();
  readonly bridge: BridgeClient;
  private readonly watched = new Set<string>();
  private readonly options: ServiceOptions;
  private disposed = false;
  private started = false;
  private restartTimer: NodeJS.Timeout | undefined;
  daemonState: DaemonState = "connecting";
  daemonPid: number | null = null;

  constructor(options: ServiceOptions) {
    super();
    this.options = options;
    this.bridge = new BridgeClient(options);
    this.tracker.on("change", (view: RunView) => this.emit("run", view));
    this.bridge.on("event", (event: RunEvent) => {
      if (event.run_id) {
        this.tracker.apply(event);
      } else {
        this.emit("daemonEvent", event);
      }
    });
    this.bridge.on("notice", (notice: Notice) => this.onNotice(notice));
    this.bridge.on("exit", (code: number | null, stderr: string) => {
      this.setDaemonState("lost", stderr);
      this.emit("bridgeExit", code, stderr);
      if (this.started) {
        this.scheduleRestart();
      }
    });
  }

  async start(): Promise<void> {
    await this.bridge.start();
    this.started = true;
  }

  async dispose(): Promise<void> {
    this.disposed = true;
    if (this.restartTimer) {
      clearTimeout(this.restartTimer);
    }
    await this.bridge.stop();
  }

  private onNotice(notice: Notice): void {
    if (notice.notify === "ready" || notice.notify === "daemon_back") {
      this.daemonPid = notice.data.pid;
      this.setDaemonState("connected", notice.notify);
    } else {
      this.setDaemonState("lost", "daemon_lost");
    }
  }

  private setDaemonState(state: DaemonState, detail: string): void {
    this.daemonState = state;
    this.emit("daemon", state, detail);
  }

  /** A bridge that died (not the daemon: the bridge outlives the daemon) is started
   * again, and watches resume from the last event each run showed. */
  private scheduleRestart(): void {
    if (this.disposed || this.restartTimer) {
      return;
    }
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (this.disposed) {
        return;
      }
      this.bridge
        .start()
        .then(async () => {
          for (const workspace of this.watched) {
            await this.bridge.request("watch", {
              workspace,
              since: this.tracker.resumePoints(workspace),
            });
          }
        })
        .catch(() => this.scheduleRestart());
    }, this.options.restartDelayMs ?? 2000);
  }

  // ------------------------------------------------------------------ watching

  async watch(workspace: string): Promise<string> {
    const result = await this.bridge.request<{ workspace: string }>("watch", {
      workspace,
      since: this.tracker.resumePoints(workspace),
    });
    this.watched.add(result.workspace);
    return result.workspace;
  }

  /** Resolves with the run's view once its run_terminal has been applied. */
  waitForEnd(runId: string): Promise<RunView> {
    const now = this.tracker.get(runId);
    if (now?.phase === "ended") {
      return Promise.resolve(now);
    }
    return new Promise((resolve) => {
      const onRun = (view: RunView): void => {
        if (view.runId === runId && view.phase === "ended") {
          this.off("run", onRun);
          resolve(view);
        }
      };
      this.on("run", onRun);
    });
  }

  // ------------------------------------------------------------------ requests

  ping(): Promise<{ pid: number; daemon_version: string }> {
    return this.bridge.request("ping");
  }

  private refuseUntrustedEditor(action: string): void {
    if (this.options.editorTrusted && !this.options.editorTrusted()) {
      throw new RunForgeError({
        code: EDITOR_WORKSPACE_UNTRUSTED,
        message: `${action} runs the workspace's code; this workspace is not trusted by the editor`,
        remediation: "trust the workspace in the editor first (Workspaces: Manage Workspace Trust)",
        details: {},
      });
    }
  }

  /** Run `send`; on WORKSPACE_NOT_TRUSTED ask the user (showing the folder), and only
   * with a yes trust it in the daemon and try once more. */
  private async withTrust<T>(send: () => Promise<T>): Promise<T> {
    try {
      return await send();
    } catch (err) {
      const error = asRunForgeError(err);
      if (error.code !== WORKSPACE_NOT_TRUSTED || !this.options.confirmTrust) {
        throw error;
      }
      const folder = typeof error.details.workspace === "string" ? error.details.workspace : "";
      if (!folder || !(await this.options.confirmTrust(folder, error.message))) {
        throw error;
      }
      await this.trust(folder);
      return send();
    }
  }

  trust(path: string): Promise<TrustResult> {
    return this.bridge.request("trust", { path });
  }

  settings(workspace: string): Promise<SettingsResult> {
    return this.bridge.request("settings", { workspace });
  }

  async train(workspace: string, options: TrainOptions = {}): Promise<TrainResult> {
    this.refuseUntrustedEditor("Training");
    return this.withTrust(() => this.bridge.request<TrainResult>("train", { workspace, ...options }));
  }

  cancel(workspace: string, runId?: string, graceS?: number): Promise<CancelResult> {
    const fields: Record<string, unknown> = { workspace };
    if (runId) {
      fields.run_id = runId;
    }
    if (graceS !== undefined) {
      fields.grace_s = graceS;
    }
    return this.bridge.request("cancel", fields);
  }

  active(workspace?: string): Promise<ActiveResult> {
    return this.bridge.request("active", workspace ? { workspace } : {});
  }

  runs(workspace: string, limit = 200): Promise<RunsResult> {
    return this.bridge.request("runs", { workspace, limit });
  }

  document(kind: DocumentKind, workspace: string, runId?: string): Promise<DocumentResult> {
    return this.bridge.request(kind, runId ? { workspace, run_id: runId } : { workspace });
  }

  exportMarkdown(workspace: string, runId?: string): Promise<MarkdownResult> {
    return this.bridge.request("export_md", runId ? { workspace, run_id: runId } : { workspace });
  }

  async inspectDataset(workspace: string, path: string, label?: string): Promise<InspectResult> {
    this.refuseUntrustedEditor("Inspecting a dataset");
    const fields: Record<string, unknown> = { workspace, path };
    if (label) {
      fields.label = label;
    }
    return this.withTrust(() => this.bridge.request<InspectResult>("inspect_dataset", fields, 120_000));
  }

  async inspectArtifact(workspace: string, path: string): Promise<InspectResult> {
    this.refuseUntrustedEditor("Inspecting a model artifact");
    return this.withTrust(() =>
      this.bridge.request<InspectResult>("inspect_artifact", { workspace, path }, 120_000),
    );
  }

  recover(workspace: string): Promise<RecoverResult> {
    return this.bridge.request("recover", { workspace }, 330_000);
  }
}
