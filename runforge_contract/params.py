"""The bundled runner's hyperparameters: the presets, model families and profiles it
knows, and for each family the ``--param`` names it takes with their parsers.

Shared by the runner (which trains with them) and the daemon (which refuses a bad
``--param`` name or value before a run folder exists), so the daemon never imports the
runner. Standard library only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

PRESETS = ("std-train", "hq-train")
MODEL_FAMILIES = ("logistic_regression", "random_forest", "linear_svc")
DEFAULT_MODEL_FAMILY = "logistic_regression"
PROFILES = ("default", "fast", "thorough")

ParamValue = int | float | str | None


class InvalidParam(ValueError):
    """A ``--param`` value its parser refuses; the message says why, for people."""


def _positive_float(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise InvalidParam(f"--param {name}={raw!r}: expected a number, e.g. {name}=0.5") from None
    if not math.isfinite(value) or value <= 0:
        raise InvalidParam(f"--param {name}={raw!r}: must be a number greater than 0")
    return value


def _positive_int(name: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise InvalidParam(
            f"--param {name}={raw!r}: expected a whole number, e.g. {name}=100"
        ) from None
    if value < 1:
        raise InvalidParam(f"--param {name}={raw!r}: must be at least 1")
    return value


def _depth(name: str, raw: str) -> int | None:
    if raw.strip().lower() == "none":
        return None
    return _positive_int(name, raw)


def _max_features(name: str, raw: str) -> float | str:
    if raw in ("sqrt", "log2"):
        return raw
    try:
        value = float(raw)
    except ValueError:
        raise InvalidParam(
            f"--param {name}={raw!r}: expected sqrt, log2 or a fraction in (0, 1]"
        ) from None
    if not 0 < value <= 1:
        raise InvalidParam(f"--param {name}={raw!r}: a fraction must be in (0, 1]")
    return value


@dataclass(frozen=True)
class ParamSpec:
    """One tunable hyperparameter: how to parse it and what it means."""

    parse: Callable[[str, str], ParamValue]
    meaning: str
    scales_with_profile: bool = False


PARAM_SPECS: dict[str, dict[str, ParamSpec]] = {
    "logistic_regression": {
        "C": ParamSpec(_positive_float, "inverse regularization strength"),
        "max_iter": ParamSpec(_positive_int, "most L-BFGS iterations (stops once converged)", True),
        "tol": ParamSpec(_positive_float, "convergence tolerance (scikit-learn's tol)"),
    },
    "random_forest": {
        "n_estimators": ParamSpec(_positive_int, "number of trees", True),
        "max_depth": ParamSpec(_depth, "maximum tree depth (none = unlimited)"),
        "min_samples_leaf": ParamSpec(_positive_int, "minimum samples in a leaf"),
        "max_features": ParamSpec(_max_features, "features tried per split"),
    },
    "linear_svc": {
        "C": ParamSpec(_positive_float, "inverse regularization strength"),
        "max_iter": ParamSpec(
            _positive_int, "most liblinear iterations (stops once converged)", True
        ),
        "tol": ParamSpec(_positive_float, "convergence tolerance (scikit-learn's tol)"),
    },
}
