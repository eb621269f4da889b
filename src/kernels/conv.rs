//! Direct convolution on blocks of eight images, one image per SIMD lane:
//! forward (with the pooling fused in), weight gradient, bias gradient
//! and input gradient.
//!
//! Every multiply-add is one vector FMA for eight images (`pack.rs`), with
//! no im2col copy, no ragged row ends (LeNet's rows are 28, 14, 10 and 5
//! wide) and padding as plain zero pixels. Each kernel keeps a small tile
//! of outputs in registers (`OB` output channels x `XB` neighbouring
//! pixels, fixed at compile time) and streams the inputs and weights past
//! it.
//!
//! Everything here works on one block and is `#[inline(always)]`, generic
//! over [`Simd`], so `with_simd!` compiles it for the CPU's instruction
//! set; `chain.rs` cuts batches into blocks and runs them in parallel.

// Register tiles are indexed arrays on purpose: with constant bounds the
// loops unroll and every accumulator stays in a register.
#![allow(clippy::needless_range_loop)]

use std::ops::Range;

use super::activation::Act;
use super::grads::BlockGrads;
use super::pack::{buffer, sum_lanes};
use super::pool::pool_forward;
use super::shapes::{padded_hw, ConvDims, Pool, RowLayout};
use super::simd::{Lanes, Simd, Vector, LANES};
use crate::with_simd;

/// A layer's weights laid out for the tiles that read them, packed once
/// per batch rather than once per block (repacking them took 2% of a
/// training step). For each tile of N channels (output channels in the
/// forward, input channels in the input gradient) starting at channel
/// c0, the N weights of one tap lie side by side, tap after tap, at
/// `c0 * per_channel`; single channels keep their own layout.
#[derive(Clone)]
pub struct Taps {
    values: Vec<f32>,
    /// Taps per channel of the tiled side.
    per_channel: usize,
    /// Whether the tiles are those of paired vectors (`Simd::NATIVE_PAIRS`).
    pairs: bool,
}

impl Taps {
    /// The N-channel tile's taps starting at channel `c0`.
    #[inline(always)]
    fn tile<const N: usize>(&self, c0: usize) -> &[[f32; N]] {
        let at = c0 * self.per_channel;
        self.values[at..at + N * self.per_channel]
            .as_chunks::<N>()
            .0
    }

    /// Packs `tap(channel, q)` (q < per_channel) for the tiles in `plan`:
    /// channel ranges and their tile width, channels past a range's last
    /// whole tile one at a time.
    fn pack(
        plan: &[(Range<usize>, usize)],
        per_channel: usize,
        pairs: bool,
        tap: impl Fn(usize, usize) -> f32,
    ) -> Self {
        let channels = plan.last().map_or(0, |(range, _)| range.end);
        let mut values = Vec::with_capacity(channels * per_channel);
        for (range, width) in plan {
            let whole_end = range.end - range.len() % width;
            let tiles = (range.start..whole_end)
                .step_by(*width)
                .map(|c0| (c0, *width));
            for (c0, n) in tiles.chain((whole_end..range.end).map(|c| (c, 1))) {
                for q in 0..per_channel {
                    values.extend((c0..c0 + n).map(|c| tap(c, q)));
                }
            }
        }
        Taps {
            values,
            per_channel,
            pairs,
        }
    }

    /// `w` [O][C][K][K] for `conv_forward` on `S`.
    pub fn forward<S: Simd>(_: S, d: &ConvDims, w: &[f32]) -> Self {
        assert_eq!(w.len(), d.o * d.ckk());
        let ckk = d.ckk();
        Taps::pack(&forward_plan::<S>(d.o), ckk, S::NATIVE_PAIRS, |o, q| {
            w[o * ckk + q]
        })
    }

    /// `w` [O][C][K][K] for `conv_input_grad` on `S`: per input channel c,
    /// `(o * K + i) * K + j` is the tap of `w[o][c][i][j]`.
    pub fn input_grad<S: Simd>(_: S, d: &ConvDims, w: &[f32]) -> Self {
        assert_eq!(w.len(), d.o * d.ckk());
        let (kk, ckk) = (d.k * d.k, d.ckk());
        let plan = [(0..d.c, INPUT_GRAD_CHANNELS)];
        Taps::pack(&plan, d.o * kk, S::NATIVE_PAIRS, |c, q| {
            let (o, ij) = (q / kk, q % kk);
            w[o * ckk + c * kk + ij]
        })
    }
}

