"""The single writer: durable adds, group commits, merges, corrupt and unwritable indexes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from runforge_protocol.errors import ErrorCode
from runforged.disk_formats import IndexEntry
from runforged.errors import RunforgeError
from runforged.index_entry import build_index_entry
from runforged.index_writer import IndexWriter, IndexWriters
from tests.contracts import validate
from tests.index.runfolders import (
    completed_run,
    index_path,
    indexed_ids,
    read_index,
    run_id_at,
    write_index,
)


def entries_for(workspace: Path, numbers: range) -> list[IndexEntry]:
    return [build_index_entry(workspace, completed_run(workspace, n)) for n in numbers]


def test_add_returns_once_the_entry_is_in_the_file(tmp_path: Path) -> None:
    [entry] = entries_for(tmp_path, range(1))

    async def scenario() -> None:
        writer = await IndexWriter.open(tmp_path)
        assert await writer.add(entry) is True
        # Checked before anything else runs: the add itself made it durable.
        assert indexed_ids(tmp_path) == [entry.run_id]

    asyncio.run(scenario())
    validate("index.v1.0.0", read_index(tmp_path))


def test_a_burst_of_100_completions_is_written_in_one_rewrite(tmp_path: Path) -> None:
    entries = entries_for(tmp_path, range(100))

    async def scenario() -> int:
        writer = await IndexWriter.open(tmp_path)
        results = await asyncio.gather(*(writer.add(e) for e in entries))
        assert results == [True] * 100
        return writer.writes

    assert asyncio.run(scenario()) == 1
    assert indexed_ids(tmp_path) == [e.run_id for e in entries]
    validate("index.v1.0.0", read_index(tmp_path))


def test_completions_arriving_during_a_write_share_the_next_one(tmp_path: Path) -> None:
    entries = entries_for(tmp_path, range(30))

    async def scenario() -> int:
        writer = await IndexWriter.open(tmp_path)
        first = asyncio.ensure_future(writer.add(entries[0]))
        while not writer.busy:
            await asyncio.sleep(0)
        await asyncio.gather(first, *(writer.add(e) for e in entries[1:]))
        return writer.writes

    assert asyncio.run(scenario()) == 2
    assert sorted(indexed_ids(tmp_path)) == sorted(e.run_id for e in entries)


def test_indexing_a_run_twice_adds_it_once_and_rewrites_nothing(tmp_path: Path) -> None:
    [entry] = entries_for(tmp_path, range(1))

    async def scenario() -> tuple[bool, int]:
        writer = await IndexWriter.open(tmp_path)
        await writer.add(entry)
        again = await writer.add(entry)
        return again, writer.writes

    assert asyncio.run(scenario()) == (False, 1)
    assert indexed_ids(tmp_path) == [entry.run_id]


def test_entries_another_writer_added_are_merged_not_dropped(tmp_path: Path) -> None:
    ours = entries_for(tmp_path, range(3))
    theirs_only = {
        "run_id": "theirs-1",
        "created_at": "2025-01-01T00:00:00Z",
        "dataset_fingerprint_sha256": "a" * 64,
        "label_column": "y",
        "run_dir": ".ml/runs/theirs-1",
        "model_pkl": ".ml/runs/theirs-1/model.pkl",
    }

    async def scenario() -> None:
        writer = await IndexWriter.open(tmp_path)
        await writer.add(ours[0])
        await writer.add(ours[1])
        # An older RunForge rewrites the file: its view of run 1 and a run of its own.
        document = read_index(tmp_path)
        document["runs"][1]["name"] = "renamed by them"
        document["runs"].append(theirs_only)
        write_index(tmp_path, document)
        await writer.add(ours[2])
        assert writer.index.get(ours[1].run_id).name == "renamed by them"  # type: ignore[union-attr]

    asyncio.run(scenario())
    runs = read_index(tmp_path)["runs"]
    assert [r["run_id"] for r in runs] == [
        ours[0].run_id,
        ours[1].run_id,
        "theirs-1",
        ours[2].run_id,
    ]
    assert runs[1]["name"] == "renamed by them"
    assert runs[2] == theirs_only


def test_a_corrupt_index_is_moved_aside_never_overwritten(tmp_path: Path) -> None:
    [entry] = entries_for(tmp_path, range(1))
    garbage = b'{"schema_version": "1.0.0", "runs": [{"run_'
    index_path(tmp_path).parent.mkdir(parents=True)
    index_path(tmp_path).write_bytes(garbage)

    async def scenario() -> list[str]:
        writer = await IndexWriter.open(tmp_path)
        await writer.add(entry)
        return writer.index.take_corrupt_kept_as()

    [kept] = asyncio.run(scenario())
    assert kept.startswith(".ml/outputs/index.json.corrupt.")
    assert (tmp_path / kept).read_bytes() == garbage
    assert indexed_ids(tmp_path) == [entry.run_id]


def test_an_index_corrupted_behind_our_back_is_kept_aside_and_ours_written_back(
    tmp_path: Path,
) -> None:
    entries = entries_for(tmp_path, range(2))

    async def scenario() -> list[str]:
        writer = await IndexWriter.open(tmp_path)
        await writer.add(entries[0])
        index_path(tmp_path).write_bytes(b"\x00\x01 not an index")
        await writer.add(entries[1])
        return writer.index.take_corrupt_kept_as()

    [kept] = asyncio.run(scenario())
    assert (tmp_path / kept).read_bytes() == b"\x00\x01 not an index"
    assert indexed_ids(tmp_path) == [e.run_id for e in entries]


def test_an_unwritable_index_fails_clearly_and_loses_nothing(tmp_path: Path) -> None:
    """Root ignores permission bits, so the failure is one root cannot bypass: the
    index's folder is replaced by a regular file, so index.json cannot be created."""
    first, second, third = entries_for(tmp_path, range(3))
    outputs = index_path(tmp_path).parent

    async def scenario() -> None:
        writer = await IndexWriter.open(tmp_path)
        await writer.add(first)
        before = index_path(tmp_path).read_bytes()
        os.rename(outputs, tmp_path / "outputs-away")
        outputs.write_text("a file where the index folder should be")
        with pytest.raises(RunforgeError) as caught:
            await writer.add(second)
        error = caught.value
        assert error.code is ErrorCode.INDEX_WRITE_FAILED
        assert str(index_path(tmp_path)) in error.message
        assert "runforgectl recover" in error.remediation
        assert second.run_id not in writer.index
        # The folder comes back: the old content is intact, and writing works again.
        outputs.unlink()
        os.rename(tmp_path / "outputs-away", outputs)
        assert index_path(tmp_path).read_bytes() == before
        assert await writer.add(third) is True

    asyncio.run(scenario())
    assert indexed_ids(tmp_path) == [first.run_id, third.run_id]


