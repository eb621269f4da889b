//! Hand-written CPU kernels for convolution and pooling, on plain slices.
//!
//! Tensors come and go in PyTorch's NCHW layout. Inside, a batch is cut
//! into blocks of eight images that are packed lane-interleaved and
//! convolved directly (`lanes.rs`), with the activation done on the block
//! before it is unpacked (`chain.rs` adds the pooling, and chains stages
//! without unpacking in between). When the kernel covers the
//! whole unpadded input (c5: 5x5 on 5x5) the convolution is a plain matrix
//! product over the batch instead, done by the `gemm` crate (dfdx's own
//! matrix kernel).
//!
//! Blocks run in parallel with rayon. Weight gradients are summed per
//! block and the block sums added in block order, so results do not
//! depend on the number of threads.

use rayon::prelude::*;

use super::lanes::{self, RowLayout, Taps};
use super::simd::{with_simd, Lanes, LANES};

/// Samples per parallel work item. Fixed, so that the order of floating
/// point sums (and so every result bit) is the same for any thread count.
pub const CHUNK: usize = LANES;

pub use super::activation::Act;

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

/// LeNet-5's c1 and c3, the shapes the lane kernels are built for.
pub const LENET_C1: ConvDims = ConvDims {
    c: 1,
    h: 28,
    w: 28,
    o: 6,
    k: 5,
    pad: 2,
};
pub const LENET_C3: ConvDims = ConvDims {
    c: 6,
    h: 14,
    w: 14,
    o: 16,
    k: 5,
    pad: 0,
};

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

fn add_bias_and_activate(d: &ConvDims, bias: &[f32], act: Act, out: &mut [f32]) {
    let p = d.p();
    for (o, plane) in out.chunks_exact_mut(p).enumerate() {
        let b = bias[o % d.o];
        plane.iter_mut().for_each(|v| *v += b);
    }
    act.apply(out);
}

/// A zeroed buffer whose contents are about to be overwritten anyway.
pub(super) fn buffer(len: usize) -> Vec<f32> {
    vec![0.0f32; len]
}

/// `len` lane pixels of a reused buffer, with stale contents: every
/// caller overwrites all of them (zeroing was a measurable cost).
pub(super) fn lane_buffer(buf: &mut Vec<Lanes>, len: usize) -> &mut [Lanes] {
    buf.resize(len, [0.0; LANES]);
    buf
}

/// Reusable per-thread buffers of one block's work.
#[derive(Default)]
struct Scratch {
    input: Vec<Lanes>,
    output: Vec<Lanes>,
    grad: Vec<Lanes>,
    pooled: Vec<Lanes>,
    padded: Vec<Lanes>,
}

/// Packs one block of NCHW images with the convolution's padding and
/// returns `act(conv(x, w) + b)` for it, [O][Ho][Wo] lanes, in `z`.
#[allow(clippy::too_many_arguments)]
fn forward_block(
    d: &ConvDims,
    x: &[f32],
    taps: &Taps,
    b: &[f32],
    act: Act,
    xp: &mut [Lanes],
    z: &mut [Lanes],
) {
    lanes::pack(x, (d.c, d.h, d.w), d.pad, xp);
    with_simd!(|s| lanes::conv_forward(s, d, xp, taps, b, act, z, None));
}

/// The dense case (the kernel covers the whole input, as in c5): the
/// batch is one matrix product, `out[n, O] = x[n, CKK] x W^T[CKK, O]`.
fn dense_forward(d: &ConvDims, x: &[f32], w: &[f32], b: &[f32], act: Act, out: &mut [f32]) {
    let (n, ckk) = (x.len() / d.in_len(), d.ckk());
    gemm(n, ckk, d.o, x, (ckk, 1), w, (1, ckk), 0.0, out, (d.o, 1));
    add_bias_and_activate(d, b, act, out);
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
    if d.is_dense() {
        out.par_chunks_mut(DENSE_CHUNK * d.o)
            .zip(x.par_chunks(DENSE_CHUNK * d.in_len()))
            .for_each(|(out, x)| dense_forward(d, x, w, b, act, out));
        return out;
    }
    let (hp, wp) = lanes::padded_hw(d);
    let taps = with_simd!(|s| Taps::forward(s, d, w));
    out.par_chunks_mut(CHUNK * d.out_len())
        .zip(x.par_chunks(CHUNK * d.in_len()))
        .for_each_init(Scratch::default, |scratch, (out, x)| {
            let xp = lane_buffer(&mut scratch.input, d.c * hp * wp);
            let z = lane_buffer(&mut scratch.output, d.out_len());
            forward_block(d, x, &taps, b, act, xp, z);
            lanes::unpack(z, out);
        });
    out
}

