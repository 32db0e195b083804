"""The floor of figure 12: a plain scikit-learn script that does what a training run must
do and nothing more: import, read the CSV with ``numpy.loadtxt``, split 80/20, fit the
same estimator with the same parameters as the std-train preset, score it.

``python benchmarks/plain_fit.py CSV FAMILY``; prints the validation accuracy.
"""

from __future__ import annotations

import os
import sys

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # as the runner does: one core per run

import numpy as np  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

SEED = 42


def estimator(family: str) -> Pipeline:
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier

        return Pipeline(
            [("classifier", RandomForestClassifier(n_estimators=100, random_state=SEED, n_jobs=1))]
        )
    if family == "linear_svc":
        from sklearn.svm import LinearSVC

        classifier = LinearSVC(C=1.0, max_iter=1000, tol=1e-4, random_state=SEED)
    else:
        from sklearn.linear_model import LogisticRegression

        classifier = LogisticRegression(C=1.0, max_iter=1000, tol=1e-4, random_state=SEED)
    return Pipeline([("scaler", StandardScaler()), ("classifier", classifier)])


def main(path: str, family: str) -> None:
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().strip().split(",")
    table = np.loadtxt(path, delimiter=",", skiprows=1)
    label = header.index("label")
    x = np.delete(table, label, axis=1)
    y = table[:, label].astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=0.2, random_state=SEED, stratify=y
    )
    model = estimator(family).fit(x_train, y_train)
    print(f"{model.score(x_val, y_val):.4f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
