"""Fitting the three model families the way scikit-learn fits them, in a worker thread.

Each family trains with the estimator's own algorithm and stopping rule, so the model is
the one a plain ``fit()`` of the same estimator and parameters gives:

- logistic_regression: ``LogisticRegression`` (L-BFGS, scikit-learn's default solver),
  one ``fit()``; it stops when converged by its ``tol`` or at ``max_iter``. Where
  scikit-learn offers fit callbacks (1.9+), each iteration's coefficients are observed
  (read only: the fit is the same, bit for bit) for progress and for a partial model.
- linear_svc: ``LinearSVC`` (liblinear), one ``fit()``, converged by its ``tol`` or
  stopped at ``max_iter``. liblinear keeps its coefficients to itself until it returns,
  but its own progress lines (``verbose=1``, printed by its C code on the process's
  standard output) are real: they are read through a pipe while it fits and give each
  solver iteration and its objective (see ``LiblinearProgress``).
- random_forest: ``RandomForestClassifier`` grown with ``warm_start`` in batches of trees
  sized to take about a quarter of a second each. scikit-learn seeds every tree from the
  forest's ``random_state`` in order, so the trees are exactly those of one ``fit()``.

The fit runs in a worker thread (scikit-learn's solvers and tree builders release the
GIL), so the main thread stays free to act on a cancel at once, whatever one iteration
or one tree costs, and to report progress by the clock (see ``FitWatch``). Linear models
see standardized features; the saved model is a ``Pipeline`` that predicts from raw
features.
"""

from __future__ import annotations

import contextlib
import copy
import os
import re
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import hinge_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from runforge_runner.dataset import VALIDATION_FRACTION, Dataset
from runforge_runner.params import TrainingPlan

Array = npt.NDArray[Any]

FIT_THREAD_NAME = "runforge-fit"
# Progress numbers are computed on at most this many rows of each part, so their cost
# stays a small, fixed fraction of the fit whatever the data size.
PROGRESS_SAMPLE_ROWS = 10_000
# A forest grows in batches of trees that take about this long, so progress and the
# partial model move steadily; a single tree may take longer (it cannot be split).
FOREST_BATCH_S = 0.25


@dataclass(frozen=True)
class Split:
    """The deterministic 80/20 stratified split: train on one part, validate on the other."""

    x_train: Array
    y_train: Array
    x_val: Array
    y_val: Array
    classes: Array


def split_dataset(dataset: Dataset, seed: int) -> Split:
    x = np.asarray(dataset.features, dtype=np.float64)
    y = np.asarray(dataset.labels)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=VALIDATION_FRACTION, random_state=seed, stratify=y
    )
    return Split(x_train, y_train, x_val, y_val, np.unique(y))


@dataclass(frozen=True)
class Snapshot:
    """The classifier as of ``done`` units (iterations or trees), or None before any.

    ``solver_loss`` is a loss the solver itself reported for this point when there is no
    classifier to measure (liblinear's objective, see ``LiblinearProgress``)."""

    done: int
    classifier: Any = None
    solver_loss: float | None = None


@dataclass(frozen=True)
class Progress:
    """Where training stands: units done out of the limit, and numbers measured then."""

    done: int
    total: int
    val_accuracy: float | None
    loss: float | None


@dataclass(frozen=True)
class FitOutcome:
    """How the fit ended: units done, the limit, and whether it converged by ``tol``
    (None for the forest, which has no convergence criterion: it grows every tree)."""

    done: int
    total: int
    converged: bool | None


def _sample(rows: int, seed: int) -> Array:
    """Indices of at most PROGRESS_SAMPLE_ROWS rows, the same for every event."""
    if rows <= PROGRESS_SAMPLE_ROWS:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, PROGRESS_SAMPLE_ROWS, replace=False))


