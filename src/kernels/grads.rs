//! Gradients as the kernels return them, and their deterministic sums:
//! each block's weight gradients are summed on their own and the block
//! sums added in block order, so results do not depend on the number of
//! threads.

use super::pack::buffer;
use super::shapes::ConvDims;

/// One layer's gradients (a convolution's or a dense layer's).
pub struct LayerGrads {
    /// `None` when the input gradient was not asked for.
    pub dx: Option<Vec<f32>>,
    pub dw: Vec<f32>,
    pub db: Vec<f32>,
}

/// One block's share of a convolution's weight and bias gradients.
pub(crate) struct BlockGrads {
    pub(crate) dw: Vec<f32>,
    pub(crate) db: Vec<f32>,
}

/// `dst += src`, element by element.
pub fn add_assign(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(a, b)| *a += b);
}

/// Adds up the blocks' gradients, block after block: the same order for
/// any number of threads.
pub(crate) fn reduce_blocks<'a>(
    d: &ConvDims,
    blocks: impl Iterator<Item = &'a BlockGrads>,
    dx: Option<Vec<f32>>,
) -> LayerGrads {
    let mut dw = buffer(d.o * d.ckk());
    let mut db = buffer(d.o);
    for block in blocks {
        add_assign(&mut dw, &block.dw);
        add_assign(&mut db, &block.db);
    }
    LayerGrads { dx, dw, db }
}

/// `buf` cut into `len`-sized chunks, or `pieces` `None`s when `buf` is
/// empty (the gradient was not asked for).
pub(crate) fn optional_chunks(
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
