// The thin VS Code layer: commands, progress notifications, the orphan banner, trust
// prompts and the status bar, all on top of the editor-independent core.

import { execFile } from "node:child_process";
import * as path from "node:path";
import * as vscode from "vscode";
import { asRunForgeError, DAEMON_UNAVAILABLE, type RunForgeError } from "../core/errors";
import type { OrphanInfo, RunSummary } from "../core/protocol";
import { orphanBanner, prettyJson, recoveryReportMarkdown, runLabel } from "../core/render";
import { describeRun, percentDone, type RunView } from "../core/runs";
import { RunForgeService, type DocumentKind } from "../core/service";

let service: RunForgeService | undefined;
let output: vscode.OutputChannel;
let status: vscode.StatusBarItem;
const shownRuns = new Set<string>();

function config(): vscode.WorkspaceConfiguration {
  return vscode.workspace.getConfiguration("runforge");
}

function runforgectl(): string[] {
  const configured = config().get<string>("runforgectlPath", "runforgectl").trim();
  return configured.split(/\s+/);
}

function bridgeEnv(): NodeJS.ProcessEnv {
  const runtimeDir = config().get<string>("runtimeDir", "").trim();
  return runtimeDir ? { ...process.env, RUNFORGE_RUNTIME_DIR: runtimeDir } : process.env;
}

function workspaceFolder(): string | undefined {
  const active = vscode.window.activeTextEditor?.document.uri;
  const folder = (active && vscode.workspace.getWorkspaceFolder(active)) ?? vscode.workspace.workspaceFolders?.[0];
  return folder?.uri.fsPath;
}

function requireWorkspace(): string {
  const folder = workspaceFolder();
  if (!folder) {
    throw new Error("open a folder first: RunForge works on a workspace folder");
  }
  return folder;
}

async function showError(err: unknown): Promise<void> {
  const error: RunForgeError = asRunForgeError(err);
  output.appendLine(`error ${error.code}: ${error.describe()}`);
  if (error.code === DAEMON_UNAVAILABLE) {
    const pick = await vscode.window.showErrorMessage(`RunForge: ${error.describe()}`, "Start Daemon");
    if (pick === "Start Daemon") {
      await vscode.commands.executeCommand("runforge.startDaemon");
    }
    return;
  }
  await vscode.window.showErrorMessage(`RunForge: ${error.describe()}`);
}

/** Every observability result carries orphans: show the banner with a one-click Recover. */
async function orphanCheck(orphans: OrphanInfo[]): Promise<void> {
  const banner = orphanBanner(orphans);
  if (!banner) {
    return;
  }
  const pick = await vscode.window.showWarningMessage(`RunForge: ${banner}`, "Recover Index");
  if (pick === "Recover Index") {
    await vscode.commands.executeCommand("runforge.recoverIndex");
  }
}

async function openText(content: string, language: string): Promise<void> {
  const doc = await vscode.workspace.openTextDocument({ content, language });
  await vscode.window.showTextDocument(doc, { preview: false });
}

function getService(): RunForgeService {
  if (!service) {
    throw new Error("RunForge is not started");
  }
  return service;
}

/** One progress notification per run, live until the daemon says how it ended. */
function showRunProgress(view: RunView): void {
  if (shownRuns.has(view.runId) || view.phase === "ended") {
    return;
  }
  shownRuns.add(view.runId);
  followInNotification(view, true);
}

/** VS Code closes a progress notification as soon as its Cancel button is pressed, so a
 * cancel from there continues in a second notification showing the daemon's countdown. */
function followInNotification(view: RunView, cancellable: boolean): void {
  const svc = getService();
  void vscode.window.withProgress(
    { location: vscode.ProgressLocation.Notification, title: `RunForge ${view.runId}`, cancellable },
    (progress, token) =>
      new Promise<void>((resolve) => {
        let reported = 0;
        const finish = (): void => {
          svc.off("run", onRun);
          resolve();
        };
        const update = (current: RunView): void => {
          const percent = percentDone(current);
          const increment = percent === null ? undefined : Math.max(0, percent - reported);
          reported = percent ?? reported;
          progress.report({ message: describeRun(current), increment });
          if (current.phase === "ended") {
            finish();
            const text = `RunForge ${current.runId}: ${describeRun(current)}`;
            if (current.terminalState === "completed") {
              void vscode.window.showInformationMessage(text);
            } else {
              void vscode.window.showWarningMessage(text);
            }
          }
        };
        const onRun = (current: RunView): void => {
          if (current.runId === view.runId) {
            update(current);
          }
        };
        svc.on("run", onRun);
        token.onCancellationRequested(() => {
          finish();
          const current = svc.tracker.get(view.runId) ?? view;
          if (current.phase !== "ended") {
            followInNotification(current, false);
            svc.cancel(view.workspace, view.runId).catch(showError);
          }
        });
        update(svc.tracker.get(view.runId) ?? view);
      }),
  );
}

