#!/usr/bin/env bash
# The peer comparison (not run by CI): the same load, from `hyscale bench serve`, against hyscale's server and
# against KServe's Python ModelServer serving the same ONNX files with onnxruntime; the two tables one after
# the other, with the engine alone measured in the same run.
#
#   bash scripts/peer_kserve.sh [extra `hyscale bench serve` flags, e.g. --duration-s 5 --concurrency 1,8,32]
#
# Sets up its own virtual environment (.venv-peer, from PyPI: kserve, onnxruntime) and uses the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-peer/bin/python ]; then
    python3 -m venv .venv-peer
    .venv-peer/bin/pip install --disable-pip-version-check -r scripts/peer/requirements.txt
fi
cargo build --release --locked --bin hyscale
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
hyscale="$target_dir/release/hyscale"
threads=${INTRA_THREADS:-1}

echo "== hyscale serve (live/mlp.toml), intra-op threads $threads"
"$hyscale" bench serve --config live/mlp.toml --intra-threads "$threads" --out out/peer_hyscale.json "$@"

echo "== KServe ModelServer $(.venv-peer/bin/python -c 'import kserve, importlib.metadata as m; print(m.version("kserve"))'), same models, intra-op threads $threads"
.venv-peer/bin/python scripts/peer/kserve_onnx.py --model mlp=backend/models/mlp.onnx --model cnn=backend/models/cnn.onnx \
    --intra-threads "$threads" --http_port 8080 --grpc_port 8081 --workers 1 > out/peer_kserve.log 2>&1 &
peer=$!
trap 'kill $peer 2>/dev/null || true' EXIT
for _ in $(seq 1 60); do
    curl -sf http://127.0.0.1:8080/v2/health/ready > /dev/null && break
    sleep 1
done
"$hyscale" bench serve --config live/mlp.toml --intra-threads "$threads" --url http://127.0.0.1:8080 \
    --grpc-url http://127.0.0.1:8081 --out out/peer_kserve.json "$@"
