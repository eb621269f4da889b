//! Model weights as plain data, and their safetensors files.
//!
//! Names and shapes follow PyTorch's `MyLeNet5.state_dict()`, so a file
//! written here loads in PyTorch with `safetensors.torch.load_file`, and a
//! file exported from PyTorch loads here.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::atomic::write_atomic;

/// The safetensors header entry that holds runner's metadata.
pub const METADATA_KEY: &str = "runner";

/// Named f32 tensors: (name, shape, row-major values).
#[derive(Debug, Clone, PartialEq)]
pub struct Weights {
    pub tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl Weights {
    /// Serializes with `metadata` as one header entry, "runner", holding a
    /// JSON object: the safetensors header keeps metadata in a HashMap whose
    /// order changes from run to run, and one entry keeps the bytes of the
    /// same weights the same.
    pub fn to_safetensors(&self, metadata: &BTreeMap<String, String>) -> Result<Vec<u8>> {
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
        let mut header = HashMap::new();
        header.insert(METADATA_KEY.to_string(), serde_json::to_string(metadata)?);
        Ok(safetensors::serialize(views, &Some(header))?)
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

    pub fn save(&self, path: &Path, metadata: &BTreeMap<String, String>) -> Result<()> {
        write_atomic(path, &self.to_safetensors(metadata)?)
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading checkpoint {}", path.display()))?;
        Self::from_safetensors(&path.display().to_string(), &bytes)
    }

    /// Checks that a file is a whole, well-formed safetensors file (header,
    /// offsets and length), without converting its tensors.
    pub fn verify(path: &Path) -> Result<()> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading checkpoint {}", path.display()))?;
        SafeTensors::deserialize(&bytes)
            .map(|_| ())
            .map_err(|e| anyhow::anyhow!("{}: not a whole safetensors file: {e}", path.display()))
    }

    /// The metadata runner wrote into a checkpoint (empty for files from
    /// elsewhere, e.g. PyTorch).
    pub fn load_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading checkpoint {}", path.display()))?;
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: not a safetensors file: {e}", path.display()))?;
        let Some(text) = header.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) else {
            return Ok(BTreeMap::new());
        };
        serde_json::from_str(text)
            .with_context(|| format!("{}: unreadable runner metadata", path.display()))
    }
}

/// Everything a run needs to continue exactly where it stopped: the
/// weights, the optimizer's momentum and the epoch counter. The learning
/// rate follows from the epoch, and each epoch's shuffle from the seed and
/// the epoch, so no generator state needs saving.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    pub epochs_done: usize,
    pub best_epoch: Option<usize>,
    pub best_val_acc: Option<f64>,
    pub weights: Weights,
    /// Momentum buffers, named like the weights.
    pub momentum: Weights,
}

impl TrainState {
    /// One safetensors file: `weights.<name>` and `momentum.<name>` tensors,
    /// the counters in its metadata. Written atomically, so a run killed at
    /// any moment leaves either the previous epoch's state or this one.
    pub fn save(&self, path: &Path, config_hash: &str) -> Result<()> {
        let mut tensors = Vec::new();
        for (prefix, w) in [("weights", &self.weights), ("momentum", &self.momentum)] {
            for (name, shape, values) in &w.tensors {
                tensors.push((format!("{prefix}.{name}"), shape.clone(), values.clone()));
            }
        }
        let mut meta = BTreeMap::new();
        meta.insert("epochs_done".to_string(), self.epochs_done.to_string());
        if let (Some(e), Some(a)) = (self.best_epoch, self.best_val_acc) {
            meta.insert("best_epoch".to_string(), e.to_string());
            // Exact round trip of the f64.
            meta.insert("best_val_acc_bits".to_string(), a.to_bits().to_string());
        }
        meta.insert("config_hash".to_string(), config_hash.to_string());
        Weights { tensors }.save(path, &meta)
    }

    /// Reads a state saved by `save`, checking it belongs to `config_hash`.
    pub fn load(path: &Path, config_hash: &str) -> Result<Self> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).with_context(|| format!("reading {file}"))?;
        let (_, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        let meta: BTreeMap<String, String> = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(METADATA_KEY))
            .and_then(|json| serde_json::from_str(json).ok())
            .unwrap_or_default();
        let get = |key: &str| meta.get(key).cloned();
        if get("config_hash").as_deref() != Some(config_hash) {
            bail!("{file} belongs to another config");
        }
        let epochs_done = get("epochs_done")
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{file}: no epochs_done"))?;
        let best_epoch = get("best_epoch").and_then(|v| v.parse().ok());
        let best_val_acc = get("best_val_acc_bits")
            .and_then(|v| v.parse().ok())
            .map(f64::from_bits);
        let all = Weights::from_safetensors(&file, &bytes)?;
        let part = |prefix: &str| Weights {
            tensors: all
                .tensors
                .iter()
                .filter_map(|(n, s, v)| {
                    n.strip_prefix(prefix)
                        .map(|n| (n.to_string(), s.clone(), v.clone()))
                })
                .collect(),
        };
        Ok(TrainState {
            epochs_done,
            best_epoch,
            best_val_acc,
            weights: part("weights."),
            momentum: part("momentum."),
        })
    }
}
