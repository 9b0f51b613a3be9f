//! A fully-connected model as FSD-Inference partitions it: read from an ONNX file (a chain of `Gemm`, or
//! `MatMul` + `Add`, each optionally followed by `Relu`), generated with random weights, written back as
//! ONNX, and cut into each worker's slices: worker `i` of `P` holds rows `split_rows(outputs, P)[i]` of every
//! layer (the split the simulator assumes, `hyscale_policies::fsd::split_rows`), written as one small ONNX
//! model per layer (`Gemm` with those rows, `Relu` where the layer has one). Concatenating the workers'
//! outputs of a layer in worker order gives the whole layer's output.
//!
//! The ONNX protobuf types are tract's (`tract_onnx::pb`, the same `prost` messages the engine reads).

use std::path::Path;

use hyscale_policies::fsd::split_rows;
use prost::Message;
use rand::SeedableRng;
use rand_distr::{Distribution, Normal};
use tract_onnx::pb;

use super::FsdError;

/// One dense layer: `y = x · Wᵀ + b`, then `max(y, 0)` when `relu`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Its inputs.
    pub inputs: usize,
    /// Its outputs (rows of `weights`).
    pub outputs: usize,
    /// Row-major `[outputs][inputs]`.
    pub weights: Vec<f32>,
    /// One per output.
    pub bias: Vec<f32>,
    /// Followed by a ReLU.
    pub relu: bool,
}

/// A chain of dense layers.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// The layers, first to last.
    pub layers: Vec<Dense>,
}

const FLOAT: i32 = 1;
const OPSET: i64 = 17;

impl Mlp {
    /// Random weights (He initialisation, fixed seed) for layers of these widths: `widths[0]` inputs, then
    /// each layer's outputs; ReLU after every layer but the last.
    pub fn generate(widths: &[usize], seed: u64) -> Result<Mlp, FsdError> {
        if widths.len() < 2 || widths.contains(&0) {
            return Err(FsdError::Model(format!(
                "an MLP needs at least two widths, none zero (inputs, then each layer's outputs), got {widths:?}"
            )));
        }
        let mut rng = rand_pcg::Pcg64Mcg::seed_from_u64(seed);
        let layers = widths
            .windows(2)
            .enumerate()
            .map(|(l, w)| {
                let (inputs, outputs) = (w[0], w[1]);
                let he = Normal::new(0.0, (2.0 / inputs as f64).sqrt()).expect("a positive deviation");
                let weights = (0..inputs * outputs).map(|_| he.sample(&mut rng) as f32).collect();
                let bias = (0..outputs).map(|_| (he.sample(&mut rng) * 0.01) as f32).collect();
                Dense { inputs, outputs, weights, bias, relu: l + 2 < widths.len() }
            })
            .collect();
        Ok(Mlp { layers })
    }

