"""runforgectl behaves like a well-made Unix tool (issue 10), driven through the real
runforgectl against a real runforged: versions, help, completion, closed pipes, a runtime
directory that is not ours, usage errors (also as JSON), idempotent train, Ctrl-C twice,
--label, validation before anything is created, human output, and a real pty."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from runforgectl.output import display_width, table
from tests.e2e.conftest import error_of, write_settings
from tests.harness import (
    DaemonProcess,
    read_json,
    run_dir,
    start_detached,
    wait_for,
    wait_result,
)

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141


def ctl_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "runforgectl", *args]


# ---------------------------------------------------------------- version, help, completion


def test_both_commands_print_their_version(daemon: DaemonProcess) -> None:
    from runforged import __version__

    ctl = daemon.ctl("--version")
    assert ctl.returncode == 0 and ctl.stdout.startswith(f"runforgectl {__version__} ")
    d = subprocess.run(
        [sys.executable, "-m", "runforged", "--version"], capture_output=True, text=True
    )
    assert d.returncode == 0 and d.stdout.startswith(f"runforged {__version__} ")


def test_help_names_every_command_with_an_example_and_the_environment_and_exit_codes(
    daemon: DaemonProcess,
) -> None:
    from runforgectl.commands import COMMANDS

    top = daemon.ctl("--help", check=True).stdout
    for word in ("environment:", "RUNFORGE_RUNTIME_DIR", "exit status:", "141", "130"):
        assert word in top
    for command in COMMANDS:
        assert command.name in top and command.summary.split()[0] in top
        own = daemon.ctl(command.name, "--help", check=True).stdout
        assert f"example:\n  {command.example}" in own
    train = daemon.ctl("train", "--help", check=True).stdout
    for choice in ("fast", "thorough", "hq-train", "random_forest", "cuda", "--label"):
        assert choice in train


def test_completion_scripts_come_from_the_real_parser_and_are_valid_shell(
    daemon: DaemonProcess,
) -> None:
    bash = daemon.ctl("completion", "bash", check=True).stdout
    for word in ("train", "inspect-dataset", "--label", "--request-key", "random_forest"):
        assert word in bash
    assert subprocess.run(["bash", "-n"], input=bash, text=True).returncode == 0
    zsh = daemon.ctl("completion", "zsh", check=True).stdout
    assert "#compdef runforgectl" in zsh and "--label" in zsh
    if shutil.which("zsh"):
        assert subprocess.run(["zsh", "-n"], input=zsh, text=True).returncode == 0


def test_completion_library_is_not_imported_by_other_commands() -> None:
    code = (
        "import sys, runforgectl.cli, runforgectl.parser as p\n"
        "for name in ('ping', 'train', 'runs', 'events', None): p.build_parser(name)\n"
        "print(','.join(n for n in sys.modules if n.split('.')[0] in ('shtab', 'unicodedata')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# ---------------------------------------------------------------- closed pipes


def run_with_closed_stdout(daemon: DaemonProcess, *args: str) -> subprocess.Popen[bytes]:
    """Start runforgectl with a pipe for stdout whose reading end is already closed, the
    way `| head` leaves it once head has exited."""
    proc = subprocess.Popen(
        ctl_argv(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=daemon.env,
        cwd=daemon.root,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    return proc


def assert_quiet_end(proc: subprocess.Popen[bytes]) -> None:
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_PIPE_CLOSED, err.decode()
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()


def test_runs_and_train_json_end_quietly_when_the_reader_goes_away(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    run_id = start_detached(daemon, sample_workspace)
    wait_result(sample_workspace, run_id)
    assert_quiet_end(run_with_closed_stdout(daemon, "runs", "-w", str(sample_workspace)))
    proc = run_with_closed_stdout(daemon, "train", "--json", "-w", str(sample_workspace))
    assert_quiet_end(proc)
    # The run it asked for goes on in the daemon and ends normally.
    runs = daemon.ctl_json("runs", "-w", str(sample_workspace))["runs"]
    newest = max(runs, key=lambda r: r["created_at"])["run_id"]
    assert wait_result(sample_workspace, newest)["state"] == "completed"


def test_events_ends_quietly_when_the_reader_goes_away(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    proc = run_with_closed_stdout(daemon, "events", "--json")
    time.sleep(0.5)  # let it subscribe; the events below are what it tries to write
    run_id = start_detached(daemon, sample_workspace)
    assert_quiet_end(proc)
    wait_result(sample_workspace, run_id)


# ---------------------------------------------------------------- whom the client talks to


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a directory to nobody")
def test_a_runtime_directory_of_another_user_is_refused_in_one_line(
    daemon: DaemonProcess,
) -> None:
    other = daemon.root / "other-run"
    other.mkdir(mode=0o700)
    os.chown(other, 65534, 65534)  # nobody
    for args in (["ping"], ["runs"], ["events"]):
        result = daemon.ctl("--runtime-dir", str(other), *args)
        assert result.returncode == EXIT_UNAVAILABLE, result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
        assert "belongs to uid 65534" in result.stderr and "refusing" in result.stderr
    as_json = daemon.ctl("--runtime-dir", str(other), "ping", "--json")
    assert json.loads(as_json.stdout)["code"] == "DAEMON_UNAVAILABLE"


def test_a_runtime_directory_others_may_write_is_refused(daemon: DaemonProcess) -> None:
    daemon.runtime_dir.chmod(0o755)
    try:
        result = daemon.ctl("ping")
        assert result.returncode == EXIT_UNAVAILABLE
        assert "mode 0755" in result.stderr and f"chmod 700 {daemon.runtime_dir}" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        daemon.runtime_dir.chmod(0o700)
    assert daemon.ctl("ping").returncode == 0


# ---------------------------------------------------------------- usage errors


def test_timeout_must_be_above_zero_and_usage_errors_are_json_with_json(
    daemon: DaemonProcess,
) -> None:
    for value in ("0", "-1", "nan", "soon"):
        result = daemon.ctl("--timeout", value, "ping")
        assert result.returncode == EXIT_USAGE and "--timeout" in result.stderr
        assert result.stdout == ""
    as_json = daemon.ctl("ping", "--timeout", "0", "--json")
    assert as_json.returncode == EXIT_USAGE
    document = json.loads(as_json.stdout)
    assert document["code"] == "USAGE" and "--timeout" in document["message"]


def test_bad_choices_and_parameters_are_rejected_before_a_run_folder_exists(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    ws = str(sample_workspace)
    bad_profile = daemon.ctl("train", "-w", ws, "--profile", "quick", "--json")
    assert bad_profile.returncode == EXIT_USAGE
    message = json.loads(bad_profile.stdout)["message"]
    assert "'quick'" in message and "fast" in message and "thorough" in message
    bad_format = daemon.ctl("train", "-w", ws, "--param", "C")
    assert bad_format.returncode == EXIT_USAGE and "NAME=VALUE" in bad_format.stderr
    bad_value = error_of(daemon.ctl("train", "-w", ws, "--param", "C=abc", "--json"))
    assert bad_value["code"] == "BAD_REQUEST" and "C='abc'" in bad_value["message"]
    assert bad_value["details"]["field"] == "params"
    unknown = error_of(daemon.ctl("train", "-w", ws, "--param", "trees=3", "--json"))
    assert "C, max_iter" in unknown["message"]
    wrong_family = error_of(
        daemon.ctl(
            "train", "-w", ws, "--model", "random_forest", "--param", "max_depth=-2", "--json"
        )
    )
    assert "max_depth" in wrong_family["message"]
    assert not (sample_workspace / ".ml").exists()


def test_the_daemon_rejects_bad_choices_from_any_client_naming_the_field(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    from runforge_protocol import messages as m
    from runforge_protocol.discovery import Endpoints
    from runforgectl.client import Client, DaemonError

    with Client(Endpoints.resolve(daemon.runtime_dir)) as client:
        for field, value in (("profile", "quick"), ("preset", "huge"), ("model", "xgboost")):
            with pytest.raises(DaemonError) as caught:
                client.result(m.Train(workspace=str(sample_workspace), **{field: value}))
            error = caught.value.error
            assert error.code.value == "BAD_REQUEST"
            assert error.details["field"] == field and error.details["valid"]
    assert not (sample_workspace / ".ml").exists()


# ---------------------------------------------------------------- idempotent train


def test_a_repeated_request_key_gets_the_run_the_first_request_created(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    args = ("train", "-w", str(sample_workspace), "--detach", "--request-key", "retry-1")
    procs = [
        subprocess.Popen(
            ctl_argv(*args, "--json"),
            stdout=subprocess.PIPE,
            text=True,
            env=daemon.env,
            cwd=daemon.root,
        )
        for _ in range(3)
    ]
    ids = {json.loads(p.communicate(timeout=120)[0])["run"]["run_id"] for p in procs}
    again = daemon.ctl_json(*args)["run"]["run_id"]
    assert len(ids) == 1 and again in ids
    assert [p.name for p in (sample_workspace / ".ml" / "runs").iterdir()] == [again]
    wait_result(sample_workspace, again)
    other = start_detached(daemon, sample_workspace)  # no key given: a fresh one
    assert other != again
    wait_result(sample_workspace, other)


# ---------------------------------------------------------------- Ctrl-C twice


def test_a_second_ctrl_c_says_the_run_is_being_cancelled_and_exits_130(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    daemon, workspace = trainer_daemon(
        RF_TEST_MODE="graceful", RF_TEST_STEPS="200", RF_TEST_STEP_S="0.1", RF_TEST_FLUSH_S="4"
    )
    proc = subprocess.Popen(
        ctl_argv("train", "-w", str(workspace), "--grace", "30"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=daemon.env,
        cwd=daemon.root,
    )
    assert proc.stdout is not None
    run_id = proc.stdout.readline().split()[0]
    wait_for(lambda: (run_dir(workspace, run_id) / "trainer.pid").exists())
    proc.send_signal(signal.SIGINT)
    wait_for(lambda: "interrupted" in proc.stdout.readline() if proc.stdout else False)  # type: ignore[union-attr]
    wait_for(lambda: any(e["type"] == "cancelling" for e in events_of(workspace, run_id)))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_INTERRUPTED, err
    assert f"run {run_id} is being cancelled" in err and "goes on" not in err
    assert "Traceback" not in err
    assert wait_result(workspace, run_id)["state"] == "cancelled_graceful"


def events_of(workspace: Path, run_id: str) -> list[dict[str, Any]]:
    path = run_dir(workspace, run_id) / "events.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines() if x] if path.exists() else []


# ---------------------------------------------------------------- --label and labelColumn


def test_label_option_and_setting_reach_the_runner(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    ws = str(sample_workspace)
    missing = daemon.ctl("train", "-w", ws, "--label", "species")
    assert missing.returncode == 12
    run_id = missing.stdout.splitlines()[0].split()[0]
    request = read_json(run_dir(sample_workspace, run_id) / "request.json")
    assert "--label=species" in request["argv"]
    assert "'species'" in missing.stdout and "--label" in missing.stdout
    write_settings(
        sample_workspace,
        """
        {
          "runforge.datasetPath": "data/iris_like.csv",
          "runforge.profile": "fast",
          "runforge.device": "cpu",
          "runforge.labelColumn": "label",
        }
        """,
    )
    settings = daemon.ctl_json("settings", "-w", ws)["settings"]
    assert settings["labelColumn"] == "label"
    assert settings["origins"]["labelColumn"]["source"] == "workspace"
    ok = daemon.ctl("train", "-w", ws)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    run_id = ok.stdout.splitlines()[0].split()[0]
    assert "--label=label" in read_json(run_dir(sample_workspace, run_id) / "request.json")["argv"]


# ---------------------------------------------------------------- human output


def test_human_output_titles_names_numbers_and_recovery_paths(
    daemon: DaemonProcess, sample_workspace: Path
) -> None:
    ws = str(sample_workspace)
    unnamed = start_detached(daemon, sample_workspace)
    wait_result(sample_workspace, unnamed)
    named = start_detached(daemon, sample_workspace, "--name", "数据 🙂 run")
    wait_result(sample_workspace, named)
    show = daemon.ctl("show", unnamed, "-w", ws, check=True).stdout
    assert show.splitlines()[0].startswith(f"run {unnamed} (") and "run of run" not in show
    runs = daemon.ctl("runs", "-w", ws, check=True).stdout.splitlines()
    assert runs[0].split()[:3] == ["run", "state", "name"]
    unnamed_row = next(line for line in runs if line.startswith(unnamed))
    assert unnamed_row.count(unnamed) == 1
    # Columns line up in display cells, CJK and emoji included: "created" starts at the
    # same column on every row.
    stamp = re.compile(r"\d{4}-\d\d-\d\dT")
    created_at = {display_width(line[: stamp.search(line).start()]) for line in runs[2:]}  # type: ignore[union-attr]
    header_created = runs[0].index("created")
    assert created_at == {header_created}
    # Fixed precision: every accuracy has four decimals (1.0 is never "1").
    for line in runs[2:]:
        accuracy = line.split()[-1] if line.split()[-1][0].isdigit() else None
        if accuracy is not None:
            assert len(accuracy.split(".")[1]) == 4
    # A corrupt index is moved aside by `runs`, which says so; recover prints the path.
    index = sample_workspace / ".ml" / "outputs" / "index.json"
    index.write_text("{ not json")
    told = daemon.ctl("runs", "-w", ws, check=True).stdout
    assert "moved aside to .ml/outputs/index.json.corrupt." in told
    recovered = daemon.ctl("recover", "-w", ws, check=True).stdout
    kept = next(line for line in recovered.splitlines() if "corrupt index kept as" in line)
    assert kept.split()[-1].startswith(".ml/outputs/index.json.corrupt.")
    assert "[" not in kept and '"' not in kept


def test_tables_align_wide_characters() -> None:
    import io

    out = io.StringIO()
    table(["name", "value"], [["数据集", 1.0], ["🙂x", 0.5], ["plain", 12.25]], out)
    lines = out.getvalue().splitlines()
    columns = {display_width(line[: line.rindex(" ") + 1]) for line in lines[2:]}
    assert len(columns) == 1
    assert "1.0000" in lines[2] and "12.2500" in lines[4]


# ---------------------------------------------------------------- a real terminal


def read_pty(fd: int, proc: subprocess.Popen[bytes]) -> bytes:
    chunks = b""
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks += data
        elif proc.poll() is not None:
            break
    return chunks


def train_on_pty(
    daemon: DaemonProcess, workspace: Path, columns: int, **env: str
) -> tuple[int, str]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        ctl_argv("train", "-w", str(workspace)),
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**daemon.env, "TERM": "xterm", **env},
        cwd=daemon.root,
    )
    os.close(slave)
    try:
        output = read_pty(master, proc)
    finally:
        os.close(master)
    return proc.wait(timeout=120), output.decode("utf-8", errors="replace")


def test_progress_line_is_cut_to_a_44_column_terminal_and_plain_on_a_dumb_one(
    trainer_daemon: Callable[..., tuple[DaemonProcess, Path]],
) -> None:
    daemon, workspace = trainer_daemon(RF_TEST_STEPS="12", RF_TEST_STEP_S="0.05")
    code, text = train_on_pty(daemon, workspace, 44)
    assert code == 0, text
    redraws = [part.split("\r\n")[0] for part in text.split("\r\x1b[K")[1:]]
    # The test trainer says logistic_regression: iterations under max_iter, not "step N/M".
    assert redraws and any("iteration" in r for r in redraws)
    assert all(display_width(r) <= 43 for r in redraws), redraws
    code, text = train_on_pty(daemon, workspace, 44, TERM="dumb")
    assert code == 0, text
    assert "\x1b[K" not in text and "\r\x1b" not in text
    assert "iteration " in text and "metrics computed\r\n" in text


def test_the_clients_choices_are_the_daemons_and_the_runners() -> None:
    """One vocabulary: what runforgectl offers is what the daemon accepts (settings) and
    what the bundled runner knows."""
    from typing import get_args

    from runforge_runner import params
    from runforgectl.commands import train
    from runforged import settings

    assert train.PRESETS == get_args(settings.Preset) == params.PRESETS
    assert train.MODELS == get_args(settings.ModelFamily) == params.MODEL_FAMILIES
    assert train.PROFILES == get_args(settings.Profile) == params.PROFILES
    assert get_args(settings.Device) == train.DEVICES
