"""The cancel path without the daemon: CancelController on a real asyncio loop, driving a
real ProcessTree of a real trainer, then classify_terminal_state on what was left.

This is how the run supervisor composes the pieces; the end-to-end tests through the
daemon and runforgectl live with the supervisor.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from runforge_protocol.records import RunState
from runforged.cancel import CancelController
from runforged.outcome import Classification, classify_terminal_state
from runforged.proctree import ProcessIdentity, ProcessTree, is_same_live_process
from runforged.run_folder import read_cancelled_marker
from tests.cancel.conftest import StartTrainer, Trainer
from tests.harness import wait_for

REFRESH_S = 0.05


@dataclass
class CancelRecord:
    classification: Classification
    exit_code: int
    actions: list[object] = field(default_factory=list)  # "sigterm", countdown ints, "kill"
    killed: bool = False
    tree: ProcessTree | None = None


def cancel(trainer: Trainer, grace_s: float) -> CancelRecord:
    """Cancel ``trainer`` with ``grace_s`` the way the supervisor does, wait for its exit."""

    async def scenario() -> CancelRecord:
        loop = asyncio.get_running_loop()
        tree = ProcessTree(trainer.pid)
        actions: list[object] = []

        def send_term() -> None:
            actions.append("sigterm")
            tree.terminate_leader()

        def kill_tree() -> None:
            actions.append("kill")
            tree.refresh()
            tree.kill_all()

        async def keep_refreshing() -> None:
            while True:
                tree.refresh()
                await asyncio.sleep(REFRESH_S)

        refresher = asyncio.ensure_future(keep_refreshing())
        await asyncio.sleep(0)
        controller = CancelController.on_loop(
            loop,
            default_grace_s=grace_s,
            send_term=send_term,
            kill_tree=kill_tree,
            publish_countdown=actions.append,
            # The tests cancel a trainer that is up: the supervisor's cue is its run_start.
            announced=True,
        )
        controller.request()
        exit_code = await loop.run_in_executor(None, trainer.wait)
        controller.trainer_exited()
        refresher.cancel()
        names = trainer.event_names()
        classification = classify_terminal_state(
            exit_code=exit_code,
            cancel_requested=controller.cancel_requested,
            artifacts_written="artifacts_written" in names,
            run_json_exists=(trainer.run_dir / "run.json").is_file(),
            marker_valid=read_cancelled_marker(trainer.run_dir) is not None,
            run_cancelled="run_cancelled" in names,
            killed=controller.killed,
        )
        return CancelRecord(classification, exit_code, actions, controller.killed, tree)

    return asyncio.run(scenario())


def assert_nothing_survives(record: CancelRecord, trainer: Trainer) -> None:
    assert record.tree is not None
    wait_for(lambda: record.tree is not None and record.tree.survivors() == [])
    if (trainer.run_dir / "tree.json").exists():
        for descendant in trainer.tree()["descendants"]:
            identity = ProcessIdentity.of(descendant["pid"])
            assert identity is None or not is_same_live_process(identity)


def ready_and_training(trainer: Trainer) -> Trainer:
    trainer.wait_ready()
    trainer.wait_events("train_progress")
    return trainer


def test_a_trainer_ignoring_sigterm_is_killed_at_the_deadline_cancelled_forced(
    start_trainer: StartTrainer,
) -> None:
    trainer = ready_and_training(start_trainer("ignore_sigterm"))
    record = cancel(trainer, grace_s=1)
    assert record.actions == ["sigterm", 1, "kill", "kill"]
    assert record.killed and record.exit_code == -9
    assert record.classification.state is RunState.CANCELLED_FORCED
    assert_nothing_survives(record, trainer)


def test_a_graceful_trainer_exits_before_the_deadline_cancelled_graceful(
    start_trainer: StartTrainer,
) -> None:
    trainer = ready_and_training(start_trainer("graceful", RF_TEST_FLUSH_S="0.2"))
    record = cancel(trainer, grace_s=30)
    assert record.actions[:2] == ["sigterm", 30]
    assert record.actions[-1] == "kill"  # leftovers only: the trainer exited by itself
    assert record.actions.count("kill") == 1
    assert not record.killed and record.exit_code == 143
    assert record.classification.state is RunState.CANCELLED_GRACEFUL
    marker = read_cancelled_marker(trainer.run_dir)
    assert marker is not None and marker.step == "training"


def test_a_tree_of_sigterm_proof_descendants_dies_whole_at_the_deadline(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("grandchildren", RF_TEST_GRANDCHILDREN="4")
    trainer.wait_ready()
    trainer.tree()
    record = cancel(trainer, grace_s=0.5)
    assert record.actions == ["sigterm", 1, "kill", "kill"]
    assert record.classification.state is RunState.CANCELLED_FORCED
    assert_nothing_survives(record, trainer)


def test_workers_outliving_a_trainer_that_exits_on_sigterm_are_killed_on_its_exit(
    start_trainer: StartTrainer,
) -> None:
    trainer = start_trainer("grandchildren", RF_TEST_TRAINER_TERM="exit")
    trainer.wait_ready()
    trainer.tree()
    record = cancel(trainer, grace_s=30)
    assert record.exit_code == 143 and not record.killed
    assert record.actions[:2] == ["sigterm", 30] and record.actions[-1] == "kill"
    assert record.classification.state is RunState.CANCELLED_FORCED
    assert_nothing_survives(record, trainer)


def test_a_trainer_that_finishes_as_the_cancel_arrives_is_completed(
    start_trainer: StartTrainer,
) -> None:
    trainer = ready_and_training(start_trainer("finish_on_cancel", RF_TEST_FINISH_EXIT="143"))
    record = cancel(trainer, grace_s=30)
    assert not record.killed
    assert record.classification.state is RunState.COMPLETED
    assert "training finished before the cancel" in record.classification.reason


def test_grace_0_kills_a_graceful_trainer_before_it_can_flush(
    start_trainer: StartTrainer,
) -> None:
    trainer = ready_and_training(start_trainer("graceful"))
    record = cancel(trainer, grace_s=0)
    assert record.actions == ["kill", "kill"]
    assert record.killed and record.exit_code == -9
    assert read_cancelled_marker(trainer.run_dir) is None
    assert record.classification.state is RunState.CANCELLED_FORCED
