"""Dataset and artifact inspection through a real (fake) runner module: output in the
RunForge formats, and every failure as a structured error."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from runforge_protocol.errors import ErrorCode
from runforged.errors import RunforgeError
from runforged.inspection import inspect_artifact, inspect_dataset
from runforged.trust import TrustedWorkspace, TrustStore
from tests.contracts import IRIS_SAMPLE, validate
from tests.settings_trust.conftest import FAKE_RUNNER


@pytest.fixture
def trusted(store: TrustStore, workspace: Path) -> TrustedWorkspace:
    (workspace / "data").mkdir()
    shutil.copy(IRIS_SAMPLE, workspace / "data" / "iris.csv")
    (workspace / "models").mkdir()
    (workspace / "models" / "model.pkl").write_bytes(b"pickle bytes")
    store.trust(str(workspace))
    return store.require(str(workspace))


def dataset(
    trusted: TrustedWorkspace,
    env: dict[str, str],
    path: str = "data/iris.csv",
    *,
    label: str | None = None,
    python: str = sys.executable,
    timeout_s: float = 60.0,
) -> object:
    return asyncio.run(
        inspect_dataset(
            trusted,
            python_path=python,
            runner_module=FAKE_RUNNER,
            dataset=path,
            label=label,
            env=env,
            timeout_s=timeout_s,
        )
    )


def artifact(
    trusted: TrustedWorkspace, env: dict[str, str], path: str = "models/model.pkl"
) -> object:
    return asyncio.run(
        inspect_artifact(
            trusted, python_path=sys.executable, runner_module=FAKE_RUNNER, artifact=path, env=env
        )
    )


def failure(call: Callable[[], object]) -> RunforgeError:
    with pytest.raises(RunforgeError) as caught:
        call()
    return caught.value


def test_dataset_inspection_returns_the_runforge_inspect_document(
    trusted: TrustedWorkspace, child_env: dict[str, str]
) -> None:
    result = dataset(trusted, child_env, label="label")
    document = msgspec.to_builtins(result)
    validate("inspect.v0.2.2.1", document)
    csv = trusted.path / "data" / "iris.csv"
    assert document["dataset_path"] == str(csv)
    assert document["fingerprint_sha256"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert document["num_rows"] == len(csv.read_text().splitlines()) - 1
    assert document["label_present"] is True


def test_a_label_that_looks_like_an_option_reaches_the_runner_verbatim(
    trusted: TrustedWorkspace, child_env: dict[str, str]
) -> None:
    result = msgspec.to_builtins(dataset(trusted, child_env, label="--help"))
    assert (result["label_column"], result["label_present"]) == ("--help", False)


def test_artifact_inspection_returns_the_runforge_pipeline_document(
    trusted: TrustedWorkspace, child_env: dict[str, str]
) -> None:
    document = msgspec.to_builtins(artifact(trusted, child_env))
    validate("pipeline.inspect.v0.2.2.2", document)
    assert document["artifact_path"] == "models/model.pkl"
    assert [step["name"] for step in document["pipeline_steps"]] == ["scaler", "clf"]


@pytest.mark.parametrize("path", ["../outside.csv", "/etc/hostname", "data/../../x.csv"])
def test_a_dataset_outside_the_workspace_is_refused_before_any_spawn(
    trusted: TrustedWorkspace,
    child_env: dict[str, str],
    marker_interpreter: Callable[[], tuple[Path, Path]],
    path: str,
) -> None:
    python, marker = marker_interpreter()
    error = failure(lambda: dataset(trusted, child_env, path, python=str(python)))
    assert error.code == ErrorCode.INVALID_PATH
    assert not marker.exists()


def test_a_missing_dataset_or_artifact_is_reported_as_such(
    trusted: TrustedWorkspace, child_env: dict[str, str]
) -> None:
    assert failure(lambda: dataset(trusted, child_env, "data/none.csv")).code == (
        ErrorCode.INVALID_PATH
    )
    assert failure(lambda: artifact(trusted, child_env, "models/none.pkl")).code == (
        ErrorCode.ARTIFACT_NOT_FOUND
    )


def test_a_failing_runner_is_inspect_failed_with_its_one_line_error(
    trusted: TrustedWorkspace, child_env: dict[str, str]
) -> None:
    env = {**child_env, "FAKE_RUNNER_MODE": "fail"}
    for call in (lambda: dataset(trusted, env), lambda: artifact(trusted, env)):
        error = failure(call)
        assert error.code == ErrorCode.INSPECT_FAILED
        assert error.message.endswith("failed: ValueError: dataset has no rows")


def test_output_that_is_not_an_inspect_document_is_inspect_failed(
    trusted: TrustedWorkspace, child_env: dict[str, str]
) -> None:
    error = failure(lambda: dataset(trusted, {**child_env, "FAKE_RUNNER_MODE": "garbage"}))
    assert error.code == ErrorCode.INSPECT_FAILED
    assert "not a valid dataset inspection document" in error.message
    assert error.details["stdout"].startswith("this is not json")


def test_a_runner_that_hangs_is_killed_and_inspect_failed(
    trusted: TrustedWorkspace, child_env: dict[str, str]
) -> None:
    env = {**child_env, "FAKE_RUNNER_MODE": "hang"}
    error = failure(lambda: dataset(trusted, env, timeout_s=1.0))
    assert error.code == ErrorCode.INSPECT_FAILED
    assert "did not finish within 1 s" in error.message


def test_a_missing_interpreter_is_interpreter_not_found(
    trusted: TrustedWorkspace, child_env: dict[str, str], tmp_path: Path
) -> None:
    missing = str(tmp_path / "venv" / "bin" / "python")
    error = failure(lambda: dataset(trusted, child_env, python=missing))
    assert error.code == ErrorCode.INTERPRETER_NOT_FOUND
    assert missing in error.message
