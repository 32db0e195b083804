"""Fitting the three model families in short chunks, so a cancel is seen between chunks.

logistic_regression: ``LogisticRegression`` (saga), one epoch per chunk via warm start.
linear_svc: a linear SVM (``SGDClassifier`` with hinge loss), a batch of iterations per
chunk via ``partial_fit`` (scikit-learn's ``LinearSVC`` cannot resume, so it cannot be
interrupted). random_forest: ``RandomForestClassifier`` grown a few trees per chunk via
warm start. Linear models see standardized features; the saved model is a ``Pipeline``
so that it predicts from raw features.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from sklearn.ensemble import RandomForestClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import hinge_loss, log_loss
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from runforge_runner.dataset import VALIDATION_FRACTION, Dataset
from runforge_runner.params import TrainingPlan

Array = npt.NDArray[Any]

# Upper bound on progress events per run for families trained in batches: enough for a
# smooth progress bar, few enough that every chunk does real work.
MAX_PROGRESS_EVENTS = 200


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
class Progress:
    """Where training stands after a chunk: units done (epochs, iterations or trees)."""

    done: int
    total: int
    val_accuracy: float
    loss: float | None


class ChunkedFit(Protocol):
    total: int
    done: int

    def fit_chunk(self) -> Progress: ...

    def model(self) -> Pipeline | None:
        """The model as trained so far, or None before the first chunk."""


class LinearFit:
    """Logistic regression (one saga epoch per chunk) or linear SVM (hinge SGD batches)."""

    def __init__(self, plan: TrainingPlan, split: Split) -> None:
        self._split = split
        self._family = plan.model_family
        self._scaler = StandardScaler().fit(split.x_train)
        self._x_train = self._scaler.transform(split.x_train)
        self._x_val = self._scaler.transform(split.x_val)
        c_value = plan.value("C")
        assert isinstance(c_value, float)
        total = plan.value("max_iter")
        assert isinstance(total, int)
        self.total = total
        self.done = 0
        self._estimator: LogisticRegression | SGDClassifier
        if self._family == "logistic_regression":
            self._per_chunk = 1
            self._estimator = LogisticRegression(
                solver="saga", C=c_value, max_iter=1, tol=0.0, warm_start=True,
                random_state=plan.seed,
            )  # fmt: skip
        else:
            self._per_chunk = max(1, math.ceil(total / MAX_PROGRESS_EVENTS))
            # SGD's alpha is the per-sample regularization that matches LinearSVC's C.
            self._estimator = SGDClassifier(
                loss="hinge", alpha=1.0 / (c_value * len(self._x_train)),
                random_state=plan.seed,
            )  # fmt: skip

    def fit_chunk(self) -> Progress:
        steps = min(self._per_chunk, self.total - self.done)
        with warnings.catch_warnings():
            # One epoch per call never "converges"; the warning would flood the log.
            warnings.simplefilter("ignore", ConvergenceWarning)
            for _ in range(steps):
                if isinstance(self._estimator, LogisticRegression):
                    self._estimator.fit(self._x_train, self._split.y_train)
                else:
                    self._estimator.partial_fit(
                        self._x_train, self._split.y_train, classes=self._split.classes
                    )
        self.done += steps
        val_accuracy = float(self._estimator.score(self._x_val, self._split.y_val))
        if isinstance(self._estimator, LogisticRegression):
            probabilities = self._estimator.predict_proba(self._x_train)
            loss = log_loss(self._split.y_train, probabilities, labels=self._estimator.classes_)
        else:
            decision = self._estimator.decision_function(self._x_train)
            loss = hinge_loss(self._split.y_train, decision, labels=self._split.classes)
        return Progress(self.done, self.total, val_accuracy, float(loss))

    def model(self) -> Pipeline | None:
        if self.done == 0:
            return None
        return Pipeline([("scaler", self._scaler), ("classifier", self._estimator)])


class ForestFit:
    """A random forest grown a batch of trees per chunk.

    Validation accuracy is kept up to date by adding each new tree's votes to a running
    sum, so a progress event costs one tree's prediction, not the whole forest's."""

    def __init__(self, plan: TrainingPlan, split: Split) -> None:
        self._split = split
        total = plan.value("n_estimators")
        assert isinstance(total, int)
        self.total = total
        self.done = 0
        self._per_chunk = max(1, math.ceil(total / MAX_PROGRESS_EVENTS))
        self._forest = RandomForestClassifier(
            n_estimators=0,
            warm_start=True,
            max_depth=plan.value("max_depth"),
            min_samples_leaf=plan.value("min_samples_leaf"),
            max_features=plan.value("max_features"),
            random_state=plan.seed,
            n_jobs=1,
        )
        self._vote_sum = np.zeros((len(split.x_val), len(split.classes)))

    def fit_chunk(self) -> Progress:
        target = min(self.total, self.done + self._per_chunk)
        self._forest.set_params(n_estimators=target)
        self._forest.fit(self._split.x_train, self._split.y_train)
        for tree in self._forest.estimators_[self.done : target]:
            self._vote_sum += tree.predict_proba(self._split.x_val)
        self.done = target
        predicted = self._forest.classes_[np.argmax(self._vote_sum, axis=1)]
        val_accuracy = float(np.mean(predicted == self._split.y_val))
        return Progress(self.done, self.total, val_accuracy, None)

    def model(self) -> Pipeline | None:
        if self.done == 0:
            return None
        return Pipeline([("classifier", self._forest)])


def start_fit(plan: TrainingPlan, split: Split) -> ChunkedFit:
    if plan.model_family == "random_forest":
        return ForestFit(plan, split)
    return LinearFit(plan, split)
