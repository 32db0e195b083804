// Test harness: a real runforged in a private temp runtime dir, real trainers (the
// repository's rf_test_trainer), and the real `runforgectl bridge` under the core.

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { RunForgeService, type ServiceOptions } from "../core/service";

export const REPO = process.env.RUNFORGE_REPO ?? path.resolve(__dirname, "..", "..", "..", "..");
export const PYTHON = process.env.RUNFORGE_TEST_PYTHON ?? "python3";
const SESSION_ENV = "RUNFORGE_TEST_SESSION";

export class TestDaemon {
  readonly root: string;
  readonly extraEnv: Record<string, string>;
  proc: ChildProcess | undefined;
  private logFd: number | undefined;

  constructor(extraEnv: Record<string, string> = {}) {
    // Short path: ipc:// socket paths are limited to 107 bytes.
    this.root = fs.mkdtempSync(path.join("/tmp", "rfnode-"));
    this.extraEnv = extraEnv;
  }

  get env(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) {
      if (!k.startsWith("RUNFORGE_") || k === SESSION_ENV) {
        env[k] = v;
      }
    }
    return {
      ...env,
      RUNFORGE_RUNTIME_DIR: path.join(this.root, "run"),
      RUNFORGE_CONFIG_DIR: path.join(this.root, "config"),
      RUNFORGE_STATE_DIR: path.join(this.root, "state"),
      PYTHONUNBUFFERED: "1",
      ...this.extraEnv,
    };
  }

  ctl(...args: string[]): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync(PYTHON, ["-m", "runforgectl", ...args], {
      env: this.env,
      cwd: this.root,
      encoding: "utf8",
      timeout: 120_000,
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  async start(): Promise<this> {
    this.logFd = fs.openSync(path.join(this.root, `daemon-${Date.now()}.log`), "a");
    this.proc = spawn(PYTHON, ["-m", "runforged", "--log-format", "json"], {
      env: this.env,
      cwd: this.root,
      stdio: ["ignore", this.logFd, this.logFd],
    });
    const deadline = Date.now() + 60_000;
    while (this.ctl("ping", "--timeout", "5").status !== 0) {
      if (this.proc.exitCode !== null || Date.now() > deadline) {
        throw new Error(`runforged did not start (exit ${String(this.proc.exitCode)})`);
      }
      await sleep(100);
    }
    return this;
  }

  /** SIGKILL: the daemon dies with runs in flight. */
  async kill(): Promise<void> {
    await this.signal("SIGKILL");
  }

  async stop(): Promise<void> {
    await this.signal("SIGTERM");
  }

  private async signal(sig: NodeJS.Signals): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) {
      return;
    }
    const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
    proc.kill(sig);
    await exited;
    if (this.logFd !== undefined) {
      fs.closeSync(this.logFd);
      this.logFd = undefined;
    }
  }

  /** A workspace whose runner is the test trainer (or, with `runner` null, RunForge's
   * own runner), with a tiny dataset. */
  workspace(name: string, trust = true, runner: string | null = "rf_test_trainer"): string {
    const ws = path.join(this.root, name);
    fs.mkdirSync(path.join(ws, ".vscode"), { recursive: true });
    fs.symlinkSync(path.join(REPO, "tests", "trainers", "rf_test_trainer"), path.join(ws, "rf_test_trainer"));
    fs.writeFileSync(path.join(ws, "data.csv"), "a,b,label\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n");
    fs.writeFileSync(
      path.join(ws, ".vscode", "settings.json"),
      JSON.stringify({
        ...(runner ? { "runforge.mlRunnerModule": runner } : {}),
        "runforge.datasetPath": "data.csv",
      }),
    );
    if (trust) {
      const r = this.ctl("trust", ws);
      if (r.status !== 0) {
        throw new Error(`trust failed: ${r.stderr}`);
      }
    }
    return ws;
  }

  service(options: Partial<ServiceOptions> = {}): RunForgeService {
    return new RunForgeService({ command: [PYTHON, "-m", "runforgectl"], env: this.env, ...options });
  }

  async cleanup(): Promise<void> {
    await this.stop();
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | null | false,
  timeoutMs = 120_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = probe();
    if (value) {
      return value;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out waiting for ${what}`);
    }
    await sleep(50);
  }
}
