//! Hand-written CPU kernels for convolution and pooling, on plain slices.
//!
//! Layout is PyTorch's NCHW. A convolution is a matrix product:
//! `out[O, P] = W[O, C*K*K] x cols[C*K*K, P]`, where `cols` holds the image
//! patches (im2col) and P the output pixels; the `gemm` crate (dfdx's own
//! matrix kernel) does the product, for a few images side by side at once.
//! When the kernel covers the whole unpadded input (c5: 5x5 on 5x5) the
//! patches are the images themselves and a chunk is one product. Activation
//! and pooling are fused into the convolution's epilogue.
//!
//! Work is split over the batch in chunks of a fixed size, in parallel with
//! rayon. Weight gradients are summed per chunk and the chunk sums added in
//! chunk order, so results do not depend on the number of threads.

use rayon::prelude::*;

/// Samples per parallel work item. Fixed, so that the order of floating
/// point sums (and so every result bit) is the same for any thread count.
pub const CHUNK: usize = 8;

/// Elementwise activation fused into the convolution's epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    Sigmoid,
    Relu,
    Tanh,
}

impl Act {
    /// Applies the activation in place.
    pub fn apply(self, v: &mut [f32]) {
        match self {
            Act::Identity => {}
            Act::Sigmoid => sigmoid_in_place(v),
            Act::Relu => relu_in_place(v),
            Act::Tanh => tanh_in_place(v),
        }
    }

    /// Turns `dy` (gradient w.r.t. the activation's output `y`) into the
    /// gradient w.r.t. its input, using only `y`.
    pub fn backward_from_output(self, y: &[f32], dy: &mut [f32]) {
        match self {
            Act::Identity => {}
            Act::Sigmoid => sigmoid_backward(y, dy),
            Act::Relu => relu_backward(y, dy),
            Act::Tanh => tanh_backward(y, dy),
        }
    }
}

/// e^x for x in f32's range, to about 2 ulp: Cephes' expf (range reduction
/// by ln 2, degree-6 polynomial, exponent bits). Unlike libm's expf it has
/// no branches or calls, so loops over it vectorize.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 5e-1;
    let e = p * r * r + r + 1.0;
    e * f32::from_bits(((n as i32 + 127) << 23) as u32)
}

#[multiversion::multiversion(targets = "simd")]
fn sigmoid_in_place(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = 1.0 / (1.0 + exp_f32(-*x)));
}

/// tanh(x) = 1 - 2 / (e^2x + 1), with the vectorizable exp: absolute error
/// about 1e-7 (libm's tanhf is a call per element and halved the speed).
#[multiversion::multiversion(targets = "simd")]
fn tanh_in_place(v: &mut [f32]) {
    v.iter_mut()
        .for_each(|x| *x = 1.0 - 2.0 / (exp_f32(2.0 * *x) + 1.0));
}

#[multiversion::multiversion(targets = "simd")]
fn relu_in_place(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = x.max(0.0));
}

#[multiversion::multiversion(targets = "simd")]
fn sigmoid_backward(y: &[f32], dy: &mut [f32]) {
    dy.iter_mut().zip(y).for_each(|(g, &y)| *g *= y * (1.0 - y));
}

#[multiversion::multiversion(targets = "simd")]
fn relu_backward(y: &[f32], dy: &mut [f32]) {
    dy.iter_mut()
        .zip(y)
        .for_each(|(g, &y)| *g = if y > 0.0 { *g } else { 0.0 });
}

#[multiversion::multiversion(targets = "simd")]
fn tanh_backward(y: &[f32], dy: &mut [f32]) {
    dy.iter_mut().zip(y).for_each(|(g, &y)| *g *= 1.0 - y * y);
}

#[multiversion::multiversion(targets = "simd")]
fn add_assign(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
}

/// Shapes of one 2-D convolution (stride 1, square kernel, zero padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvDims {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub k: usize,
    pub pad: usize,
}

impl ConvDims {
    pub fn ho(&self) -> usize {
        self.h + 2 * self.pad + 1 - self.k
    }
    pub fn wo(&self) -> usize {
        self.w + 2 * self.pad + 1 - self.k
    }
    /// Output pixels per channel.
    pub fn p(&self) -> usize {
        self.ho() * self.wo()
    }
    /// Weights per output channel.
    pub fn ckk(&self) -> usize {
        self.c * self.k * self.k
    }
    pub fn in_len(&self) -> usize {
        self.c * self.h * self.w
    }
    pub fn out_len(&self) -> usize {
        self.o * self.p()
    }
    /// The kernel covers the whole unpadded input: patches are the images.
    fn is_dense(&self) -> bool {
        self.pad == 0 && self.h == self.k && self.w == self.k
    }
}