/// Input channels per tile of the input gradient: 6 channels x 2 pairs
/// (12 accumulators) where pairs are registers, else 6 channels x 1 pair
/// (12 of AVX2's 16 registers).
const INPUT_GRAD_CHANNELS: usize = 6;

/// The forward's output-channel tiles on `S`: channel ranges and their
/// tile width.
fn forward_plan<S: Simd>(o: usize) -> [(Range<usize>, usize); 2] {
    if S::NATIVE_PAIRS {
        // 32 registers of two pixels each: 8 channels x 2 pairs (16
        // accumulators) for c3's 16 channels, 6 x 2 for c1's 6. (4 x 5
        // pairs, a whole row of c3, spilled in the activation: 2.4x slower.)
        let width = if o.is_multiple_of(8) { 8 } else { 6 };
        [(0..o, width), (o..o, 1)]
    } else {
        // Tiles of 6 channels x 2 pixels: 12 accumulators keep both FMA
        // units busy through the FMA latency (8 did not; 4 x 3 ran out of
        // AVX2's 16 registers). c3's 16 channels: two 6-channel tiles and
        // a 4-channel one.
        let sixes = o - o % 6;
        [(0..sixes, 6), (sixes..o, 4)]
    }
}

/// `act(conv(x, w) + b)` for one block: `xp` is the input packed with the
/// convolution's padding, `taps` the weights (`Taps::forward` on the same
/// `S`), `z` is [O][Ho][Wo].
///
/// With `pooled`, also pools `z` into it ([O][Ho/2][Wo/2]), each pair of
/// rows as soon as it is written: read back from the L1 cache instead of
/// in a pass of its own over `z` (c1: 150 KB per block).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn conv_forward<S: Simd>(
    s: S,
    d: &ConvDims,
    xp: &[Lanes],
    taps: &Taps,
    b: &[f32],
    act: Act,
    z: &mut [Lanes],
    mut pooled: Option<(Pool, &mut [Lanes])>,
) {
    let (hp, wp) = padded_hw(d);
    assert_eq!(xp.len(), d.c * hp * wp);
    assert_eq!(
        (taps.values.len(), taps.pairs, b.len(), z.len()),
        (d.o * d.ckk(), S::NATIVE_PAIRS, d.o, d.out_len())
    );
    if let Some((_, p)) = &pooled {
        assert!(
            d.ho().is_multiple_of(2) && d.wo().is_multiple_of(2),
            "2x2 pooling needs even sizes"
        );
        assert_eq!(p.len(), d.out_len() / 4);
    }
    let f = ForwardArgs {
        d,
        xp,
        taps,
        b,
        act,
    };
    for (os, width) in forward_plan::<S>(d.o) {
        match (S::NATIVE_PAIRS, width) {
            _ if os.is_empty() => {}
            (true, 8) => forward_tiled::<S, 8, 2>(s, &f, z, os, &mut pooled),
            (true, 6) => forward_tiled::<S, 6, 2>(s, &f, z, os, &mut pooled),
            (false, 6) => forward_tiled::<S, 6, 1>(s, &f, z, os, &mut pooled),
            (false, 4) => forward_tiled::<S, 4, 1>(s, &f, z, os, &mut pooled),
            _ => unreachable!("no kernel for {width}-channel tiles"),
        }
    }
}

/// The inputs of a forward convolution, as `conv_forward` takes them.
struct ForwardArgs<'a> {
    d: &'a ConvDims,
    xp: &'a [Lanes],
    taps: &'a Taps,
    b: &'a [f32],
    act: Act,
}

/// Where a row of `width` pixels splits for tiles of `XV` pairs: the
/// end of the whole tiles, then of the single pairs left; one pixel may
/// remain.
fn pair_ends<const XV: usize>(width: usize) -> (usize, usize) {
    let tiles_end = width - width % (2 * XV);
    (tiles_end, width - width % 2)
}

