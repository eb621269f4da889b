//! SGD with momentum and weight decay, as PyTorch defines it.

use dfdx::prelude::*;

use super::model::Param;

/// SGD as PyTorch defines it: g = grad + wd*p; v = mu*v + g; p -= lr*v.
/// The state lives on the host as plain vectors, so it can be saved.
pub struct Sgd {
    pub momentum: f32,
    pub weight_decay: f32,
    values: Vec<Vec<f32>>,
    velocity: Vec<Vec<f32>>,
    grad: Vec<f32>,
}

impl Sgd {
    pub fn new<D: Device<f32>>(params: &[Param<D>], momentum: f64, weight_decay: f64) -> Self {
        Sgd {
            momentum: momentum as f32,
            weight_decay: weight_decay as f32,
            values: params.iter().map(|p| p.as_vec()).collect(),
            velocity: params.iter().map(|p| vec![0.0; p.shape().0]).collect(),
            grad: Vec::new(),
        }
    }

    /// The momentum buffers, in parameter order.
    pub fn velocity(&self) -> &[Vec<f32>] {
        &self.velocity
    }

    /// Restores the optimizer to `values` (the parameters) and `velocity`.
    pub fn restore(&mut self, values: Vec<Vec<f32>>, velocity: Vec<Vec<f32>>) {
        self.values = values;
        self.velocity = velocity;
    }

    /// One update of every parameter; `read_grad(param, out)` copies the
    /// parameter's gradient into `out`.
    pub fn step<D: Device<f32>>(
        &mut self,
        params: &mut [Param<D>],
        mut read_grad: impl FnMut(&Param<D>, &mut [f32]),
        lr: f32,
    ) {
        for (i, param) in params.iter_mut().enumerate() {
            self.grad.resize(param.shape().0, 0.0);
            read_grad(param, &mut self.grad);
            let (values, velocity) = (&mut self.values[i], &mut self.velocity[i]);
            for ((p, v), g) in values.iter_mut().zip(velocity.iter_mut()).zip(&self.grad) {
                let g = g + self.weight_decay * *p;
                *v = self.momentum * *v + g;
                *p -= lr * *v;
            }
            param.copy_from(values);
        }
    }
}
