//! Tests of one block through every kernel, across instruction sets.

use super::activation::Act;
use super::conv::*;
use super::pack::sum_lanes;
use super::pool::*;
use super::shapes::{padded_hw, ConvDims, Pool, RowLayout, LENET_C1, LENET_C3};
use super::simd::{Lanes, Portable, Simd, LANES};
use crate::with_simd;

// Oracles: the plain versions of what the kernels fuse.

/// Writes into `db` [O] the bias gradient of one block: the sum of `dz` per channel.
fn conv_bias_grad<S: Simd>(s: S, d: &ConvDims, dz: &[Lanes], db: &mut [f32]) {
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
/// with K-1 zero columns on both sides.
fn conv_input_grad<S: Simd>(
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

/// Copies rows of `width` pixels into `out` with `pad` zero pixels on both ends.
fn pack_columns_padded(rows: &[Lanes], width: usize, pad: usize, out: &mut Vec<Lanes>) {
    let wide = width + 2 * pad;
    out.clear();
    out.resize(rows.len() / width * wide, [0.0; LANES]);
    for (src, dst) in rows.chunks_exact(width).zip(out.chunks_exact_mut(wide)) {
        dst[pad..pad + width].copy_from_slice(src);
    }
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

fn lanes_of(n: usize, seed: u32) -> Vec<Lanes> {
    pseudo_random(n * LANES, seed)
        .chunks_exact(LANES)
        .map(|l| l.try_into().expect("8 floats"))
        .collect()
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
    use crate::kernels::simd::{run_avx2_fma, run_avx512, Avx2Fma, Avx512};
    let (Some(wide), Some(narrow)) = (Avx512::detect(), Avx2Fma::detect()) else {
        eprintln!("skipped: this CPU has no AVX-512");
        return;
    };
    for d in [LENET_C1, LENET_C3, ODD, ODD_K5] {
        for (act, pool) in ACTS_AND_POOLS {
            // SAFETY: `wide` came from `Avx512::detect()`: the CPU has AVX-512.
            let a = unsafe { run_avx512(|| block_pass(wide, &d, act, pool)) };
            // SAFETY: `narrow` came from `Avx2Fma::detect()`: the CPU has AVX2 and FMA.
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
