// One long-lived `runforgectl bridge` process: JSON lines in, JSON lines out
// (protocol/PROTOCOL.md, "One long-lived process"). No ZeroMQ in the editor.

import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";
import { EventEmitter } from "node:events";
import { DAEMON_UNAVAILABLE, RunForgeError } from "./errors";
import type { ErrorInfo } from "./protocol";

export interface BridgeOptions {
  /** The command that runs runforgectl, e.g. ["runforgectl"] or [python, "-m", "runforgectl"]. */
  command: string[];
  /** Environment of the bridge (RUNFORGE_RUNTIME_DIR etc.); default: this process's. */
  env?: NodeJS.ProcessEnv;
  /** Start the daemon when none answers (`runforgectl --start bridge`). */
  autostart?: boolean;
  /** Default per-request timeout. */
  timeoutMs?: number;
}

export type Notice =
  | { notify: "ready"; data: { pid: number; daemon_version: string } }
  | { notify: "daemon_lost"; data: { pid: number | null } }
  | {
      notify: "daemon_back";
      data: { pid: number; previous_pid: number | null; restarted: boolean };
    };

interface Pending {
  resolve: (result: unknown) => void;
  reject: (err: RunForgeError) => void;
  timer: NodeJS.Timeout;
}

/** Splits a byte stream into lines (the one place lines are cut). */
export class LineSplitter {
  private rest = "";

  push(chunk: string): string[] {
    const parts = (this.rest + chunk).split("\n");
    this.rest = parts.pop() ?? "";
    return parts.filter((line) => line.trim() !== "");
  }
}

/**
 * Events: "event" (RunEvent, source), "notice" (Notice), "exit" (code, stderr tail).
 */
export class BridgeClient extends EventEmitter {
  private proc: ChildProcessWithoutNullStreams | undefined;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;
  private stderrTail = "";
  private closing = false;
  readonly options: BridgeOptions;

  constructor(options: BridgeOptions) {
    super();
    this.options = options;
  }

  get running(): boolean {
    return this.proc !== undefined;
  }

  /** Spawn the bridge; resolves once it reported `ready`, rejects if it exits first. */
  start(): Promise<void> {
    if (this.proc) {
      return Promise.resolve();
    }
    this.closing = false;
    const [cmd, ...base] = this.options.command;
    const args = [...base, ...(this.options.autostart ? ["--start"] : []), "bridge"];
    const proc = spawn(cmd, args, { env: this.options.env ?? process.env, stdio: "pipe" });
    this.proc = proc;
    this.stderrTail = "";
    const lines = new LineSplitter();
    proc.stdout.setEncoding("utf8");
    proc.stderr.setEncoding("utf8");
    proc.stdout.on("data", (chunk: string) => {
      for (const line of lines.push(chunk)) {
        this.onLine(line);
      }
    });
    proc.stderr.on("data", (chunk: string) => {
      this.stderrTail = (this.stderrTail + chunk).slice(-4000);
    });
    return new Promise<void>((resolve, reject) => {
      const onReady = (notice: Notice): void => {
        if (notice.notify === "ready") {
          this.off("notice", onReady);
          resolve();
        }
      };
      this.on("notice", onReady);
      proc.on("error", (err) => {
        this.off("notice", onReady);
        reject(
          new RunForgeError({
            code: DAEMON_UNAVAILABLE,
            message: `could not run ${cmd}: ${err.message}`,
            remediation: "install RunForge (pip install runforge) or set runforge.runforgectlPath",
            details: {},
          }),
        );
      });
      proc.on("exit", (code) => {
        this.off("notice", onReady);
        this.proc = undefined;
        const tail = this.stderrTail.trim();
        this.failAll(
          code === 3 ? "no RunForge daemon answered" : `the bridge exited (${String(code)})`,
          tail,
        );
        reject(
          new RunForgeError({
            code: DAEMON_UNAVAILABLE,
            message: tail || `runforgectl bridge exited with status ${String(code)}`,
            remediation:
              "start the daemon with 'runforgectl daemon start' or the systemd user unit " +
              "('runforgectl daemon install-service', then 'systemctl --user start runforged')",
            details: { exit_code: code },
          }),
        );
        if (!this.closing) {
          this.emit("exit", code, tail);
        }
      });
    });
  }

  /** Send a request; resolves with its result, rejects with a RunForgeError. */
  request<T>(type: string, fields: Record<string, unknown> = {}, timeoutMs?: number): Promise<T> {
    const proc = this.proc;
    if (!proc) {
      return Promise.reject(
        new RunForgeError({
          code: DAEMON_UNAVAILABLE,
          message: "the RunForge bridge is not running",
          remediation: "start the daemon with 'runforgectl daemon start'",
          details: {},
        }),
      );
    }
    const id = this.nextId++;
    const limit = timeoutMs ?? this.options.timeoutMs ?? 90_000;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          new RunForgeError({
            code: "TIMEOUT",
            message: `the daemon did not answer '${type}' within ${limit / 1000} s`,
            remediation: "check 'runforgectl status'",
            details: {},
          }),
        );
      }, limit);
      this.pending.set(id, { resolve: resolve as (r: unknown) => void, reject, timer });
      proc.stdin.write(JSON.stringify({ ...fields, type, id }) + "\n");
    });
  }

  /** Close stdin (the bridge exits 0) and wait for it. */
  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc) {
      return;
    }
    this.closing = true;
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.stdin.end();
    const timer = setTimeout(() => proc.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  private onLine(line: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return; // not ours to judge: the bridge prints JSON only
    }
    if (typeof msg.notify === "string") {
      this.emit("notice", msg);
    } else if (msg.event !== undefined) {
      const source = typeof msg.source === "string" ? msg.source : "live";
      this.emit("event", msg.event, source);
    } else if (typeof msg.id === "number") {
      const waiting = this.pending.get(msg.id);
      if (!waiting) {
        return;
      }
      this.pending.delete(msg.id);
      clearTimeout(waiting.timer);
      if (msg.ok === true) {
        waiting.resolve(msg.result);
      } else {
        const info = msg.error as ErrorInfo;
        waiting.reject(new RunForgeError(info));
      }
    }
  }

  private failAll(message: string, remediation: string): void {
    for (const [id, waiting] of this.pending) {
      clearTimeout(waiting.timer);
      waiting.reject(new RunForgeError({ code: DAEMON_UNAVAILABLE, message, remediation, details: {} }));
      this.pending.delete(id);
    }
  }
}
