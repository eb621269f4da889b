//! Chains of `pool(act(conv(x, w) + b))` stages, run block by block: LeNet's
//! c1-s2-c3-s4 as one op.
//!
//! Each block of eight images goes through every stage while it is in
//! cache, packed in lanes (`pack.rs`): the pooled output of one stage is
//! the packed input of the next, so nothing between stages is unpacked,
//! stored as a tensor and packed again; in the backward, the input gradient
//! of one stage is the pooled-output gradient of the stage before. What the
//! backward needs (each stage's packed input and activations) is kept per
//! block. Weight gradients are summed per block, and the block sums added in
//! block order, so results do not depend on the number of threads.

use std::sync::Mutex;

use rayon::prelude::*;

use super::activation::Act;
use super::conv::{conv_forward, conv_input_grad_from_margins, weight_grads_beside, Taps};
use super::grads::{optional_chunks, reduce_blocks, BlockGrads, LayerGrads};
use super::pack::{buffer, lane_buffer, pack, unpack, BLOCK};
use super::pool::pool_act_backward;
use super::shapes::{padded_hw, ConvDims, Pool, RowLayout};
use super::simd::{Lanes, LANES};
use crate::with_simd;

/// One stage: a stride-1 convolution with weights `w` [O, C, K, K] and
/// bias `b` [O], the activation, then 2x2 pooling.
#[derive(Debug, Clone, Copy)]
pub struct Stage<'a> {
    pub d: ConvDims,
    pub w: &'a [f32],
    pub b: &'a [f32],
}

impl Stage<'_> {
    /// Lane pixels of one block's input once packed with the padding.
    fn padded_len(&self) -> usize {
        let (hp, wp) = padded_hw(&self.d);
        self.d.c * hp * wp
    }
    fn conv_dims(&self) -> (usize, usize, usize) {
        (self.d.o, self.d.ho(), self.d.wo())
    }
    fn pooled_dims(&self) -> (usize, usize, usize) {
        (self.d.o, self.d.ho() / 2, self.d.wo() / 2)
    }
    fn pooled_len(&self) -> usize {
        self.d.out_len() / 4
    }
}

/// Checks that the stages fit together; shapes come from the model's code,
/// so a mismatch is a bug, not bad input.
fn check_chain(stages: &[Stage]) {
    assert!(!stages.is_empty(), "a chain needs at least one stage");
    for st in stages {
        let (ho, wo) = (st.d.ho(), st.d.wo());
        assert!(
            ho % 2 == 0 && wo % 2 == 0,
            "2x2 pooling needs even sizes, got {ho}x{wo}"
        );
        assert_eq!((st.w.len(), st.b.len()), (st.d.o * st.d.ckk(), st.d.o));
    }
    for pair in stages.windows(2) {
        assert_eq!(
            (pair[1].d.c, pair[1].d.h, pair[1].d.w),
            pair[0].pooled_dims(),
            "a stage's input must be the pooled output of the one before"
        );
    }
}

/// One stage's buffers for all blocks: packed inputs and activations.
#[derive(Default)]
struct StageBuffers {
    inputs: Vec<Lanes>,
    activations: Vec<Lanes>,
}

/// What a chain's forward keeps for its backward.
pub struct ChainSaved {
    /// Per stage: [C][Hp][Wp] inputs and [O][Ho][Wo] activations, per block.
    stages: Vec<StageBuffers>,
}

/// Buffers of finished backward passes, reused by the next forward: fresh
/// zeroed megabytes every step cost more than the pooling itself.
static SPARE_BUFFERS: Mutex<Vec<Vec<Lanes>>> = Mutex::new(Vec::new());

/// A buffer of `len` lane pixels with stale contents, for a caller that
/// overwrites all of them.
fn spare_buffer(len: usize) -> Vec<Lanes> {
    if len == 0 {
        // Inference keeps nothing: leave the spares, full length, to training.
        return Vec::new();
    }
    let fitting = SPARE_BUFFERS.lock().ok().and_then(|mut spare| {
        let at = spare.iter().position(|buf| buf.capacity() >= len)?;
        Some(spare.swap_remove(at))
    });
    let mut buf = fitting.unwrap_or_else(|| Vec::with_capacity(len));
    buf.resize(len, [0.0; LANES]);
    buf
}

