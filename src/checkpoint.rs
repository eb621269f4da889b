//! Model weights as plain data, and their safetensors files.
//!
//! Names and shapes follow PyTorch's `MyLeNet5.state_dict()`, so a file
//! written here loads in PyTorch with `safetensors.torch.load_file`, and a
//! file exported from PyTorch loads here.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::results::write_atomic;

/// Named f32 tensors: (name, shape, row-major values).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Weights {
    pub fn to_safetensors(&self, metadata: HashMap<String, String>) -> Result<Vec<u8>> {
        let bytes: Vec<Vec<u8>> = self
            .tensors
            .iter()
            .map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
            .collect();
        let views: Vec<(String, TensorView)> = self
            .tensors
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), data)| {
                Ok((
                    name.clone(),
                    TensorView::new(Dtype::F32, shape.clone(), data)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(safetensors::serialize(views, &Some(metadata))?)
    }

    pub fn from_safetensors(file: &str, bytes: &[u8]) -> Result<Self> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| anyhow::anyhow!("{file}: not a safetensors file: {e}"))?;
        let mut tensors = Vec::new();
        let mut names = st.names();
        names.sort();
        for name in names {
            let view = st.tensor(name)?;
            let values: Vec<f32> = match view.dtype() {
                Dtype::F32 => view
                    .data()
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                Dtype::F64 => view
                    .data()
                    .chunks_exact(8)
                    .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                    .collect(),
                other => bail!(
                    "{file}: tensor {name:?} is {other:?}; only F32 (or F64) weights can be read"
                ),
            };
            tensors.push((name.to_string(), view.shape().to_vec(), values));
        }
        Ok(Weights { tensors })
    }

    pub fn save(&self, path: &Path, metadata: HashMap<String, String>) -> Result<()> {
        write_atomic(path, &self.to_safetensors(metadata)?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading checkpoint {}", path.display()))?;
        Self::from_safetensors(&path.display().to_string(), &bytes)
    }
}
