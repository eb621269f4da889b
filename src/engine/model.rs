//! LeNet-5 as the PyTorch tutorial builds it, on dfdx tensors: its
//! parameters, their initialisation, and the forward pass over whichever
//! [`LayerOps`] implement the layers.
//!
//! c1 conv 1->6 k5 pad 2, act, s2 pool, c3 conv 6->16 k5, act, s4 pool,
//! c5 conv 16->120 k5, flatten, f6 linear 120->84, output linear 84->10.
//! Parameters are kept flat (one 1-d tensor each) with PyTorch's names and
//! shapes, and viewed in their shapes where used: reshaping a contiguous
//! tensor keeps its id, so gradients land on the flat parameter.

use anyhow::{bail, Result};
use dfdx::prelude::*;
use rand::distributions::{Distribution, Uniform};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::checkpoint::Weights;
use crate::config::{Activation, ModelConfig, Pooling};
use crate::kernels::activation::Act;
use crate::kernels::shapes::Pool;

/// A batch of feature maps, [B, C, H, W].
pub type Act4<D, T> = Tensor<(usize, usize, usize, usize), f32, D, T>;
/// The convolutions' output as the dense head's input: [B, C*H*W], each
/// row one image's feature maps in (C, H, W) order (possibly a strided view).
pub type Features<D, T> = Tensor<(usize, usize), f32, D, T>;
/// One flat parameter.
pub type Param<D> = Tensor<(usize,), f32, D>;

/// Names and shapes of the parameters, in PyTorch's `state_dict` order.
pub const PARAMS: [(&str, &[usize]); 10] = [
    ("c1.weight", &[6, 1, 5, 5]),
    ("c1.bias", &[6]),
    ("c3.weight", &[16, 6, 5, 5]),
    ("c3.bias", &[16]),
    ("c5.weight", &[120, 16, 5, 5]),
    ("c5.bias", &[120]),
    ("f6.weight", &[84, 120]),
    ("f6.bias", &[84]),
    ("output.weight", &[10, 84]),
    ("output.bias", &[10]),
];

/// Which implementation of the layers a forward pass uses: the CPU
/// kernels on the tape (`tape.rs`) or ops composed from dfdx's (`composed.rs`).
pub trait LayerOps<D: Device<f32>>: Clone {
    /// `pool(act(conv2d(x, w) + b))` for each of `layers` in turn, flattened
    /// per image; `need_dx` is for the first layer's input (false when it
    /// is data).
    fn conv_pool_chain<T: Tape<f32, D>>(
        &self,
        x: Act4<D, T>,
        layers: &[ConvLayer<D>],
        act: Act,
        pool: Pool,
        need_dx: bool,
    ) -> Features<D, T>;
    /// The dense layers after the convolutions: `x` is the first layer's
    /// input, each layer's output the next one's, with `act` after every
    /// layer but the last.
    fn dense_head<T: Tape<f32, D>>(
        &self,
        x: Features<D, T>,
        layers: &[DenseLayer<D>],
        act: Act,
    ) -> Tensor<(usize, usize), f32, D, T>;
}

/// One dense layer's parameters: weights [n_out, n_in] (or any shape of
/// that many values read as such, like c5's [O, C, K, K]), bias [n_out].
pub struct DenseLayer<'a, D: Device<f32>> {
    pub w: &'a Param<D>,
    pub b: &'a Param<D>,
    pub n_in: usize,
    pub n_out: usize,
}

/// One convolution's parameters: weights of `shape` [O, C, K, K], bias [O],
/// zero padding.
pub struct ConvLayer<'a, D: Device<f32>> {
    pub w: &'a Param<D>,
    pub b: &'a Param<D>,
    pub shape: [usize; 4],
    pub pad: usize,
}

impl From<Activation> for Act {
    fn from(a: Activation) -> Self {
        match a {
            Activation::Sigmoid => Act::Sigmoid,
            Activation::Relu => Act::Relu,
            Activation::Tanh => Act::Tanh,
        }
    }
}

impl From<Pooling> for Pool {
    fn from(p: Pooling) -> Self {
        match p {
            Pooling::Avg => Pool::Avg,
            Pooling::Max => Pool::Max,
        }
    }
}

fn shape4(i: usize) -> [usize; 4] {
    let s = PARAMS[i].1;
    [s[0], s[1], s[2], s[3]]
}

