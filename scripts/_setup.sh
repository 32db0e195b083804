# Sourced by the scripts: create .venv and install the locked dev/test/bench environment
# (requirements/dev.lock) plus this project, editable, into it: once, and again whenever
# pyproject.toml or the lock changes. Needs only python3 (>= 3.10) and pip.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ] \
    || [ requirements/dev.lock -nt .venv/.installed ]; then
    echo "setting up .venv (first run only; log: .venv/install.log)" >&2
    if ! { .venv/bin/python -m pip install --upgrade pip \
           && .venv/bin/python -m pip install -r requirements/dev.lock \
           && .venv/bin/python -m pip install --no-deps --no-build-isolation -e .; } \
           > .venv/install.log 2>&1; then
        tail -n 30 .venv/install.log >&2
        echo "installation failed; see .venv/install.log" >&2
        return 1 2>/dev/null || exit 1
    fi
    touch .venv/.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
