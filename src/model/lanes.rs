//! Direct convolution on blocks of eight images, one image per SIMD lane.
//!
//! A block's feature maps are stored as [C][H][W] of [`Lanes`]: pixel
//! (c, y, x) of all eight images side by side. Then every multiply-add of
//! the convolution is one vector FMA for eight images, with no im2col copy,
//! no ragged row ends (LeNet's rows are 28, 14, 10 and 5 wide) and padding
//! as plain zero pixels. Each kernel keeps a small tile of outputs in
//! registers (`OB` output channels x `XB` neighbouring pixels, fixed at
//! compile time) and streams the inputs and weights past it.
//!
//! Everything here works on one block and is `#[inline(always)]`, generic
//! over [`Simd`], so `with_simd!` compiles it for the CPU's instruction
//! set; `kernels.rs` cuts batches into blocks and runs them in parallel.

// Register tiles are indexed arrays on purpose: with constant bounds the
// loops unroll and every accumulator stays in a register.
#![allow(clippy::needless_range_loop)]

use std::ops::Range;

use super::kernels::{Act, ConvDims, Pool};
use super::simd::{prefetch, with_simd, Lanes, Simd, Vector, LANES};

/// Copies up to eight images, each [C][H][W] (NCHW, one after the other
/// in `x`), into lanes with `pad` zero pixels around every plane. Missing
/// images (a short last block) are zeros. `out` holds [C][H+2p][W+2p].
pub fn pack(x: &[f32], (c, h, w): (usize, usize, usize), pad: usize, out: &mut [Lanes]) {
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let image_len = c * h * w;
    assert!(x.len() <= LANES * image_len && x.len().is_multiple_of(image_len));
    assert_eq!(out.len(), c * hp * wp);
    let full = x.len() == LANES * image_len;
    if pad > 0 || !full {
        // Borders and missing images stay zero; everything else is overwritten.
        out.fill([0.0; LANES]);
    }
    if full {
        return with_simd!(|s| pack_full(s, x, (c, h, w), pad, out));
    }
    for (lane, image) in x.chunks_exact(image_len).enumerate() {
        for (row, src) in image.chunks_exact(w).enumerate() {
            let dst = &mut out[padded_row(row, (h, w), pad)..][..w];
            for (px, v) in dst.iter_mut().zip(src) {
                px[lane] = *v;
            }
        }
    }
}

/// Where row `row` (counted over all planes of `h` rows of `w`) starts
/// once the planes are padded.
fn padded_row(row: usize, (h, w): (usize, usize), pad: usize) -> usize {
    let (plane, y) = (row / h, row % h);
    (plane * (h + 2 * pad) + y + pad) * (w + 2 * pad) + pad
}

/// `pack` for eight images: 8 x 8 tiles (eight floats of a row of each
/// image) transposed in registers, the rest of each row one by one.
#[inline(always)]
fn pack_full<S: Simd>(
    s: S,
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    pad: usize,
    out: &mut [Lanes],
) {
    let image_len = c * h * w;
    for row in 0..c * h {
        let dst = &mut out[padded_row(row, (h, w), pad)..][..w];
        let (tiles, tail) = dst.as_chunks_mut::<LANES>();
        for (t, tile) in tiles.iter_mut().enumerate() {
            let at = row * w + t * LANES;
            let mut v = [s.zero(); LANES];
            for (lane, v) in v.iter_mut().enumerate() {
                *v = s.load(
                    x[lane * image_len + at..][..LANES]
                        .try_into()
                        .expect("8 floats"),
                );
            }
            for (px, v) in tile.iter_mut().zip(s.transpose(v)) {
                s.store(px, v);
            }
        }
        let done = row * w + tiles.len() * LANES;
        for (i, px) in tail.iter_mut().enumerate() {
            for (lane, v) in px.iter_mut().enumerate() {
                *v = x[lane * image_len + done + i];
            }
        }
    }
}

