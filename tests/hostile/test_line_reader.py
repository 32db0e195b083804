"""The bridge's line reader: the lines of any stream however it is chunked, each long line
cut off once, in time linear in the input."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from runforgectl.jsonlines import LineReader, LineTooLong

LIMIT = 64


def read_all(chunks: list[bytes], limit: int = LIMIT) -> list[bytes | str]:
    reader = LineReader(limit)
    out: list[bytes | str] = []
    for chunk in chunks:
        for line in reader.feed(chunk):
            out.append("too long" if isinstance(line, LineTooLong) else line)
    return out


def expected(data: bytes, limit: int = LIMIT) -> list[bytes | str]:
    """What a reader must produce: every complete non-blank line within the limit, and one
    marker for each line over it (also an unfinished one)."""
    *lines, rest = data.split(b"\n")
    out: list[bytes | str] = []
    for line in lines:
        if len(line) > limit:
            out.append("too long")
        elif line.strip():
            out.append(line)
    if len(rest) > limit:
        out.append("too long")
    return out


@st.composite
def chunked(draw: st.DrawFn) -> tuple[bytes, list[bytes]]:
    data = draw(
        st.binary(max_size=600)
        | st.lists(st.sampled_from([b"\n", b"x" * 40, b" ", b"{}"])).map(b"".join)
    )
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=20)))
    bounds = [0, *cuts, len(data)]
    return data, [data[a:b] for a, b in itertools.pairwise(bounds)]


@given(chunked())
def test_any_chunking_gives_the_lines_of_the_whole(case: tuple[bytes, list[bytes]]) -> None:
    data, chunks = case
    assert read_all(chunks) == expected(data)


def test_a_long_line_is_reported_once_and_dropped_as_it_arrives() -> None:
    reader = LineReader(10)
    out = [*reader.feed(b"x" * 8), *reader.feed(b"y" * 8), *reader.feed(b"z" * 1000)]
    assert len(out) == 1 and isinstance(out[0], LineTooLong) and out[0].size == 16
    assert reader._parts == []  # nothing of the long line is kept
    assert list(reader.feed(b"zz\nok\n")) == [b"ok"]


def test_a_long_line_in_many_small_chunks_reads_each_byte_once() -> None:
    # Linear time: the cost of one chunk does not depend on how much of the line came
    # before it (the old reader re-scanned and re-copied the whole pending line).
    reader = LineReader(1 << 30)
    chunk = b"a" * 4096
    for _ in range(2_000):
        assert list(reader.feed(chunk)) == []
    (line,) = reader.feed(b"\n")
    assert line == chunk * 2_000
