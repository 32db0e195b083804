"""Hostile run ids and paths get structured errors (exit 1) and the daemon keeps serving:
nothing outside the workspace is read, written or executed."""

from __future__ import annotations

from pathlib import Path

import pytest

from runforge_protocol import messages as m
from runforge_protocol.discovery import Endpoints
from runforge_protocol.errors import ErrorCode
from runforgectl.client import Client, DaemonError
from tests.e2e.conftest import error_of, start_detached, wait_result
from tests.harness import DaemonProcess

HOSTILE_RUN_IDS = ("../../etc", "a/b", "..", "-rf", "x" * 200)
RUN_ID_COMMANDS = (
    "show",
    "metrics",
    "feature-importance",
    "coefficients",
    "interpretability",
    "export-md",
    "cancel",
)


def test_hostile_run_ids_are_invalid_run_id_for_every_command(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    for run_id in HOSTILE_RUN_IDS:
        for command in RUN_ID_COMMANDS:
            # "--" keeps an id like "-rf" an argument, as a careful script would pass it.
            result = daemon.ctl(
                command, "--workspace", str(sample_workspace), "--json", "--", run_id
            )
            error = error_of(result)
            assert error["code"] == "INVALID_RUN_ID", (command, run_id, error)
            assert error["details"]["run_id"] == run_id
        events = daemon.ctl("events", "-w", str(sample_workspace), f"--run={run_id}", "--json")
        assert error_of(events)["code"] == "INVALID_RUN_ID", run_id
    human = daemon.ctl("show", "../../etc", "--workspace", str(sample_workspace))
    assert human.returncode == 1 and "INVALID_RUN_ID" in human.stderr
    assert not (sample_workspace.parent / "etc").exists()
    assert not list(sample_workspace.rglob("run-summary.md"))
    assert daemon.ctl("ping").returncode == 0


def test_unknown_run_ids_are_run_not_found(daemon: DaemonProcess, sample_workspace: Path) -> None:
    run_id = start_detached(daemon, sample_workspace)
    wait_result(sample_workspace, run_id)
    unknown = "20990101-000000-deadbeef"
    for command in RUN_ID_COMMANDS:
        error = error_of(
            daemon.ctl(command, unknown, "--workspace", str(sample_workspace), "--json")
        )
        assert error["code"] == "RUN_NOT_FOUND", command
    events = daemon.ctl("events", "-w", str(sample_workspace), "--run", unknown, "--json")
    assert error_of(events)["code"] == "RUN_NOT_FOUND"
    # The known run is still served.
    assert daemon.ctl_json("show", run_id, "-w", str(sample_workspace))["run_id"] == run_id


def test_paths_outside_the_workspace_are_invalid_path(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    outside = sample_workspace.parent / "outside.csv"
    outside.write_text((sample_workspace / "data" / "iris_like.csv").read_text())
    (sample_workspace / "data" / "link.csv").symlink_to(outside)
    ws = ["--workspace", str(sample_workspace)]
    attempts = {
        "train outside": ["train", *ws, "--dataset", str(outside)],
        "train dot-dot": ["train", *ws, "--dataset", f"{sample_workspace}/../outside.csv"],
        "train symlink": ["train", *ws, "--dataset", str(sample_workspace / "data" / "link.csv")],
        "inspect-dataset": ["inspect-dataset", str(outside), *ws],
        "inspect-dataset symlink": [
            "inspect-dataset",
            str(sample_workspace / "data/link.csv"),
            *ws,
        ],
        "inspect-artifact": ["inspect-artifact", "/etc/passwd", *ws],
    }
    for name, args in attempts.items():
        error = error_of(daemon.ctl(*args, "--json"))
        assert error["code"] == "INVALID_PATH", (name, error)
        assert error["remediation"]
    assert not (sample_workspace / ".ml" / "runs").exists() or not any(
        (sample_workspace / ".ml" / "runs").iterdir()
    )
    assert daemon.ctl("ping").returncode == 0


def test_a_missing_workspace_is_workspace_not_found(daemon: DaemonProcess) -> None:
    missing = daemon.root / "no-such-workspace"
    for command in ("runs", "show", "settings", "train", "active"):
        error = error_of(daemon.ctl(command, "--workspace", str(missing), "--json"))
        assert error["code"] == "WORKSPACE_NOT_FOUND", command
    file_ws = daemon.root / "a-file"
    file_ws.write_text("")
    assert error_of(daemon.ctl("runs", "-w", str(file_ws), "--json"))["code"] == "INVALID_PATH"


@pytest.mark.parametrize(
    "request_",
    [
        m.ListRuns(workspace="relative/ws"),
        m.Train(workspace="ws"),
        m.ShowRun(workspace="."),
        m.InspectDataset(workspace="", path="x.csv"),
        m.TrustPath(path="relative"),
    ],
    ids=["runs", "train", "show-dot", "inspect-empty", "trust-relative"],
)
def test_relative_or_malformed_workspaces_from_any_client_are_invalid_path(
    daemon: DaemonProcess, request_: m.RequestBase
) -> None:
    """runforgectl always sends absolute paths; another client may not. The daemon's own
    working directory means nothing to the user, so a relative path is refused."""
    with Client(Endpoints.resolve(str(daemon.runtime_dir)), timeout_s=30) as client:
        with pytest.raises(DaemonError) as raised:
            client.result(request_)
        assert raised.value.error.code is ErrorCode.INVALID_PATH
        assert isinstance(client.result(m.Ping()), m.HelloResult)


def test_a_nul_byte_in_a_workspace_path_is_bad_request_naming_the_field(
    daemon: DaemonProcess,
) -> None:
    """Refused by the decoder, before any path handling (field limits, PROTOCOL.md)."""
    with Client(Endpoints.resolve(str(daemon.runtime_dir)), timeout_s=30) as client:
        with pytest.raises(DaemonError) as raised:
            client.result(m.ListRuns(workspace="/tmp/\0nul"))
        assert raised.value.error.code is ErrorCode.BAD_REQUEST
        assert raised.value.error.details == {"field": "workspace"}
        assert isinstance(client.result(m.Ping()), m.HelloResult)
