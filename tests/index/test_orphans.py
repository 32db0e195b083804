"""Orphans: completed runs missing from the index, known without rescanning per request."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from runforge_protocol.messages import OrphanInfo
from runforged.errors import RunforgeError
from runforged.index_writer import IndexWriter
from tests.index.runfolders import (
    cancelled_run,
    completed_run,
    created_at_of,
    failed_run,
    index_path,
    legacy_run,
    run_id_at,
    started_run,
)


def test_orphans_are_completed_runs_the_index_lacks_newest_first(tmp_path: Path) -> None:
    indexed = completed_run(tmp_path, 1)
    orphan_without_marker = legacy_run(tmp_path, 2)
    orphan_with_marker = completed_run(tmp_path, 3, index_error="No space left on device")
    cancelled_run(tmp_path, 4)
    failed_run(tmp_path, 5)
    running = started_run(tmp_path, 6)

    async def scenario() -> list[OrphanInfo]:
        writer = await IndexWriter.open(tmp_path)
        await writer.add_run(indexed)
        await writer.mark_orphan(run_id_at(3), OSError(28, "No space left on device"))
        return await writer.orphans(in_flight={running.name})

    assert asyncio.run(scenario()) == [
        OrphanInfo(
            run_id=run_id_at(3),
            run_dir=f".ml/runs/{orphan_with_marker.name}",
            created_at=created_at_of(3),
            error="OSError: [Errno 28] No space left on device",
        ),
        OrphanInfo(
            run_id=run_id_at(2),
            run_dir=f".ml/runs/{orphan_without_marker.name}",
            created_at=created_at_of(2),
            error=None,
        ),
    ]


def test_a_failed_index_write_leaves_an_orphan_that_shows_its_error(tmp_path: Path) -> None:
    run_dir = completed_run(tmp_path, 1)
    outputs = index_path(tmp_path).parent
    outputs.parent.mkdir(parents=True, exist_ok=True)
    outputs.write_text("a file where the index folder should be")  # fails for root too

    async def scenario() -> list[OrphanInfo]:
        writer = await IndexWriter.open(tmp_path)
        in_flight = {run_dir.name}
        try:
            await writer.add_run(run_dir)
        except RunforgeError as exc:
            await writer.mark_orphan(run_dir.name, exc)
        in_flight.clear()
        return await writer.orphans(in_flight)

    [orphan] = asyncio.run(scenario())
    assert orphan.run_id == run_id_at(1)
    assert orphan.error is not None
    assert orphan.error.startswith(("FileExistsError", "NotADirectoryError"))


def test_orphan_queries_reuse_what_they_read_until_the_runs_folder_changes(
    tmp_path: Path,
) -> None:
    for n in range(5):
        legacy_run(tmp_path, n)

    async def scenario() -> None:
        writer = await IndexWriter.open(tmp_path)
        tracker = writer.orphan_tracker
        assert len(await writer.orphans()) == 5
        assert tracker.folders_read == 5
        assert len(await writer.orphans()) == 5
        assert tracker.folders_read == 5  # nothing changed: nothing read again
        legacy_run(tmp_path, 5)
        os.utime(tmp_path / ".ml" / "runs", ns=(0, 1))  # whatever the clock granularity
        assert len(await writer.orphans()) == 6
        assert tracker.folders_read == 6  # only the new folder was read

    asyncio.run(scenario())


def test_indexing_a_run_removes_it_from_the_orphans_at_once(tmp_path: Path) -> None:
    run_dirs = [legacy_run(tmp_path, n) for n in range(3)]

    async def scenario() -> None:
        writer = await IndexWriter.open(tmp_path)
        assert len(await writer.orphans()) == 3
        await writer.add_run(run_dirs[0])
        assert [o.run_id for o in await writer.orphans()] == [run_id_at(2), run_id_at(1)]
        report = await writer.recover()
        assert len(report.recovered) == 2
        assert await writer.orphans() == []
        assert writer.orphan_tracker.folders_read == 3

    asyncio.run(scenario())


def test_a_run_leaving_flight_is_looked_at_again(tmp_path: Path) -> None:
    run_dir = started_run(tmp_path, 1)

    async def scenario() -> None:
        writer = await IndexWriter.open(tmp_path)
        in_flight = {run_dir.name}
        assert await writer.orphans(in_flight) == []
        completed = completed_run(tmp_path, 2)  # run.json lands in a folder we never read
        in_flight.add(completed.name)
        assert await writer.orphans(in_flight) == []
        in_flight.discard(completed.name)
        assert [o.run_id for o in await writer.orphans(in_flight)] == [run_id_at(2)]

    asyncio.run(scenario())


@pytest.mark.parametrize("full", [False, True], ids=["forget", "rescan"])
def test_changes_inside_a_known_folder_are_seen_once_told(tmp_path: Path, full: bool) -> None:
    run_dir = started_run(tmp_path, 1)

    async def scenario() -> None:
        writer = await IndexWriter.open(tmp_path)
        assert await writer.orphans() == []  # no run.json yet: not an orphan
        completed_run(tmp_path, 2)
        (run_dir / "run.json").write_bytes(
            (run_dir.parent / run_id_at(2) / "run.json").read_bytes()
        )
        if full:
            writer.orphan_tracker.rescan()
        else:
            writer.orphan_tracker.forget(run_dir.name)
        assert sorted(o.run_dir for o in await writer.orphans()) == sorted(
            [f".ml/runs/{run_dir.name}", f".ml/runs/{run_id_at(2)}"]
        )

    asyncio.run(scenario())
