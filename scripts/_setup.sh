# Sourced by the scripts: create .venv and install the project (with dev extras) into it,
# once, and again whenever pyproject.toml changes. Needs only python3 (>= 3.10) and pip.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch .venv/.installed
fi
export PATH="$PWD/.venv/bin:$PATH"
