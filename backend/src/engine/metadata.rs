//! What a loaded model takes and returns: tensor names, element types and shapes.

use std::fmt;

/// The element type of a tensor, named as the Open Inference Protocol names it (`FP32`, `INT64`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElementType {
    /// 32-bit float (the only type the backend runs today).
    F32,
    /// 64-bit float.
    F64,
    /// 16-bit float.
    F16,
    /// bfloat16.
    Bf16,
    /// Signed integers.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    /// Boolean.
    Bool,
    /// Strings (`BYTES` in the protocol).
    String,
    /// Anything else, by the engine's name for it.
    Other(String),
}

impl ElementType {
    /// The Open Inference Protocol (KServe v2) datatype name.
    pub fn protocol_name(&self) -> &str {
        match self {
            ElementType::F32 => "FP32",
            ElementType::F64 => "FP64",
            ElementType::F16 => "FP16",
            ElementType::Bf16 => "BF16",
            ElementType::I8 => "INT8",
            ElementType::I16 => "INT16",
            ElementType::I32 => "INT32",
            ElementType::I64 => "INT64",
            ElementType::U8 => "UINT8",
            ElementType::U16 => "UINT16",
            ElementType::U32 => "UINT32",
            ElementType::U64 => "UINT64",
            ElementType::Bool => "BOOL",
            ElementType::String => "BYTES",
            ElementType::Other(name) => name,
        }
    }

    pub(crate) fn from_ort(t: ort::value::TensorElementType) -> ElementType {
        use ort::value::TensorElementType as T;
        match t {
            T::Float32 => ElementType::F32,
            T::Float64 => ElementType::F64,
            T::Float16 => ElementType::F16,
            T::Bfloat16 => ElementType::Bf16,
            T::Int8 => ElementType::I8,
            T::Int16 => ElementType::I16,
            T::Int32 => ElementType::I32,
            T::Int64 => ElementType::I64,
            T::Uint8 => ElementType::U8,
            T::Uint16 => ElementType::U16,
            T::Uint32 => ElementType::U32,
            T::Uint64 => ElementType::U64,
            T::Bool => ElementType::Bool,
            T::String => ElementType::String,
            other => ElementType::Other(other.to_string()),
        }
    }
}

impl fmt::Display for ElementType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.protocol_name())
    }
}

/// One dimension of a declared tensor shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dim {
    /// A fixed size.
    Fixed(usize),
    /// A size chosen at run time, with its symbol (`batch`) where the engine reports it: ONNX Runtime does,
    /// tract does not.
    Dynamic(Option<String>),
}

impl Dim {
    /// The size in the Open Inference Protocol's metadata convention: -1 for a dynamic dimension.
    pub fn protocol_size(&self) -> i64 {
        match self {
            Dim::Fixed(n) => i64::try_from(*n).unwrap_or(i64::MAX),
            Dim::Dynamic(_) => -1,
        }
    }

    fn admits(&self, n: usize) -> bool {
        match self {
            Dim::Fixed(m) => *m == n,
            Dim::Dynamic(_) => true,
        }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Dynamic(Some(s)) if !s.is_empty() => f.write_str(s),
            Dim::Dynamic(_) => f.write_str("?"),
        }
    }
}

/// A declared input or output of a model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name in the graph.
    pub name: String,
    /// Its element type.
    pub element_type: ElementType,
    /// Its declared shape.
    pub shape: Vec<Dim>,
}

impl TensorInfo {
    /// Why `shape` does not fit this declaration, or `None` when it fits.
    pub fn shape_mismatch(&self, shape: &[usize]) -> Option<String> {
        if shape.len() != self.shape.len() {
            return Some(format!(
                "input '{}' has rank {} {:?}, the model expects rank {} {}",
                self.name,
                shape.len(),
                shape,
                self.shape.len(),
                self.shape_string()
            ));
        }
        let bad = self.shape.iter().zip(shape).position(|(d, &n)| !d.admits(n))?;
        Some(format!(
            "input '{}' has shape {:?}, the model expects {} (dimension {bad} must be {})",
            self.name,
            shape,
            self.shape_string(),
            self.shape[bad]
        ))
    }

    /// The shape as text, e.g. `[batch, 3, 32, 32]`.
    pub fn shape_string(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(Dim::to_string).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// How a model's leading (batch) dimension lets requests be combined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchDim {
    /// Every input starts with a dynamic dimension: any number of rows runs at once.
    Dynamic,
    /// Every input starts with this fixed size: runs hold exactly that many rows (padded when fewer).
    Fixed(usize),
    /// Some input has no leading dimension in common with the others: requests run one by one, unchanged.
    None,
}

/// The inputs and outputs of a loaded model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelMetadata {
    /// Declared inputs, in the graph's order.
    pub inputs: Vec<TensorInfo>,
    /// Declared outputs, in the graph's order.
    pub outputs: Vec<TensorInfo>,
}

impl ModelMetadata {
    /// The batch dimension shared by all inputs (the first dimension), if there is one.
    pub fn batch_dim(&self) -> BatchDim {
        let firsts: Vec<Option<&Dim>> = self.inputs.iter().map(|i| i.shape.first()).collect();
        match firsts.first() {
            Some(Some(Dim::Dynamic(_))) if firsts.iter().all(|d| matches!(d, Some(Dim::Dynamic(_)))) => {
                BatchDim::Dynamic
            }
            Some(Some(Dim::Fixed(n))) if firsts.iter().all(|d| *d == Some(&Dim::Fixed(*n))) => BatchDim::Fixed(*n),
            _ => BatchDim::None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(name: &str, shape: Vec<Dim>) -> TensorInfo {
        TensorInfo { name: name.into(), element_type: ElementType::F32, shape }
    }

    #[test]
    fn batch_dimension_is_read_from_the_first_dimension_of_every_input() {
        let dynamic = |n: &str| info(n, vec![Dim::Dynamic(Some("batch".into())), Dim::Fixed(64)]);
        let fixed = |n: &str, b| info(n, vec![Dim::Fixed(b), Dim::Fixed(64)]);
        let m = |inputs| ModelMetadata { inputs, outputs: vec![] };
        assert_eq!(m(vec![dynamic("a"), dynamic("b")]).batch_dim(), BatchDim::Dynamic);
        assert_eq!(m(vec![fixed("a", 1)]).batch_dim(), BatchDim::Fixed(1));
        assert_eq!(m(vec![fixed("a", 1), fixed("b", 2)]).batch_dim(), BatchDim::None);
        assert_eq!(m(vec![dynamic("a"), fixed("b", 2)]).batch_dim(), BatchDim::None);
        assert_eq!(m(vec![info("s", vec![])]).batch_dim(), BatchDim::None);
    }

    #[test]
    fn shape_mismatches_name_the_input_and_dimension() {
        let i = info("input", vec![Dim::Dynamic(Some("batch".into())), Dim::Fixed(64)]);
        assert_eq!(i.shape_mismatch(&[7, 64]), None);
        let e = i.shape_mismatch(&[7, 63]).unwrap();
        assert!(e.contains("'input'") && e.contains("[batch, 64]") && e.contains("dimension 1 must be 64"), "{e}");
        let e = i.shape_mismatch(&[64]).unwrap();
        assert!(e.contains("rank 1"), "{e}");
    }
}
