//! The fast CPU ops: `kernels` attached to dfdx's tape as custom operations.
//!
//! Forward runs the kernel on copies of the inputs and wraps the result in a
//! tensor; when the tape records gradients, a backward closure keeps what the
//! kernel's backward needs (input, weights, output) and adds the gradients
//! into `Gradients` under the ids of the input and parameter tensors.

use dfdx::prelude::*;

use super::kernels::{self, Act, ConvDims, Pool};
use super::{Act4, Param};

/// Copies a contiguous tensor's values out (dfdx exposes no borrowed view).
fn values<S: Shape, T>(t: &Tensor<S, f32, Cpu, T>) -> Vec<f32> {
    let mut out = vec![0.0f32; t.shape().num_elements()];
    t.copy_into(&mut out);
    out
}

fn add_into(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
}

/// `act(conv2d(x, w) + b)`, with `w` of shape `w_shape` = [O, C, K, K].
/// `need_dx = false` skips the input gradient (for the first layer, whose
/// input is data).
pub fn conv2d<T: Tape<f32, Cpu>>(
    x: Act4<Cpu, T>,
    w: &Param<Cpu>,
    b: &Param<Cpu>,
    w_shape: [usize; 4],
    pad: usize,
    act: Act,
    need_dx: bool,
) -> Act4<Cpu, T> {
    let (batch, c, h, width) = *x.shape();
    let [o, wc, k, k2] = w_shape;
    assert_eq!(
        (c, k),
        (wc, k2),
        "conv2d: input has {c} channels, weights {w_shape:?}"
    );
    let d = ConvDims {
        c,
        h,
        w: width,
        o,
        k,
        pad,
    };
    // A no-op for contiguous tensors; makes a contiguous copy otherwise.
    let x = x.reshape_like(&(batch, c, h, width));
    let dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let (xs, ws, bs) = (values(&x), values(w), values(b));
    let y = kernels::conv_forward(&d, batch, &xs, &ws, &bs, act);
    let saved_y = if T::OWNS_TAPE { y.clone() } else { Vec::new() };
    let out = dev.tensor_from_vec(y, (batch, o, d.ho(), d.wo()));
    if T::OWNS_TAPE {
        let (x_id, w_id, b_id, out_id) = (x.ghost(), w.ghost(), b.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let dy = grads.get_or_alloc_mut(&out_id)?.to_vec();
            let g = kernels::conv_backward(&d, batch, &xs, &ws, &saved_y, &dy, act, need_dx);
            if let Some(dx) = g.dx {
                add_into(grads.get_or_alloc_mut(&x_id)?, &dx);
            }
            add_into(grads.get_or_alloc_mut(&w_id)?, &g.dw);
            add_into(grads.get_or_alloc_mut(&b_id)?, &g.db);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// `pool(act(conv2d(x, w) + b))` as one op: the pre-pool activations stay
/// inside the op (kept for backward) instead of becoming a tensor.
#[allow(clippy::too_many_arguments)]
pub fn conv_pool2d<T: Tape<f32, Cpu>>(
    x: Act4<Cpu, T>,
    w: &Param<Cpu>,
    b: &Param<Cpu>,
    w_shape: [usize; 4],
    pad: usize,
    act: Act,
    pool: Pool,
    need_dx: bool,
) -> Act4<Cpu, T> {
    let (batch, c, h, width) = *x.shape();
    let [o, wc, k, k2] = w_shape;
    assert_eq!(
        (c, k),
        (wc, k2),
        "conv2d: input has {c} channels, weights {w_shape:?}"
    );
    let d = ConvDims {
        c,
        h,
        w: width,
        o,
        k,
        pad,
    };
    let x = x.reshape_like(&(batch, c, h, width));
    let dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let (xs, ws, bs) = (values(&x), values(w), values(b));
    let (y, saved) = kernels::conv_pool_forward(&d, batch, &xs, &ws, &bs, act, pool, T::OWNS_TAPE);
    let out = dev.tensor_from_vec(y, (batch, o, d.ho() / 2, d.wo() / 2));
    if T::OWNS_TAPE {
        let (x_id, w_id, b_id, out_id) = (x.ghost(), w.ghost(), b.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let dy = grads.get_or_alloc_mut(&out_id)?.to_vec();
            let g =
                kernels::conv_pool_backward(&d, batch, &xs, &ws, &saved, &dy, act, pool, need_dx);
            if let Some(dx) = g.dx {
                add_into(grads.get_or_alloc_mut(&x_id)?, &dx);
            }
            add_into(grads.get_or_alloc_mut(&w_id)?, &g.dw);
            add_into(grads.get_or_alloc_mut(&b_id)?, &g.db);
            Ok(())
        });
    }
    out.put_tape(tape)
}

/// 2x2, stride 2 pooling.
pub fn pool2d<T: Tape<f32, Cpu>>(x: Act4<Cpu, T>, kind: Pool) -> Act4<Cpu, T> {
    let (batch, c, h, w) = *x.shape();
    let x = x.reshape_like(&(batch, c, h, w));
    let dev = x.device().clone();
    let (x, mut tape) = x.split_tape();
    let (y, arg) = kernels::pool_forward(kind, batch * c, h, w, &values(&x));
    let out = dev.tensor_from_vec(y, (batch, c, h / 2, w / 2));
    if T::OWNS_TAPE {
        let (x_id, out_id) = (x.ghost(), out.ghost());
        tape.add_backward_op(move |grads| {
            let dy = grads.get_or_alloc_mut(&out_id)?.to_vec();
            let dx = kernels::pool_backward(kind, batch * c, h, w, &dy, &arg);
            add_into(grads.get_or_alloc_mut(&x_id)?, &dx);
            Ok(())
        });
    }
    out.put_tape(tape)
}
