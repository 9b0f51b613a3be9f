//! A loaded model and the tensors it takes and returns.

use std::borrow::Cow;

use ort::session::{SessionInputValue, SessionInputs};
use ort::value::{TensorRef, ValueType};

use super::error::EngineError;
use super::metadata::{Dim, ElementType, ModelMetadata, TensorInfo};
use super::{Backend, Device};

/// The number of elements of a tensor of `shape`, or `None` when the product overflows `usize`. Every
/// shape that comes from outside the process goes through this before anything is allocated for it.
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
}

/// A dense f32 tensor in row-major order; `shape[0]` is the batch dimension where the model has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// `shape.iter().product()` values.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor; `None` when `data` does not hold `shape.iter().product()` values.
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Option<Tensor> {
        (element_count(&shape) == Some(data.len())).then_some(Tensor { shape, data })
    }

    /// A tensor of zeros (the caller bounds the shape: see [`element_count`]).
    pub fn zeros(shape: Vec<usize>) -> Tensor {
        let n = shape.iter().product();
        Tensor { shape, data: vec![0.0; n] }
    }

    /// The size of the first (batch) dimension; 1 for a scalar.
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// The `k`-th input of each request stacked along the batch dimension, in order: one tensor whose rows
    /// are every request's rows (the trailing dimensions are the first request's; the server has checked
    /// them against the model). Batching in a VM worker and in a function invocation both use it.
    pub fn stack_rows(requests: &[&[Tensor]], k: usize) -> Tensor {
        let first = requests.first().and_then(|r| r.get(k));
        let mut shape = first.map(|t| t.shape.clone()).unwrap_or_default();
        let parts = requests.iter().filter_map(|r| r.get(k));
        let rows = parts.clone().map(Tensor::rows).sum();
        let mut data = Vec::with_capacity(parts.clone().map(|t| t.data.len()).sum());
        parts.for_each(|t| data.extend_from_slice(&t.data));
        if let Some(first) = shape.first_mut() {
            *first = rows;
        }
        Tensor { shape, data }
    }

    /// This tensor's rows split back into consecutive parts of `rows[i]` rows each (the inverse of
    /// [`Tensor::stack_rows`] for an output); `None` when it has fewer rows than they add up to or no batch
    /// dimension.
    pub fn split_rows(&self, rows: &[usize]) -> Option<Vec<Tensor>> {
        let total = self.rows();
        if self.shape.is_empty() || rows.iter().sum::<usize>() > total {
            return None;
        }
        let row_len = self.data.len().checked_div(total).unwrap_or(0);
        let mut start = 0;
        let parts = rows
            .iter()
            .map(|&n| {
                let mut shape = self.shape.clone();
                shape[0] = n;
                let data = self.data[start * row_len..(start + n) * row_len].to_vec();
                start += n;
                Tensor { shape, data }
            })
            .collect();
        Some(parts)
    }
}

/// A model loaded into the process's engine, ready to run.
///
/// Running takes `&mut self` (engines are not safe to run concurrently on one session); to serve in parallel,
/// load one session per worker. `Session` is `Send`, so it can move to a blocking thread for each run.
#[derive(Debug)]
pub struct Session {
    inner: ort::session::Session,
    name: String,
    metadata: ModelMetadata,
    backend: Backend,
    device: Device,
}

impl Session {
    pub(crate) fn new(
        inner: ort::session::Session,
        name: String,
        backend: Backend,
        device: Device,
    ) -> Result<Session, EngineError> {
        let describe = |outlets: &[ort::value::Outlet]| -> Result<Vec<TensorInfo>, EngineError> {
            outlets
                .iter()
                .map(|o| match o.dtype() {
                    ValueType::Tensor { ty, shape, dimension_symbols } => Ok(TensorInfo {
                        name: o.name().to_string(),
                        element_type: ElementType::from_ort(*ty),
                        shape: shape
                            .iter()
                            .enumerate()
                            .map(|(i, &d)| match usize::try_from(d) {
                                Ok(n) => Dim::Fixed(n),
                                Err(_) => Dim::Dynamic(dimension_symbols.get(i).filter(|s| !s.is_empty()).cloned()),
                            })
                            .collect(),
                    }),
                    other => Err(EngineError::Unsupported {
                        model: name.clone(),
                        what: format!("'{}' is a {other}; only tensors are supported", o.name()),
                    }),
                })
                .collect()
        };
        let metadata = ModelMetadata { inputs: describe(inner.inputs())?, outputs: describe(inner.outputs())? };
        Ok(Session { inner, name, metadata, backend, device })
    }

