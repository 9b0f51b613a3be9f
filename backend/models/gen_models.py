#!/usr/bin/env python3
"""Writes the backend's test models and their expected outputs (see README.md in this folder).

- mlp.onnx: an MLP classifier, input "input" [batch, 64] -> Gemm 128 -> Relu -> Gemm 10 -> "logits" [batch, 10].
- mlp_batch1.onnx: the same MLP with the batch dimension fixed to 1 (for the batcher's one-by-one path).
- cnn.onnx: a small ResNet-like CNN on "input" [batch, 3, 32, 32]: conv 3->8, a residual block of two 8->8
  convolutions, max-pool, conv 8->16 with stride 2, global average pool, Gemm 16 -> 10 -> "logits" [batch, 10].
- expected.json: the outputs of each model for a fixed input, computed with the Python onnxruntime package.

Everything is drawn from one fixed seed, the models use opset 17 and the batch dimension is the symbolic
"batch" (except in mlp_batch1.onnx), so running this script again writes byte-identical files.
"""

import json
import pathlib

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

SEED = 20261123
OPSET = 17
# IR version 8 is the one that goes with opset 17; older readers (tract) accept it.
IR_VERSION = 8
HERE = pathlib.Path(__file__).resolve().parent


def he(rng, shape, fan_in):
    """He-initialised weights, float32."""
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def small(rng, shape):
    """Small biases, float32."""
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def fixed_input(shape):
    """The fixed test input: x[i] = ((i * 37) mod 101) / 50 - 1 over the flattened tensor.

    Exact in float32 and trivial to rebuild in any language, so expected.json need not store inputs.
    """
    n = int(np.prod(shape))
    i = np.arange(n, dtype=np.int64)
    return (((i * 37) % 101).astype(np.float32) / np.float32(50.0) - np.float32(1.0)).reshape(shape)


def save(graph, name):
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="hyscale gen_models.py",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    path = HERE / name
    path.write_bytes(model.SerializeToString())
    return path


def mlp_graph(weights, batch):
    w1, b1, w2, b2 = weights
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h1"], transB=1),
        helper.make_node("Relu", ["h1"], ["a1"]),
        helper.make_node("Gemm", ["a1", "w2", "b2"], ["logits"], transB=1),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    return helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        inits,
    )


def cnn_graph(rng):
    params = {}
    for name, c_in, c_out in (("c1", 3, 8), ("r1", 8, 8), ("r2", 8, 8), ("c2", 8, 16)):
        params[name] = (he(rng, (c_out, c_in, 3, 3), c_in * 9), small(rng, (c_out,)))
    fc_w = he(rng, (10, 16), 16)
    fc_b = small(rng, (10,))

    def conv_node(name, x, y, stride=1):
        return helper.make_node(
            "Conv", [x, f"{name}_w", f"{name}_b"], [y], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]
        )

    nodes = [
        conv_node("c1", "input", "c1_y"),
        helper.make_node("Relu", ["c1_y"], ["c1_a"]),
        conv_node("r1", "c1_a", "r1_y"),
        helper.make_node("Relu", ["r1_y"], ["r1_a"]),
        conv_node("r2", "r1_a", "r2_y"),
        helper.make_node("Add", ["r2_y", "c1_a"], ["res"]),
        helper.make_node("Relu", ["res"], ["res_a"]),
        helper.make_node("MaxPool", ["res_a"], ["pool"], kernel_shape=[2, 2], strides=[2, 2]),
        conv_node("c2", "pool", "c2_y", stride=2),
        helper.make_node("Relu", ["c2_y"], ["c2_a"]),
        helper.make_node("GlobalAveragePool", ["c2_a"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1),
    ]
    inits = []
    for name, (w, b) in params.items():
        inits += [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
    inits += [numpy_helper.from_array(fc_w, "fc_w"), numpy_helper.from_array(fc_b, "fc_b")]
    return helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )


def run(path, x):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    (y,) = session.run(["logits"], {"input": x})
    return y


def main():
    rng = np.random.default_rng(SEED)
    mlp_weights = (he(rng, (128, 64), 64), small(rng, (128,)), he(rng, (10, 128), 128), small(rng, (10,)))
    mlp = save(mlp_graph(mlp_weights, "batch"), "mlp.onnx")
    mlp1 = save(mlp_graph(mlp_weights, 1), "mlp_batch1.onnx")
    cnn = save(cnn_graph(rng), "cnn.onnx")

    cases = []
    for path, shape in ((mlp, [3, 64]), (mlp1, [1, 64]), (cnn, [2, 3, 32, 32])):
        x = fixed_input(shape)
        y = run(path, x)
        cases.append(
            {
                "model": path.name,
                "input": {"name": "input", "shape": shape},
                "output": {"name": "logits", "shape": list(y.shape), "data": [float(v) for v in y.ravel()]},
            }
        )
    expected = {
        "generator": "backend/models/gen_models.py",
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "input_formula": "x[i] = ((i * 37) mod 101) / 50 - 1, float32, over the flattened input",
        "tolerance": 1e-4,
        "cases": cases,
    }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    for path in (mlp, mlp1, cnn):
        print(f"wrote {path.name}: {path.stat().st_size} bytes")
    print("wrote expected.json")


if __name__ == "__main__":
    main()
