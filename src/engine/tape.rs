//! The CPU kernels (`crate::kernels`) on dfdx's tape, as custom operations.
//!
//! Forward runs the kernel on copies of the inputs and wraps the result in a
//! tensor; when the tape records gradients, a backward closure keeps what the
//! kernel's backward needs (input, weights, output) and adds the gradients
//! into `Gradients` under the ids of the input and parameter tensors.

use std::cell::RefCell;

use dfdx::prelude::*;

use super::model::{Act4, ConvLayer, DenseLayer, Features, LayerOps};
use crate::kernels::activation::Act;
use crate::kernels::chain::{self, Stage};
use crate::kernels::dense::{self, Dense};
use crate::kernels::grads::add_assign;
use crate::kernels::shapes::{ConvDims, Pool};
use crate::kernels::simd::LANES;

/// Copies a contiguous tensor's values out (dfdx exposes no borrowed view).
fn values<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut out = vec![0.0f32; t.shape().num_elements()];
    t.copy_into(&mut out);
    out
}

thread_local! {
    /// Reused for inputs only needed during the forward (the fused
    /// conv + pool keeps its own packed copy for the backward).
    static INPUT_COPY: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a copy of `t`'s values held in a reused buffer.
fn with_values<S: Shape, T, R>(t: &Tensor<S, f32, Cpu, T>, f: impl FnOnce(&[f32]) -> R) -> R {
    INPUT_COPY.with_borrow_mut(|buf| {
        // Resizing to the length of the last call fills nothing.
        buf.resize(t.shape().num_elements(), 0.0);
        t.copy_into(buf);
        f(buf)
    })
}

/// Adds the gradients of a fused op's layers (`Vec<LayerGrads>`, the input
/// gradient in the first layer's) into `grads` under the ids of the input
/// and of each layer's (weight, bias). A macro: dfdx keeps the type of
/// those ids private, so no function can name it.
macro_rules! add_layer_grads {
    ($grads:ident, $x_id:ident, $param_ids:ident, $g:ident) => {
        if let Some(dx) = &$g[0].dx {
            add_assign($grads.get_or_alloc_mut(&$x_id)?, dx);
        }
        for (g, (w_id, b_id)) in $g.iter().zip(&$param_ids) {
            add_assign($grads.get_or_alloc_mut(w_id)?, &g.dw);
            add_assign($grads.get_or_alloc_mut(b_id)?, &g.db);
        }
    };
}

/// The head's layers over weights copied out of their tensors: `act`
/// after all but the last.
fn dense_layers<'a>(
    shapes: &[(usize, usize)],
    params: &'a [(Vec<f32>, Vec<f32>)],
    act: Act,
) -> Vec<Dense<'a>> {
    let last = shapes.len() - 1;
    shapes
        .iter()
        .zip(params)
        .enumerate()
        .map(|(i, (&(n_in, n_out), (w, b)))| Dense {
            n_in,
            n_out,
            w,
            b,
            act: if i < last { act } else { Act::Identity },
        })
        .collect()
}

/// The shapes of each layer of a chain whose input is (C, H, W) per image:
/// each layer's input is the pooled output of the one before.
fn chain_dims(
    (mut c, mut h, mut w): (usize, usize, usize),
    layers: &[ConvLayer<Cpu>],
) -> Vec<ConvDims> {
    assert!(!layers.is_empty(), "a chain needs at least one layer");
    let mut dims = Vec::with_capacity(layers.len());
    for layer in layers {
        let [o, wc, k, k2] = layer.shape;
        assert_eq!(
            (c, k),
            (wc, k2),
            "conv2d: input has {c} channels, weights {:?}",
            layer.shape
        );
        let d = ConvDims {
            c,
            h,
            w,
            o,
            k,
            pad: layer.pad,
        };
        (c, h, w) = (o, d.ho() / 2, d.wo() / 2);
        dims.push(d);
    }
    dims
}

/// The chain's stages, over weights and biases copied out of their tensors.
fn stages<'a>(dims: &[ConvDims], params: &'a [(Vec<f32>, Vec<f32>)]) -> Vec<Stage<'a>> {
    dims.iter()
        .zip(params)
        .map(|(&d, (w, b))| Stage { d, w, b })
        .collect()
}

/// The layers as the CPU kernels on the tape.
#[derive(Debug, Clone, Copy, Default)]
pub struct TapeOps;

