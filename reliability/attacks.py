"""The hostile inputs of the fuzzers, by attack class: seeded, so a run can be repeated.

Every generator draws from one ``random.Random`` and returns what to send: for the
protocol fuzzer a multipart message (a list of frames), for the bridge fuzzer one line.
Requests that could change what the daemon may run (``trust``) or stop it (``shutdown``)
are only ever sent malformed; the fuzz workspace is untrusted and its interpreter does
not exist, so no well-formed request can start a process.
"""

from __future__ import annotations

import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from runforge_protocol import messages as m

# --------------------------------------------------------------------------- values

CONTROL_TEXT = ["\x00", "a\x00b", "\n", "two\nlines", "\r", "\x1b[2J", "\x07", "\x7f", "\x9b1m"]
HOSTILE_RUN_IDS = ["../../etc", "..", ".", "/etc/passwd", "a/b", "-rf", "x" * 300, "", " "]


def _raw_int(value: int) -> bytes:
    """MessagePack integers at the edges of what the format holds."""
    if value >= 0:
        return b"\xcf" + struct.pack(">Q", value)
    return b"\xd3" + struct.pack(">q", value)


EDGE_NUMBERS: list[bytes] = [
    _raw_int(2**64 - 1),
    _raw_int(2**63),
    _raw_int(-(2**63)),
    _raw_int(2**32),
    b"\xcb" + struct.pack(">d", 1e300),
    b"\xcb" + struct.pack(">d", -1e300),
    b"\xcb" + struct.pack(">d", float("inf")),
    b"\xcb" + struct.pack(">d", float("nan")),
    b"\xca" + struct.pack(">f", float("inf")),
    b"\xcb" + struct.pack(">d", 5e-324),
]


def nested(depth: int, rng: random.Random) -> bytes:
    """A value nested ``depth`` levels deep: one-element arrays, maps, or both."""
    kind = rng.choice(("array", "map", "mixed"))
    if kind == "array":
        return b"\x91" * depth + b"\xc0"
    if kind == "map":
        return b"\x81\xa1k" * depth + b"\xc0"
    return b"".join(rng.choice((b"\x91", b"\x81\xa1k")) for _ in range(depth)) + b"\xc0"


def raw_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A MessagePack map from already encoded keys and values."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
    return head + b"".join(k + v for k, v in pairs)


def hostile_value(rng: random.Random) -> bytes:
    """One encoded MessagePack value of any type, often not the one expected."""
    choice = rng.randrange(12)
    enc = msgspec.msgpack.encode
    if choice == 0:
        return rng.choice(EDGE_NUMBERS)
    if choice == 1:
        return enc(rng.choice(CONTROL_TEXT))
    if choice == 2:
        return enc(rng.choice(HOSTILE_RUN_IDS))
    if choice == 3:
        return nested(rng.randint(1, 64), rng)
    if choice == 4:
        return enc(rng.randbytes(rng.randint(0, 32)))  # bin, not str
    if choice == 5:
        return b"\xd4" + bytes([rng.randrange(256)]) + b"\x00"  # an ext type
    if choice == 6:
        return enc(rng.choice([None, True, False, 0, -1, 1.5, [], {}, [1, "a"], {"a": 1}]))
    if choice == 7:
        return enc("x" * rng.choice((0, 1, 4095, 4096, 4097, 20_000)))
    if choice == 8:
        return enc(rng.randint(-(2**63), 2**63 - 1))
    if choice == 9:
        return enc("".join(chr(rng.choice((rng.randrange(32, 0xD7FF), 0x1F600))) for _ in range(8)))
    if choice == 10:
        return enc({rng.choice(CONTROL_TEXT): rng.choice(CONTROL_TEXT)})
    return enc(rng.random() * 10 ** rng.randint(-5, 300))


# --------------------------------------------------------------------------- requests


