//! The dense layers after the convolutions (LeNet's c5, f6 and output) as
//! one op.
//!
//! c5's kernel covers its whole 5x5 input, so with f6 and the output layer
//! the head is three matrix products in a row, each followed by its
//! activation. Run one by one (a framework matmul, a broadcast bias, a tensor
//! per layer, copies in and out of each op) they cost more than their
//! multiply-adds. Here they run as small matrix products on row-major
//! data, image after image, with one register-tiled kernel (`product`):
//! the forward `Y = X W^T`, the input gradient `dX = dZ W` and the weight
//! gradient `dW = dZ^T X`.
//!
//! Forward and input gradient go in parallel over images, each task of
//! images through every layer in turn; the weight gradient goes over
//! output features. Every output is one sum in a fixed order
//! (over inputs, or over the images in turn), so results do not depend on
//! the number of threads.

// Register tiles are indexed arrays on purpose: with constant bounds the
// loops unroll and every accumulator stays in a register.
#![allow(clippy::needless_range_loop)]

use std::borrow::Cow;

use rayon::prelude::*;

use super::activation::Act;
use super::grads::{optional_chunks, LayerGrads};
use super::simd::{Lanes, Simd, Vector, LANES};
use crate::with_simd;

/// One dense layer: `act(W x + b)` with `w` [n_out][n_in] (PyTorch's
/// Linear layout, and c5's [O][C][K][K] read as [O][C*K*K]).
#[derive(Debug, Clone, Copy)]
pub struct Dense<'a> {
    pub n_in: usize,
    pub n_out: usize,
    pub w: &'a [f32],
    pub b: &'a [f32],
    pub act: Act,
}

/// Rows of a register tile (images, or output features in the weight
/// gradient): 6 rows x 2 vectors is 12 accumulators, 2 loads and 6
/// broadcasts per 12 FMAs, as in the convolution kernels.
const TILE_ROWS: usize = 6;
const TILE_VECTORS: usize = 2;

/// What the forward keeps for the backward: the input, and each layer's
/// output (after its activation; the next layer's input), [B][n_in] and
/// [B][n_out], each with `LANES` floats of slack at the end (see `product`).
pub struct DenseSaved {
    batch: usize,
    x: Vec<f32>,
    outputs: Vec<Vec<f32>>,
}

impl DenseSaved {
    /// Layer `l`'s input.
    fn input(&self, l: usize) -> &[f32] {
        if l == 0 {
            &self.x
        } else {
            &self.outputs[l - 1]
        }
    }
}

/// Checks that the layers fit together; shapes come from the model's code,
/// so a mismatch is a bug, not bad input.
fn check_layers(layers: &[Dense]) {
    assert!(!layers.is_empty(), "a dense head needs at least one layer");
    for l in layers {
        assert_eq!((l.w.len(), l.b.len()), (l.n_out * l.n_in, l.n_out));
    }
    for pair in layers.windows(2) {
        assert_eq!(pair[0].n_out, pair[1].n_in, "layer sizes do not chain");
    }
}

/// A zeroed buffer of `len` floats and `LANES` more, so that a kernel's
/// last vector of a row may run past the row's end.
fn padded_buffer(len: usize) -> Vec<f32> {
    vec![0.0; len + LANES]
}

/// Images per parallel task: a few tasks per thread, in whole tiles.
/// Results do not depend on it (each image's rows are computed alone).
fn task_images(batch: usize) -> usize {
    let per_task = batch.div_ceil(4 * rayon::current_num_threads());
    per_task.div_ceil(TILE_ROWS).max(1) * TILE_ROWS
}

/// Each task's rows (`rows` images, fewer in the last) of `buffers`,
/// [B][width] with slack each: per task, one mutable piece per buffer,
/// the slack left out.
fn per_task(
    buffers: &mut [Vec<f32>],
    widths: impl Iterator<Item = usize>,
    rows: usize,
    batch: usize,
) -> Vec<Vec<&mut [f32]>> {
    let mut tasks: Vec<Vec<&mut [f32]>> = (0..batch.div_ceil(rows)).map(|_| Vec::new()).collect();
    for (buf, width) in buffers.iter_mut().zip(widths) {
        for (task, piece) in tasks
            .iter_mut()
            .zip(buf[..batch * width].chunks_mut(rows * width))
        {
            task.push(piece);
        }
    }
    tasks
}

