"""When the index cannot be updated the run still completes: the daemon writes the
``.index-orphan`` marker, publishes ``index_orphaned``, and every listing shows the run
as an orphan with the banner naming ``runforgectl recover``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tests.contracts import validate_file
from tests.e2e.conftest import (
    events_on_disk,
    index_path,
    read_json,
    run_dir,
    start_detached,
    wait_result,
)
from tests.harness import DaemonProcess

BANNER = "! Run 'runforgectl recover' to put them back."


def outputs_is_a_file(workspace: Path) -> Path:
    # chmod does not stop root: a regular file where the folder should be stops everyone.
    outputs = index_path(workspace).parent
    outputs.parent.mkdir(parents=True)
    outputs.write_bytes(b"not a folder\n")
    return outputs


def test_an_unwritable_index_leaves_a_completed_run_reported_as_an_orphan(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    daemon, workspace = trainer_daemon()
    outputs = outputs_is_a_file(workspace)
    followed = daemon.ctl("train", "--workspace", str(workspace), timeout=120)
    assert followed.returncode == 0, (followed.stdout, followed.stderr)
    run_id = followed.stdout.split()[0]
    assert "run is orphaned" in followed.stdout

    result = wait_result(workspace, run_id)
    assert result["state"] == "completed"
    assert result["index_status"] == "orphaned"
    assert result["index_error"]["message"]
    folder = run_dir(workspace, run_id)
    assert (folder / "run.json").is_file()
    marker = validate_file("index-orphan.v1.0.0", folder / ".index-orphan")
    assert marker["run_id"] == run_id
    assert outputs.read_bytes() == b"not a folder\n"

    types = [e["type"] for e in events_on_disk(workspace, run_id)]
    assert "index_orphaned" in types and "index_updated" not in types
    assert (
        types.index("artifacts_written")
        < types.index("index_orphaned")
        < types.index("run_terminal")
    )

    # runs: the orphan first, with the banner; --json carries the same data.
    listed = daemon.ctl("runs", "--workspace", str(workspace), check=True).stdout
    lines = listed.splitlines()
    assert lines[0].startswith("! 1 run is on disk but missing from the index (orphaned)")
    assert run_id in lines[0] and BANNER in lines
    [row] = [line for line in lines if line.startswith(run_id)]
    assert "ORPHANED" in row
    runs = daemon.ctl_json("runs", "--workspace", str(workspace))
    assert [o["run_id"] for o in runs["orphans"]] == [run_id]
    assert runs["orphans"][0]["error"]
    # Other replies carry the orphans too.
    status = daemon.ctl_json("status", "--workspace", str(workspace))["workspace"]
    assert [o["run_id"] for o in status["orphans"]] == [run_id]
    shown = daemon.ctl_json("show", run_id, "--workspace", str(workspace))
    assert [o["run_id"] for o in shown["orphans"]] == [run_id]
    assert shown["run"]["index_status"] == "orphaned"
    assert BANNER in daemon.ctl("show", run_id, "--workspace", str(workspace)).stdout

    # Once the folder can be written, recover indexes it and the banner goes.
    outputs.unlink()
    recovered = daemon.ctl_json("recover", "--workspace", str(workspace))
    assert [r["run_id"] for r in recovered["recovered"]] == [run_id]
    assert [e["run_id"] for e in read_json(index_path(workspace))["runs"]] == [run_id]
    assert not (folder / ".index-orphan").exists()
    runs = daemon.ctl_json("runs", "--workspace", str(workspace))
    assert runs["orphans"] == []
    assert [(r["run_id"], r["index_status"]) for r in runs["runs"]] == [(run_id, "indexed")]
    assert "!" not in daemon.ctl("runs", "--workspace", str(workspace)).stdout


def test_a_corrupt_index_is_kept_aside_and_rebuilt_from_what_the_daemon_knows(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    """DESIGN §4: a corrupt index is never silently overwritten. It is kept as
    ``index.json.corrupt.<timestamp>`` and the next write starts a fresh index from the
    entries the daemon holds, so the runs it indexed itself are not lost."""
    daemon, workspace = trainer_daemon()
    earlier = start_detached(daemon, workspace)
    assert wait_result(workspace, earlier)["index_status"] == "indexed"
    garbage = b'{"schema_version": "1.0.0", "runs": [ {"run_id": '
    index_path(workspace).write_bytes(garbage)

    later = start_detached(daemon, workspace)
    assert wait_result(workspace, later)["index_status"] == "indexed"
    kept = list(index_path(workspace).parent.glob("index.json.corrupt.*"))
    assert [p.read_bytes() for p in kept] == [garbage]
    index = validate_file("index.v1.0.0", index_path(workspace))
    assert [e["run_id"] for e in index["runs"]] == [earlier, later]
    assert daemon.ctl_json("runs", "--workspace", str(workspace))["orphans"] == []


def test_runs_only_a_corrupt_index_listed_are_orphans_until_recover(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    """A daemon that finds the index corrupt when it first reads it knows none of the
    runs it listed: they show as orphans, with the banner, and ``recover`` indexes them."""
    daemon, workspace = trainer_daemon()
    earlier = start_detached(daemon, workspace)
    assert wait_result(workspace, earlier)["index_status"] == "indexed"
    assert daemon.stop() == 0
    garbage = b'{"schema_version": "1.0.0", "runs": [ {"run_id": '
    index_path(workspace).write_bytes(garbage)
    daemon.start()

    later = start_detached(daemon, workspace)
    assert wait_result(workspace, later)["index_status"] == "indexed"
    kept = list(index_path(workspace).parent.glob("index.json.corrupt.*"))
    assert [p.read_bytes() for p in kept] == [garbage]
    runs = daemon.ctl_json("runs", "--workspace", str(workspace))
    assert [o["run_id"] for o in runs["orphans"]] == [earlier]
    listed = daemon.ctl("runs", "--workspace", str(workspace), check=True).stdout
    assert BANNER in listed and earlier in listed.splitlines()[0]

    daemon.ctl("recover", "--workspace", str(workspace), check=True)
    index = validate_file("index.v1.0.0", index_path(workspace))
    assert sorted(e["run_id"] for e in index["runs"]) == sorted([earlier, later])
    assert daemon.ctl_json("runs", "--workspace", str(workspace))["orphans"] == []
