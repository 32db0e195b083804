"""The committed protocol artefacts as tests read them: JSON Schemas, golden examples, and
the request-to-result table of PROTOCOL.md."""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Any

import jsonschema

from runforge_protocol import events as ev
from tools.schema_gen import PACKAGE_DIR

PROTOCOL_MD = PACKAGE_DIR / "PROTOCOL.md"
KINDS = ("requests", "replies", "events")


@cache
def schema(kind: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(
        (PACKAGE_DIR / "schema" / f"{kind}.schema.json").read_text(encoding="utf-8")
    )
    return document


def validator(kind: str, definition: str | None = None) -> jsonschema.Draft202012Validator:
    """A validator for a whole schema, or for one of its ``$defs`` (``"TrainResult"``)."""
    document = schema(kind)
    if definition is not None:
        document = {"$ref": f"#/$defs/{definition}", "$defs": document["$defs"]}
    return jsonschema.Draft202012Validator(document)


@cache
def examples(kind: str) -> list[dict[str, Any]]:
    document = json.loads((PACKAGE_DIR / "examples" / f"{kind}.json").read_text("utf-8"))
    found: list[dict[str, Any]] = document["examples"]
    return found


def all_examples() -> list[tuple[str, dict[str, Any]]]:
    return [(kind, example) for kind in KINDS for example in examples(kind)]


def protocol_text() -> str:
    return PROTOCOL_MD.read_text(encoding="utf-8")


def documented_result_types() -> dict[str, str]:
    """Request tag -> result tag, from the table under "Replies" in PROTOCOL.md."""
    table: dict[str, str] = {}
    row = re.compile(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \| `([a-z_]+)` \| `[A-Za-z]+` \|$")
    for line in protocol_text().splitlines():
        match = row.match(line)
        if match:
            for tag in re.findall(r"`([a-z_]+)`", match.group(1)):
                table[tag] = match.group(2)
    return table


def daemon_event_types() -> set[str]:
    """The event types ``runforge_protocol.events`` declares for the daemon's own events."""
    return {
        value
        for name, value in vars(ev).items()
        if name.isupper() and isinstance(value, str) and not name.endswith("_PREFIX")
    }