/// `c[m, n] = beta * c + a[m, k] x b[k, n]`, all row-major unless strides say otherwise.
#[allow(clippy::too_many_arguments)]
#[inline]
fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
    (rsc, csc): (usize, usize),
) {
    debug_assert!(a.len() > (m - 1) * rsa + (k - 1) * csa);
    debug_assert!(b.len() > (k - 1) * rsb + (n - 1) * csb);
    debug_assert!(c.len() > (m - 1) * rsc + (n - 1) * csc);
    // SAFETY: the asserts above bound every index the product touches.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            csc as isize,
            rsc as isize,
            beta != 0.0,
            a.as_ptr(),
            csa as isize,
            rsa as isize,
            b.as_ptr(),
            csb as isize,
            rsb as isize,
            beta,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Copies a short row without a call to memcpy: for the 10- and 28-float
/// rows of im2col the call costs more than the copy. Whole 8-float blocks,
/// then one last (overlapping) block for the tail.
#[inline(always)]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    let n = dst.len();
    let src = &src[..n];
    if n < 8 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
        return;
    }
    let mut at = 0;
    while at + 8 <= n {
        let block: [f32; 8] = src[at..at + 8].try_into().expect("8 floats");
        dst[at..at + 8].copy_from_slice(&block);
        at += 8;
    }
    if at < n {
        let block: [f32; 8] = src[n - 8..n].try_into().expect("8 floats");
        dst[n - 8..n].copy_from_slice(&block);
    }
}

/// The image with `pad` zeros around each plane, or the image itself when
/// there is no padding.
fn padded<'a>(d: &ConvDims, x: &'a [f32], buf: &'a mut Vec<f32>) -> &'a [f32] {
    if d.pad == 0 {
        return x;
    }
    let (hp, wp) = (d.h + 2 * d.pad, d.w + 2 * d.pad);
    buf.clear();
    buf.resize(d.c * hp * wp, 0.0);
    for c in 0..d.c {
        for y in 0..d.h {
            let dst = &mut buf[(c * hp + y + d.pad) * wp + d.pad..][..d.w];
            copy_row(dst, &x[(c * d.h + y) * d.w..][..d.w]);
        }
    }
    buf
}

/// Gathers one image's patches into columns `at..at + P` of `cols`, a
/// matrix with rows of length `stride`:
/// `cols[(c*K + i)*K + j, at + oy*Wo + ox] = x[c, oy+i-pad, ox+j-pad]`.
#[multiversion::multiversion(targets = "simd")]
fn im2col(
    d: &ConvDims,
    x: &[f32],
    cols: &mut [f32],
    stride: usize,
    at: usize,
    pad_buf: &mut Vec<f32>,
) {
    let (ho, wo, p) = (d.ho(), d.wo(), d.p());
    let (hp, wp) = (d.h + 2 * d.pad, d.w + 2 * d.pad);
    let x = padded(d, x, pad_buf);
    for c in 0..d.c {
        let plane = &x[c * hp * wp..(c + 1) * hp * wp];
        for i in 0..d.k {
            for j in 0..d.k {
                let row = &mut cols[((c * d.k + i) * d.k + j) * stride + at..][..p];
                for oy in 0..ho {
                    copy_row(
                        &mut row[oy * wo..(oy + 1) * wo],
                        &plane[(oy + i) * wp + j..],
                    );
                }
            }
        }
    }
}

/// The adjoint of `im2col`: adds each patch entry back onto its pixel.
#[multiversion::multiversion(targets = "simd")]
fn col2im_add(
    d: &ConvDims,
    cols: &[f32],
    stride: usize,
    at: usize,
    dx: &mut [f32],
    pad_buf: &mut Vec<f32>,
) {
    let (hp, wp) = (d.h + 2 * d.pad, d.w + 2 * d.pad);
    if d.pad == 0 {
        // No border to drop: accumulate straight into dx.
        col2im_planes(d, cols, stride, at, dx, wp);
        return;
    }
    // Accumulate into a padded gradient, then add its interior to dx.
    pad_buf.clear();
    pad_buf.resize(d.c * hp * wp, 0.0);
    col2im_planes(d, cols, stride, at, pad_buf, wp);
    for c in 0..d.c {
        for y in 0..d.h {
            let src = &pad_buf[(c * hp + y + d.pad) * wp + d.pad..][..d.w];
            let dst = &mut dx[(c * d.h + y) * d.w..][..d.w];
            dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
        }
    }
}

