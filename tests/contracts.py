"""Validation against RunForge's published formats, read from ../shared/runforge-contracts."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

REPO_ROOT = Path(__file__).resolve().parents[1]
CONTRACTS_DIR = (REPO_ROOT / ".." / "shared" / "runforge-contracts").resolve()


@cache
def load_schema(name: str) -> dict[str, Any]:
    """``name`` is a file in the contracts folder, e.g. ``"run.schema.v0.3.6.json"``."""
    schema: dict[str, Any] = json.loads((CONTRACTS_DIR / name).read_text(encoding="utf-8"))
    return schema


def validate(name: str, document: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` matches schema ``name``."""
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls(schema, format_checker=cls.FORMAT_CHECKER).validate(document)


def validate_file(name: str, path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    validate(name, document)
    return document
