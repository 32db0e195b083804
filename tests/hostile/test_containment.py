"""Hostile workspaces and trainers against the real daemon: symlinks and FIFOs planted in
``.ml``, a trainer that swaps its run folder for a symlink or writes hostile files. The
daemon writes nothing outside the workspace, shows nothing read from outside it, keeps
hostile paths out of the index and results, and no request is held up."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runforge_protocol import messages as m
from tests.e2e.conftest import error_of
from tests.harness import (
    DaemonProcess,
    index_path,
    read_json,
    run_dir,
    start_detached,
    trainer_workspace,
    wait_for,
    wait_result,
)
from tests.hostile.test_wire_limits import Peer
from tests.index.runfolders import completed_run, run_id_at

SECRET = "outside-secret-label"


def snapshot(folder: Path) -> dict[str, Any]:
    """Everything under ``folder``: file contents and symlink targets, by relative path."""
    found: dict[str, Any] = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_symlink():
            found[key] = ("symlink", os.readlink(path))
        elif path.is_file():
            found[key] = path.read_bytes()
        else:
            found[key] = "dir"
    return found


def outside_with_a_run(root: Path) -> tuple[Path, str]:
    """A folder outside every workspace that looks like a workspace's .ml (a complete run
    folder and an index), with a sentinel file."""
    outside = root / "outside"
    run = completed_run(outside, 1)
    document = read_json(run / "run.json")
    document["label_column"] = SECRET  # anything read from outside would carry it
    (run / "run.json").write_text(json.dumps(document))
    (outside / "sentinel.txt").write_text("outside the workspace\n")
    (outside / ".ml" / "outputs").mkdir(parents=True)
    (outside / ".ml" / "outputs" / "index.json").write_text(
        json.dumps({"schema_version": "1.0.0", "runs": []})
    )
    return outside, run.name


def all_replies_text(daemon: DaemonProcess, workspace: Path, run_id: str) -> str:
    """What every read command prints for the workspace and the run (whatever the code)."""
    ws = ["--workspace", str(workspace), "--json"]
    out = []
    for args in (
        ["runs", *ws],
        ["show", run_id, *ws],
        ["show", *ws],
        ["metrics", run_id, *ws],
        ["export-md", run_id, *ws],
        ["events", "--run", run_id, *ws],
        ["status", *ws],
    ):
        result = daemon.ctl(*args)
        assert result.returncode in (0, 1), (args, result.returncode, result.stderr)
        assert "INTERNAL_ERROR" not in result.stdout, (args, result.stdout)
        out.append(result.stdout)
    return "\n".join(out)


# --------------------------------------------------------------------------- item 8, 9, 10


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
def test_a_symlinked_outputs_folder_is_neither_written_nor_read(
    daemon: DaemonProcess, trusted: bool
) -> None:
    outside, _ = outside_with_a_run(daemon.root)
    workspace = daemon.root / "ws"
    completed_run(workspace, 2)  # an orphan: on disk, in no index
    (workspace / ".ml" / "outputs").symlink_to(outside / ".ml" / "outputs")
    if trusted:
        daemon.ctl("trust", str(workspace), check=True)
    before = snapshot(outside)

    error = error_of(daemon.ctl("recover", "--workspace", str(workspace), "--json"))
    assert error["code"] == "INVALID_PATH", error
    assert ".ml/outputs" in error["message"] and "symlink" in error["message"]
    all_replies_text(daemon, workspace, run_id_at(2))
    assert snapshot(outside) == before
    assert daemon.ctl("ping").returncode == 0


def test_a_symlinked_run_folder_is_not_read_indexed_or_written(daemon: DaemonProcess) -> None:
    outside, foreign = outside_with_a_run(daemon.root)
    workspace = daemon.root / "ws"
    completed_run(workspace, 2)
    (workspace / ".ml" / "runs" / foreign).symlink_to(outside / ".ml" / "runs" / foreign)
    # A hostile index naming the symlinked run as if it were the newest.
    index_path(workspace).parent.mkdir(parents=True)
    before = snapshot(outside)

    report = daemon.ctl_json("recover", "--workspace", str(workspace))
    assert [r["run_id"] for r in report["recovered"]] == [run_id_at(2)]
    skipped = {s["run_dir"]: s for s in report["skipped"]}
    assert f".ml/runs/{foreign}" in skipped
    assert "symlink" in skipped[f".ml/runs/{foreign}"]["message"]
    assert foreign not in json.dumps(read_json(index_path(workspace)))

    shown = all_replies_text(daemon, workspace, foreign)
    outside_run_json = (outside / ".ml" / "runs" / foreign / "run.json").read_text()
    assert (
        json.loads(outside_run_json)["dataset"]["fingerprint_sha256"]
        not in shown.replace(run_id_at(2), "")
        or run_id_at(2) in shown
    )
    for command in ("show", "metrics", "export-md"):
        error = error_of(daemon.ctl(command, foreign, "--workspace", str(workspace), "--json"))
        assert error["code"] in ("INVALID_PATH", "RUN_NOT_FOUND"), (command, error)
    assert snapshot(outside) == before  # no run-summary.md, no index, no marker outside
    assert daemon.ctl("ping").returncode == 0


def test_a_symlinked_ml_folder_is_refused_and_nothing_outside_is_touched(
    daemon: DaemonProcess,
) -> None:
    outside, foreign = outside_with_a_run(daemon.root)
    untrusted = daemon.root / "untrusted"
    untrusted.mkdir()
    (untrusted / ".ml").symlink_to(outside / ".ml")
    trusted = trainer_workspace(daemon)
    (trusted / ".ml").symlink_to(outside / ".ml")
    before = snapshot(outside)

    for workspace in (untrusted, trusted):
        error = error_of(daemon.ctl("recover", "--workspace", str(workspace), "--json"))
        assert error["code"] == "INVALID_PATH" and "symlink" in error["message"], error
        shown = all_replies_text(daemon, workspace, foreign)
        assert (
            foreign not in shown.replace(f'"run_id": "{foreign}"', "").replace(f"run {foreign}", "")
            or "INVALID_PATH" in shown
        )
    # train in the trusted one: refused before any run folder or process exists.
    error = error_of(daemon.ctl("train", "--workspace", str(trusted), "--detach", "--json"))
    assert error["code"] == "INVALID_PATH" and ".ml" in error["message"], error
    assert daemon.ctl_json("active")["runs"] == []
    assert snapshot(outside) == before
    assert daemon.ctl("ping").returncode == 0


# --------------------------------------------------------------------------- item 7


def test_a_trainer_that_swaps_its_run_folder_for_a_symlink_gets_nothing_written_outside(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    root_daemon = daemon_factory()
    outside = root_daemon.root / "outside"
    outside.mkdir(parents=True)
    (outside / "sentinel.txt").write_text("outside\n")
    daemon = daemon_factory(RF_TEST_MODE="swap_folder", RF_TEST_OUTSIDE=str(outside)).start()
    workspace = trainer_workspace(daemon)
    run_id = start_detached(daemon, workspace)
    wait_for(lambda: daemon.ctl_json("active")["runs"] == [], timeout=120)
    assert snapshot(outside) == {"sentinel.txt": b"outside\n"}
    assert (run_dir(workspace, run_id)).is_symlink()
    assert not index_path(workspace).exists() or run_id not in index_path(workspace).read_text()
    # The verdict: failed (its run.json is behind a symlink now, so it is never read).
    [terminal] = [
        e for e in daemon.log_events() if e.get("event") == "run_terminal" and e["run_id"] == run_id
    ]
    assert terminal["state"] == "failed", terminal
    again = error_of(daemon.ctl("cancel", run_id, "--workspace", str(workspace), "--json"))
    assert again["code"] == "RUN_NOT_ACTIVE" and again["details"]["state"] == "failed"
    # What the daemon kept writing went to the real folder, wherever the trainer moved it.
    moved = run_dir(workspace, run_id).with_name(run_id + ".moved")
    assert (moved / "run.json").exists() and (moved / "logs.txt").exists()
    assert daemon.ctl("ping").returncode == 0


HOSTILE_RUN_JSON = {
    "model path with ..": {"artifacts": {"model_pkl": "../../../etc/passwd"}},
    "absolute model path": {"artifacts": {"model_pkl": "/etc/passwd"}},
    "NUL in model path": {"artifacts": {"model_pkl": "model\u0000.pkl"}},
    "absolute extra artifact": {"artifacts": {"linear_coefficients_json": "/etc/shadow"}},
    "NUL in label column": {"label_column": "lab\u0000el"},
    "escape in label column": {"label_column": "\u001b[2Jlabel"},
    "run id of another run": {"run_id": "../../../etc"},
}


@pytest.mark.parametrize("patch", HOSTILE_RUN_JSON.values(), ids=HOSTILE_RUN_JSON.keys())
def test_hostile_run_json_contents_reach_neither_the_index_nor_the_result(
    daemon_factory: Callable[..., DaemonProcess], patch: dict[str, Any]
) -> None:
    daemon = daemon_factory(
        RF_TEST_MODE="hostile_run_json", RF_TEST_RUN_JSON_PATCH=json.dumps(patch)
    ).start()
    workspace = trainer_workspace(daemon)
    run_id = start_detached(daemon, workspace)
    result = wait_result(workspace, run_id)
    if "artifacts" in patch and "model_pkl" not in patch["artifacts"]:
        # An artifact the index does not hold: the run is complete, the path goes nowhere.
        assert result["state"] == "completed", result
    else:
        assert result["state"] == "failed", result
        assert "run.json" in result["reason"]
        assert run_id not in (
            index_path(workspace).read_text() if index_path(workspace).exists() else ""
        )
    stored = (run_dir(workspace, run_id) / "result.json").read_text()
    index_text = index_path(workspace).read_text() if index_path(workspace).exists() else ""
    for text in (stored, index_text):
        assert "etc/passwd" not in text and "/etc/shadow" not in text
        assert "\\u0000" not in text and "\\u001b" not in text
    # show does not pass the hostile document on either: it says what is wrong with it.
    error = error_of(daemon.ctl("show", run_id, "--workspace", str(workspace), "--json"))
    assert error["code"] == "ARTIFACT_NOT_FOUND" and "run.json" in error["message"], error
    assert "etc/passwd" not in json.dumps(error) and "\\u0000" not in json.dumps(error)


def test_a_metrics_file_symlinked_outside_is_not_read(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    holder = daemon_factory()
    outside = holder.root / "outside"
    outside.mkdir(parents=True)
    (outside / "metrics.json").write_text(json.dumps({"accuracy": 0.111, "secret": 424242.0}))
    daemon = daemon_factory(RF_TEST_MODE="metrics_symlink", RF_TEST_OUTSIDE=str(outside)).start()
    workspace = trainer_workspace(daemon)
    run_id = start_detached(daemon, workspace)
    result = wait_result(workspace, run_id)
    assert result["state"] == "completed"
    assert (
        "secret" not in result["final_metrics"] and result["final_metrics"].get("accuracy") != 0.111
    )
    metrics = daemon.ctl("metrics", run_id, "--workspace", str(workspace), "--json")
    assert metrics.returncode in (0, 1) and "424242" not in metrics.stdout
    summary = daemon.ctl_json("show", run_id, "--workspace", str(workspace))
    assert "424242" not in json.dumps(summary)


def test_hostile_cancel_marker_paths_and_reason_are_filtered(
    daemon_factory: Callable[..., DaemonProcess],
) -> None:
    daemon = daemon_factory(RF_TEST_MODE="hostile_marker").start()
    workspace = trainer_workspace(daemon)
    run_id = start_detached(daemon, workspace)
    wait_for(lambda: (run_dir(workspace, run_id) / "trainer.pid").exists())
    daemon.ctl("cancel", run_id, "--workspace", str(workspace), "--no-wait", check=True)
    result = wait_result(workspace, run_id)
    assert result["state"] == "cancelled_graceful", result
    assert result["partial_artifacts"] == [f".ml/runs/{run_id}/checkpoint.partial.json"]
    stored = (run_dir(workspace, run_id) / "result.json").read_text()
    assert "\\u0000" not in stored and "\\u001b" not in stored and "etc/" not in stored
    shown = daemon.ctl_json("show", run_id, "--workspace", str(workspace))
    assert shown["run"]["partial_artifacts"] == result["partial_artifacts"]


# --------------------------------------------------------------------------- item 11


def test_fifos_planted_in_an_untrusted_workspace_block_no_request(
    daemon: DaemonProcess,
) -> None:
    good = trainer_workspace(daemon, "good")
    good_run = start_detached(daemon, good)
    wait_result(good, good_run)
    hostile = daemon.root / "hostile"
    ids = [run_id_at(n) for n in range(1, 13)]
    for n in range(1, 13):
        folder = completed_run(hostile, n)
        for name in ("run.json", "result.json", "request.json", "metrics.json", "events.jsonl"):
            (folder / name).unlink(missing_ok=True)
            os.mkfifo(folder / name)
    fifo_index = daemon.root / "fifo-index"
    completed_run(fifo_index, 1)
    index_path(fifo_index).parent.mkdir(parents=True)
    os.mkfifo(index_path(fifo_index))

    peer = Peer(daemon)
    try:
        # More requests on FIFOs than the daemon has worker threads, all at once...
        for run_id in ids:
            peer.send(
                m.encode(m.ShowRun(id=f"fifo-{run_id}", workspace=str(hostile), run_id=run_id))
            )
            peer.send(
                m.encode(m.Replay(id=f"replay-{run_id}", workspace=str(hostile), run_id=run_id))
            )
        peer.send(m.encode(m.ListRuns(id="fifo-runs", workspace=str(hostile))))
        peer.send(m.encode(m.ListRuns(id="fifo-index", workspace=str(fifo_index))))
        # ...then the other workspace's requests: answered, not stuck behind them.
        peer.send(m.encode(m.ListRuns(id="good-runs", workspace=str(good))))
        peer.send(m.encode(m.ShowRun(id="good-show", workspace=str(good), run_id=good_run)))
        peer.send(m.encode(m.Replay(id="good-replay", workspace=str(good), run_id=good_run)))
        replies = {}
        for _ in range(2 * len(ids) + 5):
            reply = peer.reply(timeout_ms=60_000)
            replies[reply.id] = reply
    finally:
        peer.close()
    assert replies["good-runs"].ok and replies["good-show"].ok and replies["good-replay"].ok
    for run_id in ids:
        show = replies[f"fifo-{run_id}"]
        assert not show.ok and show.error is not None
        assert show.error.code.value != "INTERNAL_ERROR", show.error
        replay = replies[f"replay-{run_id}"]
        # A FIFO is no event log: the run has none to replay.
        assert replay.ok and replay.result is not None and replay.result.events == []
    for name in ("fifo-runs", "fifo-index"):
        reply = replies[name]
        assert reply.ok or (reply.error is not None and reply.error.code.value != "INTERNAL_ERROR")
    report = daemon.ctl_json("recover", "--workspace", str(hostile))
    assert report["recovered"] == []
    assert daemon.ctl("ping").returncode == 0
