//! Time per block of 8 images of each CPU kernel of LeNet's c1 and c3, on
//! the instruction set `runner` picks here: `cargo bench --bench kernels`.
//!
//! `runner bench` times whole training steps; this splits a step's chain
//! (c1-s2-c3-s4) into its kernels, to see which one a change moved. Each
//! kernel runs over 32 different blocks in turn, as a batch of 256 would,
//! so that what a real step keeps from its forward (packed inputs,
//! activations, pooled outputs) comes from the caches it would; the
//! gradients a backward step writes and reads straight back (output and
//! input gradients) live in one buffer per stage, hot, as in the chain's
//! per-thread scratch. The figure is the best of 40 such rounds, per
//! block. Inputs are pseudo-random: kernel times do not depend on the
//! values (ReLU and max pooling are branch-free).

use std::hint::black_box;
use std::time::Instant;

use runner::kernels::activation::Act;
use runner::kernels::conv::{conv_forward, conv_input_grad_from_margins, conv_weight_grad, Taps};
use runner::kernels::pool::{pool_act_backward, pool_forward};
use runner::kernels::shapes::{padded_hw, ConvDims, Pool, RowLayout, LENET_C1, LENET_C3};
use runner::kernels::simd::{Lanes, LANES};
use runner::with_simd;

/// Blocks cycled through per round: a batch of 256 images.
const BLOCKS: usize = 32;
const ROUNDS: usize = 40;

/// `n` lane pixels of deterministic values in [-0.5, 0.5).
fn lanes(n: usize, seed: u32) -> Vec<Lanes> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as f32 / u32::MAX as f32 - 0.5
    };
    (0..n).map(|_| std::array::from_fn(|_| next())).collect()
}

fn floats(n: usize, seed: u32) -> Vec<f32> {
    lanes(n.div_ceil(LANES), seed).as_flattened()[..n].to_vec()
}

/// One buffer of `len` lane pixels per block.
fn per_block(len: usize, seed: u32) -> Vec<Vec<Lanes>> {
    (0..BLOCKS as u32).map(|b| lanes(len, seed + b)).collect()
}

/// What one stage's kernels read and write: one buffer per block, shared
/// by the kernels (each run overwrites what it writes).
struct Stage {
    name: &'static str,
    d: ConvDims,
    b: Vec<f32>,
    forward_taps: Taps,
    input_taps: Taps,
    xp: Vec<Vec<Lanes>>,
    z: Vec<Vec<Lanes>>,
    pooled: Vec<Vec<Lanes>>,
    /// The output gradient, dense and with margins (zero, as the chain
    /// keeps them), and the input gradient: one buffer each.
    dz: Vec<Lanes>,
    dz_margins: Vec<Lanes>,
    dx: Vec<Lanes>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

/// The kernels of a stage.
#[derive(Clone, Copy)]
enum Kernel {
    Conv(Act),
    ConvPool(Act, Pool),
    Pool(Pool),
    PoolActBack(Act, Pool),
    WeightGrad,
    /// From a `dz` with margins, as the chain's backward writes it.
    InputGrad,
}

impl Stage {
    fn new(name: &'static str, d: ConvDims) -> Self {
        let (hp, wp) = padded_hw(&d);
        let w = floats(d.o * d.ckk(), 1);
        Stage {
            name,
            d,
            b: floats(d.o, 2),
            forward_taps: with_simd!(|s| Taps::forward(s, &d, &w)),
            input_taps: with_simd!(|s| Taps::input_grad(s, &d, &w)),
            xp: per_block(d.c * hp * wp, 100),
            z: per_block(d.out_len(), 300),
            pooled: per_block(d.out_len() / 4, 400),
            dz: lanes(d.out_len(), 200),
            dz_margins: vec![[0.0; LANES]; d.o * d.ho() * Self::margins(&d).stride],
            dx: lanes(d.in_len(), 600),
            dw: vec![0.0; d.o * d.ckk()],
            db: vec![0.0; d.o],
        }
    }

    fn margins(d: &ConvDims) -> RowLayout {
        RowLayout::with_margins(d.wo(), d.k - 1)
    }

