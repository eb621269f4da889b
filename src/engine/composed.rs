//! The layers composed only from dfdx tensor ops (gather, matmul, add,
//! mul, mean, max, activations), so they run on any dfdx device, CUDA
//! included, and dfdx derives their gradients. Slow on the CPU (dfdx's
//! gather is serial); the CPU kernels on the tape are tested against these.
//!
//! Feature maps are batch-last, [C*H*W, B] ([`Maps`]): a convolution is then
//! a gather of input rows (one per tap and output pixel) and one matrix
//! product whose result is already the next maps, and pooling is a
//! reduction over a view. Every op is one that dfdx ships precompiled for
//! CUDA. Batch-first maps would need transposed copies, and dfdx copies a
//! strided tensor with a kernel that it compiles at run time with NVRTC from
//! headers at the build machine's paths: a binary that runs only where it
//! was built. [`view`] guards that no such copy happens.

use std::fmt::Write;

use dfdx::prelude::*;

use super::model::{Act4, ConvLayer, DenseLayer, Features, LayerOps, Param};
use crate::kernels::activation::Act;
use crate::kernels::shapes::{ConvDims, Pool};

/// Feature maps, batch-last: [C*H*W, B], each column one image's maps in
/// (C, H, W) order.
pub type Maps<D, T> = Tensor<(usize, usize), f32, D, T>;

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
    ) -> Features<D, T> {
        let (batch, mut c, mut h, mut w) = *x.shape();
        // The images batch-last: a transposed view, which the gather reads as is.
        let mut maps = view(x, &(batch, c * h * w)).permute::<_, Axes2<1, 0>>();
        for l in layers {
            let [o, wc, k, _] = l.shape;
            assert_eq!(
                c, wc,
                "conv2d: input has {c} channels, weights {:?}",
                l.shape
            );
            let d = ConvDims {
                c,
                h,
                w,
                o,
                k,
                pad: l.pad,
            };
            let conv = activate(conv2d(maps, l.w, l.b, &d), act);
            maps = pool2d(conv, (o, d.ho(), d.wo()), pool);
            (c, h, w) = (o, d.ho() / 2, d.wo() / 2);
        }
        // [B, C*H*W]: a transposed view, which the head's matrix product reads as is.
        maps.permute::<_, Axes2<1, 0>>()
    }

    fn dense_head<T: Tape<f32, D>>(
        &self,
        x: Features<D, T>,
        layers: &[DenseLayer<D>],
        act: Act,
    ) -> Tensor<(usize, usize), f32, D, T> {
        assert_eq!(x.shape().1, layers[0].n_in, "dense head: input size");
        let mut x = x;
        for (i, l) in layers.iter().enumerate() {
            x = linear(x, l.w, l.b, l.n_out, l.n_in);
            if i + 1 < layers.len() {
                x = activate(x, act);
            }
        }
        x
    }
}

/// `x` reshaped to `shape` without moving data. Panics if `x` is strided:
/// dfdx would copy it with a kernel compiled at run time (see the module
/// comment), which the GPU path must never do. The CPU tests run every
/// composed op through here, so a strided reshape fails them.
pub fn view<S: Shape, Dst: Shape, D: Device<f32>, T: Tape<f32, D>>(
    x: Tensor<S, f32, D, T>,
    shape: &Dst,
) -> Tensor<Dst, f32, D, T> {
    let before = tensor_id(&x);
    let out = x.reshape_like(shape);
    assert_eq!(
        before,
        tensor_id(&out),
        "reshape of a strided tensor: on CUDA, dfdx compiles its copy at run time"
    );
    out
}

