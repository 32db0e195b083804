"""Crash reconciliation: finish every run a previous daemon left in flight.

At start-up, before serving, the daemon reads ``<state dir>/inflight``. For each record
the executor that started the run re-attaches to its trainer (``Executor.reattach``).
A trainer still alive cannot be adopted (its pipes died with the old daemon): it is
cancelled through the same cancel policy as any run (``CancelController``: SIGTERM, its
grace, SIGKILL of the whole tree at the deadline), all of them at once, so a start with
several survivors waits one grace window, not one per run. Workers a dead trainer left
behind are killed either way. Then ``runforged.outcome.reconciled`` decides each run's
terminal state from its folder, ``result.json`` is written, a completed run is indexed,
and the run's event log gets the ``run_terminal`` its old daemon never wrote.

A trainer whose handle outlives the daemon (a Ray job) is not cancelled: the supervisor
adopts it (``RunSupervisor.adopt``), its events resume after the last one on disk, a
cancel asked before the crash is asked again, and it ends like any run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from pathlib import Path

import msgspec
import structlog

from runforge_contract import trainer_events as te
from runforge_contract.timestamps import utc_now
from runforge_protocol import events as ev
from runforge_protocol.records import ResultRecord, RunState
from runforged import outcome, run_folder
from runforged.cancel import CancelController
from runforged.durable_state import CancelJournal, InflightRecord, InflightRecords, make_private
from runforged.executor import Executor, TrainerHandle
from runforged.index_writer import IndexWriters
from runforged.supervisor import Publisher

log = structlog.get_logger("runforged.reconciliation")

# Takes over a run whose trainer outlives the daemon: (record, handle, cancel requested)
# -> whether it could.
Adopt = Callable[[InflightRecord, TrainerHandle, bool], bool]


async def reconcile(
    *,
    state_dir: Path,
    records: InflightRecords,
    journal: CancelJournal,
    executors: Mapping[str, Executor],
    indexes: IndexWriters,
    publisher: Publisher,
    adopt: Adopt,
) -> list[tuple[str, RunState]]:
    """Classify every run a previous daemon left in flight (call before serving); hand
    those whose trainer outlives the daemon (a cluster job) to ``adopt``."""
    make_private(state_dir)
    cancelled = journal.recorded()
    inflight = []
    adoptable = []
    for record in records.load_all():
        executor = executors.get(record.executor)
        handle = executor.reattach(record.handle_record()) if executor is not None else None
        if handle is not None and handle.outlives_daemon:
            adoptable.append((record, handle))
        else:
            inflight.append(record)
    states = await asyncio.gather(
        *(
            _reconcile_one(
                record,
                record.run_id in cancelled,
                executors=executors,
                indexes=indexes,
                publisher=publisher,
            )
            for record in inflight
        )
    )
    for record in inflight:
        records.drop(record.run_id)
    journal.clear()
    for record, handle in adoptable:
        # After the journal is cleared: an adopted run's cancel is asked (and journaled)
        # again.
        if not adopt(record, handle, record.run_id in cancelled):
            states.append(
                await _reconcile_one(
                    record, True, executors={}, indexes=indexes, publisher=publisher
                )
            )
            inflight.append(record)
            records.drop(record.run_id)
    return [(record.run_id, state) for record, state in zip(inflight, states, strict=True)]


async def _reconcile_one(
    record: InflightRecord,
    cancel_requested: bool,
    *,
    executors: Mapping[str, Executor],
    indexes: IndexWriters,
    publisher: Publisher,
) -> RunState:
    workspace = Path(record.workspace)
    run_dir = workspace / record.run_dir
    executor = executors.get(record.executor)
    handle = executor.reattach(record.handle_record()) if executor is not None else None
    was_alive = False
    killed = False
    if handle is not None:
        if handle.is_alive():
            was_alive = True
            cancel_requested = True
            controller = CancelController.on_loop(
                asyncio.get_running_loop(),
                default_grace_s=record.cancel_grace_s,
                send_term=handle.signal_trainer,
                kill_tree=handle.kill_tree,
                publish_countdown=lambda _seconds: None,  # nobody can be subscribed yet
                # A trainer that outlived the daemon is long past installing its handler
                # (and its run_start may not have reached events.jsonl): signal it at once.
                announced=True,
            )
            controller.request()
            await handle.wait()
            controller.trainer_exited()  # kills what it left behind
            killed = controller.killed
        else:
            handle.kill_tree()  # workers the dead trainer left behind
    seen = run_folder.events_seen(run_dir, (te.ARTIFACTS_WRITTEN, te.RUN_CANCELLED))
    marker = run_folder.read_cancelled_marker(run_dir)
    evidence = outcome.Evidence(
        cancel_requested=cancel_requested,
        artifacts_written=seen[te.ARTIFACTS_WRITTEN],
        run_cancelled=seen[te.RUN_CANCELLED],
        run_json_usable=run_folder.run_json_usable(run_dir),
        marker_valid=marker is not None,
        killed=killed,
    )
    verdict = outcome.reconciled(evidence, was_alive=was_alive)
    state = verdict.state
    result = ResultRecord(
        run_id=record.run_id,
        run_dir=record.run_dir,
        state=state,
        started_at=record.started_at,
        finished_at=utc_now(),
        reason=verdict.reason,
        cancel_requested=cancel_requested,
        partial_artifacts=list(marker.partial_artifacts or []) if marker else [],
        final_metrics=run_folder.final_metrics(run_dir) if state is RunState.COMPLETED else {},
    )
    _write_result(run_dir, result)
    if state is RunState.COMPLETED:
        await indexes.add_completed(workspace, run_dir, result)  # idempotent by run id
        _write_result(run_dir, result)
    _append_terminal_event(run_dir, record, result, publisher)
    log.info("run_reconciled", run_id=record.run_id, state=state.value, was_alive=was_alive)
    return state


def _write_result(run_dir: Path, result: ResultRecord) -> None:
    try:
        run_folder.write_result(run_dir, result)
    except OSError as exc:
        log.error("result_write_failed", run_id=result.run_id, error=str(exc))


def _append_terminal_event(
    run_dir: Path, record: InflightRecord, result: ResultRecord, publisher: Publisher
) -> None:
    """Close the run's event log with the terminal event its old daemon never wrote,
    so that a follower replaying it sees the end."""
    event = publisher.stamp(
        ev.RUN_TERMINAL,
        msgspec.to_builtins(result),
        workspace=record.workspace,
        run_id=record.run_id,
        run_seq=run_folder.last_run_seq(run_dir) + 1,
    )
    run_folder.append_event(run_dir, event)
    publisher.send(ev.run_topic(record.workspace, record.run_id, ev.RUN_TERMINAL), event)
