"""Every malformed dataset is refused with one actionable line and exit 3, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from runforge_runner.contract import EXIT_BAD_DATA
from tests.runner.conftest import Workspace, assert_events_valid

GOOD_HEADER = b"a,b,label\n"
GOOD_ROWS = b"".join(f"{i},{i % 3},{i % 2}\n".encode() for i in range(20))

CASES = [
    # (case, file bytes, words the message must contain)
    (
        "semicolons",
        GOOD_HEADER.replace(b",", b";") + GOOD_ROWS.replace(b",", b";"),
        ["semicolons", "comma"],
    ),
    ("tabs", GOOD_HEADER.replace(b",", b"\t") + GOOD_ROWS.replace(b",", b"\t"), ["tabs"]),
    ("not utf-8", GOOD_HEADER + b"1,\xff\xfe,0\n" + GOOD_ROWS, ["not UTF-8", "offset"]),
    ("byte-order mark", b"\xef\xbb\xbf" + GOOD_HEADER + GOOD_ROWS, ["byte-order mark"]),
    ("empty file", b"", ["empty"]),
    ("header only", GOOD_HEADER, ["no data rows"]),
    ("no label column", b"a,b,target\n" + GOOD_ROWS, ["'label'", "--label", "target"]),
    ("non-numeric value", GOOD_HEADER + GOOD_ROWS + b"3,abc,1\n", ["'b'", "line 22", "'abc'"]),
    ("ragged row", GOOD_HEADER + b"1,2\n" + GOOD_ROWS, ["line 2", "2 fields", "3"]),
    (
        "all-empty label",
        b"a,b,label\n" + b"".join(f"{i},{i},\n".encode() for i in range(9)),
        ["empty in every row"],
    ),
    (
        "single class",
        b"a,b,label\n" + b"".join(f"{i},{i},7\n".encode() for i in range(9)),
        ["single class", "7"],
    ),
    ("too few rows", b"a,b,label\n1,2,0\n3,4,1\n5,6,0\n6,7,1\n", ["too few", "4 usable rows"]),
    ("class with one row", GOOD_HEADER + GOOD_ROWS + b"9,9,5\n", ["class 5 has 1"]),
    ("label only", b"label\n0\n1\n0\n1\n", ["only the label column"]),
    ("duplicate column", b"a,a,label\n" + GOOD_ROWS, ["repeats column 'a'"]),
    ("infinite value", GOOD_HEADER + GOOD_ROWS + b"inf,1,0\n", ["'inf'", "finite"]),
]


@pytest.mark.parametrize(("case", "content", "words"), CASES, ids=[c[0] for c in CASES])
def test_malformed_dataset_gets_one_actionable_line_and_exit_3(
    workspace: Workspace, tmp_path: Path, case: str, content: bytes, words: list[str]
) -> None:
    dataset = tmp_path / "data.csv"
    dataset.write_bytes(content)
    result = workspace.run(workspace.train_args("bad-data"), dataset=dataset)

    assert result.returncode == EXIT_BAD_DATA
    assert_events_valid(result.events)
    assert result.names()[0] == "run_start"
    assert result.names()[-1] == "run_failed"
    failure = result.events[-1]
    assert failure["error"]["code"] == "INVALID_DATASET"
    assert failure["run_id"] == "bad-data"
    for word in words:
        assert word in failure["error"]["message"], failure["error"]["message"]
    assert not any("Traceback" in line for line in result.logs)
    assert not (result.run_dir / "run.json").exists()


def test_missing_dataset_file_names_the_path(workspace: Workspace, tmp_path: Path) -> None:
    result = workspace.run(workspace.train_args("missing"), dataset=tmp_path / "nope.csv")
    assert result.returncode == EXIT_BAD_DATA
    assert "nope.csv does not exist" in result.events[-1]["error"]["message"]


def test_rows_with_missing_values_are_dropped_and_counted(
    workspace: Workspace, tmp_path: Path
) -> None:
    dataset = tmp_path / "gaps.csv"
    dataset.write_bytes(GOOD_HEADER + GOOD_ROWS + b"1,,0\n2,NA,1\n3,4,\n")
    result = workspace.run(workspace.train_args("gaps", "--param", "max_iter=2"), dataset=dataset)
    assert result.returncode == 0
    loaded = result.of("dataset_loaded")[0]
    assert loaded["rows_dropped"] == 3 and loaded["num_samples"] == 20


def test_label_flag_picks_another_label_column(workspace: Workspace, tmp_path: Path) -> None:
    dataset = tmp_path / "target.csv"
    dataset.write_bytes(b"a,b,target\n" + GOOD_ROWS)
    result = workspace.run(
        workspace.train_args("target", "--label", "target", "--param", "max_iter=2"),
        dataset=dataset,
    )
    assert result.returncode == 0
    assert result.of("dataset_loaded")[0]["label_column"] == "target"
