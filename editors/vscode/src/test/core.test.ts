// The VS Code-independent core against the real daemon, through the real bridge, with
// real trainers: train, progress, cancel (graceful, forced, right after the reply),
// recover with orphans, a daemon crash mid-run, trust, and starting the daemon.

import assert from "node:assert/strict";
import * as fs from "node:fs";
import * as path from "node:path";
import { after, describe, test } from "node:test";
import { RunForgeError } from "../core/errors";
import { orphanBanner, recoveryReportMarkdown } from "../core/render";
import { describeRun, percentDone, RunTracker, type RunView } from "../core/runs";
import { EDITOR_WORKSPACE_UNTRUSTED, type RunForgeService } from "../core/service";
import { TestDaemon, waitFor } from "./harness";

const cleanups: (() => Promise<void>)[] = [];
after(async () => {
  for (const cleanup of cleanups.reverse()) {
    await cleanup();
  }
});

async function setUp(
  env: Record<string, string>,
  options: Parameters<TestDaemon["service"]>[0] = {},
): Promise<{ daemon: TestDaemon; service: RunForgeService }> {
  const daemon = await new TestDaemon(env).start();
  const service = daemon.service(options);
  cleanups.push(async () => {
    await service.dispose();
    await daemon.cleanup();
  });
  await service.start();
  return { daemon, service };
}

/** Every description the run showed, in order (what a progress notification displays). */
function recordDescriptions(service: RunForgeService, runId: () => string | undefined): string[] {
  const seen: string[] = [];
  service.on("run", (view: RunView) => {
    if (view.runId === runId()) {
      seen.push(describeRun(view));
    }
  });
  return seen;
}

function assertOnceInOrder(view: RunView): void {
  const counts = new Map<string, number>();
  for (const type of view.history) {
    counts.set(type, (counts.get(type) ?? 0) + 1);
  }
  for (const once of ["run_queued", "run_spawned", "run_terminal"]) {
    assert.ok((counts.get(once) ?? 0) <= 1, `${once} shown twice: ${view.history.join(",")}`);
  }
  assert.equal(view.history[0], "run_queued");
  assert.equal(view.history.at(-1), "run_terminal");
}

describe("progress as a person reads it (events with chosen timestamps)", () => {
  function feed(family: string, events: [number, string, Record<string, unknown>][]): RunView {
    const tracker = new RunTracker();
    let view: RunView | undefined;
    let seq = 0;
    for (const [ts, type, data] of [
      [0, "run_start", { model_family: family }] as [number, string, Record<string, unknown>],
      [2, "train_started", { model_family: family }] as [number, string, Record<string, unknown>],
      ...events,
    ]) {
      seq += 1;
      view = tracker.apply({ seq, run_seq: seq, ts, type, workspace: "/w", run_id: "r", data }) ?? view;
    }
    assert.ok(view);
    return view;
  }

  test("a fit that stops when it converges: iterations, no percentage, the ETA as a bound", () => {
    const view = feed("logistic_regression", [
      [3, "train_progress", { epoch: 5, total_epochs: 1000, loss: 0.7 }],
      [4, "train_progress", { epoch: 10, total_epochs: 1000, loss: 0.66 }],
    ]);
    assert.equal(describeRun(view), "training iteration 10 (max_iter 1000), 2 s elapsed, ETA ≤ 3 min 18 s (at max_iter)");
    assert.equal(percentDone(view), null);
  });

  test("its end says how it ended", () => {
    const view = feed("logistic_regression", [
      [3, "train_progress", { epoch: 11, total_epochs: 1000, loss: 0.66 }],
      [3, "train_finished", {}],
    ]);
    assert.equal(describeRun(view), "converged after 11 iterations; writing metrics and artifacts…");
  });

  test("a solver with nothing to report yet shows the time only", () => {
    const view = feed("linear_svc", [[5, "train_progress", { epoch: 0, total_epochs: 1000 }]]);
    assert.equal(describeRun(view), "training (no iteration reported yet; max_iter 1000), 3 s elapsed");
  });

  test("a forest: trees out of the total, a percentage, a plain ETA", () => {
    const view = feed("random_forest", [
      [3, "train_progress", { epoch: 10, total_epochs: 100, val_accuracy: 0.8 }],
      [4, "train_progress", { epoch: 20, total_epochs: 100, val_accuracy: 0.8 }],
    ]);
    assert.equal(describeRun(view), "training 20/100, 2 s elapsed, ETA 8 s");
    assert.equal(percentDone(view), 20);
  });
});