/// Covers output channels `os` with OB x XV-pair tiles, and what is left
/// at the edges with narrower ones.
#[inline(always)]
fn forward_tiled<S: Simd, const OB: usize, const XV: usize>(
    s: S,
    f: &ForwardArgs,
    z: &mut [Lanes],
    os: Range<usize>,
    pooled: &mut Option<(Pool, &mut [Lanes])>,
) {
    let whole_end = os.end - os.len() % OB;
    for o0 in (os.start..whole_end).step_by(OB) {
        forward_channels::<S, OB, XV>(s, f, z, o0, pooled);
    }
    for o in whole_end..os.end {
        forward_channels::<S, 1, XV>(s, f, z, o, pooled);
    }
}

/// Output channels o0..o0+OB, row after row: each row in tiles of XV
/// pairs, then single pairs, then a single pixel where one is left.
#[inline(always)]
fn forward_channels<S: Simd, const OB: usize, const XV: usize>(
    s: S,
    f: &ForwardArgs,
    z: &mut [Lanes],
    o0: usize,
    pooled: &mut Option<(Pool, &mut [Lanes])>,
) {
    let p = s.pair();
    let (ho, wo) = (f.d.ho(), f.d.wo());
    let (tiles_end, pairs_end) = pair_ends::<XV>(wo);
    for y in 0..ho {
        forward_row::<_, OB, XV>(p, f, z, o0, y, 0..tiles_end);
        forward_row::<_, OB, 1>(p, f, z, o0, y, tiles_end..pairs_end);
        forward_row::<_, OB, 1>(s, f, z, o0, y, pairs_end..wo);
        if let (Some((kind, out)), true) = (pooled.as_mut(), y % 2 == 1) {
            for o in o0..o0 + OB {
                let rows = &z[(o * ho + y - 1) * wo..][..2 * wo];
                let out = &mut out[(o * ho / 2 + y / 2) * (wo / 2)..][..wo / 2];
                pool_forward(s, *kind, (1, 2, wo), rows, out);
            }
        }
    }
}

/// Output row `y` of channels o0..o0+OB at pixels `xs` (in steps of XV
/// vectors).
#[inline(always)]
fn forward_row<V: Vector, const OB: usize, const XV: usize>(
    v: V,
    f: &ForwardArgs,
    z: &mut [Lanes],
    o0: usize,
    y: usize,
    xs: Range<usize>,
) {
    let d = f.d;
    let (hp, wp) = padded_hw(d);
    let (ho, wo, k) = (d.ho(), d.wo(), d.k);
    let xb = XV * V::PIXELS;
    let taps = f.taps.tile::<OB>(o0);
    for x0 in xs.step_by(xb) {
        let mut acc = [[v.zero(); XV]; OB];
        for ob in 0..OB {
            acc[ob] = [v.splat(f.b[o0 + ob]); XV];
        }
        // Kernel row r = (c, i) meets input row (c, y + i).
        for (r, row_taps) in taps.chunks_exact(k).enumerate() {
            let (c, i) = (r / k, r % k);
            let row = &f.xp[(c * hp + y + i) * wp + x0..][..k - 1 + xb];
            for (tap, window) in row_taps.iter().zip(row.windows(xb)) {
                let mut x = [v.zero(); XV];
                for xv in 0..XV {
                    x[xv] = v.load_px(&window[xv * V::PIXELS..]);
                }
                for ob in 0..OB {
                    let wv = v.splat(tap[ob]);
                    for xv in 0..XV {
                        acc[ob][xv] = v.mul_add(wv, x[xv], acc[ob][xv]);
                    }
                }
            }
        }
        for ob in 0..OB {
            let out = &mut z[((o0 + ob) * ho + y) * wo + x0..][..xb];
            for xv in 0..XV {
                let a = f.act.forward(v, acc[ob][xv]);
                v.store_px(&mut out[xv * V::PIXELS..], a);
            }
        }
    }
}