impl Drop for ChainSaved {
    fn drop(&mut self) {
        const KEEP: usize = 8;
        if let Ok(mut spare) = SPARE_BUFFERS.lock() {
            for stage in &mut self.stages {
                for buf in [&mut stage.inputs, &mut stage.activations] {
                    if buf.capacity() > 0 && spare.len() < KEEP {
                        spare.push(std::mem::take(buf));
                    }
                }
            }
        }
    }
}

/// One block's (input, activations) per stage.
type BlockBuffers<'a> = Vec<(&'a mut [Lanes], &'a mut [Lanes])>;

/// Per-thread buffers of one block's forward when nothing is kept.
#[derive(Default)]
struct ForwardScratch {
    stages: Vec<StageBuffers>,
    pooled: Vec<Lanes>,
}

impl ForwardScratch {
    fn split(&mut self, stages: &[Stage]) -> (BlockBuffers<'_>, &mut Vec<Lanes>) {
        self.stages.resize_with(stages.len(), StageBuffers::default);
        let buffers = self
            .stages
            .iter_mut()
            .zip(stages)
            .map(|(buf, st)| {
                (
                    lane_buffer(&mut buf.inputs, st.padded_len()),
                    lane_buffer(&mut buf.activations, st.d.out_len()),
                )
            })
            .collect();
        (buffers, &mut self.pooled)
    }
}

/// The chain's output for a batch `x` (NCHW, the first stage's input):
/// [B, O, Ho/2, Wo/2] of the last stage. Each stage's packed input and
/// activations are kept for the backward when `keep` is set (training);
/// inference reuses per-thread buffers instead.
pub fn chain_forward(
    stages: &[Stage],
    batch: usize,
    x: &[f32],
    act: Act,
    pool: Pool,
    keep: bool,
) -> (Vec<f32>, ChainSaved) {
    check_chain(stages);
    let (first, last) = (&stages[0], &stages[stages.len() - 1]);
    assert_eq!(x.len(), batch * first.d.in_len());
    let blocks = batch.div_ceil(BLOCK);
    let kept = if keep { blocks } else { 0 };
    let mut saved = ChainSaved {
        stages: stages
            .iter()
            .map(|st| StageBuffers {
                inputs: spare_buffer(kept * st.padded_len()),
                activations: spare_buffer(kept * st.d.out_len()),
            })
            .collect(),
    };
    let mut per_block: Vec<BlockBuffers> = (0..blocks).map(|_| Vec::new()).collect();
    for (st, buf) in stages.iter().zip(&mut saved.stages) {
        let pairs = buf
            .inputs
            .chunks_mut(st.padded_len())
            .zip(buf.activations.chunks_mut(st.d.out_len()));
        for (block, pair) in per_block.iter_mut().zip(pairs) {
            block.push(pair);
        }
    }
    let taps: Vec<Taps> = stages
        .iter()
        .map(|st| with_simd!(|v| Taps::forward(v, &st.d, st.w)))
        .collect();
    let out_len = last.pooled_len();
    let mut y = buffer(batch * out_len);
    y.par_chunks_mut(BLOCK * out_len)
        .zip(x.par_chunks(BLOCK * first.d.in_len()))
        .zip(per_block.into_par_iter())
        .for_each_init(ForwardScratch::default, |scratch, ((y, x), kept)| {
            let (mut buffers, pooled) = if kept.is_empty() {
                scratch.split(stages)
            } else {
                (kept, &mut scratch.pooled)
            };
            forward_block(stages, &taps, x, act, pool, &mut buffers, pooled, y);
        });
    (y, saved)
}