def test_a_legacy_bare_array_index_is_read_and_its_entries_kept(tmp_path: Path) -> None:
    legacy = [
        {
            "run_id": "old-1",
            "created_at": "2024-01-01T00:00:00Z",
            "dataset_fingerprint_sha256": "b" * 64,
            "label_column": "label",
            "run_dir": ".ml/runs/old-1",
            "model_pkl": ".ml/runs/old-1/model.pkl",
        }
    ]
    write_index(tmp_path, legacy)
    [entry] = entries_for(tmp_path, range(1))

    async def scenario() -> None:
        writer = await IndexWriter.open(tmp_path)
        assert "old-1" in writer.index
        await writer.add(entry)

    asyncio.run(scenario())
    document = read_index(tmp_path)
    assert document["schema_version"] == "1.0.0"
    assert document["runs"][0] == legacy[0]
    assert document["runs"][1]["run_id"] == entry.run_id


def test_latest_is_the_newest_created_at_whatever_the_file_order(tmp_path: Path) -> None:
    entries = entries_for(tmp_path, range(4))
    shuffled = [entries[2], entries[0], entries[3], entries[1]]

    async def scenario() -> IndexWriter:
        writer = await IndexWriter.open(tmp_path)
        for entry in shuffled:
            await writer.add(entry)
        return writer

    index = asyncio.run(scenario()).index
    assert index.latest() == entries[3]
    assert [e.run_id for e in index.newest_first()] == [run_id_at(n) for n in (3, 2, 1, 0)]
    assert [e.run_id for e in index.newest_first(offset=1, limit=2)] == [run_id_at(2), run_id_at(1)]
    assert index.get(run_id_at(1)) == entries[1]
    assert index.get("no-such-run") is None


def test_adding_a_run_deletes_its_stale_orphan_marker(tmp_path: Path) -> None:
    run_dir = completed_run(tmp_path, 1, index_error="disk full")
    (run_dir / ".index-orphan").write_text("{}")

    async def scenario() -> None:
        writer = await IndexWriter.open(tmp_path)
        await writer.add_run(run_dir)

    asyncio.run(scenario())
    assert not (run_dir / ".index-orphan").exists()
    assert indexed_ids(tmp_path) == [run_id_at(1)]


def test_the_daemon_gets_one_writer_per_workspace(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()

    async def scenario() -> None:
        writers = IndexWriters()
        a1, a2, b = await asyncio.gather(
            writers.get(tmp_path / "a"), writers.get(tmp_path / "a"), writers.get(tmp_path / "b")
        )
        assert a1 is a2
        assert b is not a1
        await writers.aclose()

    asyncio.run(scenario())