impl LayerOps<Cpu> for TapeOps {
    /// `pool(act(conv2d(x, w) + b))` for each of `layers` in turn, as one op
    /// (`chain.rs`): the pre-pool activations and the tensors between the
    /// layers stay inside the op (kept for the backward) instead of becoming
    /// tensors of their own. `need_dx = false` skips the input gradient.
    fn conv_pool_chain<T: Tape<f32, Cpu>>(
        &self,
        x: Act4<Cpu, T>,
        layers: &[ConvLayer<Cpu>],
        act: Act,
        pool: Pool,
        need_dx: bool,
    ) -> Features<Cpu, T> {
        let (batch, c, h, width) = *x.shape();
        let dims = chain_dims((c, h, width), layers);
        let last = dims[dims.len() - 1];
        // A no-op for contiguous tensors; makes a contiguous copy otherwise.
        let x = x.reshape_like(&(batch, c, h, width));
        let dev = x.device().clone();
        let (x, mut tape) = x.split_tape();
        let params: Vec<(Vec<f32>, Vec<f32>)> =
            layers.iter().map(|l| (values(l.w), values(l.b))).collect();
        // The backward works from the packed copies the chain keeps.
        let (y, saved) = with_values(&x, |x| {
            chain::chain_forward(&stages(&dims, &params), batch, x, act, pool, T::OWNS_TAPE)
        });
        let features = last.o * (last.ho() / 2) * (last.wo() / 2);
        let out = dev.tensor_from_vec(y, (batch, features));
        if T::OWNS_TAPE {
            let x_id = x.ghost();
            let param_ids: Vec<_> = layers.iter().map(|l| (l.w.ghost(), l.b.ghost())).collect();
            let out_id = out.ghost();
            tape.add_backward_op(move |grads| {
                let stages = stages(&dims, &params);
                // Read in place (the output's gradient is batch x 400 floats
                // for LeNet); the borrow ends before the gradients are added.
                let dy = grads.get_or_alloc_mut(&out_id)?;
                let g = chain::chain_backward(&stages, batch, &saved, dy, act, pool, need_dx);
                add_layer_grads!(grads, x_id, param_ids, g);
                Ok(())
            });
        }
        out.put_tape(tape)
    }

    /// The dense layers after the convolutions as one op (`dense.rs`): `x`
    /// is the first layer's input; `act` follows every layer but the last.
    /// Returns the last layer's output, [B, n_out].
    fn dense_head<T: Tape<f32, Cpu>>(
        &self,
        x: Features<Cpu, T>,
        layers: &[DenseLayer<Cpu>],
        act: Act,
    ) -> Tensor<(usize, usize), f32, Cpu, T> {
        let (batch, n_in) = *x.shape();
        assert_eq!(n_in, layers[0].n_in, "dense head: input size");
        // A no-op for contiguous tensors; makes a contiguous copy otherwise.
        let x = x.reshape_like(&(batch, n_in));
        let dev = x.device().clone();
        let (x, mut tape) = x.split_tape();
        let params: Vec<(Vec<f32>, Vec<f32>)> =
            layers.iter().map(|l| (values(l.w), values(l.b))).collect();
        let shapes: Vec<(usize, usize)> = layers.iter().map(|l| (l.n_in, l.n_out)).collect();
        // The head keeps its input (for the weight gradient): one copy, with
        // the room for the slack its kernels want.
        let n = x.shape().num_elements();
        let mut x_values = Vec::with_capacity(n + LANES);
        x_values.resize(n, 0.0);
        x.copy_into(&mut x_values);
        let layers_now = dense_layers(&shapes, &params, act);
        let (y, saved) = dense::dense_forward(&layers_now, batch, x_values, T::OWNS_TAPE);
        let n_out = layers[layers.len() - 1].n_out;
        let out = dev.tensor_from_vec(y, (batch, n_out));
        if T::OWNS_TAPE {
            let x_id = x.ghost();
            let param_ids: Vec<_> = layers.iter().map(|l| (l.w.ghost(), l.b.ghost())).collect();
            let out_id = out.ghost();
            tape.add_backward_op(move |grads| {
                let dy = grads.get_or_alloc_mut(&out_id)?.to_vec();
                let layers = dense_layers(&shapes, &params, act);
                let g = dense::dense_backward(&layers, &saved, &dy, true);
                add_layer_grads!(grads, x_id, param_ids, g);
                Ok(())
            });
        }
        out.put_tape(tape)
    }
}
