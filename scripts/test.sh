#!/usr/bin/env bash
# The project's one test command (README: "Test"). On a fresh machine it sets itself up: cargo fetches the
# locked crates from crates.io, and a Python virtual environment (.venv) gets the notebooks' packages from
# PyPI. Then it runs every Rust test of the workspace (unit, doc and the cross-crate tests in tests/) and
# executes the notebooks on freshly simulated reports.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== cargo test --workspace --locked"
cargo test --workspace --locked "$@"

echo "== notebooks"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
if ! cmp -s notebooks/requirements.txt .venv/.requirements 2>/dev/null; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r notebooks/requirements.txt
    cp notebooks/requirements.txt .venv/.requirements
fi
target_dir=$(cargo metadata --format-version 1 --no-deps | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
cargo build --locked --bin hyscale
.venv/bin/python notebooks/check.py "$target_dir/debug/hyscale"