/// `w` [n_out][n_in] transposed to [n_in][n_out rounded up to LANES], the
/// extra columns zero: the forward's `B` operand.
fn transposed(w: &[f32], n_in: usize, n_out: usize) -> (Vec<f32>, usize) {
    let ldb = n_out.next_multiple_of(LANES);
    let mut wt = vec![0.0; n_in * ldb];
    with_simd!(|s| transpose_into(s, w, n_in, n_out, &mut wt, ldb));
    (wt, ldb)
}

/// 8 x 8 tiles transposed in registers (a plain loop's strided writes
/// took longer than the whole forward at batch 16), the edges one by one.
#[inline(always)]
fn transpose_into<S: Simd>(s: S, w: &[f32], n_in: usize, n_out: usize, wt: &mut [f32], ldb: usize) {
    let (o_tiles, r_tiles) = (n_out / LANES, n_in / LANES);
    for ot in 0..o_tiles {
        for rt in 0..r_tiles {
            let rows: [S::V; LANES] = core::array::from_fn(|i| {
                let at = (ot * LANES + i) * n_in + rt * LANES;
                s.load(w[at..at + LANES].try_into().expect("8 floats"))
            });
            for (i, v) in s.transpose(rows).into_iter().enumerate() {
                let at = (rt * LANES + i) * ldb + ot * LANES;
                s.store((&mut wt[at..at + LANES]).try_into().expect("8 floats"), v);
            }
        }
    }
    for (o, row) in w.chunks_exact(n_in).enumerate() {
        let r_start = if o < o_tiles * LANES {
            r_tiles * LANES
        } else {
            0
        };
        for r in r_start..n_in {
            wt[r * ldb + o] = row[r];
        }
    }
}

/// The head's output for a batch `x` ([B][n_in] of the first layer), as
/// [B][n_out] of the last. Keeps what the backward needs (`x` among it)
/// when `keep` is set; `x` with room for `LANES` more floats is not copied.
pub fn dense_forward(
    layers: &[Dense],
    batch: usize,
    mut x: Vec<f32>,
    keep: bool,
) -> (Vec<f32>, DenseSaved) {
    check_layers(layers);
    assert_eq!(x.len(), batch * layers[0].n_in);
    let weights: Vec<(Vec<f32>, usize)> = layers
        .iter()
        .map(|l| transposed(l.w, l.n_in, l.n_out))
        .collect();
    x.extend_from_slice(&[0.0; LANES]);
    let mut outputs: Vec<Vec<f32>> = layers
        .iter()
        .map(|l| padded_buffer(batch * l.n_out))
        .collect();
    // Each task takes its images through every layer: one parallel region
    // for the head, not one per layer, so the threads meet once.
    let rows = task_images(batch);
    let tasks = per_task(&mut outputs, layers.iter().map(|l| l.n_out), rows, batch);
    let x_rows = &x[..batch * layers[0].n_in];
    tasks
        .into_par_iter()
        .zip(x_rows.par_chunks(rows * layers[0].n_in))
        .for_each(|(mut outs, x)| {
            let images = x.len() / layers[0].n_in;
            for (l, layer) in layers.iter().enumerate() {
                let (done, rest) = outs.split_at_mut(l);
                let input = match done.last() {
                    Some(previous) => &previous[..],
                    None => x,
                };
                let (wt, ldb) = &weights[l];
                let a = Operand::rows(input, layer.n_in);
                let b = Operand::rows(wt, *ldb);
                let out = &mut *rest[0];
                let (k, n, bias, act) = (layer.n_in, layer.n_out, Some(layer.b), layer.act);
                with_simd!(|s| product(s, a, b, k, 0..images, out, n, bias, act));
            }
        });
    let mut saved = DenseSaved { batch, x, outputs };
    let mut y = saved.outputs.last().expect("at least one layer").clone();
    y.truncate(batch * layers[layers.len() - 1].n_out);
    if !keep {
        saved.x = Vec::new();
        saved.outputs.clear();
    }
    (y, saved)
}