/// The inverse of an unpadded `pack`: lane `i` of `planes` becomes image
/// `i` of `out` (as many images as `out` holds).
pub fn unpack(planes: &[Lanes], out: &mut [f32]) {
    let image_len = planes.len();
    assert!(out.len() <= LANES * image_len && out.len().is_multiple_of(image_len));
    if out.len() == LANES * image_len {
        return with_simd!(|s| unpack_full(s, planes, out));
    }
    for (lane, image) in out.chunks_exact_mut(image_len).enumerate() {
        for (v, px) in image.iter_mut().zip(planes) {
            *v = px[lane];
        }
    }
}

/// `unpack` for eight images: 8 x 8 tiles transposed in registers.
#[inline(always)]
fn unpack_full<S: Simd>(s: S, planes: &[Lanes], out: &mut [f32]) {
    let image_len = planes.len();
    let (tiles, tail) = planes.as_chunks::<LANES>();
    for (t, tile) in tiles.iter().enumerate() {
        let mut v = [s.zero(); LANES];
        for (v, px) in v.iter_mut().zip(tile) {
            *v = s.load(px);
        }
        for (lane, v) in s.transpose(v).into_iter().enumerate() {
            let at = lane * image_len + t * LANES;
            s.store((&mut out[at..at + LANES]).try_into().expect("8 floats"), v);
        }
    }
    let done = tiles.len() * LANES;
    for (i, px) in tail.iter().enumerate() {
        for (lane, v) in px.iter().enumerate() {
            out[lane * image_len + done + i] = *v;
        }
    }
}

/// The sum of a vector's lanes, in lane order (images 0..8 of the block).
#[inline(always)]
fn sum_lanes<S: Simd>(s: S, v: S::V) -> f32 {
    let mut lanes = [0.0; LANES];
    s.store(&mut lanes, v);
    lanes.iter().sum()
}

/// Height and width of the input once padded.
pub fn padded_hw(d: &ConvDims) -> (usize, usize) {
    (d.h + 2 * d.pad, d.w + 2 * d.pad)
}

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

/// Where the rows of a block's planes ([C][H][W], rows plane after plane)
/// lie in a buffer: row `r` starts at `r * stride + offset`. The input
/// gradient reads K-1 pixels past both ends of each row of the output
/// gradient, so the backward writes that gradient with zero margins
/// (`with_margins`) instead of copying it into such a layout afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowLayout {
    pub stride: usize,
    pub offset: usize,
}

impl RowLayout {
    /// Rows of `width` pixels, one after the other.
    pub fn dense(width: usize) -> Self {
        RowLayout {
            stride: width,
            offset: 0,
        }
    }

    /// Rows of `width` pixels with `margin` pixels (zero) on both sides.
    pub fn with_margins(width: usize, margin: usize) -> Self {
        RowLayout {
            stride: width + 2 * margin,
            offset: margin,
        }
    }