/// Adds the patches onto planes of width `wp` (the padded width).
#[inline(always)]
fn col2im_planes(
    d: &ConvDims,
    cols: &[f32],
    stride: usize,
    at: usize,
    planes: &mut [f32],
    wp: usize,
) {
    let (ho, wo, p) = (d.ho(), d.wo(), d.p());
    let plane_len = planes.len() / d.c;
    for c in 0..d.c {
        let plane = &mut planes[c * plane_len..(c + 1) * plane_len];
        for i in 0..d.k {
            for j in 0..d.k {
                let row = &cols[((c * d.k + i) * d.k + j) * stride + at..][..p];
                for oy in 0..ho {
                    let dst = &mut plane[(oy + i) * wp + j..][..wo];
                    let src = &row[oy * wo..(oy + 1) * wo];
                    dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
                }
            }
        }
    }
}

fn add_bias_and_activate(d: &ConvDims, bias: &[f32], act: Act, out: &mut [f32]) {
    let p = d.p();
    for (o, plane) in out.chunks_exact_mut(p).enumerate() {
        let b = bias[o % d.o];
        plane.iter_mut().for_each(|v| *v += b);
    }
    act.apply(out);
}

/// Reusable per-thread buffers of the convolution kernels.
#[derive(Default)]
pub struct Scratch {
    cols: Vec<f32>,
    z: Vec<f32>,
    pad: Vec<f32>,
    dz: Vec<f32>,
}

/// Images per matrix product: enough to make the product wide, few enough
/// that the patch matrix (CKK x G*P floats) stays in the L2 cache.
fn group_size(d: &ConvDims) -> usize {
    const COLS_BUDGET: usize = 64 * 1024;
    (COLS_BUDGET / (d.ckk() * d.p())).clamp(1, CHUNK)
}

/// `act(conv(x, w) + b)` for the `n` images of one chunk, into `out`.
/// Images go in groups: their patches side by side as the columns of
/// `cols` [CKK, G*P], so each group is one wide matrix product.
fn conv_forward_chunk(
    d: &ConvDims,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    act: Act,
    out: &mut [f32],
    scratch: &mut Scratch,
) {
    let n = x.len() / d.in_len();
    let (ckk, p) = (d.ckk(), d.p());
    if d.is_dense() {
        // out[n, O] = x[n, CKK] x W^T[CKK, O]
        gemm(n, ckk, d.o, x, (ckk, 1), w, (1, ckk), 0.0, out, (d.o, 1));
    } else {
        let group = group_size(d);
        for (x, out) in x
            .chunks(group * d.in_len())
            .zip(out.chunks_mut(group * d.out_len()))
        {
            let gp = x.len() / d.in_len() * p;
            scratch.cols.resize(ckk * gp, 0.0);
            scratch.z.resize(d.o * gp, 0.0);
            for (s, x) in x.chunks_exact(d.in_len()).enumerate() {
                im2col(d, x, &mut scratch.cols, gp, s * p, &mut scratch.pad);
            }
            // z[O, G*P] = W[O, CKK] x cols[CKK, G*P], then to [G, O, P].
            gemm(
                d.o,
                ckk,
                gp,
                w,
                (ckk, 1),
                &scratch.cols,
                (gp, 1),
                0.0,
                &mut scratch.z,
                (gp, 1),
            );
            for (o, z_row) in scratch.z.chunks_exact(gp).enumerate() {
                for (s, z) in z_row.chunks_exact(p).enumerate() {
                    out[s * d.out_len() + o * p..][..p].copy_from_slice(z);
                }
            }
        }
    }
    add_bias_and_activate(d, b, act, out);
}

/// A zeroed buffer whose contents are about to be overwritten anyway.
fn buffer(len: usize) -> Vec<f32> {
    vec![0.0f32; len]
}

