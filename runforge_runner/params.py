"""Presets, profiles and ``--param`` overrides: from the command line to hyperparameters
(the table of names and parsers is ``runforge_contract.params``, shared with the daemon).

Resolution, lowest to highest: the preset's values for the model family
(``model_default``), the profile's adjustment (``profile``), then each ``--param NAME=VALUE``
(``cli``). Every value keeps its source, as run.json records it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

from runforge_contract.params import (
    DEFAULT_MODEL_FAMILY,
    MODEL_FAMILIES,
    PARAM_SPECS,
    PRESETS,
    PROFILES,
    InvalidParam,
    ParamSpec,
    ParamValue,
)
from runforge_runner.contract import ERROR_INVALID_ARGUMENTS, EXIT_USAGE, TrainerError

__all__ = [
    "DEFAULT_MODEL_FAMILY",
    "MODEL_FAMILIES",
    "PARAM_SPECS",
    "PRESETS",
    "PROFILES",
    "PROFILE_VERSION",
    "ParamSpec",
    "ParamValue",
    "ParameterError",
    "TrainingPlan",
    "plan_training",
]

PROFILE_VERSION = "1.0"
DEFAULT_SEED = 42


class ParameterError(TrainerError):
    def __init__(self, message: str) -> None:
        super().__init__(ERROR_INVALID_ARGUMENTS, message, EXIT_USAGE)


# What each preset trains with before any profile or --param. Iterative fits stop when
# converged by ``tol`` (scikit-learn's default 1e-4; hq-train asks for a tighter fit), so
# ``max_iter`` is a ceiling, not a length.
PRESET_VALUES: dict[str, dict[str, dict[str, ParamValue]]] = {
    "std-train": {
        "logistic_regression": {"C": 1.0, "max_iter": 1000, "tol": 1e-4},
        "random_forest": {
            "n_estimators": 100,
            "max_depth": None,
            "min_samples_leaf": 1,
            "max_features": "sqrt",
        },
        "linear_svc": {"C": 1.0, "max_iter": 1000, "tol": 1e-4},
    },
    "hq-train": {
        "logistic_regression": {"C": 1.0, "max_iter": 2000, "tol": 1e-5},
        "random_forest": {
            "n_estimators": 300,
            "max_depth": None,
            "min_samples_leaf": 1,
            "max_features": "sqrt",
        },
        "linear_svc": {"C": 1.0, "max_iter": 2000, "tol": 1e-5},
    },
}

# How a profile scales the iteration ceilings and the trees of the preset.
PROFILE_SCALE = {"default": 1.0, "fast": 0.25, "thorough": 2.0}


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    value: ParamValue
    source: str  # "model_default", "profile" or "cli"


@dataclass(frozen=True)
class TrainingPlan:
    """Everything that decides what is trained: family, preset, profile, values, seed."""

    preset: str
    model_family: str
    profile: str | None
    seed: int
    seed_given: bool
    hyperparameters: tuple[Hyperparameter, ...]

    def value(self, name: str) -> ParamValue:
        for parameter in self.hyperparameters:
            if parameter.name == name:
                return parameter.value
        raise KeyError(name)

    def expanded_parameters_hash(self) -> str:
        """SHA-256 of the resolved values, canonical JSON: equal hash, equal training."""
        canonical = json.dumps(
            {
                "model_family": self.model_family,
                "parameters": {p.name: p.value for p in self.hyperparameters},
                "seed": self.seed,
            },
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def run_json_hyperparameters(self) -> list[dict[str, object]]:
        entries: list[dict[str, object]] = [
            {"name": p.name, "value": p.value, "source": p.source} for p in self.hyperparameters
        ]
        entries.append(
            {
                "name": "random_state",
                "value": self.seed,
                "source": "cli" if self.seed_given else "model_default",
            }
        )
        return entries


def parse_param_overrides(model_family: str, raw_params: Sequence[str]) -> dict[str, ParamValue]:
    """``["C=0.5", "max_iter=20"]`` to typed values, rejecting unknown or repeated names."""
    specs = PARAM_SPECS[model_family]
    overrides: dict[str, ParamValue] = {}
    for raw in raw_params:
        name, sep, value = raw.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ParameterError(f"--param {raw!r}: expected NAME=VALUE, e.g. --param C=0.5")
        spec = specs.get(name)
        if spec is None:
            raise ParameterError(
                f"--param {name}: not a parameter of {model_family} "
                f"(known: {', '.join(sorted(specs))})"
            )
        if name in overrides:
            raise ParameterError(f"--param {name} is given twice; give it once")
        try:
            overrides[name] = spec.parse(name, value.strip())
        except InvalidParam as exc:
            raise ParameterError(str(exc)) from None
    return overrides


def plan_training(
    preset: str,
    model_family: str,
    profile: str | None,
    raw_params: Sequence[str],
    seed: int | None,
) -> TrainingPlan:
    """Resolve preset, profile and ``--param`` values into one plan with provenance."""
    overrides = parse_param_overrides(model_family, raw_params)
    scale = PROFILE_SCALE[profile or "default"]
    specs = PARAM_SPECS[model_family]
    resolved: list[Hyperparameter] = []
    for name, base in PRESET_VALUES[preset][model_family].items():
        if name in overrides:
            resolved.append(Hyperparameter(name, overrides[name], "cli"))
        elif specs[name].scales_with_profile and scale != 1.0 and isinstance(base, int):
            resolved.append(Hyperparameter(name, max(1, round(base * scale)), "profile"))
        else:
            resolved.append(Hyperparameter(name, base, "model_default"))
    return TrainingPlan(
        preset=preset,
        model_family=model_family,
        profile=profile,
        seed=DEFAULT_SEED if seed is None else seed,
        seed_given=seed is not None,
        hyperparameters=tuple(resolved),
    )
