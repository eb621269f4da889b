//! Which device runs the model: `train.device = "auto" | "cpu" | "cuda"`
//! resolved against this build and machine.

use anyhow::{bail, Result};
#[cfg(feature = "cuda")]
use dfdx::prelude::*;

use crate::config::DeviceChoice;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Cpu,
    #[cfg(feature = "cuda")]
    Cuda,
}

impl Backend {
    /// What runs the model, for people and summaries: on the CPU, with
    /// the instruction set the kernels chose (`avx512`, `avx2` or `portable`).
    pub fn describe(&self) -> String {
        match self {
            Backend::Cpu => format!("cpu (fast kernels, {})", crate::kernels::simd::isa().name()),
            #[cfg(feature = "cuda")]
            Backend::Cuda => "cuda (composed dfdx ops)".to_string(),
        }
    }
}

/// Resolves `device = "auto" | "cpu" | "cuda"` against this build and machine.
pub fn resolve(choice: DeviceChoice) -> Result<Backend> {
    match choice {
        DeviceChoice::Cpu => Ok(Backend::Cpu),
        DeviceChoice::Auto => Ok(if cuda_available() {
            gpu_backend()
        } else {
            Backend::Cpu
        }),
        DeviceChoice::Cuda => {
            if !cfg!(feature = "cuda") {
                bail!(
                    "train.device = \"cuda\", but this runner was built without CUDA support; \
                     rebuild with `cargo build --release --features cuda` (see README) or use device = \"cpu\""
                );
            }
            if !cuda_available() {
                bail!("train.device = \"cuda\", but no usable NVIDIA GPU was found (is the driver loaded?)");
            }
            Ok(gpu_backend())
        }
    }
}

#[cfg(feature = "cuda")]
fn gpu_backend() -> Backend {
    Backend::Cuda
}

#[cfg(not(feature = "cuda"))]
fn gpu_backend() -> Backend {
    Backend::Cpu
}

#[cfg(feature = "cuda")]
fn cuda_available() -> bool {
    // Creating the device loads the driver; a panic inside it means no GPU.
    std::panic::catch_unwind(|| Cuda::try_seed_from_u64(0).is_ok()).unwrap_or(false)
}

#[cfg(not(feature = "cuda"))]
fn cuda_available() -> bool {
    false
}

/// The first GPU.
#[cfg(feature = "cuda")]
pub(super) fn cuda() -> Cuda {
    Cuda::seed_from_u64(0)
}