/// One block through every stage: packs `x`, then per stage convolves
/// (activation included; `taps` are the stages' weights) and pools into
/// the next stage's input, the last stage into `pooled`, unpacked into `y`.
#[allow(clippy::too_many_arguments)]
fn forward_block(
    stages: &[Stage],
    taps: &[Taps],
    x: &[f32],
    act: Act,
    pool: Pool,
    buffers: &mut [(&mut [Lanes], &mut [Lanes])],
    pooled: &mut Vec<Lanes>,
    y: &mut [f32],
) {
    let d0 = &stages[0].d;
    pack(x, (d0.c, d0.h, d0.w), d0.pad, buffers[0].0);
    for (s, st) in stages.iter().enumerate() {
        let (done, rest) = buffers.split_at_mut(s + 1);
        let (xp, a) = &mut done[s];
        let next = rest.first_mut().zip(stages.get(s + 1));
        // The pooled output goes straight into the next stage's input
        // when that has no padding, else through `pooled`.
        let (into, padded_next) = match next {
            Some(((next_xp, _), next)) if next.d.pad == 0 => (&mut **next_xp, None),
            other => (
                lane_buffer(pooled, st.pooled_len()),
                other.map(|((next_xp, _), next)| (next_xp, next.d.pad)),
            ),
        };
        let pooled_into = Some((pool, &mut *into));
        with_simd!(|v| conv_forward(v, &st.d, xp, &taps[s], st.b, act, a, pooled_into));
        match padded_next {
            Some((next_xp, pad)) => place_padded(into, st.pooled_dims(), pad, next_xp),
            None if s + 1 == stages.len() => unpack(into, y),
            None => {}
        }
    }
}

/// Copies [C][H][W] lanes into `out` [C][H+2p][W+2p] with zero borders.
fn place_padded(src: &[Lanes], (c, h, w): (usize, usize, usize), pad: usize, out: &mut [Lanes]) {
    let wp = w + 2 * pad;
    assert_eq!((src.len(), out.len()), (c * h * w, c * (h + 2 * pad) * wp));
    out.fill([0.0; LANES]);
    for (r, row) in src.chunks_exact(w).enumerate() {
        let (plane, y) = (r / h, r % h);
        let at = (plane * (h + 2 * pad) + y + pad) * wp + pad;
        out[at..at + w].copy_from_slice(row);
    }
}

/// Per-thread buffers of one block's backward, one of each per stage: a
/// buffer shared by stages of different sizes would be refilled each time
/// it grows back.
#[derive(Default)]
struct BackwardScratch {
    /// The gradient w.r.t. each stage's pooled output (the input gradient
    /// of the stage after it).
    dpooled: Vec<Vec<Lanes>>,
    /// The gradient w.r.t. each stage's convolution output.
    dz: Vec<Vec<Lanes>>,
    /// The first stage's input gradient.
    dx: Vec<Lanes>,
}

/// A buffer of `len` lane pixels, zeroed only when it takes a new length:
/// each stage's `dz` keeps its size and layout through a backward pass,
/// and its writers never touch the margins, so those stay zero.
fn margins_buffer(buf: &mut Vec<Lanes>, len: usize) -> &mut [Lanes] {
    if buf.len() != len {
        buf.clear();
        buf.resize(len, [0.0; LANES]);
    }
    buf
}