@dataclass
class Targets:
    """Where requests point: the untrusted fuzz workspace and hostile paths near it (all
    inside the fuzzer's own temporary directory, or absent)."""

    workspace: Path
    elsewhere: Path  # an existing folder outside the workspace

    def hostile_paths(self) -> list[str]:
        ws = str(self.workspace)
        return [
            "relative/dir",
            "",
            f"{ws}/../{self.elsewhere.name}",
            str(self.elsewhere),
            f"{ws}/.ml/runs/../../..",
            f"{self.workspace.parent}/does-not-exist",
            ws + "/" + "a" * 300,
            ws + "\x00",
        ]

    def valid_requests(self) -> list[m.RequestBase]:
        """Well-formed requests that are safe to send (no trust, no shutdown)."""
        ws = str(self.workspace)
        return [
            m.Hello(client="fuzz"),
            m.Ping(),
            m.Status(),
            m.Status(workspace=ws),
            m.ListTrusted(),
            m.GetSettings(workspace=ws),
            m.Train(workspace=ws, name="fuzz", params={"C": "1"}, seed=7, grace_s=1.0),
            m.Cancel(workspace=ws),
            m.Cancel(run_id="20250101-000000-deadbeef"),
            m.Replay(workspace=ws, run_id="20250101-000000-deadbeef"),
            m.Active(),
            m.Active(workspace=ws),
            m.ListRuns(workspace=ws),
            m.ShowRun(workspace=ws),
            m.GetMetrics(workspace=ws, run_id="20250101-000000-deadbeef"),
            m.GetFeatureImportance(workspace=ws),
            m.GetCoefficients(workspace=ws),
            m.GetInterpretability(workspace=ws),
            m.ExportMarkdown(workspace=ws),
            m.InspectDataset(workspace=ws, path="data.csv"),
            m.InspectArtifact(workspace=ws, path="model.pkl"),
            m.Recover(workspace=ws),
            m.UntrustPath(path=ws),
        ]


def _as_pairs(request: m.RequestBase, rng: random.Random) -> list[tuple[bytes, bytes]]:
    document = msgspec.to_builtins(request)
    document["id"] = f"f{rng.randrange(1 << 30)}"
    enc = msgspec.msgpack.encode
    return [(enc(k), enc(v)) for k, v in document.items()]


Frames = list[bytes]
FrameAttack = Callable[[random.Random, Targets], Frames]


def random_bytes(rng: random.Random, t: Targets) -> Frames:
    return [rng.randbytes(rng.randint(0, 512))]


def bit_flips(rng: random.Random, t: Targets) -> Frames:
    data = bytearray(m.encode(rng.choice(t.valid_requests())))
    for _ in range(rng.randint(1, 8)):
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    return [bytes(data)]


def truncated(rng: random.Random, t: Targets) -> Frames:
    data = m.encode(rng.choice(t.valid_requests()))
    return [data[: rng.randrange(len(data))]]


def wrong_field_types(rng: random.Random, t: Targets) -> Frames:
    pairs = _as_pairs(rng.choice(t.valid_requests()), rng)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(pairs))
        pairs[at] = (pairs[at][0], hostile_value(rng))
    if rng.random() < 0.3 and len(pairs) > 1:
        del pairs[rng.randrange(len(pairs))]  # a missing field, maybe the tag
    return [raw_map(pairs)]


def unknown_tags(rng: random.Random, t: Targets) -> Frames:
    tag = rng.choice(["explode", "", "TRAIN", "train ", "shutdown\x00", "trust\n", "x" * 5000])
    return [msgspec.msgpack.encode({"type": tag, "id": "u", "workspace": str(t.workspace)})]


def deep_nesting(rng: random.Random, t: Targets) -> Frames:
    depth = rng.choice((200, 900, 1_000, 1_200, 5_000, 50_000, 200_000))
    if rng.random() < 0.5:
        return [nested(depth, rng)]  # the whole frame
    pairs = _as_pairs(rng.choice(t.valid_requests()), rng)
    return [raw_map([*pairs, (b"\xa1x", nested(depth, rng))])]  # an unknown field


