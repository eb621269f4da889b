//! The layers composed only from dfdx tensor ops (gather, matmul,
//! reshape, max, mean), so they run on any dfdx device, CUDA included, and
//! dfdx derives their gradients. Slow on the CPU (dfdx's gather is serial);
//! the CPU kernels on the tape are tested against these.

use dfdx::prelude::*;

use super::model::{Act4, ConvLayer, DenseLayer, LayerOps, Param};
use crate::kernels::activation::Act;
use crate::kernels::shapes::{ConvDims, Pool};

/// The layers as dfdx ops: any device.
#[derive(Debug, Clone, Copy, Default)]
pub struct ComposedOps;

impl<D: Device<f32>> LayerOps<D> for ComposedOps {
    fn conv_pool_chain<T: Tape<f32, D>>(
        &self,
        x: Act4<D, T>,
        layers: &[ConvLayer<D>],
        act: Act,
        pool: Pool,
        _need_dx: bool,
    ) -> Act4<D, T> {
        let mut x = x;
        for l in layers {
            x = pool2d(activate(conv2d(x, l.w, l.b, l.shape, l.pad), act), pool);
        }
        x
    }

    fn dense_head<T: Tape<f32, D>>(
        &self,
        x: Act4<D, T>,
        layers: &[DenseLayer<D>],
        act: Act,
    ) -> Tensor<(usize, usize), f32, D, T> {
        let batch = x.shape().0;
        let mut x = x.reshape_like(&(batch, layers[0].n_in));
        for (i, l) in layers.iter().enumerate() {
            x = linear(x, l.w, l.b, l.n_out, l.n_in);
            if i + 1 < layers.len() {
                x = activate(x, act);
            }
        }
        x
    }

    fn read_grad(&self, grads: &mut Gradients<f32, D>, param: &Param<D>, out: &mut [f32]) {
        grads.get(param).copy_into(out);
    }
}

/// An activation as a dfdx op.
pub fn activate<S: Shape, D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<S, f32, D, T>,
    act: Act,
) -> Tensor<S, f32, D, T> {
    match act {
        Act::Identity => x,
        Act::Sigmoid => x.sigmoid(),
        Act::Relu => x.relu(),
        Act::Tanh => x.tanh(),
    }
}

/// For each output pixel p and weight tap (c, i, j), in row-major
/// (p, c, i, j) order, the flat input index it reads, or `c*h*w` (a zero
/// row appended to the input) where the tap falls in the padding.
pub fn patch_indices(d: &ConvDims) -> Vec<usize> {
    let zero = d.in_len();
    let mut idx = Vec::with_capacity(d.p() * d.ckk());
    for oy in 0..d.ho() {
        for ox in 0..d.wo() {
            for c in 0..d.c {
                for i in 0..d.k {
                    for j in 0..d.k {
                        let iy = (oy + i) as isize - d.pad as isize;
                        let ix = (ox + j) as isize - d.pad as isize;
                        let inside =
                            iy >= 0 && ix >= 0 && (iy as usize) < d.h && (ix as usize) < d.w;
                        idx.push(if inside {
                            c * d.h * d.w + iy as usize * d.w + ix as usize
                        } else {
                            zero
                        });
                    }
                }
            }
        }
    }
    idx
}

/// `conv2d(x, w) + b` (no activation), with `w` of shape [O, C, K, K].
pub fn conv2d<D: Device<f32>, T: Tape<f32, D>>(
    x: Act4<D, T>,
    w: &Param<D>,
    b: &Param<D>,
    w_shape: [usize; 4],
    pad: usize,
) -> Act4<D, T> {
    let (batch, c, h, width) = *x.shape();
    let [o, wc, k, _] = w_shape;
    assert_eq!(c, wc, "conv2d: input has {c} channels, weights {w_shape:?}");
    let d = ConvDims {
        c,
        h,
        w: width,
        o,
        k,
        pad,
    };
    let (p, ckk, chw) = (d.p(), d.ckk(), d.in_len());
    let dev = x.device().clone();
    // [B, CHW] -> [CHW, B], plus one zero row that padded taps read.
    let xt = x
        .reshape_like(&(batch, chw))
        .permute::<(usize, usize), Axes2<1, 0>>();
    let zero_row: Tensor<(usize, usize), f32, D> = dev.zeros_like(&(1, batch));
    let xt = (xt, zero_row).concat_along(Axis::<0>);
    let idx = dev.tensor_from_vec(patch_indices(&d), (p * ckk,));
    // Patches: [P*CKK, B] -> [B*P, CKK].
    let cols = xt.gather(idx).permute::<(usize, usize), Axes2<1, 0>>();
    let cols = cols.reshape_like(&(batch * p, ckk));
    let wt = w
        .clone()
        .reshape_like(&(o, ckk))
        .permute::<(usize, usize), Axes2<1, 0>>();
    // [B*P, O] -> [B, O, P]
    let out = cols.matmul(wt).reshape_like(&(batch, p, o));
    let out = out.permute::<(usize, usize, usize), Axes3<0, 2, 1>>();
    let bias = b
        .clone()
        .broadcast_like::<(usize, usize, usize), Axes2<0, 2>>(&(batch, o, p));
    (out + bias).reshape_like(&(batch, o, d.ho(), d.wo()))
}

/// 2x2, stride 2 pooling, as a reduction over a 6-d view.
pub fn pool2d<D: Device<f32>, T: Tape<f32, D>>(x: Act4<D, T>, kind: Pool) -> Act4<D, T> {
    let (b, c, h, w) = *x.shape();
    assert!(
        h % 2 == 0 && w % 2 == 0,
        "2x2 pooling needs even sizes, got {h}x{w}"
    );
    let x6 = x.reshape_like(&(b, c, h / 2, 2usize, w / 2, 2usize));
    match kind {
        Pool::Max => x6.max::<(usize, usize, usize, usize), Axes2<3, 5>>(),
        Pool::Avg => x6.mean::<(usize, usize, usize, usize), Axes2<3, 5>>(),
    }
}

/// `x W^T + b`, PyTorch's Linear, with W [out, inp].
pub fn linear<D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<(usize, usize), f32, D, T>,
    w: &Param<D>,
    b: &Param<D>,
    out: usize,
    inp: usize,
) -> Tensor<(usize, usize), f32, D, T> {
    let batch = x.shape().0;
    let wt = w
        .clone()
        .reshape_like(&(out, inp))
        .permute::<(usize, usize), Axes2<1, 0>>();
    let bias = b
        .clone()
        .broadcast_like::<(usize, usize), Axis<0>>(&(batch, out));
    x.matmul(wt) + bias
}
