"""RunForge's on-disk and event formats, as JSON Schema files kept in this folder.

The daemon and the runner must read and write workspaces exactly as RunForge does (a
workspace written by one is read by the other). These schema files are our own
description of those formats, written from RunForge's published format documentation;
the tests validate every file and event our code produces against them. Names are
``<format>.schema.json`` where ``<format>`` is the format's version id, for example
``run.v0.3.6`` or ``cancelled.v1.0.0``.

``iris_sample.csv`` is a small iris-like dataset (51 rows, 4 features, a ``label``
column with 3 classes) for tests that need a CSV other than the runner's bundled sample.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

CONTRACTS_DIR = Path(__file__).resolve().parent
IRIS_SAMPLE = CONTRACTS_DIR / "iris_sample.csv"


def schema_names() -> list[str]:
    """Every format described here, e.g. ``["cancelled.v1.0.0", ...]``."""
    return sorted(path.name.removesuffix(".schema.json") for path in schema_paths())


def schema_paths() -> list[Path]:
    return sorted(CONTRACTS_DIR.glob("*.schema.json"))


@cache
def load_schema(name: str) -> dict[str, Any]:
    """``name`` is a format id, e.g. ``"run.v0.3.6"``."""
    path = CONTRACTS_DIR / f"{name}.schema.json"
    schema: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return schema


def validate(name: str, document: Any) -> None:
    """Raise ``jsonschema.ValidationError`` unless ``document`` matches format ``name``."""
    schema = load_schema(name)
    cls = jsonschema.validators.validator_for(schema)
    cls(schema, format_checker=cls.FORMAT_CHECKER).validate(document)


def validate_file(name: str, path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    validate(name, document)
    return document