    /// The model's name (its file name without the extension).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model's declared inputs and outputs.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    /// The engine that runs this session.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Where this session runs.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs the model on one tensor per declared input, in the declared order, and returns one tensor per
    /// declared output, in the declared order. Inputs are checked against the metadata first (count, element
    /// type f32, rank and fixed dimensions), so a bad request is an error naming the input, never an engine
    /// failure.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, EngineError> {
        self.check(inputs)?;
        let model = &self.name;
        let run_error = |reason: String| EngineError::Run { model: model.clone(), reason };
        let mut values: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::with_capacity(inputs.len());
        for (info, t) in self.metadata.inputs.iter().zip(inputs) {
            let view = TensorRef::from_array_view((t.shape.clone(), t.data.as_slice()))
                .map_err(|e| run_error(format!("input '{}': {e}", info.name)))?;
            values.push((Cow::Borrowed(info.name.as_str()), view.into()));
        }
        let outputs =
            self.inner.run(SessionInputs::<'_, '_, 0>::ValueMap(values)).map_err(|e| run_error(e.to_string()))?;
        self.metadata
            .outputs
            .iter()
            .map(|info| {
                let value = outputs.get(&info.name).ok_or_else(|| run_error(format!("no output '{}'", info.name)))?;
                let (shape, data) =
                    value.try_extract_tensor::<f32>().map_err(|e| run_error(format!("output '{}': {e}", info.name)))?;
                let shape = shape.iter().map(|&d| usize::try_from(d).unwrap_or(0)).collect();
                Ok(Tensor { shape, data: data.to_vec() })
            })
            .collect()
    }

    fn check(&self, inputs: &[Tensor]) -> Result<(), EngineError> {
        let bad = |reason: String| EngineError::BadInput { model: self.name.clone(), reason };
        let declared = &self.metadata.inputs;
        if inputs.len() != declared.len() {
            let names: Vec<&str> = declared.iter().map(|i| i.name.as_str()).collect();
            return Err(bad(format!(
                "{} inputs given, the model takes {} ({})",
                inputs.len(),
                declared.len(),
                names.join(", ")
            )));
        }
        for (info, t) in declared.iter().zip(inputs) {
            if info.element_type != ElementType::F32 {
                return Err(EngineError::Unsupported {
                    model: self.name.clone(),
                    what: format!("input '{}' is {}; only FP32 inputs are supported", info.name, info.element_type),
                });
            }
            if t.data.len() != t.shape.iter().product::<usize>() {
                return Err(bad(format!("input '{}' has {} values for shape {:?}", info.name, t.data.len(), t.shape)));
            }
            if let Some(reason) = info.shape_mismatch(&t.shape) {
                return Err(bad(reason));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stack_into_one_batch_and_split_back() {
        let a = [Tensor::new(vec![1, 2], vec![1.0, 2.0]).unwrap()];
        let b = [Tensor::new(vec![2, 2], vec![3.0, 4.0, 5.0, 6.0]).unwrap()];
        let stacked = Tensor::stack_rows(&[&a, &b], 0);
        assert_eq!(stacked, Tensor::new(vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap());
        let parts = stacked.split_rows(&[1, 2]).unwrap();
        assert_eq!(parts, vec![a[0].clone(), b[0].clone()]);
        // A model that answered fewer rows than were sent cannot be split.
        assert_eq!(stacked.split_rows(&[2, 2]), None);
        assert_eq!(Tensor::new(vec![], vec![1.0]).unwrap().split_rows(&[1]), None);
    }
}