/// Forward convolution of a batch: returns `act(conv(x, w) + b)`, [B, O, Ho, Wo].
pub fn conv_forward(
    d: &ConvDims,
    batch: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    act: Act,
) -> Vec<f32> {
    assert_eq!(x.len(), batch * d.in_len());
    assert_eq!((w.len(), b.len()), (d.o * d.ckk(), d.o));
    let mut out = buffer(batch * d.out_len());
    out.par_chunks_mut(CHUNK * d.out_len())
        .zip(x.par_chunks(CHUNK * d.in_len()))
        .for_each_init(Scratch::default, |scratch, (out, x)| {
            conv_forward_chunk(d, x, w, b, act, out, scratch)
        });
    out
}

/// What the fused convolution + activation + pooling keeps for its backward.
pub struct ConvPoolSaved {
    /// The activations before pooling, [B, O, Ho, Wo].
    pub activations: Vec<f32>,
    /// For max pooling, which of each window's four inputs won.
    pub winners: Vec<u8>,
}

/// `pool(act(conv(x, w) + b))` in one pass over each chunk, so the large
/// pre-pool activations never become a tensor of their own. They are kept
/// for the backward only when `keep` is set (training); inference reuses a
/// small per-thread buffer instead.
#[allow(clippy::too_many_arguments)]
pub fn conv_pool_forward(
    d: &ConvDims,
    batch: usize,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    act: Act,
    pool: Pool,
    keep: bool,
) -> (Vec<f32>, ConvPoolSaved) {
    assert_eq!(x.len(), batch * d.in_len());
    let (ho, wo) = (d.ho(), d.wo());
    assert!(
        ho % 2 == 0 && wo % 2 == 0,
        "2x2 pooling needs even sizes, got {ho}x{wo}"
    );
    let (out_len, pooled_len) = (d.out_len(), d.out_len() / 4);
    let chunks = batch.div_ceil(CHUNK);
    let mut activations = if keep {
        buffer(batch * out_len)
    } else {
        Vec::new()
    };
    let mut pooled = buffer(batch * pooled_len);
    let mut winners = if keep && pool == Pool::Max {
        vec![0u8; pooled.len()]
    } else {
        Vec::new()
    };
    let mut kept: Vec<(&mut [f32], &mut [u8])> = if keep {
        let a = activations.chunks_mut(CHUNK * out_len);
        if pool == Pool::Max {
            a.zip(winners.chunks_mut(CHUNK * pooled_len)).collect()
        } else {
            a.map(|a| (a, <&mut [u8]>::default())).collect()
        }
    } else {
        (0..chunks)
            .map(|_| (<&mut [f32]>::default(), <&mut [u8]>::default()))
            .collect()
    };
    pooled
        .par_chunks_mut(CHUNK * pooled_len)
        .zip(x.par_chunks(CHUNK * d.in_len()))
        .zip(kept.par_iter_mut())
        .for_each_init(
            || (Scratch::default(), Vec::new(), Vec::new()),
            |(scratch, scratch_a, scratch_arg), ((y, x), (a, arg))| {
                let n = x.len() / d.in_len();
                let (a, arg): (&mut [f32], &mut [u8]) = if keep {
                    (a, arg)
                } else {
                    scratch_a.resize(n * out_len, 0.0);
                    scratch_arg.resize(if pool == Pool::Max { n * pooled_len } else { 0 }, 0);
                    (&mut scratch_a[..], &mut scratch_arg[..])
                };
                conv_forward_chunk(d, x, w, b, act, a, scratch);
                pool_forward_into(pool, n * d.o, ho, wo, a, y, arg);
            },
        );
    (
        pooled,
        ConvPoolSaved {
            activations,
            winners,
        },
    )
}

/// Gradients of a convolution.
pub struct ConvGrads {
    /// `None` when the input gradient was not asked for.
    pub dx: Option<Vec<f32>>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
}

/// Backward of `conv_forward`, given its input `x`, its output `y` and the
/// gradient `dy` of the loss w.r.t. `y`.
#[allow(clippy::too_many_arguments)]
pub fn conv_backward(
    d: &ConvDims,
    batch: usize,
    x: &[f32],
    w: &[f32],
    y: &[f32],
    dy: &[f32],
    act: Act,
    need_dx: bool,
) -> ConvGrads {
    let out_len = d.out_len();
    conv_backward_with(d, batch, x, w, need_dx, |s0, n, dz| {
        dz.copy_from_slice(&dy[s0 * out_len..(s0 + n) * out_len]);
        act.backward_from_output(&y[s0 * out_len..(s0 + n) * out_len], dz);
    })
}

