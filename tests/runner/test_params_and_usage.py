"""Presets, profiles and --param: resolution with provenance, and clear usage errors (exit 2)."""

from __future__ import annotations

import pytest

from runforge_runner.contract import EXIT_USAGE
from runforge_runner.params import ParameterError, plan_training
from tests.runner.conftest import Workspace, assert_events_valid


def sources(plan_args: tuple[str, str, str | None, list[str]]) -> dict[str, tuple[object, str]]:
    plan = plan_training(*plan_args, seed=None)
    return {p.name: (p.value, p.source) for p in plan.hyperparameters}


def test_preset_values_come_first_then_profile_then_param() -> None:
    assert sources(("std-train", "random_forest", None, []))["n_estimators"] == (
        100,
        "model_default",
    )
    assert sources(("std-train", "random_forest", "thorough", []))["n_estimators"] == (
        200,
        "profile",
    )
    resolved = sources(("hq-train", "random_forest", "fast", ["n_estimators=9"]))
    assert resolved["n_estimators"] == (9, "cli")
    assert resolved["max_depth"] == (None, "model_default")


@pytest.mark.parametrize(
    ("family", "size"),
    [
        ("logistic_regression", "max_iter"),
        ("random_forest", "n_estimators"),
        ("linear_svc", "max_iter"),
    ],
)
def test_hq_preset_trains_longer_than_std(family: str, size: str) -> None:
    std = plan_training("std-train", family, None, [], seed=None).value(size)
    hq = plan_training("hq-train", family, None, [], seed=None).value(size)
    assert isinstance(std, int) and isinstance(hq, int) and hq > std


def test_typed_values_and_none_depth() -> None:
    resolved = sources(("std-train", "random_forest", None, ["max_depth=none", "max_features=0.5"]))
    assert resolved["max_depth"] == (None, "cli")
    assert resolved["max_features"] == (0.5, "cli")
    assert sources(("std-train", "linear_svc", None, ["C=0.25"]))["C"] == (0.25, "cli")


def test_expanded_parameters_hash_changes_with_the_values_only() -> None:
    first = plan_training("std-train", "logistic_regression", "fast", [], seed=None)
    again = plan_training("std-train", "logistic_regression", "fast", [], seed=None)
    other = plan_training("std-train", "logistic_regression", "fast", ["C=2"], seed=None)
    assert first.expanded_parameters_hash() == again.expanded_parameters_hash()
    assert first.expanded_parameters_hash() != other.expanded_parameters_hash()


@pytest.mark.parametrize(
    ("family", "params", "words"),
    [
        ("logistic_regression", ["C"], ["NAME=VALUE"]),
        (
            "logistic_regression",
            ["n_estimators=5"],
            ["not a parameter of logistic_regression", "C"],
        ),
        ("logistic_regression", ["C=-1"], ["greater than 0"]),
        ("logistic_regression", ["C=abc"], ["expected a number"]),
        ("logistic_regression", ["C=nan"], ["greater than 0"]),
        ("random_forest", ["n_estimators=0"], ["at least 1"]),
        ("random_forest", ["n_estimators=2.5"], ["whole number"]),
        ("random_forest", ["max_features=2"], ["(0, 1]"]),
        ("linear_svc", ["C=1", "C=2"], ["given twice"]),
    ],
)
def test_bad_params_are_refused_with_what_to_write_instead(
    family: str, params: list[str], words: list[str]
) -> None:
    with pytest.raises(ParameterError) as raised:
        plan_training("std-train", family, None, params, seed=None)
    for word in words:
        assert word in raised.value.message


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--preset", "turbo"], ["--preset", "turbo"]),
        (["--model", "xgboost"], ["--model", "xgboost"]),
        (["--profile", "slow"], ["--profile"]),
        (["--param", "max_iter=zero"], ["max_iter", "whole number"]),
        (["--seed", "x"], ["--seed"]),
        (["--bogus"], ["--bogus"]),
    ],
)
def test_usage_errors_exit_2_with_a_run_failed_event(
    workspace: Workspace, args: list[str], words: list[str]
) -> None:
    full = workspace.train_args("usage")
    if args[0] == "--preset":
        full[full.index("--preset") + 1] = args[1]
    else:
        full += args
    result = workspace.run(full)
    assert result.returncode == EXIT_USAGE
    assert_events_valid(result.events)
    assert result.names() == ["run_failed"]
    failure = result.events[0]
    assert failure["error"]["code"] == "INVALID_ARGUMENTS"
    assert failure["run_id"] == "usage"
    for word in words:
        assert word in failure["error"]["message"]
    assert not result.run_dir.exists()


def test_missing_dataset_variable_is_a_usage_error(workspace: Workspace) -> None:
    result = workspace.run(workspace.train_args("no-env"), dataset=None)
    assert result.returncode == EXIT_USAGE
    assert "RUNFORGE_DATASET is not set" in result.events[-1]["error"]["message"]


@pytest.mark.parametrize("out", [".ml/runs/bad id", ".ml/runs/a:b", "/"])
def test_run_folder_names_outside_the_run_id_alphabet_are_refused(
    workspace: Workspace, out: str
) -> None:
    args = workspace.train_args("x")
    args[args.index("--out") + 1] = out
    result = workspace.run(args)
    assert result.returncode == EXIT_USAGE
    assert "not a valid run id" in result.events[-1]["error"]["message"]
    assert "run_id" not in result.events[-1]


def test_bad_grace_in_the_environment_is_a_usage_error(workspace: Workspace) -> None:
    result = workspace.run(
        workspace.train_args("grace"), extra_env={"RUNFORGE_CANCEL_GRACE_S": "soon"}
    )
    assert result.returncode == EXIT_USAGE
    assert "RUNFORGE_CANCEL_GRACE_S" in result.events[-1]["error"]["message"]
