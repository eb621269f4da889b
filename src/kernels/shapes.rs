//! The shapes the kernels work on: a convolution's dimensions (LeNet's
//! c1 and c3 among them), the pooling kind, and how rows of a block's
//! planes lie in a buffer. Plain data; every kernel file imports it.

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

/// Height and width of a convolution's input once padded.
pub fn padded_hw(d: &ConvDims) -> (usize, usize) {
    (d.h + 2 * d.pad, d.w + 2 * d.pad)
}

/// 2x2, stride 2 pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    Avg,
    Max,
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
    pub(crate) fn row(self, r: usize) -> usize {
        r * self.stride + self.offset
    }
}