/// Backward of `conv_pool_forward`, given the gradient w.r.t. the pooled output.
#[allow(clippy::too_many_arguments)]
pub fn conv_pool_backward(
    d: &ConvDims,
    batch: usize,
    x: &[f32],
    w: &[f32],
    saved: &ConvPoolSaved,
    dpooled: &[f32],
    act: Act,
    pool: Pool,
    need_dx: bool,
) -> ConvGrads {
    let (out_len, ho, wo) = (d.out_len(), d.ho(), d.wo());
    let pooled_len = out_len / 4;
    conv_backward_with(d, batch, x, w, need_dx, |s0, n, dz| {
        let winners = if pool == Pool::Max {
            &saved.winners[s0 * pooled_len..(s0 + n) * pooled_len]
        } else {
            &[][..]
        };
        pool_backward_into(
            pool,
            n * d.o,
            ho,
            wo,
            &dpooled[s0 * pooled_len..(s0 + n) * pooled_len],
            winners,
            dz,
        );
        act.backward_from_output(&saved.activations[s0 * out_len..(s0 + n) * out_len], dz);
    })
}

/// The shared part of the convolution backwards. `dz_of(s0, n, dz)` writes
/// the gradient w.r.t. the pre-activation output of images s0..s0+n.
fn conv_backward_with(
    d: &ConvDims,
    batch: usize,
    x: &[f32],
    w: &[f32],
    need_dx: bool,
    dz_of: impl Fn(usize, usize, &mut [f32]) + Sync,
) -> ConvGrads {
    let (in_len, out_len, ckk, p) = (d.in_len(), d.out_len(), d.ckk(), d.p());
    let mut dx = if need_dx {
        buffer(batch * in_len)
    } else {
        Vec::new()
    };
    let dx_chunks: Vec<Option<&mut [f32]>> = if need_dx {
        dx.chunks_mut(CHUNK * in_len).map(Some).collect()
    } else {
        (0..batch.div_ceil(CHUNK)).map(|_| None).collect()
    };
    // Per chunk: (dw, db) partial sums, reduced below in chunk order.
    let partials: Vec<(Vec<f32>, Vec<f32>)> = dx_chunks
        .into_par_iter()
        .enumerate()
        .map_init(Scratch::default, |scratch, (ci, mut dx)| {
            let s0 = ci * CHUNK;
            let n = CHUNK.min(batch - s0);
            let x = &x[s0 * in_len..(s0 + n) * in_len];
            let Scratch {
                cols,
                z: dz_t,
                pad,
                dz,
            } = scratch;
            dz.resize(n * out_len, 0.0);
            dz_of(s0, n, dz);
            let mut dw = buffer(d.o * ckk);
            let mut db = buffer(d.o);
            for (i, plane) in dz.chunks_exact(p).enumerate() {
                db[i % d.o] += plane.iter().sum::<f32>();
            }
            if d.is_dense() {
                // dz is [n, O]; dW[O, CKK] = dz^T x x; dx[n, CKK] = dz x W.
                gemm(
                    d.o,
                    n,
                    ckk,
                    dz,
                    (1, d.o),
                    x,
                    (ckk, 1),
                    0.0,
                    &mut dw,
                    (ckk, 1),
                );
                if let Some(dx) = dx {
                    gemm(n, d.o, ckk, dz, (d.o, 1), w, (ckk, 1), 0.0, dx, (ckk, 1));
                }
            } else {
                // Image groups as in the forward, with dz as [O, G*P].
                let group = group_size(d);
                let mut dx_groups = dx.as_deref_mut().map(|dx| dx.chunks_mut(group * in_len));
                for (gi, (x, dz)) in x
                    .chunks(group * in_len)
                    .zip(dz.chunks(group * out_len))
                    .enumerate()
                {
                    let gp = x.len() / in_len * p;
                    dz_t.resize(d.o * gp, 0.0);
                    for (s, dz) in dz.chunks_exact(out_len).enumerate() {
                        for (o, plane) in dz.chunks_exact(p).enumerate() {
                            dz_t[o * gp + s * p..][..p].copy_from_slice(plane);
                        }
                    }
                    cols.resize(ckk * gp, 0.0);
                    for (s, x) in x.chunks_exact(in_len).enumerate() {
                        im2col(d, x, cols, gp, s * p, pad);
                    }
                    // dW[O, CKK] (+)= dz[O, G*P] x cols^T[G*P, CKK]
                    let beta = if gi == 0 { 0.0 } else { 1.0 };
                    gemm(
                        d.o,
                        gp,
                        ckk,
                        dz_t,
                        (gp, 1),
                        cols,
                        (1, gp),
                        beta,
                        &mut dw,
                        (ckk, 1),
                    );
                    if let Some(dx) = dx_groups.as_mut().and_then(|g| g.next()) {
                        // dcols[CKK, G*P] = W^T[CKK, O] x dz[O, G*P], reusing cols' memory.
                        gemm(ckk, d.o, gp, w, (1, ckk), dz_t, (gp, 1), 0.0, cols, (gp, 1));
                        for (s, dx) in dx.chunks_exact_mut(in_len).enumerate() {
                            col2im_add(d, cols, gp, s * p, dx, pad);
                        }
                    }
                }
            }
            (dw, db)
        })
        .collect();
    let mut dw = buffer(d.o * ckk);
    let mut db = buffer(d.o);
    for (pw, pb) in &partials {
        add_assign(&mut dw, pw);
        add_assign(&mut db, pb);
    }
    ConvGrads {
        dx: need_dx.then_some(dx),
        dw,
        db,
    }
}