/// Backward of `dense_forward`, given the gradient `dy` ([B][n_out]) of its
/// output. Returns each layer's gradients; only the first layer's carry an
/// input gradient (when `need_dx`), the others' having flowed on inside.
pub fn dense_backward(
    layers: &[Dense],
    saved: &DenseSaved,
    dy: &[f32],
    need_dx: bool,
) -> Vec<LayerGrads> {
    check_layers(layers);
    let batch = saved.batch;
    assert_eq!(saved.outputs.len(), layers.len(), "forward kept nothing");
    assert_eq!(dy.len(), batch * layers[layers.len() - 1].n_out);
    let last = layers.len() - 1;
    // Each layer's gradient before its activation, [B][n_out].
    let mut dzs: Vec<Vec<f32>> = layers
        .iter()
        .map(|l| padded_buffer(batch * l.n_out))
        .collect();
    dzs[last][..dy.len()].copy_from_slice(dy);
    let features = layers[0].n_in;
    let mut dx = if need_dx {
        padded_buffer(batch * features)
    } else {
        Vec::new()
    };
    let weights: Vec<Cow<[f32]>> = layers.iter().map(input_grad_weights).collect();
    // As in the forward, each task takes its images through every layer.
    let rows = task_images(batch);
    let tasks = per_task(&mut dzs, layers.iter().map(|l| l.n_out), rows, batch);
    let dx_len = if need_dx { batch * features } else { 0 };
    let dx_pieces = optional_chunks(&mut dx[..dx_len], rows * features, tasks.len());
    tasks
        .into_par_iter()
        .zip(dx_pieces)
        .enumerate()
        .for_each(|(task, (mut dz, mut dx))| {
            let first_image = task * rows;
            for (l, layer) in layers.iter().enumerate().rev() {
                let (before, from_l) = dz.split_at_mut(l);
                let dz_l = &mut *from_l[0];
                let (n_in, n_out) = (layer.n_in, layer.n_out);
                let y = &saved.outputs[l][first_image * n_out..][..dz_l.len()];
                layer.act.backward_from_output(y, dz_l);
                // `dZ W`: the gradient w.r.t. the layer's input.
                let into = match before.last_mut() {
                    Some(previous) => &mut **previous,
                    None => match dx {
                        Some(ref mut dx) => &mut **dx,
                        None => break,
                    },
                };
                let images = dz_l.len() / n_out;
                let a = Operand::rows(dz_l, n_out);
                let b = Operand::rows(&weights[l], n_in);
                let identity = Act::Identity;
                with_simd!(|s| product(s, a, b, n_out, 0..images, into, n_in, None, identity));
            }
        });
    let dx = need_dx.then(|| {
        dx.truncate(batch * features);
        dx
    });
    let mut grads = weight_grads(layers, saved, &dzs);
    grads[0].dx = dx;
    grads
}

/// A layer's weights as the `B` operand of its input gradient `dZ W`:
/// W's rows, with slack past the last one unless rows are whole vectors
/// long (the last vector of the last row would run past W's end).
fn input_grad_weights<'a>(layer: &Dense<'a>) -> Cow<'a, [f32]> {
    if layer.n_in.is_multiple_of(LANES) {
        Cow::Borrowed(layer.w)
    } else {
        Cow::Owned([layer.w, &[0.0; LANES]].concat())
    }
}

/// Every layer's weight and bias gradient, in parallel over bands of
/// output features: `dzs` are the layers' gradients before their
/// activations, [B][n_out] (padded).
fn weight_grads(layers: &[Dense], saved: &DenseSaved, dzs: &[Vec<f32>]) -> Vec<LayerGrads> {
    let batch = saved.batch;
    let mut grads: Vec<LayerGrads> = layers
        .iter()
        .map(|l| LayerGrads {
            dx: None,
            dw: vec![0.0; l.n_out * l.n_in],
            db: vec![0.0; l.n_out],
        })
        .collect();
    let mut bands = Vec::new();
    for (l, g) in grads.iter_mut().enumerate() {
        let n_in = layers[l].n_in;
        let rows = g.dw.chunks_mut(TILE_ROWS * n_in);
        for (i, (dw, db)) in rows.zip(g.db.chunks_mut(TILE_ROWS)).enumerate() {
            bands.push((l, i * TILE_ROWS, dw, db));
        }
    }
    bands.into_par_iter().for_each(|(l, o0, dw, db)| {
        let (n_in, n_out) = (layers[l].n_in, layers[l].n_out);
        let dz = &dzs[l];
        for image in dz[..batch * n_out].chunks_exact(n_out) {
            for (db, g) in db.iter_mut().zip(&image[o0..]) {
                *db += g;
            }
        }
        // dW[o][r] = sum over images b of dZ[b][o] X[b][r]: A is dZ
        // transposed (row o, column b), B is X.
        let a = Operand {
            values: dz,
            row_stride: 1,
            col_stride: n_out,
        };
        let b = Operand::rows(saved.input(l), n_in);
        let features = o0..o0 + db.len();
        with_simd!(|s| product(s, a, b, batch, features, dw, n_in, None, Act::Identity));
    });
    grads
}