class FamilyFit:
    """One family's fit: ``run`` in the worker thread; the rest from the main thread."""

    family = ""

    def __init__(self, plan: TrainingPlan, split: Split) -> None:
        self.split = split
        self.seed = plan.seed
        self.total = 0
        self.snapshot = Snapshot(0)  # replaced (never mutated) by the worker
        self.outcome: FitOutcome | None = None
        self._val_rows = _sample(len(split.y_val), plan.seed)
        self._train_rows = _sample(len(split.y_train), plan.seed + 1)
        self._stop = threading.Event()

    def run(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Ask the worker to stop at its next boundary (a cancel; it may not get there)."""
        self._stop.set()

    def pipeline(self, classifier: Any) -> Pipeline:
        return Pipeline([("classifier", classifier)])

    def model(self) -> Pipeline | None:
        """The model as trained so far (the final one once ``outcome`` is set)."""
        classifier = self.snapshot.classifier
        return None if classifier is None else self.pipeline(classifier)

    def measure(self, snapshot: Snapshot) -> tuple[float | None, float | None]:
        """(validation accuracy, training loss) of ``snapshot`` on the bounded samples."""
        raise NotImplementedError


class _LinearFit(FamilyFit):
    """Shared by the linear families: standardized features, coefficients as the state."""

    def __init__(self, plan: TrainingPlan, split: Split) -> None:
        super().__init__(plan, split)
        self.scaler = StandardScaler().fit(split.x_train)
        self.x_train = self.scaler.transform(split.x_train)
        self.x_val = self.scaler.transform(split.x_val)
        limit = plan.value("max_iter")
        assert isinstance(limit, int)
        self.total = limit

    def pipeline(self, classifier: Any) -> Pipeline:
        return Pipeline([("scaler", self.scaler), ("classifier", classifier)])

    def measure(self, snapshot: Snapshot) -> tuple[float | None, float | None]:
        classifier = snapshot.classifier
        if classifier is None:
            return None, snapshot.solver_loss
        # Straight from the coefficients: one product per sample, none of the input
        # checks a predict() call repeats every time.
        x_val = self.x_val[self._val_rows]
        y_val = self.split.y_val[self._val_rows]
        scores = x_val @ classifier.coef_.T + classifier.intercept_
        if scores.shape[1] == 1:
            predicted = self.split.classes[(scores[:, 0] > 0).astype(int)]
        else:
            predicted = self.split.classes[np.argmax(scores, axis=1)]
        return float(np.mean(predicted == y_val)), self.loss(classifier)

    def loss(self, classifier: Any) -> float | None:
        raise NotImplementedError

    def _finish(self, estimator: Any, iterations: int) -> None:
        self.snapshot = Snapshot(iterations, estimator)
        self.outcome = FitOutcome(iterations, self.total, converged=iterations < self.total)


class LogisticFit(_LinearFit):
    family = "logistic_regression"

    def __init__(self, plan: TrainingPlan, split: Split) -> None:
        # Each family imports only its own estimator: the others' modules cost start-up.
        from sklearn.linear_model import LogisticRegression

        super().__init__(plan, split)
        self.estimator = LogisticRegression(
            C=plan.value("C"), max_iter=self.total, tol=plan.value("tol"),
            random_state=plan.seed,
        )  # fmt: skip
        self._template = clone(self.estimator)

    def run(self) -> None:
        observer = _IterationObserver(self)
        observed = observer.attach(self.estimator)
        try:
            self.estimator.fit(self.x_train, self.split.y_train)
        finally:
            if observed:
                # The saved model must unpickle with scikit-learn alone.
                self.estimator.set_callbacks()
        self._finish(self.estimator, int(np.max(self.estimator.n_iter_)))

    def observed(self, iteration: int, coef: Array, intercept: Array) -> None:
        """One L-BFGS iteration finished (called in the worker by the observer)."""
        classifier = copy.copy(self._template)
        classifier.coef_ = coef
        classifier.intercept_ = intercept
        classifier.classes_ = self.split.classes
        classifier.n_features_in_ = self.x_train.shape[1]
        classifier.n_iter_ = np.array([iteration], dtype=np.int32)
        self.snapshot = Snapshot(iteration, classifier)

    def loss(self, classifier: Any) -> float | None:
        """Mean log loss on the training sample (multinomial, or logistic for two classes)."""
        x_train = self.x_train[self._train_rows]
        target = np.searchsorted(self.split.classes, self.split.y_train[self._train_rows])
        scores = x_train @ classifier.coef_.T + classifier.intercept_
        if scores.shape[1] == 1:
            margin = np.where(target == 1, scores[:, 0], -scores[:, 0])
            return float(np.mean(np.logaddexp(0.0, -margin)))
        top = np.max(scores, axis=1)
        log_norm = top + np.log(np.sum(np.exp(scores - top[:, None]), axis=1))
        return float(np.mean(log_norm - scores[np.arange(len(target)), target]))


class _IterationObserver:
    """A scikit-learn fit callback (``sklearn.callback``, 1.9+) that hands each L-BFGS
    iteration's coefficients to the fit. It only reads: it never asks to stop."""

    def __init__(self, fit: LogisticFit) -> None:
        self._fit = fit
        self._iterations = 0

    def attach(self, estimator: Any) -> bool:
        """Set as ``estimator``'s callback; False where scikit-learn has no callbacks."""
        try:
            from sklearn.callback import FitCallback
        except ImportError:
            return False
        if not isinstance(self, FitCallback) or not hasattr(estimator, "set_callbacks"):
            return False
        estimator.set_callbacks(self)
        return True

    def setup(self, estimator: Any, context: Any) -> None:
        return None

    def teardown(self, estimator: Any, context: Any) -> None:
        return None

    def on_fit_task_begin(self, estimator: Any, context: Any) -> None:
        return None

    def on_fit_task_end(
        self, estimator: Any, context: Any, *, fitted_estimator: Any = None
    ) -> bool:
        if fitted_estimator is not None and getattr(context, "task_name", "") == "lbfgs-iter":
            self._iterations += 1
            self._fit.observed(
                self._iterations,
                np.array(fitted_estimator.coef_),
                np.array(fitted_estimator.intercept_),
            )
        return False


class LinearSvcFit(_LinearFit):
    family = "linear_svc"

    def __init__(self, plan: TrainingPlan, split: Split) -> None:
        from sklearn.svm import LinearSVC

        super().__init__(plan, split)
        self.estimator = LinearSVC(
            C=plan.value("C"), max_iter=self.total, tol=plan.value("tol"),
            random_state=plan.seed,
        )  # fmt: skip

    def run(self) -> None:
        progress = LiblinearProgress(self)
        with _CapturedStdout(progress.feed) as captured:
            # verbose only makes liblinear print; what it computes is the same.
            self.estimator.set_params(verbose=1 if captured else 0)
            try:
                self.estimator.fit(self.x_train, self.split.y_train)
            finally:
                self.estimator.set_params(verbose=0)
        progress.close()
        self._finish(self.estimator, int(self.estimator.n_iter_))

    def solver_reported(self, iterations: int, objective: float | None) -> None:
        """liblinear's progress (called by ``LiblinearProgress`` in its reader thread)."""
        loss = None
        if objective is not None:
            # Per training row and per unit of C: 1.0 at the start (all-zero weights).
            loss = objective / (float(self.estimator.C) * len(self.split.y_train))
        self.snapshot = Snapshot(iterations, None, loss)

    def loss(self, classifier: Any) -> float | None:
        x_train = self.x_train[self._train_rows]
        decision = classifier.decision_function(x_train)
        y_train = self.split.y_train[self._train_rows]
        return float(hinge_loss(y_train, decision, labels=self.split.classes))


class LiblinearProgress:
    """Reads liblinear's own progress lines while it fits.

    ``LinearSVC`` on more rows than features runs liblinear's primal trust-region Newton
    solver, which prints one line per step it tries (``iter  3 act ... f 1.070e+04 |g|
    6.3e+02 CG 2``): the step and the objective ``f`` before it (half the squared norm of
    the weights plus C times the sum of squared hinge losses over the training rows).
    The dual coordinate-descent solver (more features than rows) prints a dot every 10
    iterations and, per problem, ``optimization finished, #iter = N``. With 3+ classes
    liblinear solves one problem per class (one-vs-rest), one after the other: the count
    starts again at 1.

    Reported: the most iterations any problem has taken so far (what ``n_iter_`` will
    be), and the objective of the problem being solved."""

    _TRON = re.compile(r"iter\s+(\d+)\s.*?\sf\s+(\S+)\s")
    _FINISHED = re.compile(r"#iter\s*=\s*(\d+)")

    def __init__(self, fit: LinearSvcFit) -> None:
        self._fit = fit
        self._pending = b""
        self._most = 0  # most iterations of any problem so far
        self._closed = False
        self.lines = 0

    def feed(self, chunk: bytes) -> None:
        """Bytes read from the pipe (in the reader thread)."""
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            self._line(line.decode("ascii", "replace"))
        # The dual solver's dots arrive on a line that ends only when the problem does.
        dots = _dots(self._pending.decode("ascii", "replace"))
        if dots:
            self._advance(10 * dots, None)

    def _line(self, line: str) -> None:
        self.lines += 1
        tron = self._TRON.search(line)
        if tron is not None:
            try:
                objective: float | None = float(tron.group(2))
            except ValueError:
                objective = None
            # "iter k" is printed while trying step k: k - 1 steps were taken, and ``f``
            # is the objective after them (which is what ``n_iter_`` will count).
            self._advance(int(tron.group(1)) - 1, objective)
            return
        finished = self._FINISHED.search(line)
        if finished is not None:
            self._advance(int(finished.group(1)), None)
            return
        dots = _dots(line)
        if dots:
            self._advance(10 * dots, None)

    def _advance(self, iterations: int, objective: float | None) -> None:
        if self._closed:
            return
        self._most = max(self._most, iterations)
        self._fit.solver_reported(self._most, objective)

    def close(self) -> None:
        """The fit returned: later reports would overwrite the final model's snapshot."""
        self._closed = True


def _dots(line: str) -> int:
    """How many dots a line of only dots holds (after liblinear's ``[LibLinear]``)."""
    rest = line.removeprefix("[LibLinear]").strip()
    return len(rest) if rest and rest.count(".") == len(rest) else 0


class _CapturedStdout:
    """File descriptor 1 redirected into a pipe read by a thread, for the duration of the
    block: where liblinear's C code prints. The runner itself writes nothing on standard
    output while it trains (events and log lines go to standard error). Yields False, and
    captures nothing, when descriptor 1 cannot be duplicated."""

    def __init__(self, consumer: Any) -> None:
        self._consumer = consumer
        self._saved: int | None = None
        self._reader: threading.Thread | None = None

    def __enter__(self) -> bool:
        try:
            _flush_python_stdout()
            saved = os.dup(1)
        except OSError:
            return False
        read_end, write_end = os.pipe()
        os.dup2(write_end, 1)
        os.close(write_end)
        self._saved = saved
        self._reader = threading.Thread(
            target=self._read, args=(read_end,), name="runforge-liblinear-output", daemon=True
        )
        self._reader.start()
        return True

    def _read(self, read_end: int) -> None:
        try:
            while chunk := os.read(read_end, 65536):
                self._consumer(chunk)
        finally:
            os.close(read_end)

    def __exit__(self, *exc: object) -> None:
        if self._saved is None:
            return
        _flush_python_stdout()  # scikit-learn prints "[LibLinear]" from Python
        # Descriptor 1 back; that closes the pipe's last write end, so the reader sees EOF.
        os.dup2(self._saved, 1)
        os.close(self._saved)
        if self._reader is not None:
            self._reader.join(timeout=5.0)


def _flush_python_stdout() -> None:
    if sys.stdout is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stdout.flush()


class ForestFit(FamilyFit):
    """A random forest grown in timed batches of trees with ``warm_start``.

    Validation accuracy is kept by adding each new tree's votes to a running sum (on the
    main thread, when an event is due), so an event costs the new trees' predictions,
    not the whole forest's."""

    family = "random_forest"

    def __init__(self, plan: TrainingPlan, split: Split) -> None:
        from sklearn.ensemble import RandomForestClassifier

        super().__init__(plan, split)
        total = plan.value("n_estimators")
        assert isinstance(total, int)
        self.total = total
        self.forest = RandomForestClassifier(
            n_estimators=1,
            warm_start=True,
            max_depth=plan.value("max_depth"),
            min_samples_leaf=plan.value("min_samples_leaf"),
            max_features=plan.value("max_features"),
            random_state=plan.seed,
            n_jobs=1,
        )
        self._votes = np.zeros((len(self._val_rows), len(split.classes)))
        self._voted = 0

    def run(self) -> None:
        batch = 1
        done = 0
        while done < self.total and not self._stop.is_set():
            target = min(self.total, done + batch)
            self.forest.set_params(n_estimators=target)
            started = time.monotonic()
            self.forest.fit(self.split.x_train, self.split.y_train)
            per_tree = (time.monotonic() - started) / (target - done)
            done = target
            self.snapshot = Snapshot(done, self._frozen_copy())
            batch = max(1, min(self.total, int(FOREST_BATCH_S / max(per_tree, 1e-6))))
        if done == self.total:
            self.forest.set_params(warm_start=False)
            self.snapshot = Snapshot(done, self.forest)
            self.outcome = FitOutcome(done, self.total, converged=None)

    def _frozen_copy(self) -> Any:
        """The forest as of now, unaffected by the trees the worker grows next."""
        frozen = copy.copy(self.forest)
        frozen.estimators_ = list(self.forest.estimators_)
        frozen.set_params(n_estimators=len(frozen.estimators_), warm_start=False)
        return frozen

    def measure(self, snapshot: Snapshot) -> tuple[float | None, float | None]:
        forest = snapshot.classifier
        if forest is None:
            return None, None
        x_val = self.split.x_val[self._val_rows]
        y_val = self.split.y_val[self._val_rows]
        for tree in forest.estimators_[self._voted : snapshot.done]:
            self._votes += tree.predict_proba(x_val)
        self._voted = max(self._voted, snapshot.done)
        predicted = forest.classes_[np.argmax(self._votes, axis=1)]
        return float(np.mean(predicted == y_val)), None


def start_fit(plan: TrainingPlan, split: Split) -> FamilyFit:
    if plan.model_family == "random_forest":
        return ForestFit(plan, split)
    if plan.model_family == "linear_svc":
        return LinearSvcFit(plan, split)
    return LogisticFit(plan, split)


class FitWorker:
    """Runs ``fit.run`` in a daemon thread and keeps what it raised.

    A daemon thread because a cancel does not wait for it: the main thread flushes what
    is finished and the process exits (``os._exit``) with the worker still inside a
    solver that cannot be interrupted."""

    def __init__(self, fit: FamilyFit) -> None:
        self.fit = fit
        self.error: BaseException | None = None
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name=FIT_THREAD_NAME, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            # Reaching max_iter is reported in the run's events and log, not as a warning.
            warnings.simplefilter("ignore", ConvergenceWarning)
            self.fit.run()
        except BaseException as error:  # handed to the main thread, which decides
            self.error = error
        finally:
            self.finished.set()


def fit_thread_running() -> bool:
    """True while a fit worker is still inside scikit-learn (after a cancel)."""
    return any(
        thread.name == FIT_THREAD_NAME and thread.is_alive() for thread in threading.enumerate()
    )