    /// Row `r`'s `width` pixels.
    #[inline(always)]
    fn row(self, r: usize) -> usize {
        r * self.stride + self.offset
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

/// Writes into `db` [O] the bias gradient of one block: the sum of `dz` per channel.
#[inline(always)]
pub fn conv_bias_grad<S: Simd>(s: S, d: &ConvDims, dz: &[Lanes], db: &mut [f32]) {
    for (plane, db) in dz.chunks_exact(d.p()).zip(db) {
        let mut acc = s.zero();
        for px in plane {
            acc = s.add(acc, s.load(px));
        }
        *db = sum_lanes(s, acc);
    }
}

/// Writes into `dx` ([C][H][W], unpadded) the input gradient of one block:
/// `dx[c][y][x] = sum of w[o][c][i][j] * dz[o][y+pad-i][x+pad-j]` over
/// the (o, i, j) that reach a real output, `taps` being `w` as
/// `Taps::input_grad` packs it on the same `S`. `dzp` is scratch for `dz`
/// with K-1 zero columns on both sides, so that only the rows need bounds.
#[inline(always)]
pub fn conv_input_grad<S: Simd>(
    s: S,
    d: &ConvDims,
    dz: &[Lanes],
    taps: &Taps,
    dx: &mut [Lanes],
    dzp: &mut Vec<Lanes>,
) {
    assert_eq!(dz.len(), d.out_len());
    pack_columns_padded(dz, d.wo(), d.k - 1, dzp);
    conv_input_grad_from_margins(s, d, dzp, taps, dx);
}

/// `conv_input_grad` of a `dz` laid out `RowLayout::with_margins(Wo, K-1)`
/// with zero margins, as the chain's backward writes it.
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

/// Copies rows of `width` pixels into `out` with `pad` zero pixels on both ends.
fn pack_columns_padded(rows: &[Lanes], width: usize, pad: usize, out: &mut Vec<Lanes>) {
    let wide = width + 2 * pad;
    out.clear();
    out.resize(rows.len() / width * wide, [0.0; LANES]);
    for (src, dst) in rows.chunks_exact(width).zip(out.chunks_exact_mut(wide)) {
        dst[pad..pad + width].copy_from_slice(src);
    }
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

/// 2x2, stride 2 pooling of `planes` planes of `h` x `w` pixels.
#[inline(always)]
pub fn pool_forward<S: Simd>(
    s: S,
    kind: Pool,
    (planes, h, w): (usize, usize, usize),
    a: &[Lanes],
    p: &mut [Lanes],
) {
    let (ho, wo) = (h / 2, w / 2);
    assert_eq!((a.len(), p.len()), (planes * h * w, planes * ho * wo));
    let quarter = s.splat(0.25);
    for (r, out) in p.chunks_exact_mut(wo).enumerate() {
        let (top, bottom) = window_rows(a, r, ho, w);
        for (ox, out) in out.iter_mut().enumerate() {
            let q = window(s, top, bottom, ox);
            let v = match kind {
                Pool::Avg => s.mul(s.add(s.add(s.add(q[0], q[1]), q[2]), q[3]), quarter),
                Pool::Max => max_of_four(s, q).0,
            };
            s.store(out, v);
        }
    }
}

/// The two input rows under output row `r` of a pooled plane stack.
#[inline(always)]
fn window_rows(a: &[Lanes], r: usize, ho: usize, w: usize) -> (&[Lanes], &[Lanes]) {
    let (plane, oy) = (r / ho, r % ho);
    let base = (plane * ho + oy) * 2 * w;
    a[base..base + 2 * w].split_at(w)
}

/// The four inputs of window `ox`: top left, top right, bottom left, bottom right.
#[inline(always)]
fn window<S: Simd>(s: S, top: &[Lanes], bottom: &[Lanes], ox: usize) -> [S::V; 4] {
    let (x0, x1) = (2 * ox, 2 * ox + 1);
    [
        s.load(&top[x0]),
        s.load(&top[x1]),
        s.load(&bottom[x0]),
        s.load(&bottom[x1]),
    ]
}

/// The largest of a window's four values, and masks saying which one it
/// is: the first on ties, as PyTorch routes the gradient. A tournament:
/// left or right in each row, then top or bottom.
#[inline(always)]
fn max_of_four<S: Simd>(s: S, q: [S::V; 4]) -> (S::V, [S::V; 3]) {
    let right_top = s.gt(q[1], q[0]);
    let right_bottom = s.gt(q[3], q[2]);
    let m_top = s.select(right_top, q[1], q[0]);
    let m_bottom = s.select(right_bottom, q[3], q[2]);
    let bottom = s.gt(m_bottom, m_top);
    (
        s.select(bottom, m_bottom, m_top),
        [right_top, right_bottom, bottom],
    )
}

/// How many rows of pooling windows ahead `pool_act_backward` asks for
/// its inputs (4 and 8 measured the same; 2 and 16 slower).
const PREFETCH_ROWS: usize = 4;

/// Backward of `pool(act(z))`: writes into `dz` the gradient w.r.t. the
/// activation's input, from the activations `a` (its output, before
/// pooling) and `dp`, the gradient w.r.t. the pooled output. Max pooling
/// finds each window's winner again from `a`. `dz`'s rows are laid out
/// as `dz_rows` says; nothing outside them (margins) is written.
///
/// Also writes into `db` [planes] the sum of `dz` per plane (the
/// convolution's bias gradient), adding pixels in the order
/// `conv_bias_grad` does, so with the same bits; summed here, each row
/// is added while it is still in cache instead of in a pass of its own
/// over `dz` (c1: 150 KB per block).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn pool_act_backward<S: Simd>(
    s: S,
    kind: Pool,
    act: Act,
    (planes, h, w): (usize, usize, usize),
    a: &[Lanes],
    dp: &[Lanes],
    dz: &mut [Lanes],
    dz_rows: RowLayout,
    db: &mut [f32],
) {
    let (ho, wo) = (h / 2, w / 2);
    assert!(dz_rows.offset + w <= dz_rows.stride);
    assert_eq!(
        (a.len(), dz.len()),
        (planes * h * w, planes * h * dz_rows.stride)
    );
    assert_eq!((dp.len(), db.len()), (planes * ho * wo, planes));
    let (zero, quarter) = (s.zero(), s.splat(0.25));
    let mut plane_sum = s.zero();
    for (r, dp) in dp.chunks_exact(wo).enumerate() {
        // The forward wrote `a` long before (a batch of blocks ago), so it
        // comes from memory, faster when asked for a few rows ahead (c1,
        // 256 blocks cycled, on a Zen 3: 33 -> 18 us per block).
        let ahead = a.get((r + PREFETCH_ROWS) * 2 * w..).unwrap_or_default();
        ahead.iter().take(2 * w).step_by(2).for_each(prefetch);
        let (top, bottom) = window_rows(a, r, ho, w);
        let top_row = r / ho * h + r % ho * 2;
        let (above, below) = dz.split_at_mut(dz_rows.row(top_row + 1));
        let dz_top = &mut above[dz_rows.row(top_row)..][..w];
        let dz_bottom = &mut below[..w];
        for (ox, g) in dp.iter().enumerate() {
            let (g, q) = (s.load(g), window(s, top, bottom, ox));
            let routed = match kind {
                Pool::Avg => [s.mul(g, quarter); 4],
                Pool::Max => {
                    let (_, [right_top, right_bottom, bottom]) = max_of_four(s, q);
                    let g_top = s.select(bottom, zero, g);
                    let g_bottom = s.select(bottom, g, zero);
                    [
                        s.select(right_top, zero, g_top),
                        s.select(right_top, g_top, zero),
                        s.select(right_bottom, zero, g_bottom),
                        s.select(right_bottom, g_bottom, zero),
                    ]
                }
            };
            let (x0, x1) = (2 * ox, 2 * ox + 1);
            let (g0, g1) = (
                act.backward(s, q[0], routed[0]),
                act.backward(s, q[1], routed[1]),
            );
            // The top row's pixels come in row order: summed as they go.
            plane_sum = s.add(s.add(plane_sum, g0), g1);
            s.store(&mut dz_top[x0], g0);
            s.store(&mut dz_top[x1], g1);
            s.store(&mut dz_bottom[x0], act.backward(s, q[2], routed[2]));
            s.store(&mut dz_bottom[x1], act.backward(s, q[3], routed[3]));
        }
        for px in dz_bottom.iter() {
            plane_sum = s.add(plane_sum, s.load(px));
        }
        if r % ho == ho - 1 {
            db[r / ho] = sum_lanes(s, plane_sum);
            plane_sum = s.zero();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::kernels::tests::pseudo_random;
    use crate::model::kernels::{LENET_C1, LENET_C3};
    use crate::model::simd::{with_simd, Portable};

    fn lanes_of(n: usize, seed: u32) -> Vec<Lanes> {
        pseudo_random(n * LANES, seed)
            .chunks_exact(LANES)
            .map(|l| l.try_into().expect("8 floats"))
            .collect()
    }

    #[test]
    fn pack_and_unpack_move_each_pixel_to_its_lane() {
        let (c, h, w) = (2, 3, 11); // 11: one 8 x 8 tile and a tail per row
        for images in [8, 5] {
            let x: Vec<f32> = (0..images * c * h * w).map(|i| i as f32).collect();
            for pad in [0, 2] {
                let (hp, wp) = (h + 2 * pad, w + 2 * pad);
                let mut packed = vec![[f32::NAN; LANES]; c * hp * wp];
                pack(&x, (c, h, w), pad, &mut packed);
                for lane in 0..LANES {
                    for ch in 0..c {
                        for y in 0..hp {
                            for xx in 0..wp {
                                let (iy, ix) =
                                    (y as isize - pad as isize, xx as isize - pad as isize);
                                let inside = lane < images
                                    && (0..h as isize).contains(&iy)
                                    && (0..w as isize).contains(&ix);
                                let want = if inside {
                                    x[((lane * c + ch) * h + iy as usize) * w + ix as usize]
                                } else {
                                    0.0
                                };
                                assert_eq!(packed[(ch * hp + y) * wp + xx][lane], want);
                            }
                        }
                    }
                }
                if pad == 0 {
                    let mut back = vec![f32::NAN; x.len()];
                    unpack(&packed, &mut back);
                    assert_eq!(back, x);
                }
            }
        }
    }

    /// Everything one block goes through in training, on one instruction set.
    fn block_pass<S: Simd>(s: S, d: &ConvDims, act: Act, pool: Pool) -> Vec<Vec<f32>> {
        let (hp, wp) = padded_hw(d);
        let xp = lanes_of(d.c * hp * wp, 1);
        let w: Vec<f32> = lanes_of(d.o * d.ckk(), 2)
            .iter()
            .map(|l| l[3] * 0.3)
            .collect();
        let b: Vec<f32> = lanes_of(d.o, 3).iter().map(|l| l[5]).collect();
        let mut z = vec![[0.0; LANES]; d.out_len()];
        conv_forward(s, d, &xp, &Taps::forward(s, d, &w), &b, act, &mut z, None);
        let mut p = vec![[0.0; LANES]; d.out_len() / 4];
        pool_forward(s, pool, (d.o, d.ho(), d.wo()), &z, &mut p);
        let dp = lanes_of(p.len(), 4);
        let dims = (d.o, d.ho(), d.wo());
        let dense = RowLayout::dense(d.wo());
        let mut dz = vec![[0.0; LANES]; d.out_len()];
        let mut db = vec![0.0; d.o];
        pool_act_backward(s, pool, act, dims, &z, &dp, &mut dz, dense, &mut db);
        let mut dw = vec![0.0; w.len()];
        conv_weight_grad(s, d, &xp, &dz, dense, &mut dw);
        let mut db_alone = vec![0.0; d.o];
        conv_bias_grad(s, d, &dz, &mut db_alone);
        assert_eq!(
            db, db_alone,
            "the fused bias gradient has the bits of the separate one"
        );
        let mut dx = vec![[0.0; LANES]; d.in_len()];
        let taps = Taps::input_grad(s, d, &w);
        conv_input_grad(s, d, &dz, &taps, &mut dx, &mut Vec::new());
        // The same gradients from dz written with margins, as the chain
        // writes it for a stage that passes its gradient on.
        let margins = RowLayout::with_margins(d.wo(), d.k - 1);
        let mut dz_m = vec![[0.0; LANES]; d.o * d.ho() * margins.stride];
        let (mut db_m, mut dw_m) = (vec![0.0; d.o], vec![0.0; w.len()]);
        pool_act_backward(s, pool, act, dims, &z, &dp, &mut dz_m, margins, &mut db_m);
        conv_weight_grad(s, d, &xp, &dz_m, margins, &mut dw_m);
        let mut dx_m = vec![[0.0; LANES]; d.in_len()];
        conv_input_grad_from_margins(s, d, &dz_m, &taps, &mut dx_m);
        let interior: Vec<Lanes> = dz_m
            .chunks_exact(margins.stride)
            .flat_map(|row| &row[margins.offset..][..d.wo()])
            .copied()
            .collect();
        assert_eq!(
            (interior, db_m, dw_m, dx_m),
            (dz.clone(), db.clone(), dw.clone(), dx.clone()),
            "dz with margins gives the same gradients"
        );
        assert!(
            dz_m.chunks_exact(margins.stride).all(|row| {
                let (left, rest) = row.split_at(margins.offset);
                left.iter()
                    .chain(&rest[d.wo()..])
                    .all(|px| *px == [0.0; LANES])
            }),
            "the margins stay zero"
        );
        vec![
            z.as_flattened().to_vec(),
            p.as_flattened().to_vec(),
            dz.as_flattened().to_vec(),
            dw,
            db,
            dx.as_flattened().to_vec(),
        ]
    }

    /// Shapes with remainder tiles (5 channels out, 7 in) and padding
    /// wider than the kernel's reach, and LeNet's.
    const ODD: ConvDims = ConvDims {
        c: 7,
        h: 10,
        w: 12,
        o: 5,
        k: 3,
        pad: 3,
    };
    /// k = 5 with rows and channel counts that leave edge tiles (single
    /// pairs, single channels) in every kernel.
    const ODD_K5: ConvDims = ConvDims {
        c: 7,
        h: 12,
        w: 14,
        o: 7,
        k: 5,
        pad: 2,
    };
    const ACTS_AND_POOLS: [(Act, Pool); 3] = [
        (Act::Sigmoid, Pool::Avg),
        (Act::Relu, Pool::Max),
        (Act::Tanh, Pool::Max),
    ];

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx512_pairs_compute_the_same_bits_as_avx2() {
        use crate::model::simd::{run_avx2_fma, run_avx512, Avx2Fma, Avx512};
        let (Some(wide), Some(narrow)) = (Avx512::detect(), Avx2Fma::detect()) else {
            eprintln!("skipped: this CPU has no AVX-512");
            return;
        };
        for d in [LENET_C1, LENET_C3, ODD, ODD_K5] {
            for (act, pool) in ACTS_AND_POOLS {
                // SAFETY: both tokens come from detect().
                let a = unsafe { run_avx512(|| block_pass(wide, &d, act, pool)) };
                let b = unsafe { run_avx2_fma(|| block_pass(narrow, &d, act, pool)) };
                assert_eq!(a, b, "{d:?} {act:?} {pool:?}");
            }
        }
    }

    #[test]
    fn portable_and_dispatched_kernels_agree_on_lenet_shapes() {
        for d in [LENET_C1, LENET_C3, ODD, ODD_K5] {
            for (act, pool) in ACTS_AND_POOLS {
                let portable = block_pass(Portable, &d, act, pool);
                let dispatched = with_simd!(|s| block_pass(s, &d, act, pool));
                for (what, (a, b)) in ["z", "pooled", "dz", "dw", "db", "dx"]
                    .iter()
                    .zip(portable.iter().zip(&dispatched))
                {
                    for (x, y) in a.iter().zip(b) {
                        assert!(
                            (x - y).abs() <= 1e-4 * (1.0 + x.abs()),
                            "{d:?} {act:?} {pool:?} {what}: {x} vs {y}"
                        );
                    }
                }
            }
        }
    }
}
