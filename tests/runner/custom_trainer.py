"""A user's own trainer built on runforge_runner.contract alone (no scikit-learn).

It "trains" by counting epochs (``CUSTOM_EPOCHS``, each ``CUSTOM_EPOCH_S`` long) and, when
cancelled, flushes a checkpoint slowly (``CUSTOM_FLUSH_S``) so tests can watch the
countdown tick while the flush runs. Usage: ``custom_trainer.py <run dir>``.
"""

from runforge_runner.contract import CancelSignal

cancel_signal = CancelSignal.install()

import os  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from runforge_runner.contract import (  # noqa: E402
    STEP_ARTIFACTS,
    STEP_TRAINING,
    TrainerSession,
)

EPOCHS = int(os.environ.get("CUSTOM_EPOCHS", "1000"))
EPOCH_S = float(os.environ.get("CUSTOM_EPOCH_S", "0.05"))
FLUSH_S = float(os.environ.get("CUSTOM_FLUSH_S", "0"))


def train(session: TrainerSession) -> None:
    state = {"epoch": 0}

    def flush() -> None:
        # A slow save, in small steps, as a real checkpoint writer would be.
        deadline = time.monotonic() + FLUSH_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
        session.write_json("checkpoint.json", {"epoch": state["epoch"]})

    session.on_cancel(flush)
    session.emit("run_start", preset_id="std-train", model_family="logistic_regression")
    session.emit("dataset_loaded", num_samples=10, num_features=2, rows_dropped=0)
    session.enter_step(STEP_TRAINING)
    session.emit("train_started", model_family="logistic_regression")
    for epoch in range(1, EPOCHS + 1):
        session.checkpoint()
        time.sleep(EPOCH_S)
        state["epoch"] = epoch
        session.emit("train_progress", epoch=epoch, total_epochs=EPOCHS, loss=1.0 / epoch)
    session.emit("train_finished")
    session.emit("metrics_computed", metrics_profile="classification.base.v1", accuracy=0.5)
    session.enter_step(STEP_ARTIFACTS)
    session.write_json("result.custom.json", {"epochs": EPOCHS})
    session.emit("artifacts_written", artifact_count=1, run_dir=session.run_dir_relative)


sys.exit(TrainerSession(sys.argv[1], cancel_signal=cancel_signal).run(train))