/// 2x2, stride 2 pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Avg,
    Max,
}

/// Pools `planes` planes of `h` x `w` (both even) into `y`. For max
/// pooling also records in `arg` which of the four inputs won (first on ties).
#[multiversion::multiversion(targets = "simd")]
fn pool_forward_into(
    kind: Pool,
    planes: usize,
    h: usize,
    w: usize,
    x: &[f32],
    y: &mut [f32],
    arg: &mut [u8],
) {
    let (ho, wo) = (h / 2, w / 2);
    for r in 0..planes * ho {
        let (plane, oy) = (r / ho, r % ho);
        let top = &x[plane * h * w + 2 * oy * w..][..w];
        let bottom = &x[plane * h * w + (2 * oy + 1) * w..][..w];
        let out = &mut y[r * wo..(r + 1) * wo];
        match kind {
            Pool::Avg => {
                for ox in 0..wo {
                    out[ox] = (top[2 * ox] + top[2 * ox + 1] + bottom[2 * ox] + bottom[2 * ox + 1])
                        * 0.25;
                }
            }
            Pool::Max => {
                let arg = &mut arg[r * wo..(r + 1) * wo];
                for ox in 0..wo {
                    // A tournament of selects (no branches, so it vectorizes);
                    // strict > keeps the first of equal values.
                    let (a, b) = (top[2 * ox], top[2 * ox + 1]);
                    let (c, e) = (bottom[2 * ox], bottom[2 * ox + 1]);
                    let (m1, i1) = if b > a { (b, 1u8) } else { (a, 0u8) };
                    let (m2, i2) = if e > c { (e, 3u8) } else { (c, 2u8) };
                    let (m, i) = if m2 > m1 { (m2, i2) } else { (m1, i1) };
                    out[ox] = m;
                    arg[ox] = i;
                }
            }
        }
    }
}

/// Writes into `dx` the gradient of `pool_forward_into`'s input.
#[multiversion::multiversion(targets = "simd")]
fn pool_backward_into(
    kind: Pool,
    planes: usize,
    h: usize,
    w: usize,
    dy: &[f32],
    arg: &[u8],
    dx: &mut [f32],
) {
    let (ho, wo) = (h / 2, w / 2);
    for r in 0..planes * ho {
        let (plane, oy) = (r / ho, r % ho);
        let base = plane * h * w + 2 * oy * w;
        let dy = &dy[r * wo..(r + 1) * wo];
        let (top, bottom) = dx[base..base + 2 * w].split_at_mut(w);
        match kind {
            Pool::Avg => {
                for ox in 0..wo {
                    let g = 0.25 * dy[ox];
                    top[2 * ox] = g;
                    top[2 * ox + 1] = g;
                    bottom[2 * ox] = g;
                    bottom[2 * ox + 1] = g;
                }
            }
            Pool::Max => {
                let arg = &arg[r * wo..(r + 1) * wo];
                for ox in 0..wo {
                    // Selects rather than an indexed store, so it vectorizes.
                    let (g, at) = (dy[ox], arg[ox]);
                    top[2 * ox] = if at == 0 { g } else { 0.0 };
                    top[2 * ox + 1] = if at == 1 { g } else { 0.0 };
                    bottom[2 * ox] = if at == 2 { g } else { 0.0 };
                    bottom[2 * ox + 1] = if at == 3 { g } else { 0.0 };
                }
            }
        }
    }
}