/// Writes into `dw` [O * CKK] the weight gradient of one block:
/// `dw[o][c][i][j] = sum over (y, x) and the lanes of dz[o][y][x] *
/// xp[c][y+i][x+j]`, with `dz` [O][Ho][Wo] the gradient of the
/// convolution's output, its rows laid out as `dz_rows` says.
#[inline(always)]
pub fn conv_weight_grad<S: Simd>(
    s: S,
    d: &ConvDims,
    xp: &[Lanes],
    dz: &[Lanes],
    dz_rows: RowLayout,
    dw: &mut [f32],
) {
    let (hp, wp) = padded_hw(d);
    assert_eq!(xp.len(), d.c * hp * wp);
    assert!(dz_rows.offset + d.wo() <= dz_rows.stride);
    assert_eq!(
        (dz.len(), dw.len()),
        (d.o * d.ho() * dz_rows.stride, d.o * d.ckk())
    );
    let g = GradArgs { d, xp, dz, dz_rows };
    if S::NATIVE_PAIRS && d.k == 5 {
        // Kernel columns as two pairs and a single one, for 6 channels
        // (c1) or 4 (c3): up to 18 accumulators of 32 registers.
        let p = s.pair();
        if d.o.is_multiple_of(6) {
            weight_grad_tiles::<_, _, 6, 2, 1>(s, p, &g, dw, 0..d.o, 0);
        } else {
            let fours = d.o - d.o % 4;
            weight_grad_tiles::<_, _, 4, 2, 1>(s, p, &g, dw, 0..fours, 0);
            weight_grad_tiles::<_, _, 1, 2, 1>(s, p, &g, dw, fours..d.o, 0);
        }
        return;
    }
    // 2 channels x 5 columns: 10 accumulators, AVX2's 16 registers.
    const OB: usize = 2;
    const JB: usize = 5;
    let (o_main, j_main) = (d.o - d.o % OB, d.k - d.k % JB);
    for j0 in (0..j_main).step_by(JB) {
        weight_grad_tiles::<_, _, OB, JB, 0>(s, s, &g, dw, 0..o_main, j0);
        weight_grad_tiles::<_, _, 1, JB, 0>(s, s, &g, dw, o_main..d.o, j0);
    }
    for j0 in j_main..d.k {
        weight_grad_tiles::<_, _, OB, 1, 0>(s, s, &g, dw, 0..o_main, j0);
        weight_grad_tiles::<_, _, 1, 1, 0>(s, s, &g, dw, o_main..d.o, j0);
    }
}

/// The inputs of a block's weight gradient.
struct GradArgs<'a> {
    d: &'a ConvDims,
    xp: &'a [Lanes],
    dz: &'a [Lanes],
    dz_rows: RowLayout,
}

/// Weight gradients of output channels `os` (in steps of OB), kernel
/// columns j0.. : JV vectors of `v` (of its pixels each), then JN single
/// columns.
#[inline(always)]
fn weight_grad_tiles<S: Simd, V: Vector, const OB: usize, const JV: usize, const JN: usize>(
    s: S,
    v: V,
    g: &GradArgs,
    dw: &mut [f32],
    os: Range<usize>,
    j0: usize,
) {
    let d = g.d;
    let (hp, wp) = padded_hw(d);
    let (wo, k, ckk) = (d.wo(), d.k, d.ckk());
    let plane = d.ho() * g.dz_rows.stride;
    let jb = JV * V::PIXELS + JN;
    for o0 in os.step_by(OB) {
        // dz of channels o0..o0+OB, read in place: one stream per channel.
        let dz: [&[Lanes]; OB] = core::array::from_fn(|ob| &g.dz[(o0 + ob) * plane..][..plane]);
        for c in 0..d.c {
            for i in 0..k {
                let mut acc = [[v.zero(); JV]; OB];
                let mut acc_n = [[s.zero(); JN]; OB];
                for y in 0..d.ho() {
                    let row = &g.xp[(c * hp + y + i) * wp + j0..][..wo + jb - 1];
                    for (col, window) in row.windows(jb).enumerate() {
                        let px = g.dz_rows.row(y) + col;
                        let mut gv = [v.zero(); OB];
                        for ob in 0..OB {
                            gv[ob] = v.dup(&dz[ob][px]);
                        }
                        for jv in 0..JV {
                            let x = v.load_px(&window[jv * V::PIXELS..]);
                            for ob in 0..OB {
                                acc[ob][jv] = v.mul_add(gv[ob], x, acc[ob][jv]);
                            }
                        }
                        for jn in 0..JN {
                            let x = s.load(&window[JV * V::PIXELS + jn]);
                            for ob in 0..OB {
                                let gn = s.load(&dz[ob][px]);
                                acc_n[ob][jn] = s.mul_add(gn, x, acc_n[ob][jn]);
                            }
                        }
                    }
                }
                for ob in 0..OB {
                    let at = (o0 + ob) * ckk + (c * k + i) * k + j0;
                    for jv in 0..JV {
                        let mut px = [[0.0; LANES]; 2];
                        v.store_px(&mut px, acc[ob][jv]);
                        for (q, px) in px[..V::PIXELS].iter().enumerate() {
                            dw[at + jv * V::PIXELS + q] = px.iter().sum();
                        }
                    }
                    for jn in 0..JN {
                        dw[at + JV * V::PIXELS + jn] = sum_lanes(s, acc_n[ob][jn]);
                    }
                }
            }
        }
    }
}

