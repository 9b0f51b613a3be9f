"""KServe's Python ModelServer (PyPI `kserve`) serving the project's ONNX models with onnxruntime: the peer
`hyscale bench serve --url ... --grpc-url ...` is compared with (scripts/peer_kserve.sh runs both).

Usage: python scripts/peer/kserve_onnx.py --model NAME=PATH [--model ...] [--http-port 8080] [--grpc-port 8081]
           [--intra-threads N]

Each model is a `kserve.Model` whose `predict` runs one onnxruntime session on the v2 request's inputs and
answers with every output (binary when the request asks, as the v2 protocol's binary extension says).
KServe itself has no dynamic batching in its Python server: each request runs alone.
"""

import argparse

import kserve
import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse


class OnnxModel(kserve.Model):
    def __init__(self, name, path, intra_threads):
        super().__init__(name)
        options = ort.SessionOptions()
        if intra_threads:
            options.intra_op_num_threads = intra_threads
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.ready = True

    async def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        feeds = {i.name: i.as_numpy().astype(np.float32, copy=False) for i in payload.inputs}
        results = self.session.run(self.outputs, feeds)
        outputs = []
        for name, value in zip(self.outputs, results):
            out = InferOutput(name=name, shape=list(value.shape), datatype="FP32")
            out.set_data_from_numpy(value, binary_data=payload.use_binary_outputs)
            outputs.append(out)
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
        )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", action="append", required=True, help="NAME=PATH to an ONNX file")
    parser.add_argument("--intra-threads", type=int, default=0)
    args, _ = parser.parse_known_args()
    models = []
    for spec in args.model:
        name, path = spec.split("=", 1)
        models.append(OnnxModel(name, path, args.intra_threads))
    # Ports and workers come from KServe's own flags (--http_port, --grpc_port, --workers), parsed by kserve.
    kserve.ModelServer().start(models)


if __name__ == "__main__":
    main()
