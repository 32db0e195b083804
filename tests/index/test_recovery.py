"""Recover Index (issue 6): every guarantee, each with the situation created for real."""

from __future__ import annotations

import asyncio
from collections.abc import Container
from pathlib import Path

import msgspec
import pytest

from runforge_protocol.errors import ErrorCode
from runforge_protocol.records import (
    RecoveryItem,
    RecoveryReason,
    RecoveryReport,
    RecoverySkipError,
)
from runforged.errors import RunforgeError
from runforged.index_entry import build_index_entry
from runforged.index_writer import IndexWriter
from runforged.run_folder import write_index_orphan_marker
from tests.contracts import validate
from tests.index.runfolders import (
    cancelled_run,
    completed_run,
    failed_run,
    file_states,
    finish_training,
    index_path,
    indexed_ids,
    legacy_run,
    read_index,
    run_dir_of,
    run_id_at,
    started_run,
    write_index,
)

REPORT_FIELDS = [
    "scanned_run_dirs",
    "already_indexed",
    "recovered",
    "skipped",
    "cancelled_excluded",
    "recovered_at",
]


def recover(workspace: Path, in_flight: Container[str] = frozenset()) -> RecoveryReport:
    async def scenario() -> RecoveryReport:
        writer = await IndexWriter.open(workspace)
        return await writer.recover(in_flight)

    return asyncio.run(scenario())


def orphaned_run(workspace: Path, n: int) -> Path:
    """A completed run whose index update failed: result.json says so, marker written."""
    run_dir = completed_run(workspace, n, index_error="No space left on device")
    write_index_orphan_marker(workspace, run_id_at(n), OSError(28, "No space left on device"))
    return run_dir


def accounted(report: RecoveryReport) -> int:
    return (
        report.already_indexed
        + len(report.recovered)
        + len(report.skipped)
        + len(report.cancelled_excluded)
        + report.in_flight
    )


def test_recovery_adds_every_missing_run_and_says_why_it_was_missing(tmp_path: Path) -> None:
    write_index(tmp_path, {"schema_version": "1.0.0", "runs": []})
    orphaned_run(tmp_path, 1)
    completed_run(tmp_path, 2)  # e.g. the daemon crashed before indexing it

    report = recover(tmp_path)

    assert report.recovered == [
        RecoveryItem(
            run_id=run_id_at(1),
            run_dir=f".ml/runs/{run_id_at(1)}",
            reason=RecoveryReason.INDEX_ORPHAN_MARKER,
        ),
        RecoveryItem(
            run_id=run_id_at(2),
            run_dir=f".ml/runs/{run_id_at(2)}",
            reason=RecoveryReason.PRE_EXISTING_ORPHAN,
        ),
    ]
    assert (report.scanned_run_dirs, report.already_indexed) == (2, 0)
    document = read_index(tmp_path)
    validate("index.v1.0.0", document)
    # The entries are exactly what the run folders record.
    for entry, n in zip(document["runs"], (1, 2), strict=True):
        expected = build_index_entry(tmp_path, run_dir_of(tmp_path, run_id_at(n)))
        assert entry == msgspec.to_builtins(expected)


def test_the_report_has_exactly_the_issue_shape(tmp_path: Path) -> None:
    orphaned_run(tmp_path, 1)
    cancelled_run(tmp_path, 2)
    failed_run(tmp_path, 3)

    report = msgspec.to_builtins(recover(tmp_path))

    assert list(report)[: len(REPORT_FIELDS)] == REPORT_FIELDS
    assert set(report) - set(REPORT_FIELDS) == {
        "in_flight",
        "corrupt_index_kept_as",
        "index_created",
    }
    assert set(report["recovered"][0]) == {"run_id", "run_dir", "reason"}
    assert set(report["cancelled_excluded"][0]) == {"run_id", "run_dir", "reason"}
    assert set(report["skipped"][0]) == {"run_dir", "error", "message"}
    assert report["recovered_at"].endswith("Z")