/// Writes into `dx` ([C][H][W], unpadded) the input gradient of one block:
/// `dx[c][y][x] = sum of w[o][c][i][j] * dz[o][y+pad-i][x+pad-j]` over
/// the (o, i, j) that reach a real output, `taps` being `w` as
/// `Taps::input_grad` packs it on the same `S`. `dzp` is `dz` laid out
/// `RowLayout::with_margins(Wo, K-1)` with zero margins, as the chain's
/// backward writes it, so that only the rows need bounds.
#[inline(always)]
pub fn conv_input_grad_from_margins<S: Simd>(
    s: S,
    d: &ConvDims,
    dzp: &[Lanes],
    taps: &Taps,
    dx: &mut [Lanes],
) {
    let wide = RowLayout::with_margins(d.wo(), d.k - 1).stride;
    assert_eq!(
        (dzp.len(), taps.values.len(), taps.pairs, dx.len()),
        (
            d.o * d.ho() * wide,
            d.o * d.ckk(),
            S::NATIVE_PAIRS,
            d.in_len()
        )
    );
    // Unrolling a
    // whole kernel row helps with 32 registers (c3 on AVX-512: 81 -> 51
    // us per block) but not with 16: the compiler then loads all six
    // columns up front and spills accumulators (c3 on a Zen 3, AVX2: 85
    // us unrolled, 60 us as a loop).
    const CB: usize = INPUT_GRAD_CHANNELS;
    if S::NATIVE_PAIRS {
        input_grad_tiled::<S, CB, 2, true>(s, d, dzp, taps, dx);
    } else {
        input_grad_tiled::<S, CB, 1, false>(s, d, dzp, taps, dx);
    }
}

/// Covers the input with CB-channel x XV-pair tiles, and what is left at
/// the edges with narrower ones; `UNROLL` unrolls whole 5-tap kernel rows.
#[inline(always)]
fn input_grad_tiled<S: Simd, const CB: usize, const XV: usize, const UNROLL: bool>(
    s: S,
    d: &ConvDims,
    dzp: &[Lanes],
    taps: &Taps,
    dx: &mut [Lanes],
) {
    let p = s.pair();
    let (tiles_end, pairs_end) = pair_ends::<XV>(d.w);
    let (whole, rest) = (0..d.c - d.c % CB, d.c - d.c % CB..d.c);
    input_grad_tiles::<_, CB, XV, UNROLL>(p, d, dzp, taps, dx, whole.clone(), 0..tiles_end);
    input_grad_tiles::<_, CB, 1, UNROLL>(p, d, dzp, taps, dx, whole.clone(), tiles_end..pairs_end);
    input_grad_tiles::<_, CB, 1, UNROLL>(s, d, dzp, taps, dx, whole, pairs_end..d.w);
    input_grad_tiles::<_, 1, XV, UNROLL>(p, d, dzp, taps, dx, rest.clone(), 0..tiles_end);
    input_grad_tiles::<_, 1, 1, UNROLL>(p, d, dzp, taps, dx, rest.clone(), tiles_end..pairs_end);
    input_grad_tiles::<_, 1, 1, UNROLL>(s, d, dzp, taps, dx, rest, pairs_end..d.w);
}