describe("RunForge core through the bridge", () => {
  test("train: live progress, completed, then every observability request", async () => {
    const { daemon, service } = await setUp({ RF_TEST_STEPS: "8", RF_TEST_STEP_S: "0.2" });
    const ws = daemon.workspace("ws");
    await service.watch(ws);
    const ids: string[] = [];
    const shown = recordDescriptions(service, () => ids[0]);
    const started = await service.train(ws, { preset: "std-train" });
    const runId = started.run.run_id;
    ids.push(runId);
    const view = await service.waitForEnd(runId);
    assert.equal(view.terminalState, "completed");
    assertOnceInOrder(view);
    assert.ok(view.history.filter((t) => t === "train_progress").length === 8);
    // The test trainer says logistic_regression: its total is max_iter, a ceiling.
    assert.ok(shown.some((s) => /^training iteration \d+ \(max_iter 8\)/.test(s)), shown.join(" | "));
    assert.ok(shown.some((s) => /ETA ≤ .+ \(at max_iter\)/.test(s)), shown.join(" | "));
    assert.equal(shown.at(-1), "completed");

    const runs = await service.runs(ws);
    assert.deepEqual(
      runs.runs.map((r) => r.run_id),
      [runId],
    );
    assert.equal(orphanBanner(runs.orphans), null);
    const meta = await service.document("show", ws);
    assert.equal(meta.run_id, runId);
    const metrics = await service.document("metrics", ws, runId);
    assert.equal(metrics.kind, "metrics");
    const md = await service.exportMarkdown(ws);
    assert.ok(fs.existsSync(path.join(ws, md.path)));
    await assert.rejects(service.document("feature_importance", ws), (err: RunForgeError) => {
      assert.equal(err.code, "ARTIFACT_NOT_FOUND");
      return true;
    });
    // Inspection runs the workspace's runner: RunForge's own one here.
    const real = daemon.workspace("real", true, null);
    const inspected = await service.inspectDataset(real, "data.csv");
    assert.equal((inspected.document as { num_rows: number }).num_rows, 4);
  });

  test("cancel: the countdown from the daemon, then its verdict (graceful or forced)", async () => {
    const { daemon, service } = await setUp({
      RF_TEST_MODE: "graceful",
      RF_TEST_STEPS: "10000",
      RF_TEST_STEP_S: "0.1",
    });
    const ws = daemon.workspace("ws");
    await service.watch(ws);
    const ids: string[] = [];
    const shown = recordDescriptions(service, () => ids[0]);
    const runId = (await service.train(ws, { grace_s: 5 })).run.run_id;
    ids.push(runId);
    const id = runId;
    await waitFor("progress", () => service.tracker.get(id)?.phase === "training");
    const cancelled = await service.cancel(ws);
    assert.equal(cancelled.run.run_id, runId);
    const view = await service.waitForEnd(runId);
    assertOnceInOrder(view);
    assert.ok(view.history.includes("cancel_requested"));
    assert.ok(view.history.includes("cancel_countdown"));
    assert.ok(shown.some((s) => /^Cancelling… \d s$/.test(s)), shown.join(" | "));
    assert.equal(view.terminalState, "cancelled_graceful");
    assert.match(shown.at(-1) ?? "", /^cancelled \(gracefully/);

    // A cancel right after the train reply (the trainer may not have its SIGTERM
    // handler yet): whatever the daemon decides is what the view ends with.
    const quick = (await service.train(ws)).run.run_id;
    await service.cancel(ws, quick);
    const quickView = await service.waitForEnd(quick);
    assertOnceInOrder(quickView);
    assert.ok(
      ["cancelled_graceful", "cancelled_forced", "completed"].includes(quickView.terminalState ?? ""),
      String(quickView.terminalState),
    );
  });

  test("cancel of a trainer that ignores SIGTERM ends cancelled_forced", async () => {
    const { daemon, service } = await setUp({
      RF_TEST_MODE: "ignore_sigterm",
      RF_TEST_STEPS: "10000",
      RF_TEST_STEP_S: "0.1",
    });
    const ws = daemon.workspace("ws");
    await service.watch(ws);
    const runId = (await service.train(ws)).run.run_id;
    await waitFor("progress", () => service.tracker.get(runId)?.phase === "training");
    await service.cancel(ws, runId, 1);
    const view = await service.waitForEnd(runId);
    assert.equal(view.terminalState, "cancelled_forced");
    assert.ok(view.history.includes("cancel_escalated"));
    assert.match(describeRun(view), /^cancelled by force/);
  });

  test("orphans: the banner on observability results, Recover Index, the report", async () => {
    const { daemon, service } = await setUp({});
    const ws = daemon.workspace("ws");
    // A regular file where the outputs folder goes: the index cannot be written.
    fs.mkdirSync(path.join(ws, ".ml"), { recursive: true });
    fs.writeFileSync(path.join(ws, ".ml", "outputs"), "not a folder\n");
    await service.watch(ws);
    const runId = (await service.train(ws)).run.run_id;
    const view = await service.waitForEnd(runId);
    assert.equal(view.terminalState, "completed");
    assert.ok(view.history.includes("index_orphaned"));
    const before = await service.runs(ws);
    assert.deepEqual(
      before.orphans.map((o) => o.run_id),
      [runId],
    );
    assert.match(orphanBanner(before.orphans) ?? "", /1 run is on disk but missing from the index/);

    fs.rmSync(path.join(ws, ".ml", "outputs"));
    const recovered = await service.recover(ws);
    assert.deepEqual(
      recovered.report.recovered.map((r) => r.run_id),
      [runId],
    );
    assert.deepEqual(recovered.orphans, []);
    const report = recoveryReportMarkdown(recovered.workspace, recovered.report);
    assert.match(report, /\| recovered \| 1 \|/);
    assert.match(report, new RegExp(runId));
    assert.deepEqual((await service.runs(ws)).orphans, []);
  });

  test("a daemon crash mid-run: lost, back, the run goes on under its monitor, its end shown once", async () => {
    const { daemon, service } = await setUp({
      RF_TEST_MODE: "graceful",
      RF_TEST_STEPS: "10000",
      RF_TEST_STEP_S: "0.2",
    });
    const ws = daemon.workspace("ws");
    await service.watch(ws);
    const states: string[] = [];
    service.on("daemon", (state: string) => states.push(state));
    const runId = (await service.train(ws, { grace_s: 2 })).run.run_id;
    await waitFor("progress", () => service.tracker.get(runId)?.phase === "training");
    const oldPid = service.daemonPid;
    await daemon.kill();
    await waitFor("daemon_lost", () => service.daemonState === "lost");
    await assert.rejects(service.ping(), (err: RunForgeError) => err.code === "DAEMON_UNAVAILABLE");
    await daemon.start();
    await waitFor("daemon_back", () => service.daemonState === "connected");
    assert.notEqual(service.daemonPid, oldPid);
    // The trainer outlived the daemon (its monitor holds it): the new daemon cancels it.
    await service.cancel(ws, runId, 2);
    const view = await service.waitForEnd(runId);
    assertOnceInOrder(view);
    assert.ok(
      ["cancelled_graceful", "cancelled_forced"].includes(view.terminalState ?? ""),
      String(view.terminalState),
    );
    assert.deepEqual(states, ["lost", "connected"]);
    assert.equal((await service.ping()).pid, service.daemonPid);
  });

  test("trust: asked with the folder, never silently; refused in an untrusted editor", async () => {
    const asked: string[] = [];
    let answer = false;
    let editorTrusted = false;
    const { daemon, service } = await setUp(
      {},
      {
        editorTrusted: () => editorTrusted,
        confirmTrust: (folder: string) => {
          asked.push(folder);
          return Promise.resolve(answer);
        },
      },
    );
    const ws = daemon.workspace("ws", false);
    await assert.rejects(service.train(ws), (err: RunForgeError) => err.code === EDITOR_WORKSPACE_UNTRUSTED);
    assert.deepEqual(asked, []);
    editorTrusted = true;
    await assert.rejects(service.train(ws), (err: RunForgeError) => err.code === "WORKSPACE_NOT_TRUSTED");
    assert.deepEqual(asked, [fs.realpathSync(ws)]);
    assert.deepEqual((await service.bridge.request<{ trusted: string[] }>("list_trusted")).trusted, []);
    answer = true;
    await service.watch(ws);
    const runId = (await service.train(ws)).run.run_id;
    assert.equal(asked.length, 2);
    assert.equal((await service.waitForEnd(runId)).terminalState, "completed");
  });

  test("starts the daemon when none is running", async () => {
    const daemon = new TestDaemon({});
    const service = daemon.service({ autostart: true });
    cleanups.push(async () => {
      await service.dispose();
      daemon.ctl("daemon", "stop");
      fs.rmSync(daemon.root, { recursive: true, force: true });
    });
    await service.start();
    assert.equal(service.daemonState, "connected");
    const pong = await service.ping();
    assert.ok(pong.pid > 0);
  });

  test("no daemon and no autostart: a clear error naming how to start it", async () => {
    const daemon = new TestDaemon({});
    const service = daemon.service();
    cleanups.push(async () => {
      await service.dispose();
      fs.rmSync(daemon.root, { recursive: true, force: true });
    });
    await assert.rejects(service.start(), (err: RunForgeError) => {
      assert.equal(err.code, "DAEMON_UNAVAILABLE");
      assert.match(err.remediation, /runforgectl daemon start/);
      return true;
    });
  });
});