/// A matrix in a slice: element (i, k) at `values[i * row_stride + k *
/// col_stride]`.
#[derive(Debug, Clone, Copy)]
struct Operand<'a> {
    values: &'a [f32],
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Operand<'a> {
    /// Row-major, rows `row_stride` apart.
    fn rows(values: &'a [f32], row_stride: usize) -> Self {
        Operand {
            values,
            row_stride,
            col_stride: 1,
        }
    }
}

/// Rows `rows` of `C = act(A B + bias)` into `c` ([rows][n], the first row
/// being row `rows.start`): A is [M][K] in any layout, B is row-major
/// [K][>= n] and is read a whole vector at a time, so its rows must have
/// slack past column n up to the next multiple of `LANES` (the last row
/// too: hence the padded buffers). Each output is its bias (or 0), then
/// plus the K products in order.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn product<S: Simd>(
    s: S,
    a: Operand,
    b: Operand,
    k: usize,
    rows: std::ops::Range<usize>,
    c: &mut [f32],
    n: usize,
    bias: Option<&[f32]>,
    act: Act,
) {
    assert_eq!(c.len(), rows.len() * n);
    assert_eq!(b.col_stride, 1);
    if rows.is_empty() || n == 0 || k == 0 {
        c.fill(0.0);
        return;
    }
    // Every index the tiles read: A's last element, and B's last vector.
    let a_end = (rows.end - 1) * a.row_stride + (k - 1) * a.col_stride;
    let b_end = (k - 1) * b.row_stride + n.next_multiple_of(LANES);
    assert!(a_end < a.values.len() && b_end <= b.values.len());
    if let Some(bias) = bias {
        assert_eq!(bias.len(), n);
    }
    let p = Product {
        a,
        b,
        k,
        first_row: rows.start,
        bias,
        act,
        n,
    };
    let vectors = n.div_ceil(LANES);
    for rows in row_tiles(rows) {
        // Columns in tiles of TILE_VECTORS registers: of pairs (16
        // floats) where a pair is one register, so that each broadcast of
        // A feeds twice the multiply-adds; then narrower at the row's end.
        let mut v = 0;
        if S::NATIVE_PAIRS {
            let pairs = s.pair();
            let step = 2 * TILE_VECTORS;
            while v + step <= vectors {
                p.tile_rows::<_, TILE_VECTORS>(pairs, rows, v, c);
                v += step;
            }
            if v + 2 <= vectors {
                p.tile_rows::<_, 1>(pairs, rows, v, c);
                v += 2;
            }
        }
        while v + TILE_VECTORS <= vectors {
            p.tile_rows::<_, TILE_VECTORS>(s, rows, v, c);
            v += TILE_VECTORS;
        }
        if v < vectors {
            p.tile_rows::<_, 1>(s, rows, v, c);
        }
    }
}

/// `rows` cut into tiles: (first row, height), whole tiles of
/// `TILE_ROWS` first, then what is left in tiles of 4, 2 and 1 rows.
fn row_tiles(rows: std::ops::Range<usize>) -> impl Iterator<Item = (usize, usize)> {
    let mut i = rows.start;
    std::iter::from_fn(move || {
        let left = rows.end.checked_sub(i).filter(|&left| left > 0)?;
        let tile = [TILE_ROWS, 4, 2, 1].into_iter().find(|&t| t <= left)?;
        i += tile;
        Some((i - tile, tile))
    })
}

struct Product<'a> {
    a: Operand<'a>,
    b: Operand<'a>,
    k: usize,
    first_row: usize,
    bias: Option<&'a [f32]>,
    act: Act,
    n: usize,
}