/// The tensor's id. dfdx keeps it private, but its derived `Debug` starts
/// with it (`Tensor { id: UniqueId(7), data: ...`); the writer stops
/// formatting there, before the data (which on a GPU would be copied out).
fn tensor_id<S: Shape, D: Device<f32>, T>(t: &Tensor<S, f32, D, T>) -> String {
    struct UpToId(String);
    impl Write for UpToId {
        fn write_str(&mut self, s: &str) -> std::fmt::Result {
            self.0.push_str(s);
            if self.0.contains(')') {
                return Err(std::fmt::Error);
            }
            Ok(())
        }
    }
    let mut out = UpToId(String::new());
    // The error is the writer stopping on purpose.
    let _ = write!(out, "{:?}", t.retaped::<NoneTape>());
    out.0
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

/// For each weight tap t = (c, i, j) and output pixel p, in row-major
/// (t, p) order, the input row (c, y, x) that it reads, and whether that
/// row is inside the image (0.0 where the tap falls in the zero padding,
/// whose index is then row 0, masked out).
pub fn tap_rows(d: &ConvDims) -> (Vec<usize>, Vec<f32>) {
    let (mut rows, mut inside) = (Vec::new(), Vec::new());
    for c in 0..d.c {
        for i in 0..d.k {
            for j in 0..d.k {
                for oy in 0..d.ho() {
                    for ox in 0..d.wo() {
                        let iy = (oy + i) as isize - d.pad as isize;
                        let ix = (ox + j) as isize - d.pad as isize;
                        let ok = iy >= 0 && ix >= 0 && (iy as usize) < d.h && (ix as usize) < d.w;
                        rows.push(if ok {
                            c * d.h * d.w + iy as usize * d.w + ix as usize
                        } else {
                            0
                        });
                        inside.push(if ok { 1.0 } else { 0.0 });
                    }
                }
            }
        }
    }
    (rows, inside)
}

/// `conv2d(x, w) + b` (no activation) on batch-last maps: `x` [C*H*W, B] ->
/// [O*Ho*Wo, B], with `w` of shape [O, C, K, K] and the sizes in `d`.
pub fn conv2d<D: Device<f32>, T: Tape<f32, D>>(
    x: Maps<D, T>,
    w: &Param<D>,
    b: &Param<D>,
    d: &ConvDims,
) -> Maps<D, T> {
    let batch = x.shape().1;
    assert_eq!(x.shape().0, d.in_len(), "conv2d: input size");
    let (p, ckk) = (d.p(), d.ckk());
    let dev = x.device().clone();
    let (rows, inside) = tap_rows(d);
    // [CKK*P, B]: every tap's input at every output pixel.
    let mut cols = x.gather(dev.tensor_from_vec(rows, (ckk * p,)));
    if d.pad > 0 {
        let mask = dev.tensor_from_vec(inside, (ckk * p,));
        cols = cols * mask.broadcast_like::<(usize, usize), Axis<1>>(&(ckk * p, batch));
    }
    // The tape moves to the weights, which come first in the product.
    let (cols, tape) = view(cols, &(ckk, p * batch)).split_tape();
    let w = view(w.clone(), &(d.o, ckk)).put_tape(tape);
    let bias = b
        .clone()
        .broadcast_like::<(usize, usize), Axis<1>>(&(d.o, p * batch));
    // [O, P*B] is [O*P, B]: the next maps.
    view(w.matmul(cols) + bias, &(d.o * p, batch))
}

/// 2x2, stride 2 pooling of batch-last maps of `(c, h, w)` per image: a
/// reduction over a 6-d view.
pub fn pool2d<D: Device<f32>, T: Tape<f32, D>>(
    x: Maps<D, T>,
    (c, h, w): (usize, usize, usize),
    kind: Pool,
) -> Maps<D, T> {
    let batch = x.shape().1;
    assert!(
        h % 2 == 0 && w % 2 == 0,
        "2x2 pooling needs even sizes, got {h}x{w}"
    );
    let x6 = view(x, &(c, h / 2, 2usize, w / 2, 2usize, batch));
    let pooled = match kind {
        Pool::Max => x6.max::<(usize, usize, usize, usize), Axes2<2, 4>>(),
        Pool::Avg => x6.mean::<(usize, usize, usize, usize), Axes2<2, 4>>(),
    };
    view(pooled, &(c * (h / 2) * (w / 2), batch))
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
    let wt = view(w.clone(), &(out, inp)).permute::<(usize, usize), Axes2<1, 0>>();
    let bias = b
        .clone()
        .broadcast_like::<(usize, usize), Axis<0>>(&(batch, out));
    x.matmul(wt) + bias
}