def test_recovery_is_idempotent(tmp_path: Path) -> None:
    orphaned_run(tmp_path, 1)
    completed_run(tmp_path, 2)
    cancelled_run(tmp_path, 3)
    failed_run(tmp_path, 4)
    first = recover(tmp_path)
    index_after_first = index_path(tmp_path).read_bytes()
    states_after_first = file_states(tmp_path)

    second = recover(tmp_path)
    third = recover(tmp_path)

    assert len(first.recovered) == 2
    assert second.recovered == []
    assert second.already_indexed == 2
    assert index_path(tmp_path).read_bytes() == index_after_first
    assert file_states(tmp_path) == states_after_first  # not even rewritten
    # A further call changes nothing but recovered_at.
    assert msgspec.structs.replace(third, recovered_at="") == msgspec.structs.replace(
        second, recovered_at=""
    )


def test_recovery_modifies_nothing_but_the_index(tmp_path: Path) -> None:
    write_index(tmp_path, {"schema_version": "1.0.0", "runs": []})
    completed_run(tmp_path, 1)
    legacy_run(tmp_path, 2)
    cancelled_run(tmp_path, 3)
    cancelled_run(tmp_path, 4, graceful=False)
    failed_run(tmp_path, 5)
    corrupt = completed_run(tmp_path, 6)
    (corrupt / "run.json").write_text("{ truncated")
    before = file_states(tmp_path)

    report = recover(tmp_path)

    after = file_states(tmp_path)
    assert len(report.recovered) == 2
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    assert changed == {".ml/outputs/index.json"}


def test_recovery_deletes_the_stale_marker_of_each_run_it_indexed(tmp_path: Path) -> None:
    marked = orphaned_run(tmp_path, 1)
    unmarked = completed_run(tmp_path, 2)
    before = file_states(tmp_path)

    recover(tmp_path)

    assert not (marked / ".index-orphan").exists()
    after = file_states(tmp_path)
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p)}
    marker = f".ml/runs/{marked.name}/.index-orphan"
    assert changed == {".ml/outputs/index.json", marker}
    assert sorted(p.name for p in unmarked.iterdir()) == sorted(
        p.split("/")[-1] for p in before if p.startswith(f".ml/runs/{unmarked.name}/")
    )


def test_a_marker_left_on_an_indexed_run_by_an_interrupted_recovery_is_removed(
    tmp_path: Path,
) -> None:
    """A recover killed between its index write and its marker deletion leaves an
    indexed run with its .index-orphan marker: the next recover removes it."""
    marked = orphaned_run(tmp_path, 1)
    recover(tmp_path)
    write_index_orphan_marker(tmp_path, run_id_at(1), OSError(28, "No space left on device"))

    report = recover(tmp_path)

    assert report.recovered == [] and report.already_indexed == 1
    assert not (marked / ".index-orphan").exists()


def test_interrupted_index_writes_leave_no_temp_file_after_recovery(tmp_path: Path) -> None:
    completed_run(tmp_path, 1)
    recover(tmp_path)
    stale = index_path(tmp_path).parent / ".index.json.tmp.999999999.7f"
    stale.write_text("{")

    recover(tmp_path)

    assert not stale.exists()


def test_cancelled_runs_stay_out_of_the_index(tmp_path: Path) -> None:
    graceful = cancelled_run(tmp_path, 1)  # .cancelled marker, no run.json
    forced = cancelled_run(tmp_path, 2, graceful=False)  # only the daemon's verdict
    old_style = started_run(tmp_path, 3)  # an older RunForge: marker only, no result.json
    (old_style / ".cancelled").write_bytes((graceful / ".cancelled").read_bytes())
    completed_run(tmp_path, 4)

    report = recover(tmp_path)

    assert report.cancelled_excluded == [
        RecoveryItem(
            run_id=run_id_at(1),
            run_dir=f".ml/runs/{graceful.name}",
            reason=RecoveryReason.CANCELLED,
        ),
        RecoveryItem(
            run_id=run_id_at(2), run_dir=f".ml/runs/{forced.name}", reason=RecoveryReason.CANCELLED
        ),
        # The id its files give (the marker names run 1), not the folder's name.
        RecoveryItem(
            run_id=run_id_at(1),
            run_dir=f".ml/runs/{old_style.name}",
            reason=RecoveryReason.CANCELLED,
        ),
    ]
    assert indexed_ids(tmp_path) == [run_id_at(4)]


