//! SGD with momentum and weight decay, as PyTorch defines it, on the device
//! that holds the parameters.

use dfdx::prelude::*;

use super::model::Param;

/// A device that SGD can run on: dfdx copies host values into tensors, but
/// the momentum buffers are plain device buffers, so restoring them from a
/// checkpoint needs this one copy of its own.
pub trait SgdDevice: Device<f32> {
    /// Overwrites `buffer` with `values` (of the same length).
    fn write(buffer: &mut <Self as Storage<f32>>::Vec, values: &[f32]);
}

impl SgdDevice for Cpu {
    fn write(buffer: &mut <Self as Storage<f32>>::Vec, values: &[f32]) {
        buffer.copy_from_slice(values);
    }
}

#[cfg(feature = "cuda")]
impl SgdDevice for Cuda {
    fn write(buffer: &mut <Self as Storage<f32>>::Vec, values: &[f32]) {
        let dev = buffer.device();
        dev.htod_sync_copy_into(values, buffer)
            .expect("copying the momentum buffers to the GPU");
    }
}

/// SGD as PyTorch defines it: g = grad + wd*p; v = mu*v + g; p -= lr*v.
///
/// Each step is dfdx's fused update (one pass over parameter, gradient and
/// momentum, in place; precompiled for CUDA): nothing leaves the device
/// while training, and on the CPU the gradients are read in place.
pub struct Sgd<D: SgdDevice> {
    momentum: f64,
    weight_decay: f64,
    /// The momentum buffers, keyed by their parameters' ids: `Gradients`
    /// is dfdx's public map from a tensor to a buffer on its device.
    velocity: Gradients<f32, D>,
}

impl<D: SgdDevice> Sgd<D> {
    /// Zero momentum for each of `params`.
    pub fn new(params: &[Param<D>], momentum: f64, weight_decay: f64) -> Self {
        let mut velocity = Gradients::leaky();
        for p in params {
            velocity
                .try_alloc_for(p)
                .expect("allocating the momentum buffers");
        }
        Sgd {
            momentum,
            weight_decay,
            velocity,
        }
    }

    /// The momentum buffers of `params`, in their order.
    pub fn velocity(&self, params: &[Param<D>]) -> Vec<Vec<f32>> {
        params
            .iter()
            .map(|p| self.velocity.get(p).as_vec())
            .collect()
    }

    /// Sets the momentum of each of `params` to `values`.
    pub fn restore(&mut self, params: &[Param<D>], values: &[Vec<f32>]) {
        self.velocity = Gradients::leaky();
        for (p, v) in params.iter().zip(values) {
            let buffer = self
                .velocity
                .get_or_alloc_mut(p)
                .expect("allocating the momentum buffers");
            D::write(buffer, v);
        }
    }

    /// One update of every parameter from its gradient in `grads`.
    pub fn step(&mut self, params: &mut [Param<D>], grads: &mut Gradients<f32, D>, lr: f32) {
        // The same float operations, in the same order, as the formula
        // above: weight decay always applied (even 0), classic momentum.
        let update = SgdConfig {
            lr: lr as f64,
            momentum: Some(Momentum::Classic(self.momentum)),
            weight_decay: Some(WeightDecay::L2(self.weight_decay)),
        };
        for param in params.iter_mut() {
            let id = param.ghost();
            let grad = grads
                .get_or_alloc_mut(&id)
                .expect("every parameter has a gradient");
            let velocity = self
                .velocity
                .get_or_alloc_mut(&id)
                .expect("every parameter has momentum");
            update
                .try_update(param, velocity, grad)
                .expect("the SGD update runs on the parameters' device");
        }
    }
}
