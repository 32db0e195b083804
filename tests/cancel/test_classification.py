"""How a run ended is a pure function of what was observed once its trainer exited."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import pytest

from runforge_protocol.records import RunState
from runforged.outcome import classify_terminal_state

# One exit status of each kind: success, failure, graceful-cancel style, killed by a signal.
EXIT_CODES = (0, 1, 143, -9)
BOOLEAN_INPUTS = (
    "cancel_requested",
    "artifacts_written",
    "run_json_exists",
    "marker_valid",
    "run_cancelled",
    "killed",
)


class Observed(NamedTuple):
    exit_code: int
    cancel_requested: bool
    artifacts_written: bool
    run_json_exists: bool
    marker_valid: bool
    run_cancelled: bool
    killed: bool


def expected_state(o: Observed) -> RunState:
    """The issue's table, one rule per row, first match wins."""
    rules = [
        (
            RunState.COMPLETED,  # training won the race
            o.artifacts_written and o.run_json_exists and (o.exit_code == 0 or o.cancel_requested),
        ),
        (RunState.CANCELLED_GRACEFUL, o.marker_valid or o.run_cancelled),
        (RunState.CANCELLED_FORCED, o.cancel_requested and o.exit_code != 0),
        (RunState.FAILED, True),  # non-zero exit without a cancel; exit 0 but incomplete
    ]
    return next(state for state, matches in rules if matches)


EVERY_OBSERVATION = [
    Observed(code, *flags)
    for code, flags in itertools.product(
        EXIT_CODES, itertools.product((False, True), repeat=len(BOOLEAN_INPUTS))
    )
]


def test_every_combination_of_inputs_is_covered() -> None:
    assert len(EVERY_OBSERVATION) == len(EXIT_CODES) * 2 ** len(BOOLEAN_INPUTS) == 256
    assert len(set(EVERY_OBSERVATION)) == 256


@pytest.mark.parametrize("observed", EVERY_OBSERVATION, ids=str)
def test_every_combination_is_classified_by_the_table(observed: Observed) -> None:
    result = classify_terminal_state(**observed._asdict())
    assert result.state is expected_state(observed)
    assert result.state.terminal
    # Only a plain, uncancelled completion needs no explanation.
    assert (result.reason == "") == (
        result.state is RunState.COMPLETED and not observed.cancel_requested
    )


@pytest.mark.parametrize("observed", EVERY_OBSERVATION, ids=str)
def test_the_state_never_depends_on_whether_the_deadline_kill_fired(observed: Observed) -> None:
    other = observed._replace(killed=not observed.killed)
    assert (
        classify_terminal_state(**observed._asdict()).state
        is classify_terminal_state(**other._asdict()).state
    )


def test_classification_is_pure() -> None:
    observed = Observed(143, True, False, False, True, False, False)
    first = classify_terminal_state(**observed._asdict())
    assert all(classify_terminal_state(**observed._asdict()) == first for _ in range(3))


NOTHING = Observed(0, False, False, False, False, False, False)

NAMED_CASES = [
    # (name, observation, expected state, words the reason must contain)
    (
        "a run that finished normally",
        NOTHING._replace(artifacts_written=True, run_json_exists=True),
        RunState.COMPLETED,
        "",
    ),
    (
        "training won the race: finished as the cancel arrived, exit 0",
        NOTHING._replace(cancel_requested=True, artifacts_written=True, run_json_exists=True),
        RunState.COMPLETED,
        "training finished before the cancel",
    ),
    (
        "finished, then SIGTERMed during shutdown: exit 143 after artifacts_written",
        Observed(143, True, True, True, False, False, False),
        RunState.COMPLETED,
        "exited with code 143 after artifacts_written",
    ),
    (
        "finished, wrote a shutdown marker too: completion wins",
        Observed(143, True, True, True, True, True, False),
        RunState.COMPLETED,
        "training finished before the cancel",
    ),
    (
        "graceful cancel: marker and run_cancelled, exit 143",
        Observed(143, True, False, False, True, True, False),
        RunState.CANCELLED_GRACEFUL,
        ".cancelled marker written and run_cancelled reported",
    ),
    (
        "graceful via marker: stderr was closed, no run_cancelled seen",
        Observed(143, True, False, False, True, False, False),
        RunState.CANCELLED_GRACEFUL,
        ".cancelled marker written",
    ),
    (
        "graceful via event: the marker write failed (or the marker is corrupt)",
        Observed(1, True, False, False, False, True, False),
        RunState.CANCELLED_GRACEFUL,
        "run_cancelled reported, no valid .cancelled marker",
    ),
    (
        "graceful, then hung after the marker and was killed at the deadline",
        Observed(-9, True, False, False, True, True, True),
        RunState.CANCELLED_GRACEFUL,
        "process tree killed",
    ),
    (
        "graceful cancel by someone else's SIGTERM (no cancel requested)",
        Observed(143, False, False, False, True, True, False),
        RunState.CANCELLED_GRACEFUL,
        "cancelled gracefully",
    ),
    (
        "forced: ignored SIGTERM, killed at the deadline",
        Observed(-9, True, False, False, False, False, True),
        RunState.CANCELLED_FORCED,
        "still running at the grace deadline",
    ),
    (
        "forced: died of the SIGTERM without flushing",
        Observed(-15, True, False, False, False, False, False),
        RunState.CANCELLED_FORCED,
        "killed by SIGTERM with no .cancelled marker or run_cancelled",
    ),
    (
        "failed: a crash without any cancel",
        Observed(1, False, False, False, False, False, False),
        RunState.FAILED,
        "exited with code 1",
    ),
    (
        "failed: killed by someone else",
        Observed(-9, False, False, False, False, False, False),
        RunState.FAILED,
        "killed by SIGKILL",
    ),
    (
        "failed: crashed in teardown after writing everything, no cancel",
        Observed(1, False, True, True, False, False, False),
        RunState.FAILED,
        "exited with code 1 after writing its artifacts",
    ),
    (
        "failed: exit 0 without run.json (training incomplete)",
        NOTHING._replace(artifacts_written=True),
        RunState.FAILED,
        "training incomplete: exited 0 without run.json",
    ),
    (
        "failed: exit 0 with run.json but artifacts_written never reported",
        NOTHING._replace(run_json_exists=True),
        RunState.FAILED,
        "training incomplete: exited 0 without artifacts_written",
    ),
    (
        "failed: exit 0 after a cancel, nothing written, nothing reported",
        NOTHING._replace(cancel_requested=True),
        RunState.FAILED,
        "after the cancel request",
    ),
]


@pytest.mark.parametrize(
    ("observed", "state", "reason"),
    [case[1:] for case in NAMED_CASES],
    ids=[case[0] for case in NAMED_CASES],
)
def test_named_cases(observed: Observed, state: RunState, reason: str) -> None:
    result = classify_terminal_state(**observed._asdict())
    assert result.state is state
    assert reason in result.reason