def test_runs_in_flight_are_neither_indexed_nor_reported_broken(tmp_path: Path) -> None:
    running = started_run(tmp_path, 1)  # no run.json yet
    finishing = completed_run(tmp_path, 2)  # run.json written, daemon not done with it
    completed_run(tmp_path, 3)

    report = recover(tmp_path, in_flight={running.name, finishing.name})

    assert report.in_flight == 2
    assert report.skipped == []
    assert [r.run_id for r in report.recovered] == [run_id_at(3)]
    assert report.scanned_run_dirs == 3 == accounted(report)
    assert indexed_ids(tmp_path) == [run_id_at(3)]


def test_folders_that_cannot_be_recovered_are_skipped_with_the_reason(tmp_path: Path) -> None:
    failed = failed_run(tmp_path, 1)
    bare = run_dir_of(tmp_path, "empty-folder")
    bare.mkdir(parents=True)
    corrupt = completed_run(tmp_path, 3)
    (corrupt / "run.json").write_text('{"run_id": ')
    incomplete = completed_run(tmp_path, 4)
    (incomplete / "run.json").write_text('{"run_id": "x", "created_at": "2025-01-01T00:00:00Z"}')
    unreadable = completed_run(tmp_path, 5)
    # A directory where run.json should be: reading it fails even for root (EISDIR).
    (unreadable / "run.json").unlink()
    (unreadable / "run.json").mkdir()
    bad_request = completed_run(tmp_path, 6)
    (bad_request / "request.json").write_text("[]")

    report = recover(tmp_path)

    by_dir = {s.run_dir.split("/")[-1]: s for s in report.skipped}
    assert {name: s.error for name, s in by_dir.items()} == {
        failed.name: RecoverySkipError.MISSING_RUN_JSON,
        "empty-folder": RecoverySkipError.MISSING_RUN_JSON,
        corrupt.name: RecoverySkipError.CORRUPT_RUN_JSON,
        incomplete.name: RecoverySkipError.CORRUPT_RUN_JSON,
        unreadable.name: RecoverySkipError.READ_ERROR,
        bad_request.name: RecoverySkipError.READ_ERROR,
    }
    assert "failed" in by_dir[failed.name].message
    assert "request.json" in by_dir[bad_request.name].message
    assert report.recovered == []
    assert report.scanned_run_dirs == 6 == accounted(report)


def test_the_run_id_comes_from_the_files_not_the_folder_name(tmp_path: Path) -> None:
    run_dir = started_run(tmp_path, 1, folder="renamed-by-hand")
    finish_training(run_dir, 1)

    report = recover(tmp_path)

    assert report.recovered[0].run_id == run_id_at(1)
    assert report.recovered[0].run_dir == ".ml/runs/renamed-by-hand"
    assert read_index(tmp_path)["runs"][0]["run_dir"] == ".ml/runs/renamed-by-hand"


def test_a_missing_index_is_created(tmp_path: Path) -> None:
    completed_run(tmp_path, 1)

    report = recover(tmp_path)

    assert report.index_created is True
    assert indexed_ids(tmp_path) == [run_id_at(1)]
    validate("index.v1.0.0", read_index(tmp_path))


@pytest.mark.parametrize("envelope", [False, True], ids=["bare-array", "v0.2.2.1"])
def test_legacy_indexes_are_read_and_their_entries_kept(tmp_path: Path, envelope: bool) -> None:
    old = legacy_run(tmp_path, 1)
    old_entry = {
        "run_id": run_id_at(1),
        "created_at": "2025-03-01T09:01:00.000Z",
        "dataset_fingerprint_sha256": "c" * 64,
        "label_column": "label",
        "run_dir": f".ml/runs/{old.name}",
        "model_pkl": f".ml/runs/{old.name}/model.pkl",
    }
    gone_entry = {**old_entry, "run_id": "gone", "run_dir": ".ml/runs/gone"}
    runs = [old_entry, gone_entry]
    write_index(tmp_path, {"schema_version": "0.2.2.1", "runs": runs} if envelope else runs)
    completed_run(tmp_path, 2)

    report = recover(tmp_path)

    assert report.already_indexed == 1
    assert [r.run_id for r in report.recovered] == [run_id_at(2)]
    document = read_index(tmp_path)
    assert document["schema_version"] == "1.0.0"
    assert document["runs"][:2] == [old_entry, gone_entry]  # kept as they were
    validate("index.v1.0.0", {**document, "runs": document["runs"][2:]})