def edge_numbers(rng: random.Random, t: Targets) -> Frames:
    ws = msgspec.msgpack.encode(str(t.workspace))
    tag, field = rng.choice(
        [
            ("train", "grace_s"),
            ("train", "seed"),
            ("cancel", "grace_s"),
            ("replay", "since"),
            ("replay", "limit"),
            ("runs", "limit"),
            ("ping", "protocol"),
        ]
    )
    enc = msgspec.msgpack.encode
    pairs = [(enc("type"), enc(tag)), (enc("workspace"), ws), (enc("run_id"), enc("r1"))]
    return [raw_map([*pairs, (enc(field), rng.choice(EDGE_NUMBERS))])]


def control_characters(rng: random.Random, t: Targets) -> Frames:
    request = rng.choice(t.valid_requests())
    document = msgspec.to_builtins(request)
    text_fields = [k for k, v in document.items() if isinstance(v, str) and k not in ("type", "id")]
    bad = rng.choice(CONTROL_TEXT)
    if text_fields:
        field = rng.choice(text_fields)
        document[field] = document[field] + bad
    else:
        document["workspace"] = str(t.workspace) + bad
    if isinstance(request, m.Train) and rng.random() < 0.5:
        document["params"] = {rng.choice(["C", "C" + bad]): rng.choice(["1", "1" + bad])}
    return [msgspec.msgpack.encode(document)]


def hostile_ids_and_paths(rng: random.Random, t: Targets) -> Frames:
    request = rng.choice(t.valid_requests())
    document = msgspec.to_builtins(request)
    for field in ("workspace", "path", "dataset"):
        if field in document and rng.random() < 0.7:
            document[field] = rng.choice(t.hostile_paths())
    if "run_id" in msgspec.structs.asdict(request):
        document["run_id"] = rng.choice(HOSTILE_RUN_IDS)
    return [msgspec.msgpack.encode(document)]


def framing(rng: random.Random, t: Targets) -> Frames:
    ping = m.encode(m.Ping(id="framing"))
    return rng.choice(
        [
            [b""],
            [b"", b""],
            [ping, ping],
            [b"", ping, b"extra"],
            [b"a", b"b", b"c"],
            [b"", b"", ping],
            [b"\x00", ping],
            [ping] * rng.randint(3, 10),
        ]
    )


def oversized(rng: random.Random, t: Targets) -> Frames:
    size = m.MAX_MESSAGE_BYTES + rng.randint(1, 4096)
    if rng.random() < 0.5:
        return [b"\x00" * size]
    padding = "x" * size
    return [m.encode(m.Train(workspace=str(t.workspace), name=padding))]


def well_formed(rng: random.Random, t: Targets) -> Frames:
    request = rng.choice(t.valid_requests())
    return [m.encode(msgspec.structs.replace(request, id=f"w{rng.randrange(1 << 30)}"))]


# (name, generator, weight): oversized frames are 1 MiB each, so they are rare.
FRAME_ATTACKS: list[tuple[str, FrameAttack, float]] = [
    ("well-formed requests", well_formed, 10),
    ("random bytes", random_bytes, 10),
    ("bit flips of valid requests", bit_flips, 12),
    ("truncated requests", truncated, 8),
    ("wrong field types, missing fields", wrong_field_types, 12),
    ("unknown request types", unknown_tags, 4),
    ("deep nesting (200 to 200,000 levels)", deep_nesting, 6),
    ("numbers at and beyond the edges", edge_numbers, 8),
    ("NUL and control characters", control_characters, 8),
    ("hostile run ids and paths", hostile_ids_and_paths, 8),
    ("wrong frame counts", framing, 6),
    ("oversized messages", oversized, 0.3),
]


# --------------------------------------------------------------------------- bridge lines

LineAttack = Callable[[random.Random, Targets], bytes]


def _json(document: Any) -> bytes:
    return json.dumps(document).encode()


