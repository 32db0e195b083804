"""ProcessTree on real processes: it records the whole tree, kills all of it, and never
signals a process that merely reuses a recorded pid."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import msgspec
import psutil
import pytest

from runforged import proctree
from runforged.proctree import (
    ProcessIdentity,
    ProcessTree,
    boot_id,
    is_same_live_process,
    signal_process,
)
from tests.cancel.conftest import Spawn, StartTrainer
from tests.harness import wait_for

# A leader whose two children block SIGTERM: a SIGTERM sent to them stays pending, where
# /proc shows it, so "they were not signalled" is observed, not inferred from timing.
LEADER_WITH_BLOCKING_CHILDREN = """
import subprocess, sys, time
child = ("import signal, sys, time; signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM});"
         "print('ready', flush=True); time.sleep(300)")
kids = [subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE) for _ in range(2)]
for kid in kids:
    kid.stdout.readline()
print(" ".join(str(kid.pid) for kid in kids), flush=True)
time.sleep(300)
"""
# A stranger holding a recorded pid: echoes stdin, so "still alive" is a round trip.
ECHO = "import sys\nfor line in sys.stdin:\n    print(line, end='', flush=True)\n"


def sigterm_pending(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("ShdPnd:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    raise AssertionError(f"no ShdPnd in /proc/{pid}/status")


def identity_of(pid: int) -> ProcessIdentity:
    identity = ProcessIdentity.of(pid)
    assert identity is not None
    return identity


def wait_all_gone(identities: list[ProcessIdentity]) -> None:
    """Gone means exited (a zombie awaiting its reaper counts as gone)."""
    wait_for(lambda: not any(is_same_live_process(p) for p in identities))


def echoes(proc: subprocess.Popen[bytes]) -> bool:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"ping\n")
    proc.stdin.flush()
    return proc.stdout.readline() == b"ping\n"


@pytest.mark.parametrize("children_files", [True, False], ids=["proc-children", "full-scan"])
def test_refresh_records_every_descendant_including_one_in_its_own_session(
    start_trainer: StartTrainer, monkeypatch: pytest.MonkeyPatch, children_files: bool
) -> None:
    """Both ways of listing children: /proc/<pid>/task/<tid>/children, and the one pass
    over every process used on kernels without those files."""
    if children_files and not proctree.PROC_CHILDREN_FILES:
        pytest.skip("this kernel has no /proc/<pid>/task/<tid>/children")
    monkeypatch.setattr(proctree, "PROC_CHILDREN_FILES", children_files)
    trainer = start_trainer("grandchildren", RF_TEST_GRANDCHILDREN="4")
    trainer.wait_ready()
    expected = {d["pid"] for d in trainer.tree()["descendants"]}
    tree = ProcessTree(trainer.pid)
    assert tree.leader == identity_of(trainer.pid)
    first = tree.refresh()
    assert {p.pid for p in first} == expected == {p.pid for p in tree.descendants}
    assert all(p == identity_of(p.pid) for p in first)
    assert tree.refresh() == []  # nothing new the second time
    assert sorted(p.pid for p in tree.survivors()) == sorted([trainer.pid, *expected])


def test_kill_all_leaves_no_process_of_the_tree_alive(start_trainer: StartTrainer) -> None:
    trainer = start_trainer("grandchildren", RF_TEST_GRANDCHILDREN="4")
    trainer.wait_ready()
    recorded = trainer.tree()["descendants"]
    tree = ProcessTree(trainer.pid)
    tree.refresh()
    everyone = [identity_of(trainer.pid), *(identity_of(d["pid"]) for d in recorded)]
    signalled = tree.kill_all()
    assert sorted(p.pid for p in signalled) == sorted(p.pid for p in everyone)
    assert trainer.wait() == -signal.SIGKILL
    wait_all_gone(everyone)
    assert tree.survivors() == []


def test_kill_all_after_the_trainer_exited_still_reaches_its_workers(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("grandchildren", RF_TEST_TRAINER_TERM="exit")
    trainer.wait_ready()
    workers = [identity_of(d["pid"]) for d in trainer.tree()["descendants"]]
    tree = ProcessTree(trainer.pid)
    tree.refresh()
    assert tree.terminate_leader()
    assert trainer.wait() == 143  # reaped: its pid is free now
    assert sorted(p.pid for p in tree.survivors()) == sorted(p.pid for p in workers)
    assert sorted(p.pid for p in tree.kill_all()) == sorted(p.pid for p in workers)
    wait_all_gone(workers)
    assert tree.survivors() == []


def test_the_process_group_dies_even_unrecorded_but_own_session_needs_the_record(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("grandchildren", RF_TEST_GRANDCHILDREN="4")
    trainer.wait_ready()
    by_role = {d["role"]: identity_of(d["pid"]) for d in trainer.tree()["descendants"]}
    tree = ProcessTree(trainer.pid)  # never refreshed: no descendant recorded
    tree.kill_all()
    assert trainer.wait() == -signal.SIGKILL
    wait_all_gone([by_role["parent"], by_role["grandchild"], by_role["child"]])
    # The one that left the process group is reachable only through a refresh() record.
    assert is_same_live_process(by_role["own_session"])


def test_terminate_leader_signals_the_leader_only(spawn: Spawn) -> None:
    leader = spawn(
        [sys.executable, "-c", LEADER_WITH_BLOCKING_CHILDREN],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert leader.stdout is not None
    children = [identity_of(int(pid)) for pid in leader.stdout.readline().split()]
    tree = ProcessTree(leader.pid)
    tree.refresh()
    assert tree.terminate_leader()
    assert leader.wait(timeout=60) == -signal.SIGTERM
    assert [sigterm_pending(child.pid) for child in children] == [False, False]
    tree.kill_all()
    wait_all_gone(children)


def test_a_reused_pid_is_never_signalled(spawn: Spawn) -> None:
    # Two strangers now hold pids the tree recorded for processes that started earlier.
    strangers = [
        spawn(
            [sys.executable, "-c", ECHO],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # each leads a group whose id is the recorded pid
        )
        for _ in range(2)
    ]
    assert all(echoes(stranger) for stranger in strangers)
    earlier = [ProcessIdentity(p.pid, identity_of(p.pid).create_time - 1.0) for p in strangers]
    tree = ProcessTree(earlier[0], [earlier[1]])
    assert tree.terminate_leader() is False
    assert tree.kill_all() == []
    assert tree.survivors() == []
    assert signal_process(earlier[1], signal.SIGKILL) is False
    assert not is_same_live_process(earlier[0])
    assert all(echoes(stranger) for stranger in strangers)
    assert all(stranger.poll() is None for stranger in strangers)


def test_processes_that_already_exited_never_raise(spawn: Spawn) -> None:
    gone = []
    for _ in range(2):
        proc = spawn(["sleep", "300"])
        gone.append(identity_of(proc.pid))
        proc.kill()
        proc.wait(timeout=60)
    tree = ProcessTree(gone[0], [gone[1]])
    assert tree.refresh() == []
    assert tree.terminate_leader() is False
    assert tree.kill_all() == []
    assert tree.survivors() == []
    assert signal_process(gone[1], signal.SIGTERM) is False
    if ProcessIdentity.of(gone[0].pid) is None:  # unless the pid was reused meanwhile
        empty = ProcessTree(gone[0].pid)
        assert empty.leader is None
        assert empty.refresh() == [] and empty.kill_all() == [] and not empty.terminate_leader()


def test_is_same_live_process_tells_live_from_zombie_from_impostor(spawn: Spawn) -> None:
    proc = spawn(["sleep", "300"])
    identity = identity_of(proc.pid)
    assert is_same_live_process(identity)
    assert not is_same_live_process(ProcessIdentity(proc.pid, identity.create_time + 1.0))
    proc.kill()
    wait_for(lambda: psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE)
    assert not is_same_live_process(identity)  # exited, not yet reaped
    proc.wait(timeout=60)
    assert not is_same_live_process(identity)


def test_an_identity_survives_being_persisted_as_json(spawn: Spawn) -> None:
    proc = spawn(["sleep", "300"])
    identity = identity_of(proc.pid)
    restored = msgspec.json.decode(msgspec.json.encode(identity), type=ProcessIdentity)
    assert restored == identity and is_same_live_process(restored)


def test_boot_id_is_this_boots_uuid() -> None:
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", boot_id())
    assert boot_id() == Path("/proc/sys/kernel/random/boot_id").read_text().strip()


# Runs in its own session, so that if kill_all went wrong only this sandbox would die.
KILL_A_CHILD_THAT_SHARES_OUR_GROUP = """
import subprocess
from runforged.proctree import ProcessTree
child = subprocess.Popen(["sleep", "300"])  # in our process group, leading none
ProcessTree(child.pid).kill_all()
print("survived", child.wait(), flush=True)
"""


def test_kill_all_never_reaches_the_callers_own_process_group(
    spawn: Spawn,
) -> None:
    sandbox = spawn(
        [sys.executable, "-c", KILL_A_CHILD_THAT_SHARES_OUR_GROUP],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    output, _ = sandbox.communicate(timeout=60)
    assert output == f"survived {-signal.SIGKILL}\n".encode()
    assert sandbox.returncode == 0