def test_a_corrupt_index_is_kept_aside_and_rebuilt(tmp_path: Path) -> None:
    completed_run(tmp_path, 1)
    completed_run(tmp_path, 2)
    index_path(tmp_path).parent.mkdir(parents=True)
    index_path(tmp_path).write_text('{"schema_version": "1.0.0", "runs": [}')

    report = recover(tmp_path)

    [kept] = report.corrupt_index_kept_as
    assert (tmp_path / kept).read_text() == '{"schema_version": "1.0.0", "runs": [}'
    assert kept.startswith(".ml/outputs/index.json.corrupt.")
    assert [r.run_id for r in report.recovered] == [run_id_at(1), run_id_at(2)]
    assert report.index_created is True
    validate("index.v1.0.0", read_index(tmp_path))
    # Reported once: the next report has nothing new to say about it.
    assert recover(tmp_path).corrupt_index_kept_as == []


def test_an_unwritable_index_fails_clearly_and_nothing_is_lost(tmp_path: Path) -> None:
    """Root ignores permission bits; a regular file where the index folder should be
    makes the write fail for root too."""
    marked = orphaned_run(tmp_path, 1)
    completed_run(tmp_path, 2)
    outputs = index_path(tmp_path).parent
    outputs.parent.mkdir(parents=True, exist_ok=True)
    outputs.write_text("not a folder")
    before = file_states(tmp_path)

    with pytest.raises(RunforgeError) as caught:
        recover(tmp_path)

    assert caught.value.code is ErrorCode.INDEX_WRITE_FAILED
    assert "runforgectl recover" in caught.value.remediation
    assert file_states(tmp_path) == before  # markers kept, nothing touched
    outputs.unlink()
    report = recover(tmp_path)
    assert [r.reason for r in report.recovered] == [
        RecoveryReason.INDEX_ORPHAN_MARKER,
        RecoveryReason.PRE_EXISTING_ORPHAN,
    ]
    assert not (marked / ".index-orphan").exists()


def test_runs_completing_during_recovery_are_indexed_exactly_once(tmp_path: Path) -> None:
    for n in range(300):
        completed_run(tmp_path, n)
    # Two runs finish while recovery walks the folders: one the daemon still counted as
    # in flight when recovery began, one it had already let go of.
    owned = completed_run(tmp_path, 1000)
    released = completed_run(tmp_path, 1001)
    in_flight = {owned.name}

    async def scenario() -> tuple[RecoveryReport, int]:
        writer = await IndexWriter.open(tmp_path)
        recovery = asyncio.ensure_future(writer.recover(in_flight))
        while not writer.busy:
            await asyncio.sleep(0)
        adds = [asyncio.ensure_future(writer.add_run(d)) for d in (owned, released)]
        report = await recovery
        in_flight.clear()
        await asyncio.gather(*adds)
        return report, writer.writes

    report, writes = asyncio.run(scenario())
    ids = indexed_ids(tmp_path)
    assert sorted(ids) == sorted(
        {*(run_id_at(n) for n in range(300)), run_id_at(1000), run_id_at(1001)}
    )
    assert len(ids) == len(set(ids)) == 302
    assert report.in_flight == 1
    assert run_id_at(1001) in {r.run_id for r in report.recovered}
    assert writes == 2  # the recovery's write, then one for the completions
    assert recover(tmp_path).recovered == []


def test_recovery_runs_off_the_event_loop(tmp_path: Path) -> None:
    """Other clients keep being served while recovery walks the folders."""
    for n in range(200):
        completed_run(tmp_path, n)

    async def scenario() -> tuple[int, RecoveryReport]:
        writer = await IndexWriter.open(tmp_path)
        recovery = asyncio.ensure_future(writer.recover())
        while not writer.busy:
            await asyncio.sleep(0)
        served = 0
        while writer.busy:
            served += 1
            # Reads are answered meanwhile, from the index before or after the write.
            assert writer.index.latest() in (None, writer.index.get(run_id_at(199)))
            await asyncio.sleep(0)
        return served, await recovery

    served, report = asyncio.run(scenario())
    assert served > 0
    assert len(report.recovered) == 200