impl Product<'_> {
    /// `tile` for a row tile of any height `row_tiles` gives.
    #[inline(always)]
    fn tile_rows<V: Vector, const JV: usize>(
        &self,
        v: V,
        (i, height): (usize, usize),
        vector: usize,
        c: &mut [f32],
    ) {
        match height {
            6 => self.tile::<V, 6, JV>(v, i, vector, c),
            4 => self.tile::<V, 4, JV>(v, i, vector, c),
            2 => self.tile::<V, 2, JV>(v, i, vector, c),
            _ => self.tile::<V, 1, JV>(v, i, vector, c),
        }
    }

    /// Rows `i..i + IB` of C, columns from the 8-float vector `vector` on
    /// (JV registers of `v`, or fewer columns where C's row ends).
    #[inline(always)]
    fn tile<V: Vector, const IB: usize, const JV: usize>(
        &self,
        v: V,
        i: usize,
        vector: usize,
        c: &mut [f32],
    ) {
        let j0 = vector * LANES;
        let mut acc = [[v.zero(); JV]; IB];
        if let Some(bias) = self.bias {
            let mut px = [[[0.0; LANES]; 2]; JV];
            for (jv, px) in px.iter_mut().enumerate() {
                let at = j0 + jv * V::PIXELS * LANES;
                for (l, out) in px.as_flattened_mut()[..V::PIXELS * LANES]
                    .iter_mut()
                    .enumerate()
                {
                    *out = bias.get(at + l).copied().unwrap_or(0.0);
                }
            }
            for ib in 0..IB {
                for jv in 0..JV {
                    acc[ib][jv] = v.load_px(&px[jv]);
                }
            }
        }
        let acc = self.accumulate::<V, IB, JV>(v, acc, i, j0);
        for ib in 0..IB {
            let row = &mut c[(i + ib - self.first_row) * self.n..][..self.n];
            for jv in 0..JV {
                let mut out = [[0.0; LANES]; 2];
                v.store_px(&mut out, self.act.forward(v, acc[ib][jv]));
                let at = j0 + jv * V::PIXELS * LANES;
                let len = (V::PIXELS * LANES).min(self.n.saturating_sub(at));
                row[at..at + len].copy_from_slice(&out.as_flattened()[..len]);
            }
        }
    }

    /// `acc[ib][jv] + sum over kk of A[i + ib][kk] * B[kk][j0 + jv * width..]`
    /// (`width` the floats of one register of `v`). The accumulators are
    /// this function's own locals: kept in a caller's array, the compiler
    /// stored them to the stack every step.
    #[inline(always)]
    fn accumulate<V: Vector, const IB: usize, const JV: usize>(
        &self,
        v: V,
        mut acc: [[V::V; JV]; IB],
        i: usize,
        j0: usize,
    ) -> [[V::V; JV]; IB] {
        let (a, b) = (self.a, self.b);
        let a_row: [usize; IB] = core::array::from_fn(|ib| (i + ib) * a.row_stride);
        for kk in 0..self.k {
            let b_at = kk * b.row_stride + j0;
            let mut bv = [v.zero(); JV];
            for jv in 0..JV {
                // SAFETY: `product` checked that B's last vector, at
                // (k - 1) * row_stride plus the columns rounded up to
                // whole 8-float vectors, is in bounds, and tiles never
                // reach past those columns.
                let px = unsafe {
                    let at = b.values.as_ptr().add(b_at + jv * V::PIXELS * LANES);
                    std::slice::from_raw_parts(at as *const Lanes, V::PIXELS)
                };
                bv[jv] = v.load_px(px);
            }
            let a_col = kk * a.col_stride;
            for ib in 0..IB {
                // SAFETY: `product` checked A's last element, of its last
                // row and column; every (i + ib, kk) here is within both.
                let av = v.splat(unsafe { *a.values.get_unchecked(a_row[ib] + a_col) });
                for jv in 0..JV {
                    acc[ib][jv] = v.mul_add(av, bv[jv], acc[ib][jv]);
                }
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::tests::pseudo_random;

    /// The head one layer at a time in f64, the plain way: the output, and
    /// per layer (dx of the first, dw, db) for the output gradient `dy`.
    fn reference(
        layers: &[Dense],
        batch: usize,
        x: &[f32],
        dy: &[f32],
    ) -> (Vec<f64>, Vec<Vec<f64>>) {
        let act = |a: Act, z: f64| match a {
            Act::Identity => z,
            Act::Sigmoid => 1.0 / (1.0 + (-z).exp()),
            Act::Relu => z.max(0.0),
            Act::Tanh => z.tanh(),
        };
        let deriv = |a: Act, y: f64| match a {
            Act::Identity => 1.0,
            Act::Sigmoid => y * (1.0 - y),
            Act::Relu => f64::from(u8::from(y > 0.0)),
            Act::Tanh => 1.0 - y * y,
        };
        let mut values = vec![x.iter().map(|v| *v as f64).collect::<Vec<f64>>()];
        for l in layers {
            let input = values.last().unwrap();
            let mut out = vec![0.0; batch * l.n_out];
            for b in 0..batch {
                for o in 0..l.n_out {
                    let z: f64 = (0..l.n_in)
                        .map(|r| l.w[o * l.n_in + r] as f64 * input[b * l.n_in + r])
                        .sum::<f64>()
                        + l.b[o] as f64;
                    out[b * l.n_out + o] = act(l.act, z);
                }
            }
            values.push(out);
        }
        let mut grad: Vec<f64> = dy.iter().map(|v| *v as f64).collect();
        let mut per_layer = Vec::new();
        for (li, l) in layers.iter().enumerate().rev() {
            let y = &values[li + 1];
            let dz: Vec<f64> = grad
                .iter()
                .zip(y)
                .map(|(g, y)| g * deriv(l.act, *y))
                .collect();
            let input = &values[li];
            let mut dw = vec![0.0; l.n_out * l.n_in];
            let mut db = vec![0.0; l.n_out];
            let mut dx = vec![0.0; batch * l.n_in];
            for b in 0..batch {
                for o in 0..l.n_out {
                    let g = dz[b * l.n_out + o];
                    db[o] += g;
                    for r in 0..l.n_in {
                        dw[o * l.n_in + r] += g * input[b * l.n_in + r];
                        dx[b * l.n_in + r] += g * l.w[o * l.n_in + r] as f64;
                    }
                }
            }
            per_layer.push((dw, db));
            grad = dx;
        }
        per_layer.reverse();
        let mut all = vec![grad];
        for (dw, db) in per_layer {
            all.push(dw);
            all.push(db);
        }
        (values.pop().unwrap(), all)
    }

    fn assert_close(what: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{what}: length");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            let tol = 1e-4 * (1.0 + w.abs());
            assert!((*g as f64 - w).abs() <= tol, "{what}[{i}]: {g} vs {w}");
        }
    }

    #[test]
    fn head_matches_a_plain_product_on_ragged_shapes() {
        // Widths around whole vectors (7, 8, 17, 21, 3) and batches that
        // leave every narrower row tile (15 = 6 + 6 + 2 + 1, 4, 1), and
        // one of several parallel tasks, the last one short, on any
        // number of threads (40).
        let shapes = [(21, 17), (17, 8), (8, 7), (7, 3)];
        let params: Vec<(Vec<f32>, Vec<f32>)> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(n_in, n_out))| {
                let seed = 10 * i as u32;
                (
                    pseudo_random(n_in * n_out, seed),
                    pseudo_random(n_out, seed + 1),
                )
            })
            .collect();
        for act in [Act::Sigmoid, Act::Relu, Act::Tanh] {
            let layers: Vec<Dense> = shapes
                .iter()
                .zip(&params)
                .enumerate()
                .map(|(i, (&(n_in, n_out), (w, b)))| Dense {
                    n_in,
                    n_out,
                    w,
                    b,
                    act: if i + 1 < shapes.len() {
                        act
                    } else {
                        Act::Identity
                    },
                })
                .collect();
            for batch in [40, 15, 4, 1] {
                let x = pseudo_random(batch * 21, 100 + batch as u32);
                let dy = pseudo_random(batch * 3, 200 + batch as u32);
                let (want_y, want_grads) = reference(&layers, batch, &x, &dy);
                let (y, saved) = dense_forward(&layers, batch, x.clone(), true);
                assert_close(&format!("{act:?} batch {batch} output"), &y, &want_y);
                let grads = dense_backward(&layers, &saved, &dy, true);
                let dx = grads[0].dx.as_ref().expect("asked for dx");
                assert_close(&format!("{act:?} batch {batch} dx"), dx, &want_grads[0]);
                for (l, g) in grads.iter().enumerate() {
                    assert_close(
                        &format!("{act:?} batch {batch} dw{l}"),
                        &g.dw,
                        &want_grads[1 + 2 * l],
                    );
                    assert_close(
                        &format!("{act:?} batch {batch} db{l}"),
                        &g.db,
                        &want_grads[2 + 2 * l],
                    );
                }
                let without_dx = dense_backward(&layers, &saved, &dy, false);
                assert!(without_dx[0].dx.is_none());
                for (g, want) in without_dx.iter().zip(&grads) {
                    assert_eq!((&g.dw, &g.db), (&want.dw, &want.db));
                }
                // Inference keeps nothing and gives the same output bits.
                let (y_infer, _) = dense_forward(&layers, batch, x, false);
                assert_eq!(y, y_infer);
            }
        }
    }
}
