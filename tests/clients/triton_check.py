"""End to end: `hyscale serve` on loopback, driven by NVIDIA's tritonclient (a client no one here wrote).

Usage: python tests/clients/triton_check.py PATH/TO/hyscale

Starts the server on free ports with the project's test models (live/mlp.toml), then checks, over REST:
liveness and readiness, model metadata, inference with binary tensors (tritonclient's default) and with JSON
tensors against the outputs expected.json holds (computed by Python onnxruntime), concurrent requests, and
that malformed requests (wrong shape, wrong datatype, unknown model, unknown input) get 4xx answers naming
the problem; and over gRPC (tritonclient.grpc): liveness, readiness, metadata, the same exact outputs, and
malformed requests answered with INVALID_ARGUMENT / NOT_FOUND naming the problem. Exits non-zero on the
first failure.
"""

import json
import os
import subprocess
import sys

import numpy as np
import tritonclient.grpc as grpc
import tritonclient.http as http
from tritonclient.utils import InferenceServerException

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def expected_cases():
    with open(os.path.join(ROOT, "backend", "models", "expected.json")) as f:
        spec = json.load(f)
    cases = {}
    for case in spec["cases"]:
        shape = case["input"]["shape"]
        n = int(np.prod(shape))
        x = ((np.arange(n) * 37) % 101) / 50.0 - 1.0
        cases[case["model"]] = (x.astype(np.float32).reshape(shape), np.array(case["output"]["data"], np.float32), spec["tolerance"])
    return cases


def start(binary):
    proc = subprocess.Popen(
        [binary, "serve", "--config", os.path.join(ROOT, "live", "mlp.toml"), "--listen", "127.0.0.1:0",
         "--grpc-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # Two lines, in either order: "listening on http://ADDR" and "gRPC on ADDR".
    rest = grpc_addr = None
    for _ in range(2):
        line = proc.stdout.readline().strip()
        if line.startswith("listening on http://"):
            rest = line.removeprefix("listening on http://")
        elif line.startswith("gRPC on "):
            grpc_addr = line.removeprefix("gRPC on ")
        else:
            proc.kill()
            raise SystemExit(f"server did not start: {line!r} {proc.stderr.read()}")
    return proc, rest, grpc_addr


def grpc_checks(addr, cases):
    """The same models over gRPC, with Triton's own gRPC client."""
    client = grpc.InferenceServerClient(url=addr)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mlp") and client.is_model_ready("cnn")
    meta = client.get_model_metadata("mlp")
    assert meta.inputs[0].name == "input" and list(meta.inputs[0].shape) == [-1, 64], meta
    checked = 0
    for model_file, (x, want, tol) in cases.items():
        model = model_file.removesuffix(".onnx")
        if model not in ("mlp", "cnn"):
            continue
        inp = grpc.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        result = client.infer(model, [inp], outputs=[grpc.InferRequestedOutput("logits")])
        err = float(np.max(np.abs(result.as_numpy("logits").reshape(-1) - want)))
        assert err <= tol, f"{model} over gRPC: max error {err} > {tol}"
        checked += 1
    bad = grpc.InferInput("input", [1, 63], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 63), np.float32))
    text = expect_error(lambda: client.infer("mlp", [bad]), None, "dimension 1 must be 64")
    assert "INVALID_ARGUMENT" in text, text
    text = expect_error(lambda: client.infer("resnet", [bad]), None, "unknown model 'resnet'")
    assert "NOT_FOUND" in text, text
    client.close()
    return checked


def expect_error(fn, status, fragment):
    try:
        fn()
    except InferenceServerException as e:
        text = str(e)
        assert fragment in text, f"expected {fragment!r} in {text!r}"
        if status is not None:
            assert e.status() is None or str(status) in str(e.status()), f"status {e.status()} != {status}: {text}"
        return text
    raise AssertionError(f"expected an error containing {fragment!r}")


def main():
    binary = sys.argv[1]
    proc, url, grpc_addr = start(binary)
    try:
        client = http.InferenceServerClient(url=url)
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("mlp") and client.is_model_ready("cnn")
        meta = client.get_model_metadata("mlp")
        assert meta["inputs"][0]["name"] == "input" and meta["inputs"][0]["shape"] == [-1, 64], meta
        assert meta["outputs"][0]["datatype"] == "FP32", meta

        cases = expected_cases()
        checked = 0
        for model_file, (x, want, tol) in cases.items():
            model = model_file.removesuffix(".onnx")
            if model not in ("mlp", "cnn"):
                continue
            for binary_data in (True, False):
                inp = http.InferInput("input", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary_data)
                out = http.InferRequestedOutput("logits", binary_data=binary_data)
                result = client.infer(model, [inp], outputs=[out])
                got = result.as_numpy("logits").reshape(-1)
                err = float(np.max(np.abs(got - want)))
                assert err <= tol, f"{model} (binary={binary_data}): max error {err} > {tol}"
                checked += 1

        # Concurrent single-row requests (tritonclient's own async API: its HTTP client runs on gevent and
        # must not be shared across OS threads) are batched by the server; each gets its own row back.
        x, want, _ = cases["mlp.onnx"]
        client_pool = http.InferenceServerClient(url=url, concurrency=8)
        pending = []
        for i in range(48):
            inp = http.InferInput("input", [1, 64], "FP32")
            inp.set_data_from_numpy(x[i % 3 : i % 3 + 1])
            pending.append((i, client_pool.async_infer("mlp", [inp])))
        for i, request in pending:
            got = request.get_result().as_numpy("logits").reshape(-1)
            assert np.max(np.abs(got - want.reshape(3, 10)[i % 3])) <= 1e-4, f"row {i}"
        client_pool.close()

        # Malformed requests: 4xx naming the problem.
        bad = http.InferInput("input", [1, 63], "FP32")
        bad.set_data_from_numpy(np.zeros((1, 63), np.float32))
        expect_error(lambda: client.infer("mlp", [bad]), 400, "dimension 1 must be 64")
        wrong_type = http.InferInput("input", [1, 64], "INT32")
        wrong_type.set_data_from_numpy(np.zeros((1, 64), np.int32), binary_data=False)
        expect_error(lambda: client.infer("mlp", [wrong_type]), 400, "datatype INT32")
        expect_error(lambda: client.infer("resnet", [bad]), 404, "unknown model 'resnet'")
        stray = http.InferInput("tokens", [1, 64], "FP32")
        stray.set_data_from_numpy(np.zeros((1, 64), np.float32))
        expect_error(lambda: client.infer("mlp", [stray]), 400, "missing input 'input'")
        grpc_checked = grpc_checks(grpc_addr, cases)
        print(
            f"triton client: REST {checked} exact-output checks, 48 concurrent requests, 4 malformed requests; "
            f"gRPC {grpc_checked} exact-output checks, 2 malformed requests: ok"
        )
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()