async function train(preset: "std-train" | "hq-train"): Promise<void> {
  const svc = getService();
  const ws = requireWorkspace();
  await svc.watch(ws);
  const result = await svc.train(ws, { preset });
  const queued = result.run.queue_position ? ` (queued, #${result.run.queue_position})` : "";
  output.appendLine(`train ${result.run.run_id}${queued}`);
}

async function pickRun(ws: string, placeHolder: string): Promise<RunSummary | undefined> {
  const result = await getService().runs(ws);
  void orphanCheck(result.orphans);
  if (result.runs.length === 0) {
    void vscode.window.showInformationMessage("RunForge: no runs yet. Train one first.");
    return undefined;
  }
  const pick = await vscode.window.showQuickPick(
    result.runs.map((run) => ({ label: runLabel(run), run })),
    { placeHolder },
  );
  return pick?.run;
}

async function viewDocument(kind: DocumentKind, runId?: string): Promise<void> {
  const ws = requireWorkspace();
  const result = await getService().document(kind, ws, runId);
  void orphanCheck(result.orphans);
  await openText(prettyJson(result.document), "json");
}

async function pickFile(ws: string, glob: string, title: string): Promise<string | undefined> {
  const active = vscode.window.activeTextEditor?.document.uri.fsPath;
  if (active?.endsWith(glob.slice(glob.lastIndexOf(".")))) {
    return active;
  }
  const picked = await vscode.window.showOpenDialog({
    defaultUri: vscode.Uri.file(ws),
    canSelectMany: false,
    title,
    filters: { [title]: [glob.slice(glob.lastIndexOf(".") + 1)] },
  });
  return picked?.[0]?.fsPath;
}

function startDaemon(): Promise<void> {
  const [cmd, ...args] = runforgectl();
  return new Promise((resolve, reject) => {
    execFile(cmd, [...args, "daemon", "start"], { env: bridgeEnv() }, (err, stdout, stderr) => {
      output.appendLine(stdout + stderr);
      if (err) {
        reject(new Error(`runforgectl daemon start failed: ${stderr || err.message}`));
      } else {
        resolve();
      }
    });
  });
}

async function connect(): Promise<void> {
  if (service) {
    await service.dispose();
  }
  shownRuns.clear();
  const svc = new RunForgeService({
    command: runforgectl(),
    env: bridgeEnv(),
    autostart: config().get<boolean>("autoStartDaemon", true),
    editorTrusted: () => vscode.workspace.isTrusted,
    confirmTrust: async (folder: string, message: string) => {
      const answer = await vscode.window.showWarningMessage(
        `RunForge: ${message}`,
        {
          modal: true,
          detail:
            `Trusting ${folder} in the RunForge daemon lets it run that folder's Python ` +
            "interpreter and training code. This is separate from VS Code's workspace trust.",
        },
        "Trust Folder in Daemon",
      );
      return answer === "Trust Folder in Daemon";
    },
  });
  service = svc;
  svc.on("run", (view: RunView) => {
    showRunProgress(view);
  });
  svc.on("daemon", (state: string) => {
    status.text = state === "connected" ? "$(beaker) RunForge" : "$(warning) RunForge: daemon away";
    status.tooltip = state === "connected" ? `runforged pid ${String(svc.daemonPid)}` : "The daemon is not running";
    if (state === "lost") {
      void vscode.window
        .showWarningMessage("RunForge: the daemon went away. Runs resume here when it is back.", "Start Daemon")
        .then((pick) => (pick ? vscode.commands.executeCommand("runforge.startDaemon") : undefined));
    }
  });
  await svc.start();
  for (const folder of vscode.workspace.workspaceFolders ?? []) {
    await svc.watch(folder.uri.fsPath);
  }
}