/// Pools `planes` planes of `h` x `w` (both even). For max pooling also
/// returns, per output, which of the four inputs won (0..4, first wins ties).
pub fn pool_forward(
    kind: Pool,
    planes: usize,
    h: usize,
    w: usize,
    x: &[f32],
) -> (Vec<f32>, Vec<u8>) {
    assert!(
        h.is_multiple_of(2) && w.is_multiple_of(2),
        "2x2 pooling needs even sizes, got {h}x{w}"
    );
    assert_eq!(x.len(), planes * h * w);
    let mut y = buffer(planes * h * w / 4);
    let mut arg = if kind == Pool::Max {
        vec![0u8; y.len()]
    } else {
        Vec::new()
    };
    pool_forward_into(kind, planes, h, w, x, &mut y, &mut arg);
    (y, arg)
}

/// Backward of `pool_forward`: spreads `dy` back over the inputs.
pub fn pool_backward(
    kind: Pool,
    planes: usize,
    h: usize,
    w: usize,
    dy: &[f32],
    arg: &[u8],
) -> Vec<f32> {
    let mut dx = buffer(planes * h * w);
    pool_backward_into(kind, planes, h, w, dy, arg, &mut dx);
    dx
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution by definition, for checking the im2col path.
    fn conv_naive(d: &ConvDims, batch: usize, x: &[f32], w: &[f32], b: &[f32]) -> Vec<f32> {
        let (ho, wo) = (d.ho(), d.wo());
        let mut out = vec![0.0; batch * d.out_len()];
        for s in 0..batch {
            for o in 0..d.o {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = b[o];
                        for c in 0..d.c {
                            for i in 0..d.k {
                                for j in 0..d.k {
                                    let iy = (oy + i) as isize - d.pad as isize;
                                    let ix = (ox + j) as isize - d.pad as isize;
                                    if iy >= 0
                                        && ix >= 0
                                        && (iy as usize) < d.h
                                        && (ix as usize) < d.w
                                    {
                                        acc += x[s * d.in_len()
                                            + c * d.h * d.w
                                            + iy as usize * d.w
                                            + ix as usize]
                                            * w[((o * d.c + c) * d.k + i) * d.k + j];
                                    }
                                }
                            }
                        }
                        out[s * d.out_len() + o * ho * wo + oy * wo + ox] = acc;
                    }
                }
            }
        }
        out
    }

    fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state % 2000) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn im2col_conv_matches_the_definition() {
        for d in [
            ConvDims {
                c: 1,
                h: 28,
                w: 28,
                o: 6,
                k: 5,
                pad: 2,
            },
            ConvDims {
                c: 6,
                h: 14,
                w: 14,
                o: 16,
                k: 5,
                pad: 0,
            },
            ConvDims {
                c: 16,
                h: 5,
                w: 5,
                o: 120,
                k: 5,
                pad: 0,
            },
            ConvDims {
                c: 2,
                h: 6,
                w: 7,
                o: 3,
                k: 3,
                pad: 3,
            },
        ] {
            let batch = 11; // not a multiple of CHUNK
            let x = pseudo_random(batch * d.in_len(), 1);
            let w = pseudo_random(d.o * d.ckk(), 2);
            let b = pseudo_random(d.o, 3);
            let fast = conv_forward(&d, batch, &x, &w, &b, Act::Identity);
            let slow = conv_naive(&d, batch, &x, &w, &b);
            for (f, s) in fast.iter().zip(&slow) {
                assert!((f - s).abs() < 1e-4, "{d:?}: {f} vs {s}");
            }
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), c> == <x, col2im(c)> for any x, c.
        let d = ConvDims {
            c: 2,
            h: 6,
            w: 7,
            o: 1,
            k: 3,
            pad: 2,
        };
        let x = pseudo_random(d.in_len(), 4);
        let c = pseudo_random(d.ckk() * d.p(), 5);
        let mut cols = vec![0.0; c.len()];
        im2col(&d, &x, &mut cols, d.p(), 0, &mut Vec::new());
        let mut back = vec![0.0; x.len()];
        col2im_add(&d, &c, d.p(), 0, &mut back, &mut Vec::new());
        let lhs: f64 = cols
            .iter()
            .zip(&c)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        let rhs: f64 = x
            .iter()
            .zip(&back)
            .map(|(a, b)| (*a as f64) * (*b as f64))
            .sum();
        assert!((lhs - rhs).abs() < 1e-3, "{lhs} vs {rhs}");
    }

    #[test]
    fn fast_exp_and_sigmoid_are_accurate() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp_f32(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
            x += 0.01;
        }
        assert!(worst < 1e-6, "exp relative error {worst}");
        let mut v: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.01).collect();
        let exact: Vec<f64> = v
            .iter()
            .map(|&x| 1.0 / (1.0 + (-(x as f64)).exp()))
            .collect();
        Act::Sigmoid.apply(&mut v);
        for (got, want) in v.iter().zip(exact) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        let mut t: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.005).collect();
        let exact: Vec<f64> = t.iter().map(|&x| (x as f64).tanh()).collect();
        Act::Tanh.apply(&mut t);
        for (got, want) in t.iter().zip(exact) {
            assert!((*got as f64 - want).abs() < 5e-7, "tanh {got} vs {want}");
        }
        let mut ends = vec![-1e4f32, 1e4, f32::MIN, f32::MAX];
        Act::Tanh.apply(&mut ends);
        assert_eq!(ends, vec![-1.0, 1.0, -1.0, 1.0]);
        let mut extreme = vec![-1e4f32, 1e4, f32::MIN, f32::MAX];
        Act::Sigmoid.apply(&mut extreme);
        assert!(
            extreme[0] < 1e-30 && extreme[1] == 1.0 && extreme[2] < 1e-30 && extreme[3] == 1.0,
            "{extreme:?}"
        );
    }

    #[test]
    fn fused_conv_pool_matches_conv_then_pool() {
        let d = ConvDims {
            c: 2,
            h: 9,
            w: 9,
            o: 3,
            k: 4,
            pad: 1,
        };
        let batch = 10;
        let x = pseudo_random(batch * d.in_len(), 11);
        let w = pseudo_random(d.o * d.ckk(), 12);
        let b = pseudo_random(d.o, 13);
        for pool in [Pool::Avg, Pool::Max] {
            for act in [Act::Sigmoid, Act::Relu] {
                let y = conv_forward(&d, batch, &x, &w, &b, act);
                let (pooled, arg) = pool_forward(pool, batch * d.o, d.ho(), d.wo(), &y);
                let (fused, saved) = conv_pool_forward(&d, batch, &x, &w, &b, act, pool, true);
                let (inference, _) = conv_pool_forward(&d, batch, &x, &w, &b, act, pool, false);
                assert_eq!(inference, pooled);
                assert_eq!(fused, pooled);
                assert_eq!(saved.activations, y);
                let dp = pseudo_random(pooled.len(), 14);
                let dy = pool_backward(pool, batch * d.o, d.ho(), d.wo(), &dp, &arg);
                let two_step = conv_backward(&d, batch, &x, &w, &y, &dy, act, true);
                let one_step = conv_pool_backward(&d, batch, &x, &w, &saved, &dp, act, pool, true);
                assert_eq!(one_step.dw, two_step.dw);
                assert_eq!(one_step.db, two_step.db);
                assert_eq!(one_step.dx, two_step.dx);
            }
        }
    }

    #[test]
    fn max_pool_routes_gradient_to_the_winner() {
        let x = vec![1.0, 5.0, 2.0, 0.0, 3.0, 4.0, 9.0, 1.0];
        let (y, arg) = pool_forward(Pool::Max, 1, 2, 4, &x);
        assert_eq!(y, vec![5.0, 9.0]);
        let dx = pool_backward(Pool::Max, 1, 2, 4, &[1.0, 2.0], &arg);
        assert_eq!(dx, vec![0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0]);
        let (y, _) = pool_forward(Pool::Avg, 1, 2, 4, &x);
        assert_eq!(y, vec![13.0 / 4.0, 3.0]);
    }
}