/// Gradients of a convolution.
pub struct ConvGrads {
    /// `None` when the input gradient was not asked for.
    pub dx: Option<Vec<f32>>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
}

/// One block's share of the weight and bias gradients.
pub(super) struct BlockGrads {
    dw: Vec<f32>,
    db: Vec<f32>,
}

/// Adds up the blocks' gradients, block after block: the same order for
/// any number of threads.
pub(super) fn reduce_blocks<'a>(
    d: &ConvDims,
    blocks: impl Iterator<Item = &'a BlockGrads>,
    dx: Option<Vec<f32>>,
) -> ConvGrads {
    let mut dw = buffer(d.o * d.ckk());
    let mut db = buffer(d.o);
    for block in blocks {
        add_assign(&mut dw, &block.dw);
        add_assign(&mut db, &block.db);
    }
    ConvGrads { dx, dw, db }
}

/// One block's weight and bias gradients, from its packed input `xp` and
/// the gradient `dz` of the convolution's output (before the activation).
pub(super) fn weight_and_bias_grads(d: &ConvDims, xp: &[Lanes], dz: &[Lanes]) -> BlockGrads {
    let mut db = buffer(d.o);
    with_simd!(|s| lanes::conv_bias_grad(s, d, dz, &mut db));
    weight_grads_beside(d, xp, dz, RowLayout::dense(d.wo()), db)
}

/// One block's weight gradient, from its packed input `xp` and the
/// gradient `dz` of the convolution's output (rows laid out as `dz_rows`
/// says), beside its bias gradient `db` summed already (as
/// `lanes::pool_act_backward` does).
pub(super) fn weight_grads_beside(
    d: &ConvDims,
    xp: &[Lanes],
    dz: &[Lanes],
    dz_rows: RowLayout,
    db: Vec<f32>,
) -> BlockGrads {
    let mut dw = buffer(d.o * d.ckk());
    with_simd!(|s| lanes::conv_weight_grad(s, d, xp, dz, dz_rows, &mut dw));
    BlockGrads { dw, db }
}

/// The weight, bias and (into `dx`, NCHW, when given) input gradients of
/// one block, from its packed input `xp` and the gradient `dz` of the
/// convolution's output (before the activation); `taps` are the weights
/// for the input gradient, packed when it is asked for.
fn backward_block(
    d: &ConvDims,
    xp: &[Lanes],
    taps: Option<&Taps>,
    dz: &[Lanes],
    dx: Option<&mut [f32]>,
    (dx_lanes, padded): (&mut Vec<Lanes>, &mut Vec<Lanes>),
) -> BlockGrads {
    let grads = weight_and_bias_grads(d, xp, dz);
    if let Some(dx) = dx {
        let taps = taps.expect("packed when the input gradient is asked for");
        let dx_lanes = lane_buffer(dx_lanes, d.in_len());
        with_simd!(|s| lanes::conv_input_grad(s, d, dz, taps, dx_lanes, padded));
        lanes::unpack(dx_lanes, dx);
    }
    grads
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
    if d.is_dense() {
        return dense_backward(d, batch, x, w, y, dy, act, need_dx);
    }
    let (in_len, out_len) = (d.in_len(), d.out_len());
    let (hp, wp) = lanes::padded_hw(d);
    let mut dx = if need_dx {
        buffer(batch * in_len)
    } else {
        Vec::new()
    };
    let taps = need_dx.then(|| with_simd!(|s| Taps::input_grad(s, d, w)));
    let blocks: Vec<BlockGrads> = optional_chunks(&mut dx, CHUNK * in_len, batch.div_ceil(CHUNK))
        .into_par_iter()
        .enumerate()
        .map_init(Scratch::default, |scratch, (bi, dx)| {
            let Scratch {
                input,
                output,
                grad,
                pooled,
                padded,
            } = scratch;
            let images = bi * CHUNK..batch.min((bi + 1) * CHUNK);
            let outputs = images.start * out_len..images.end * out_len;
            let out_dims = (d.o, d.ho(), d.wo());
            let dz = lane_buffer(output, out_len);
            lanes::pack(&dy[outputs.clone()], out_dims, 0, dz);
            let ys = lane_buffer(pooled, out_len);
            lanes::pack(&y[outputs], out_dims, 0, ys);
            act.backward_from_output(ys.as_flattened(), dz.as_flattened_mut());
            let xp = lane_buffer(input, d.c * hp * wp);
            let x = &x[images.start * in_len..images.end * in_len];
            lanes::pack(x, (d.c, d.h, d.w), d.pad, xp);
            backward_block(d, xp, taps.as_ref(), dz, dx, (grad, padded))
        })
        .collect();
    reduce_blocks(d, blocks.iter(), need_dx.then_some(dx))
}