def line_not_json(rng: random.Random, t: Targets) -> bytes:
    choice = rng.randrange(4)
    if choice == 0:
        return rng.randbytes(rng.randint(1, 200)).replace(b"\n", b" ") + b"x"
    if choice == 1:
        return b'{"type": "ping", "id": "' + rng.randbytes(8).replace(b"\n", b" ") + b'"}'
    if choice == 2:
        return rng.choice([b"{", b"}", b"[1,", b'{"a":}', b"nul", b"tru", b'"\\ud800"', b"1e"])
    return _json(rng.choice([[1, 2], 42, "ping", None, True]))


def line_deep(rng: random.Random, t: Targets) -> bytes:
    depth = rng.choice((500, 1_200, 10_000, 200_000))
    opener, closer = rng.choice(((b"[", b"]"), (b'{"a":', b"}")))
    body = opener * depth + b"1" + closer * depth
    if rng.random() < 0.5:
        return b'{"type": "ping", "id": "deep", "x": ' + body + b"}"
    return body


def line_huge_numbers(rng: random.Random, t: Targets) -> bytes:
    number = rng.choice([2**64, 2**64 - 1, -(2**63) - 1, 10**30, -(10**40), 10**400])
    literal = str(number).encode() if rng.random() < 0.8 else b"1e400"
    field = rng.choice([b"protocol", b"seed", b"since", b"limit", b"grace_s", b"extra", b"id"])
    tag = rng.choice([b"ping", b"train", b"replay", b"runs", b"cancel"])
    ws = json.dumps(str(t.workspace)).encode()
    return (
        b'{"type": "'
        + tag
        + b'", "id": "n", "workspace": '
        + ws
        + b', "run_id": "r", "'
        + field
        + b'": '
        + literal
        + b"}"
    )


def line_control(rng: random.Random, t: Targets) -> bytes:
    bad = rng.choice(CONTROL_TEXT)
    document: dict[str, Any] = rng.choice(
        [
            {"type": "train", "workspace": str(t.workspace), "name": "n" + bad},
            {"type": "train", "workspace": str(t.workspace), "params": {"C": bad}},
            {"type": "show", "workspace": str(t.workspace), "run_id": bad},
            {"type": "ping", "id": bad},
        ]
    )
    return _json({**document, "id": document.get("id", "c")})


def line_wrong_shape(rng: random.Random, t: Targets) -> bytes:
    tag = rng.choice(["train", "show", "replay", "trust", "explode", "", 7, None])
    document: dict[str, Any] = {"type": tag, "id": "s"}
    if rng.random() < 0.5:
        document["workspace"] = rng.choice([7, None, [], {}, True, str(t.workspace)])
    if rng.random() < 0.3:
        document = {"type": rng.choice(["subscribe", "unsubscribe"]), "prefix": rng.choice([7, []])}
    return _json(document)


def line_long(rng: random.Random, t: Targets) -> bytes:
    from runforgectl.jsonlines import MAX_LINE_BYTES

    size = rng.choice((MAX_LINE_BYTES - 200, MAX_LINE_BYTES + 1, 2 * MAX_LINE_BYTES))
    return b'{"type": "ping", "id": "long", "pad": "' + b"x" * size + b'"}'


def line_well_formed(rng: random.Random, t: Targets) -> bytes:
    request = rng.choice(t.valid_requests())
    document = msgspec.to_builtins(request)
    document["id"] = f"ok{rng.randrange(1 << 30)}"
    return _json(document)


LINE_ATTACKS: list[tuple[str, LineAttack, float]] = [
    ("well-formed requests", line_well_formed, 10),
    ("not JSON, not an object, invalid UTF-8", line_not_json, 12),
    ("deep nesting (500 to 200,000 levels)", line_deep, 6),
    ("integers beyond 64 bits, 1e400", line_huge_numbers, 10),
    ("NUL and control characters", line_control, 8),
    ("wrong types, unknown types, bad bridge commands", line_wrong_shape, 10),
    ("lines at and over the size limit", line_long, 0.2),
]