/// Backward of `chain_forward`, given the gradient w.r.t. its output.
/// Returns each stage's gradients; only the first stage's carry an input
/// gradient (when `need_dx`), the others' having flowed on inside the chain.
pub fn chain_backward(
    stages: &[Stage],
    batch: usize,
    saved: &ChainSaved,
    dpooled: &[f32],
    act: Act,
    pool: Pool,
    need_dx: bool,
) -> Vec<LayerGrads> {
    check_chain(stages);
    let (first, last) = (&stages[0], &stages[stages.len() - 1]);
    let blocks = batch.div_ceil(BLOCK);
    assert_eq!(dpooled.len(), batch * last.pooled_len());
    let mut per_block: Vec<Vec<(&[Lanes], &[Lanes])>> = (0..blocks).map(|_| Vec::new()).collect();
    for (st, buf) in stages.iter().zip(&saved.stages) {
        assert_eq!(
            buf.inputs.len(),
            blocks * st.padded_len(),
            "forward kept nothing"
        );
        let pairs = buf
            .inputs
            .chunks(st.padded_len())
            .zip(buf.activations.chunks(st.d.out_len()));
        for (block, pair) in per_block.iter_mut().zip(pairs) {
            block.push(pair);
        }
    }
    // The input gradient's weights, for the stages that pass one on.
    let taps: Vec<Option<Taps>> = stages
        .iter()
        .enumerate()
        .map(|(s, st)| (s > 0 || need_dx).then(|| with_simd!(|v| Taps::input_grad(v, &st.d, st.w))))
        .collect();
    let in_len = first.d.in_len();
    let mut dx = if need_dx {
        buffer(batch * in_len)
    } else {
        Vec::new()
    };
    let block_grads: Vec<Vec<BlockGrads>> = optional_chunks(&mut dx, BLOCK * in_len, blocks)
        .into_par_iter()
        .zip(per_block.into_par_iter())
        .zip(dpooled.par_chunks(BLOCK * last.pooled_len()))
        .map_init(BackwardScratch::default, |scratch, ((dx, kept), dp)| {
            backward_block(stages, &taps, &kept, dp, act, pool, dx, scratch)
        })
        .collect();
    let mut dx = need_dx.then_some(dx);
    stages
        .iter()
        .enumerate()
        .map(|(s, st)| {
            let blocks = block_grads.iter().map(|grads| &grads[s]);
            reduce_blocks(&st.d, blocks, if s == 0 { dx.take() } else { None })
        })
        .collect()
}

/// One block's backward through every stage, last to first: returns the
/// weight and bias gradients per stage, and writes the first stage's input
/// gradient into `dx` (NCHW) when given (`taps`: each stage's weights for
/// its input gradient, where it has one).
#[allow(clippy::too_many_arguments)]
fn backward_block(
    stages: &[Stage],
    taps: &[Option<Taps>],
    kept: &[(&[Lanes], &[Lanes])],
    dp: &[f32],
    act: Act,
    pool: Pool,
    dx: Option<&mut [f32]>,
    scratch: &mut BackwardScratch,
) -> Vec<BlockGrads> {
    let last = stages.len() - 1;
    scratch.dpooled.resize_with(stages.len(), Vec::new);
    scratch.dz.resize_with(stages.len(), Vec::new);
    let dpooled = lane_buffer(&mut scratch.dpooled[last], stages[last].pooled_len());
    pack(dp, stages[last].pooled_dims(), 0, dpooled);
    let mut grads = Vec::with_capacity(stages.len());
    for (s, st) in stages.iter().enumerate().rev() {
        let (xp, a) = kept[s];
        let passes_on = s > 0 || dx.is_some();
        // A stage that passes a gradient on gets dz with the margins its
        // input gradient reads past the row ends; one that does not, dense.
        let dz_rows = if passes_on {
            RowLayout::with_margins(st.d.wo(), st.d.k - 1)
        } else {
            RowLayout::dense(st.d.wo())
        };
        let dz = margins_buffer(&mut scratch.dz[s], st.d.o * st.d.ho() * dz_rows.stride);
        let dims = st.conv_dims();
        let dp = &scratch.dpooled[s];
        let mut db = buffer(st.d.o);
        with_simd!(|v| pool_act_backward(v, pool, act, dims, a, dp, dz, dz_rows, &mut db));
        grads.push(weight_grads_beside(&st.d, xp, dz, dz_rows, db));
        if !passes_on {
            break;
        }
        // This stage's input is the pooled output of the one before.
        let into = match s {
            0 => &mut scratch.dx,
            _ => &mut scratch.dpooled[s - 1],
        };
        let dxl = lane_buffer(into, st.d.in_len());
        let taps = taps[s]
            .as_ref()
            .expect("packed for every stage that passes a gradient on");
        with_simd!(|v| conv_input_grad_from_margins(v, &st.d, dz, taps, dxl));
        if s == 0 {
            unpack(dxl, dx.expect("checked above"));
            break;
        }
    }
    grads.reverse();
    grads
}