type Handler = () => Promise<void>;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  output = vscode.window.createOutputChannel("RunForge");
  status = vscode.window.createStatusBarItem(vscode.StatusBarAlignment.Left, 10);
  status.text = "$(sync~spin) RunForge";
  status.command = "runforge.showQueue";
  status.show();
  context.subscriptions.push(output, status, { dispose: () => void service?.dispose() });

  const commands: Record<string, Handler> = {
    "runforge.trainStandard": () => train("std-train"),
    "runforge.trainHighQuality": () => train("hq-train"),
    "runforge.cancelTraining": async () => {
      const ws = requireWorkspace();
      const result = await getService().cancel(ws);
      if (result.already_cancelling) {
        void vscode.window.showInformationMessage(`RunForge: ${result.run.run_id} is already cancelling.`);
      }
    },
    "runforge.openRuns": async () => {
      const ws = requireWorkspace();
      const run = await pickRun(ws, "Open a run folder");
      if (run) {
        await vscode.commands.executeCommand("revealInExplorer", vscode.Uri.file(path.join(ws, run.run_dir)));
        await viewDocument("show", run.run_id);
      }
    },
    "runforge.browseRuns": async () => {
      const ws = requireWorkspace();
      const run = await pickRun(ws, "Browse runs");
      if (!run) {
        return;
      }
      const views: { label: string; view: DocumentKind | "markdown" }[] = [
        { label: "Metadata", view: "show" },
        { label: "Metrics", view: "metrics" },
        { label: "Feature Importance", view: "feature_importance" },
        { label: "Linear Coefficients", view: "coefficients" },
        { label: "Interpretability Index", view: "interpretability" },
        { label: "Export as Markdown", view: "markdown" },
      ];
      const pick = await vscode.window.showQuickPick(views, { placeHolder: run.run_id });
      if (pick?.view === "markdown") {
        const md = await getService().exportMarkdown(ws, run.run_id);
        await openText(md.markdown, "markdown");
      } else if (pick) {
        await viewDocument(pick.view, run.run_id);
      }
    },
    "runforge.openLatestRunMetadata": () => viewDocument("show"),
    "runforge.viewLatestMetrics": () => viewDocument("metrics"),
    "runforge.viewFeatureImportance": () => viewDocument("feature_importance"),
    "runforge.viewLinearCoefficients": () => viewDocument("coefficients"),
    "runforge.viewInterpretabilityIndex": () => viewDocument("interpretability"),
    "runforge.exportLatestRunMarkdown": async () => {
      const ws = requireWorkspace();
      const md = await getService().exportMarkdown(ws);
      void orphanCheck(md.orphans);
      const doc = await vscode.workspace.openTextDocument(path.join(ws, md.path));
      await vscode.window.showTextDocument(doc);
    },
    "runforge.inspectDataset": async () => {
      const ws = requireWorkspace();
      const file = await pickFile(ws, "*.csv", "CSV dataset");
      if (file) {
        const result = await getService().inspectDataset(ws, file);
        void orphanCheck(result.orphans);
        await openText(prettyJson(result.document), "json");
      }
    },
    "runforge.inspectModelArtifact": async () => {
      const ws = requireWorkspace();
      const file = await pickFile(ws, "*.pkl", "Model artifact");
      if (file) {
        const result = await getService().inspectArtifact(ws, file);
        void orphanCheck(result.orphans);
        await openText(prettyJson(result.document), "json");
      }
    },
    "runforge.recoverIndex": async () => {
      const ws = requireWorkspace();
      const result = await getService().recover(ws);
      await openText(recoveryReportMarkdown(result.workspace, result.report), "markdown");
    },
    "runforge.showQueue": async () => {
      const result = await getService().active();
      if (result.runs.length === 0) {
        void vscode.window.showInformationMessage("RunForge: no active or queued runs.");
        return;
      }
      const pick = await vscode.window.showQuickPick(
        result.runs.map((run) => ({ label: runLabel(run), description: run.workspace, run })),
        { placeHolder: "Active and queued runs (pick one to cancel it)" },
      );
      if (pick) {
        const ok = await vscode.window.showWarningMessage(`Cancel ${pick.run.run_id}?`, "Cancel Run");
        if (ok) {
          await getService().cancel(pick.run.workspace, pick.run.run_id);
        }
      }
    },
    "runforge.trustWorkspaceInDaemon": async () => {
      const ws = requireWorkspace();
      if (!vscode.workspace.isTrusted) {
        throw new Error("trust the workspace in VS Code first (Workspaces: Manage Workspace Trust)");
      }
      const answer = await vscode.window.showWarningMessage(
        `Trust ${ws} in the RunForge daemon? It will run this folder's Python code.`,
        { modal: true },
        "Trust Folder in Daemon",
      );
      if (answer) {
        const result = await getService().trust(ws);
        void vscode.window.showInformationMessage(`RunForge: the daemon trusts ${result.path}.`);
      }
    },
    "runforge.startDaemon": async () => {
      await startDaemon();
      if (!service?.bridge.running) {
        await connect();
      }
    },
  };
  for (const [id, handler] of Object.entries(commands)) {
    context.subscriptions.push(
      vscode.commands.registerCommand(id, () => handler().catch(showError)),
    );
  }
  context.subscriptions.push(
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration("runforge.runforgectlPath") || e.affectsConfiguration("runforge.runtimeDir")) {
        connect().catch(showError);
      }
    }),
  );
  connect().catch(showError);
  return Promise.resolve();
}

export async function deactivate(): Promise<void> {
  await service?.dispose();
  service = undefined;
}