    /// Reads a fully-connected chain from an ONNX file; anything else is refused with the node that is not
    /// one.
    pub fn read(path: &Path) -> Result<Mlp, FsdError> {
        let bad = |m: String| FsdError::Model(format!("{}: {m}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let model = pb::ModelProto::decode(bytes.as_slice()).map_err(|e| bad(format!("not an ONNX model: {e}")))?;
        let graph = model.graph.ok_or_else(|| bad("the model has no graph".into()))?;
        let init = |name: &str| graph.initializer.iter().find(|t| t.name == name);
        let mut layers: Vec<Dense> = Vec::new();
        let mut pending: Option<Dense> = None;
        for node in &graph.node {
            let weight = |k: usize| {
                let name = node.input.get(k).map(String::as_str).unwrap_or_default();
                init(name).ok_or_else(|| {
                    bad(format!("node '{}' ({}): input '{name}' is not a constant", node.name, node.op_type))
                })
            };
            match node.op_type.as_str() {
                "Gemm" | "MatMul" => {
                    layers.extend(pending.take());
                    let trans_b = node.op_type == "Gemm" && attr_int(node, "transB") == 1;
                    if node.op_type == "Gemm"
                        && (attr_int(node, "transA") != 0
                            || attr_float(node, "alpha") != 1.0
                            || attr_float(node, "beta") != 1.0)
                    {
                        return Err(bad(format!("node '{}': only Gemm with transA = 0, alpha = beta = 1", node.name)));
                    }
                    let w = weight(1)?;
                    let (dims, data) = (w.dims.clone(), floats(w).map_err(&bad)?);
                    let [a, b] = dims[..] else {
                        return Err(bad(format!("node '{}': weights of shape {dims:?}, not a matrix", node.name)));
                    };
                    let (a, b) = (a as usize, b as usize);
                    // Rows are outputs: Wᵀ when the weights are stored [inputs, outputs].
                    let (inputs, outputs, weights) =
                        if trans_b { (b, a, data) } else { (a, b, transpose(&data, a, b)) };
                    let bias = match node.input.get(2) {
                        Some(_) => floats(weight(2)?).map_err(&bad)?,
                        None => vec![0.0; outputs],
                    };
                    pending = Some(Dense { inputs, outputs, weights, bias, relu: false });
                }
                "Add" => {
                    let layer =
                        pending.as_mut().ok_or_else(|| bad(format!("node '{}': Add without a layer", node.name)))?;
                    let b = floats(weight(1)?).map_err(&bad)?;
                    if b.len() != layer.outputs {
                        return Err(bad(format!(
                            "node '{}': a bias of {} for {} outputs",
                            node.name,
                            b.len(),
                            layer.outputs
                        )));
                    }
                    layer.bias.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                }
                "Relu" => {
                    let layer =
                        pending.as_mut().ok_or_else(|| bad(format!("node '{}': Relu without a layer", node.name)))?;
                    layer.relu = true;
                }
                other => {
                    return Err(bad(format!(
                        "node '{}' is {other}: FSD partitions chains of fully-connected layers (Gemm or MatMul + Add, \
                         Relu)",
                        node.name
                    )));
                }
            }
        }
        layers.extend(pending);
        if layers.is_empty() {
            return Err(bad("no fully-connected layer".into()));
        }
        for (l, pair) in layers.windows(2).enumerate() {
            if pair[0].outputs != pair[1].inputs {
                return Err(bad(format!(
                    "layer {} gives {} outputs, layer {} takes {} inputs",
                    l + 1,
                    pair[0].outputs,
                    l + 2,
                    pair[1].inputs
                )));
            }
        }
        Ok(Mlp { layers })
    }

    /// The whole model as ONNX (input `input` [batch, inputs], output `output`).
    pub fn to_onnx(&self) -> Vec<u8> {
        let mut nodes = Vec::new();
        let mut inits = Vec::new();
        let mut x = "input".to_string();
        for (l, layer) in self.layers.iter().enumerate() {
            let y = if l + 1 == self.layers.len() { "output".to_string() } else { format!("h{l}") };
            push_dense(&mut nodes, &mut inits, layer, &format!("l{l}"), &x, &y);
            x = y;
        }
        let (inputs, outputs) = (self.layers[0].inputs, self.layers.last().map_or(0, |l| l.outputs));
        encode(nodes, inits, inputs, outputs)
    }

    /// Worker `worker` of `workers`'s slice of layer `layer` as ONNX (input `input`, output `output`).
    pub fn slice_onnx(&self, layer: usize, workers: usize, worker: usize) -> Vec<u8> {
        let d = &self.layers[layer];
        let (start, rows) = split_rows(d.outputs, workers)[worker];
        let part = Dense {
            inputs: d.inputs,
            outputs: rows,
            weights: d.weights[start * d.inputs..(start + rows) * d.inputs].to_vec(),
            bias: d.bias[start..start + rows].to_vec(),
            relu: d.relu,
        };
        let (mut nodes, mut inits) = (Vec::new(), Vec::new());
        push_dense(&mut nodes, &mut inits, &part, "slice", "input", "output");
        encode(nodes, inits, d.inputs, rows)
    }

    /// Writes every worker's slices for `workers` under `dir`: `dir/w{i}/layer{l}.onnx`.
    pub fn write_partition(&self, workers: usize, dir: &Path) -> Result<(), FsdError> {
        if let Some((l, d)) = self.layers.iter().enumerate().find(|(_, d)| d.outputs < workers) {
            return Err(FsdError::Model(format!(
                "parallelism {workers} exceeds layer {}'s {} outputs: a worker would have no rows",
                l + 1,
                d.outputs
            )));
        }
        for w in 0..workers {
            let wdir = dir.join(format!("w{w}"));
            std::fs::create_dir_all(&wdir).map_err(|e| FsdError::Io(format!("{}: {e}", wdir.display())))?;
            for l in 0..self.layers.len() {
                let path = wdir.join(format!("layer{l}.onnx"));
                std::fs::write(&path, self.slice_onnx(l, workers, w))
                    .map_err(|e| FsdError::Io(format!("{}: {e}", path.display())))?;
            }
        }
        Ok(())
    }
}

fn attr<'a>(node: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_int(node: &pb::NodeProto, name: &str) -> i64 {
    attr(node, name).map_or(0, |a| a.i)
}

fn attr_float(node: &pb::NodeProto, name: &str) -> f32 {
    attr(node, name).map_or(1.0, |a| a.f)
}

fn floats(t: &pb::TensorProto) -> Result<Vec<f32>, String> {
    if t.data_type != FLOAT {
        return Err(format!("constant '{}' is not FP32 (data type {})", t.name, t.data_type));
    }
    if !t.float_data.is_empty() {
        return Ok(t.float_data.clone());
    }
    if !t.raw_data.len().is_multiple_of(4) {
        return Err(format!("constant '{}' has {} raw bytes, not FP32 values", t.name, t.raw_data.len()));
    }
    Ok(t.raw_data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

fn transpose(data: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = data[r * cols + c];
        }
    }
    out
}

fn tensor(name: &str, dims: &[usize], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.iter().map(|&d| d as i64).collect(),
        data_type: FLOAT,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn push_dense(
    nodes: &mut Vec<pb::NodeProto>,
    inits: &mut Vec<pb::TensorProto>,
    d: &Dense,
    name: &str,
    x: &str,
    y: &str,
) {
    let (w, b) = (format!("{name}_w"), format!("{name}_b"));
    inits.push(tensor(&w, &[d.outputs, d.inputs], &d.weights));
    inits.push(tensor(&b, &[d.outputs], &d.bias));
    let gemm_out = if d.relu { format!("{name}_pre") } else { y.to_string() };
    let trans_b = pb::AttributeProto {
        name: "transB".into(),
        i: 1,
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        ..Default::default()
    };
    nodes.push(pb::NodeProto {
        name: format!("{name}_gemm"),
        op_type: "Gemm".into(),
        input: vec![x.into(), w, b],
        output: vec![gemm_out.clone()],
        attribute: vec![trans_b],
        ..Default::default()
    });
    if d.relu {
        nodes.push(pb::NodeProto {
            name: format!("{name}_relu"),
            op_type: "Relu".into(),
            input: vec![gemm_out],
            output: vec![y.into()],
            ..Default::default()
        });
    }
}

fn value_info(name: &str, width: usize) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension};
    let dim = |v: dimension::Value| Dimension { value: Some(v), ..Default::default() };
    let shape = pb::TensorShapeProto {
        dim: vec![dim(dimension::Value::DimParam("batch".into())), dim(dimension::Value::DimValue(width as i64))],
    };
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: FLOAT,
                shape: Some(shape),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn encode(node: Vec<pb::NodeProto>, initializer: Vec<pb::TensorProto>, inputs: usize, outputs: usize) -> Vec<u8> {
    let graph = pb::GraphProto {
        name: "fsd".into(),
        node,
        initializer,
        input: vec![value_info("input", inputs)],
        output: vec![value_info("output", outputs)],
        ..Default::default()
    };
    let model = pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto { domain: String::new(), version: OPSET }],
        producer_name: "hyscale".into(),
        graph: Some(graph),
        ..Default::default()
    };
    model.encode_to_vec()
}
