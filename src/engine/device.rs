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
        DeviceChoice::Auto => Ok(if probe_gpu().is_ok() {
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
            if let Err(why) = probe_gpu() {
                bail!("train.device = \"cuda\", but no usable NVIDIA GPU was found: {why}");
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

/// Opens the first GPU the way training will, and says why it can't.
#[cfg(feature = "cuda")]
fn probe_gpu() -> Result<(), String> {
    // Some failures (a driver too old for the PTX, say) surface as panics
    // inside dfdx or cudarc: caught here, and kept off the terminal, so a
    // missing GPU reads as one line of error, not a backtrace.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let opened = std::panic::catch_unwind(|| Cuda::try_seed_from_u64(0).map(drop));
    std::panic::set_hook(hook);
    match opened {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("{e:?} (is the NVIDIA driver loaded?)")),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "opening the GPU failed".to_string());
            // cudarc unwraps the driver's first error: keep just the error.
            let unwrapped = "called `Result::unwrap()` on an `Err` value: ";
            Err(message.trim_start_matches(unwrapped).to_string())
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn probe_gpu() -> Result<(), String> {
    Err("built without CUDA".to_string())
}

/// The first GPU.
#[cfg(feature = "cuda")]
pub(super) fn cuda() -> Cuda {
    Cuda::seed_from_u64(0)
}
