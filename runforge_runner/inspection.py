"""``inspect-artifact``: the structure of a saved model (pipeline inspect schema v0.2.2.2).

Loading a pickle runs code from the file; the daemon only spawns this for trusted
workspaces.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from runforge_runner.contract import (
    ERROR_INVALID_ARGUMENTS,
    ERROR_INVALID_ARTIFACT,
    EXIT_BAD_DATA,
    EXIT_USAGE,
    TrainerError,
    workspace_relative,
)


def inspect_artifact(path: Path) -> dict[str, Any]:
    """Steps of the pipeline in ``path`` (name, class, module), without learned values."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TrainerError(
            ERROR_INVALID_ARGUMENTS, f"artifact {path} does not exist", EXIT_USAGE
        ) from None
    except OSError as error:
        raise TrainerError(
            ERROR_INVALID_ARTIFACT, f"cannot read artifact {path}: {error.strerror}", EXIT_BAD_DATA
        ) from None
    try:
        model = pickle.loads(data)
    except Exception as error:
        raise TrainerError(
            ERROR_INVALID_ARTIFACT,
            f"artifact {path} is not a loadable model pickle ({type(error).__name__}: {error})",
            EXIT_BAD_DATA,
        ) from None
    named_steps = getattr(model, "steps", None)
    if isinstance(named_steps, list):
        steps = [(str(name), step) for name, step in named_steps]
    else:
        steps = [("model", model)]
    return {
        "schema_version": "0.2.2.2",
        "artifact_path": workspace_relative(path),
        "pipeline_steps": [
            {"name": name, "type": type(step).__name__, "module": type(step).__module__}
            for name, step in steps
        ],
        "has_preprocessing": len(steps) > 1,
        "step_count": len(steps),
    }