/// Input channels `cs` (in steps of CB) x pixels `xs` of each row (in
/// steps of XV vectors).
#[inline(always)]
fn input_grad_tiles<V: Vector, const CB: usize, const XV: usize, const UNROLL: bool>(
    v: V,
    d: &ConvDims,
    dzp: &[Lanes],
    taps: &Taps,
    dx: &mut [Lanes],
    cs: Range<usize>,
    xs: Range<usize>,
) {
    let (ho, k) = (d.ho(), d.k);
    let wide = d.wo() + 2 * (k - 1);
    let xb = XV * V::PIXELS;
    for c0 in cs.step_by(CB) {
        // taps[(o * k + i) * k + j][cb] = w[o][c0 + cb][i][j]
        let taps = taps.tile::<CB>(c0);
        for y in 0..d.h {
            // Kernel rows i that reach an output row: 0 <= y + pad - i < Ho.
            let i_lo = (y + d.pad).saturating_sub(ho - 1);
            let i_hi = (y + d.pad).min(k - 1);
            for x0 in xs.clone().step_by(xb) {
                // Kernel columns j that reach an output column from any
                // of the tile's pixels: 0 <= x + pad - j < Wo. The others
                // would only multiply padding.
                let j_lo = (x0 + d.pad).saturating_sub(d.wo() - 1);
                let j_hi = (x0 + xb - 1 + d.pad).min(k - 1);
                let mut acc = [[v.zero(); XV]; CB];
                for o in 0..d.o {
                    for i in i_lo..=i_hi {
                        // Output columns x0 + pad - j (j = j_hi down to
                        // j_lo), shifted right by the K-1 columns of padding.
                        let row = (o * ho + y + d.pad - i) * wide;
                        let seg = &dzp[row + x0 + d.pad + (k - 1 - j_hi)..][..j_hi - j_lo + xb];
                        let row_taps = &taps[(o * k + i) * k..][j_lo..=j_hi];
                        match <&[[f32; CB]; 5]>::try_from(row_taps) {
                            // All of a 5-wide kernel row: a loop the
                            // compiler unrolls (most tiles of c3).
                            Ok(row_taps) if UNROLL => {
                                for t in 0..5 {
                                    input_grad_tap(v, &row_taps[4 - t], &seg[t..], &mut acc);
                                }
                            }
                            _ => {
                                for (t, tap) in row_taps.iter().rev().enumerate() {
                                    input_grad_tap(v, tap, &seg[t..], &mut acc);
                                }
                            }
                        }
                    }
                }
                for cb in 0..CB {
                    let out = &mut dx[((c0 + cb) * d.h + y) * d.w + x0..][..xb];
                    for xv in 0..XV {
                        v.store_px(&mut out[xv * V::PIXELS..], acc[cb][xv]);
                    }
                }
            }
        }
    }
}

/// One kernel tap's multiply-adds into an input-gradient tile: `window`
/// starts at the tile's first output column for this tap.
#[inline(always)]
fn input_grad_tap<V: Vector, const CB: usize, const XV: usize>(
    v: V,
    tap: &[f32; CB],
    window: &[Lanes],
    acc: &mut [[V::V; XV]; CB],
) {
    let mut x = [v.zero(); XV];
    for xv in 0..XV {
        x[xv] = v.load_px(&window[xv * V::PIXELS..]);
    }
    for cb in 0..CB {
        let wv = v.splat(tap[cb]);
        for xv in 0..XV {
            acc[cb][xv] = v.mul_add(wv, x[xv], acc[cb][xv]);
        }
    }
}

/// One block's weight gradient, from its packed input `xp` and the
/// gradient `dz` of the convolution's output (rows laid out as `dz_rows`
/// says), beside its bias gradient `db` summed already (as
/// `pool::pool_act_backward` does).
pub(crate) fn weight_grads_beside(
    d: &ConvDims,
    xp: &[Lanes],
    dz: &[Lanes],
    dz_rows: RowLayout,
    db: Vec<f32>,
) -> BlockGrads {
    let mut dw = buffer(d.o * d.ckk());
    with_simd!(|s| conv_weight_grad(s, d, xp, dz, dz_rows, &mut dw));
    BlockGrads { dw, db }
}