/// `buf` cut into `len`-sized chunks, or `pieces` `None`s when `buf` is
/// empty (the gradient was not asked for).
pub(super) fn optional_chunks(
    buf: &mut [f32],
    len: usize,
    pieces: usize,
) -> Vec<Option<&mut [f32]>> {
    if buf.is_empty() {
        (0..pieces).map(|_| None).collect()
    } else {
        buf.chunks_mut(len).map(Some).collect()
    }
}

/// Output channels per weight-gradient product of the dense backward: a
/// fixed split, so that the sums do not depend on the number of threads.
const DENSE_BAND: usize = 20;

/// Images per matrix product of the dense forward and input gradient: each
/// product repacks the 48k weights of c5, so fewer, larger products, of a
/// fixed size so that results do not depend on the number of threads.
const DENSE_CHUNK: usize = 32;

/// The dense convolution's backward: with dz [n, O] the gradient before
/// the activation, dW[O, CKK] = dz^T x x over the whole batch (in bands of
/// output channels, in parallel) and dx[n, CKK] = dz x W (per chunk).
#[allow(clippy::too_many_arguments)]
fn dense_backward(
    d: &ConvDims,
    batch: usize,
    x: &[f32],
    w: &[f32],
    y: &[f32],
    dy: &[f32],
    act: Act,
    need_dx: bool,
) -> ConvGrads {
    let (in_len, ckk, o) = (d.in_len(), d.ckk(), d.o);
    let mut dz = dy.to_vec();
    act.backward_from_output(y, &mut dz);
    let mut db = buffer(o);
    for row in dz.chunks_exact(o) {
        add_assign(&mut db, row);
    }
    let mut dw = buffer(o * ckk);
    let mut dx = if need_dx {
        buffer(batch * in_len)
    } else {
        Vec::new()
    };
    let dz = &dz;
    rayon::join(
        || {
            dw.par_chunks_mut(DENSE_BAND * ckk)
                .enumerate()
                .for_each(|(band, dw)| {
                    let rows = dw.len() / ckk;
                    let dz_t = &dz[band * DENSE_BAND..];
                    gemm(
                        rows,
                        batch,
                        ckk,
                        dz_t,
                        (1, o),
                        x,
                        (ckk, 1),
                        0.0,
                        dw,
                        (ckk, 1),
                    );
                })
        },
        || {
            dx.par_chunks_mut(DENSE_CHUNK * in_len)
                .zip(dz.par_chunks(DENSE_CHUNK * o))
                .for_each(|(dx, dz)| {
                    let n = dz.len() / o;
                    gemm(n, o, ckk, dz, (o, 1), w, (ckk, 1), 0.0, dx, (ckk, 1));
                })
        },
    );
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
pub(crate) mod tests {
    use super::*;

    /// Direct convolution by definition, for checking the kernels.
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

    /// Values in [-1, 1), the same for the same seed.
    pub(crate) fn pseudo_random(n: usize, seed: u32) -> Vec<f32> {
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
    fn conv_matches_the_definition() {
        for d in [
            LENET_C1,
            LENET_C3,
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