    /// The kernels worth timing, with their names and multiply-adds per
    /// image (0: not a convolution).
    fn kernels(&self) -> Vec<(String, usize, Kernel)> {
        let (name, macs) = (self.name, self.d.ckk() * self.d.out_len());
        let mut kernels = Vec::new();
        for (act, pool, variant) in [
            (Act::Sigmoid, Pool::Avg, "sigmoid+avg"),
            (Act::Relu, Pool::Max, "relu+max"),
        ] {
            kernels.extend([
                (format!("{name} {variant} conv"), macs, Kernel::Conv(act)),
                (
                    format!("{name} {variant} conv+pool"),
                    macs,
                    Kernel::ConvPool(act, pool),
                ),
                (format!("{name} {variant} pool"), 0, Kernel::Pool(pool)),
                (
                    format!("{name} {variant} pool+act back"),
                    0,
                    Kernel::PoolActBack(act, pool),
                ),
            ]);
        }
        kernels.push((format!("{name} weight grad"), macs, Kernel::WeightGrad));
        if self.d.pad == 0 {
            // Training needs no input gradient for c1: its input is data.
            kernels.push((format!("{name} input grad"), macs, Kernel::InputGrad));
        }
        kernels
    }

    /// Runs `kernel` on block `i`. Each call goes through `with_simd!`
    /// itself, so that it is compiled for that instruction set.
    fn run(&mut self, kernel: Kernel, i: usize) {
        let d = &self.d;
        let dims = (d.o, d.ho(), d.wo());
        let (xp, z, pooled) = (&self.xp[i], &mut self.z[i], &mut self.pooled[i]);
        let (taps, b) = (&self.forward_taps, &self.b);
        match kernel {
            Kernel::Conv(act) => {
                with_simd!(|s| conv_forward(s, d, xp, taps, b, act, z, None))
            }
            Kernel::ConvPool(act, pool) => {
                let into = Some((pool, &mut pooled[..]));
                with_simd!(|s| conv_forward(s, d, xp, taps, b, act, z, into))
            }
            Kernel::Pool(pool) => with_simd!(|s| pool_forward(s, pool, dims, z, pooled)),
            Kernel::PoolActBack(act, pool) => {
                // Into dz with margins where the chain writes it so (c3).
                let (dz, db) = (&mut self.dz_margins, &mut self.db);
                let rows = if d.pad == 0 {
                    Self::margins(d)
                } else {
                    RowLayout::dense(d.wo())
                };
                let dz = &mut dz[..d.o * d.ho() * rows.stride];
                with_simd!(|s| pool_act_backward(s, pool, act, dims, z, pooled, dz, rows, db))
            }
            Kernel::WeightGrad => {
                let (dz, dw) = (&self.dz, &mut self.dw);
                let rows = RowLayout::dense(d.wo());
                with_simd!(|s| conv_weight_grad(s, d, xp, dz, rows, dw))
            }
            Kernel::InputGrad => {
                let (dz, taps, dx) = (&self.dz_margins, &self.input_taps, &mut self.dx);
                with_simd!(|s| conv_input_grad_from_margins(s, d, dz, taps, dx))
            }
        }
    }
}

fn main() {
    println!(
        "kernels on {:?}, microseconds per block of {LANES} images (best of {ROUNDS} rounds over {BLOCKS} blocks)",
        runner::kernels::simd::isa()
    );
    let mut stages = [Stage::new("c1", LENET_C1), Stage::new("c3", LENET_C3)];
    let kernels: Vec<(usize, String, usize, Kernel)> = stages
        .iter()
        .enumerate()
        .flat_map(|(at, stage)| {
            stage
                .kernels()
                .into_iter()
                .map(move |(n, m, k)| (at, n, m, k))
        })
        .collect();
    // Kernels take turns, one round over all blocks each per turn: this
    // shared machine's speed changes from one second to the next, and a
    // kernel timed all at once could catch only a slow stretch.
    let mut best = vec![f64::INFINITY; kernels.len()];
    for _ in 0..ROUNDS {
        for ((at, _, _, kernel), best) in kernels.iter().zip(&mut best) {
            let started = Instant::now();
            for block in 0..BLOCKS {
                stages[*at].run(*kernel, block);
            }
            *best = best.min(started.elapsed().as_secs_f64() / BLOCKS as f64);
        }
    }
    for ((_, name, macs, _), best) in kernels.iter().zip(best) {
        let rate = if *macs > 0 {
            format!("{:6.1} GFLOP/s", 2.0 * (macs * LANES) as f64 / best / 1e9)
        } else {
            String::new()
        };
        println!("{name:<28} {:7.1} us  {rate}", best * 1e6);
    }
    black_box(&stages.map(|st| (st.dw, st.db, st.dx, st.dz_margins)));
}
