#!/usr/bin/env bash
# The project's one test command (README: "Test"). On a fresh machine it sets itself up: cargo fetches the
# locked crates from crates.io, and a Python virtual environment (.venv) gets its packages from PyPI (the
# notebooks', onnx/onnxruntime for the test models, tritonclient, moto), and redis-server comes from Debian
# when missing (FSD-Inference's broker). Then it runs every Rust test of the
# workspace (unit, doc and the cross-crate tests in tests/), executes the notebooks on freshly simulated
# reports, and drives `hyscale serve` with the real tritonclient.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== python environment (.venv from PyPI: notebooks, ONNX test models, tritonclient)"
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
requirements=(notebooks/requirements.txt backend/models/requirements.txt tests/clients/requirements.txt)
if ! cat "${requirements[@]}" | cmp -s - .venv/.requirements 2>/dev/null; then
    echo "   installing the pinned packages from PyPI into .venv (first run: a few minutes)"
    # pip's own progress (each package, download bars) on a terminal; quiet in a log.
    if [ -t 1 ]; then pip_output=(--progress-bar on); else pip_output=(--quiet); fi
    .venv/bin/pip install "${pip_output[@]}" --disable-pip-version-check "${requirements[@]/#/-r}"
    cat "${requirements[@]}" > .venv/.requirements
fi
# A real message broker for FSD-Inference's queue channel (backend/tests/fsd.rs starts it on loopback): Redis
# from Debian's packages.
if ! command -v redis-server > /dev/null; then
    echo "== redis-server (Debian package, for the FSD queue channel's tests)"
    if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo > /dev/null; then sudo="sudo"; else
        echo "redis-server is missing and cannot be installed without root: apt-get install redis-server" >&2
        exit 1
    fi
    $sudo apt-get install -y --no-install-recommends redis-server > /dev/null \
        || { $sudo apt-get update > /dev/null && $sudo apt-get install -y --no-install-recommends redis-server > /dev/null; }
fi
# After the environment, so the engine tests find ONNX Runtime in .venv as well as running tract.
echo "== cargo test --workspace --locked"
cargo test --workspace --locked "$@"

# `cargo test` has built target/debug/hyscale (and hyscale-fn) for the cross-crate tests; a separate
# `cargo build` would resolve features differently and rebuild half the tree.
target_dir=$(cargo metadata --format-version 1 --no-deps | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')

echo "== notebooks"
.venv/bin/python notebooks/check.py "$target_dir/debug/hyscale"

echo "== live server driven by tritonclient"
.venv/bin/python tests/clients/triton_check.py "$target_dir/debug/hyscale"
