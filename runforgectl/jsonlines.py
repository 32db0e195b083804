"""JSON lines from an untrusted stream: split in linear time with a maximum line size, and
decoded so that every malformed line is a ``JsonLineError``, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgspec

from runforge_protocol import messages as m

# A request is at most MAX_MESSAGE_BYTES of MessagePack; its JSON form is somewhat larger
# (quoted keys, escapes). A line beyond this is dropped unread, with one error.
MAX_LINE_BYTES = 4 * m.MAX_MESSAGE_BYTES


class JsonLineError(Exception):
    """A line that is not a usable JSON object; ``str()`` says why, for the adapter, and
    ``details`` names the request field at fault when there is one."""

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or {}


class LineTooLong:
    """Stands in for a line longer than the limit (its bytes were dropped as they came)."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit

    def __str__(self) -> str:
        return f"line of {self.size} bytes or more exceeds the limit of {self.limit} bytes"


class LineReader:
    """Cuts a byte stream into lines. Each chunk is searched once and a line's parts are
    joined once, so reading is linear in the input however long a line is; a line over
    ``max_line_bytes`` is dropped as it arrives (memory stays bounded) and reported once."""

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._parts: list[bytes] = []
        self._size = 0  # bytes of the current line so far (also counted while dropping)
        self._dropping = False

    def feed(self, chunk: bytes) -> Iterator[bytes | LineTooLong]:
        """The lines completed by ``chunk`` (without their newline), blank ones skipped."""
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            yield from self._take(chunk[start:end], complete=True)
            start = end + 1
        if start < len(chunk):
            yield from self._take(chunk[start:], complete=False)

    def _take(self, piece: bytes, *, complete: bool) -> Iterator[bytes | LineTooLong]:
        self._size += len(piece)
        if not self._dropping and self._size > self.max_line_bytes:
            self._dropping = True
            self._parts.clear()
            yield LineTooLong(self._size, self.max_line_bytes)
        if not self._dropping:
            self._parts.append(piece)
        if complete:
            line = b"".join(self._parts) if not self._dropping else b""
            self._parts.clear()
            self._size = 0
            self._dropping = False
            if line.strip():
                yield line


_loose = msgspec.json.Decoder(dict)
_request = msgspec.json.Decoder(m.Request)


def decode_object(line: bytes) -> dict[str, Any]:
    """``line`` as a JSON object; raises JsonLineError (not JSON, not an object, nested
    too deeply)."""
    try:
        loose: dict[str, Any] = _loose.decode(line)
    except msgspec.DecodeError as exc:
        raise JsonLineError(f"not a JSON object: {exc}") from None
    except RecursionError:
        raise JsonLineError("not a usable JSON object: nested too deeply") from None
    return loose


def decode_request(line: bytes) -> m.Request:
    """``line`` as a protocol request; raises JsonLineError, whose message names the field
    when the line is a JSON object that is not a valid request (numbers out of range,
    control characters...: the same limits the daemon applies)."""
    try:
        request: m.Request = _request.decode(line)
    except msgspec.ValidationError as exc:
        field, message = m.invalid_field(exc)
        details = {"field": field} if field else None
        raise JsonLineError(f"invalid request: {message}", details) from None
    except msgspec.DecodeError as exc:
        raise JsonLineError(f"not a JSON object: {exc}") from None
    except RecursionError:
        raise JsonLineError("not a usable JSON object: nested too deeply") from None
    return request


def convert_request(loose: dict[str, Any]) -> m.Request:
    """An already decoded JSON object (the bridge rewrites its ``id``) as a protocol
    request, with the same errors as ``decode_request``."""
    try:
        request: m.Request = msgspec.convert(loose, m.Request)
    except msgspec.ValidationError as exc:
        field, message = m.invalid_field(exc)
        details = {"field": field} if field else None
        raise JsonLineError(f"invalid request: {message}", details) from None
    except RecursionError:
        raise JsonLineError("not a usable JSON object: nested too deeply") from None
    return request