/// The convolution whose weights are `params[i]` (bias `params[i + 1]`).
fn conv_layer<D: Device<f32>>(params: &[Param<D>], i: usize, pad: usize) -> ConvLayer<'_, D> {
    ConvLayer {
        w: &params[i],
        b: &params[i + 1],
        shape: shape4(i),
        pad,
    }
}

/// The dense layer whose weights are `params[i]` (bias `params[i + 1]`).
fn dense_layer<D: Device<f32>>(
    params: &[Param<D>],
    i: usize,
    n_in: usize,
    n_out: usize,
) -> DenseLayer<'_, D> {
    DenseLayer {
        w: &params[i],
        b: &params[i + 1],
        n_in,
        n_out,
    }
}

pub struct LeNet5<D: Device<f32>> {
    pub arch: ModelConfig,
    /// Flat parameters, in `PARAMS` order.
    pub params: Vec<Param<D>>,
}

impl<D: Device<f32>> LeNet5<D> {
    /// PyTorch's default initialisation for Conv2d and Linear: weights and
    /// biases uniform in +-1/sqrt(fan_in), drawn from a seeded generator.
    pub fn init(dev: &D, arch: &ModelConfig, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut tensors = Vec::new();
        for pair in PARAMS.chunks(2) {
            let w_shape = pair[0].1;
            let fan_in: usize = w_shape[1..].iter().product();
            let bound = 1.0 / (fan_in as f32).sqrt();
            let dist = Uniform::new_inclusive(-bound, bound);
            for (name, shape) in pair {
                let n: usize = shape.iter().product();
                let values: Vec<f32> = (0..n).map(|_| dist.sample(&mut rng)).collect();
                tensors.push((name.to_string(), shape.to_vec(), values));
            }
        }
        Self::from_weights(dev, arch, &Weights { tensors })
            .expect("fresh weights have the right shapes")
    }

    /// Builds the model from named weights, checking every name and shape.
    pub fn from_weights(dev: &D, arch: &ModelConfig, weights: &Weights) -> Result<Self> {
        let mut params = Vec::new();
        for (name, shape) in PARAMS {
            let Some((_, got_shape, values)) = weights.tensors.iter().find(|(n, _, _)| n == name)
            else {
                bail!(
                    "weights lack tensor {name:?} (LeNet-5 needs {})",
                    PARAMS.map(|p| p.0).join(", ")
                );
            };
            if got_shape.as_slice() != shape {
                bail!("tensor {name:?} has shape {got_shape:?}, expected {shape:?}");
            }
            params.push(dev.tensor_from_vec(values.clone(), (values.len(),)));
        }
        if let Some((extra, _, _)) = weights
            .tensors
            .iter()
            .find(|(n, _, _)| !PARAMS.iter().any(|(p, _)| p == n))
        {
            bail!("weights hold an unexpected tensor {extra:?}: not a LeNet-5 checkpoint");
        }
        Ok(LeNet5 {
            arch: arch.clone(),
            params,
        })
    }

    pub fn to_weights(&self) -> Weights {
        let tensors = PARAMS
            .iter()
            .zip(&self.params)
            .map(|((name, shape), t)| (name.to_string(), shape.to_vec(), t.as_vec()))
            .collect();
        Weights { tensors }
    }

    /// Logits [B, 10] for images [B, 1, 28, 28].
    pub fn forward<O: LayerOps<D>, T: Tape<f32, D>>(
        &self,
        ops: &O,
        x: Act4<D, T>,
    ) -> Tensor<(usize, usize), f32, D, T> {
        let act = Act::from(self.arch.activation);
        let head_act = if self.arch.activate_c5_f6 {
            act
        } else {
            Act::Identity
        };
        let pool = Pool::from(self.arch.pooling);
        let p = &self.params;
        let (c1, c3) = (conv_layer(p, 0, 2), conv_layer(p, 2, 0));
        // The input is data: no gradient for it.
        let x = ops.conv_pool_chain(x, &[c1, c3], act, pool, false);
        // c5's kernel covers its whole 5x5 input: a dense layer 400 -> 120.
        let head = [
            dense_layer(p, 4, 400, 120),
            dense_layer(p, 6, 120, 84),
            dense_layer(p, 8, 84, 10),
        ];
        ops.dense_head(x, &head, head_act)
    }
}
