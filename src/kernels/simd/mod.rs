//! Eight f32 lanes, with a runtime choice between AVX-512, AVX2+FMA and
//! portable code.
//!
//! The convolution kernels (`conv.rs`, `pool.rs`) put eight images side by side, one
//! per lane, so every vector operation does the same work for eight images
//! and no shape in LeNet-5 ever leaves a ragged edge. A block is eight
//! images whatever the CPU, because the batch is cut into blocks and the
//! weight gradients are summed block by block: results must not depend on
//! the machine's SIMD width.
//!
//! AVX-512's sixteen lanes hold two neighbouring pixels of a block instead
//! ([`Simd::Pair`]): the kernels' tiles already work on neighbouring
//! pixels, so a pair vector does the multiply-adds of two eight-lane
//! vectors, in the same order for every output. AVX2 and AVX-512 therefore
//! compute the same bits; only the portable path (no fused multiply-add)
//! rounds differently.
//!
//! Kernels are written once, generic over [`Vector`] and [`Simd`], and
//! marked `#[inline(always)]`; [`with_simd!`] runs a kernel call inside a
//! function compiled for the best instruction set the CPU has (checked
//! once, at run time), so release builds stay portable. `RUNNER_SIMD`
//! (`avx512`, `avx2` or `portable`) caps the choice, to compare them.
//!
//! One file per instruction set: `portable.rs`, `avx2.rs`, `avx512.rs`.

use std::sync::OnceLock;

mod portable;
pub use portable::Portable;
#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
pub use avx2::{run_avx2_fma, Avx2Fma};
#[cfg(target_arch = "x86_64")]
pub use avx512::{run_avx512, Avx512, Avx512Pair};

/// Floats per eight-lane vector: the images in one block.
pub const LANES: usize = 8;

/// One value per image of a block: one pixel of a packed block.
pub type Lanes = [f32; LANES];

/// Asks the CPU to start fetching the cache line that holds `lanes` into
/// its caches: a hint for data read soon that the hardware prefetcher does
/// not bring in in time. It changes no result.
#[inline(always)]
pub fn prefetch(lanes: &Lanes) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only reads (and never faults on) the address;
    // SSE is part of every x86-64 CPU.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            lanes.as_ptr().cast(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = lanes;
}

/// The arithmetic the kernels use, on vectors of `PIXELS` neighbouring
/// pixels of a block (8 floats each).
pub trait Vector: Copy {
    type V: Copy;
    /// Pixels per vector: 1 or 2.
    const PIXELS: usize;
    fn zero(self) -> Self::V;
    fn splat(self, x: f32) -> Self::V;
    /// The first `PIXELS` pixels of `px`.
    fn load_px(self, px: &[Lanes]) -> Self::V;
    /// Into the first `PIXELS` pixels of `px`.
    fn store_px(self, px: &mut [Lanes], v: Self::V);
    /// `lanes` in each of the vector's pixels.
    fn dup(self, lanes: &Lanes) -> Self::V;
    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`; fused (one rounding) where the CPU has FMA.
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    fn div(self, a: Self::V, b: Self::V) -> Self::V;
    /// Per lane, `if a < b { a } else { b }` (so `b` when either is NaN).
    fn min(self, a: Self::V, b: Self::V) -> Self::V;
    /// Per lane, `if a > b { a } else { b }` (so `b` when either is NaN).
    fn max(self, a: Self::V, b: Self::V) -> Self::V;
    /// Rounds down to a whole number.
    fn floor(self, a: Self::V) -> Self::V;
    /// 2^n for whole numbers n in [-126, 127] (other values give garbage).
    fn pow2i(self, n: Self::V) -> Self::V;
    /// Per lane, `a > b` as a mask (false for NaN).
    fn gt(self, a: Self::V, b: Self::V) -> Self::V;
    /// Per lane, `if_true` where `mask` (from `gt`) is set, else `if_false`.
    fn select(self, mask: Self::V, if_true: Self::V, if_false: Self::V) -> Self::V;
}

/// Eight-lane vectors (one pixel of a block), and the pair vectors of the
/// same instruction set.
pub trait Simd: Vector {
    /// Vectors of two neighbouring pixels.
    type Pair: Vector;
    /// Whether a pair is one register (AVX-512), so that kernels should
    /// tile with pairs; elsewhere a pair is two vectors, and kernels keep
    /// the tiles sized for this instruction set's registers.
    const NATIVE_PAIRS: bool;
    fn pair(self) -> Self::Pair;
    /// The first pixel of a pair.
    fn first(self, p: <Self::Pair as Vector>::V) -> Self::V;
    fn load(self, from: &Lanes) -> Self::V;
    fn store(self, to: &mut Lanes, v: Self::V);
    /// The 8 x 8 transpose: lane `j` of vector `i` becomes lane `i` of
    /// vector `j` (eight rows of one image each become eight pixels of
    /// eight images).
    fn transpose(self, rows: [Self::V; LANES]) -> [Self::V; LANES];
}

/// Two pixels as two eight-lane vectors: the pairs of instruction sets
/// without sixteen-lane registers.
#[derive(Debug, Clone, Copy)]
pub struct Twice<S>(S);

/// Methods of `Vector` that `Twice` does on each of its two halves.
macro_rules! on_each_half {
    ($($op:ident($($arg:ident),+);)*) => {$(
        #[inline(always)]
        fn $op(self, $($arg: Self::V),+) -> Self::V {
            [self.0.$op($($arg[0]),+), self.0.$op($($arg[1]),+)]
        }
    )*};
}

impl<S: Simd> Vector for Twice<S> {
    type V = [S::V; 2];
    const PIXELS: usize = 2;
    #[inline(always)]
    fn zero(self) -> Self::V {
        [self.0.zero(); 2]
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Self::V {
        [self.0.splat(x); 2]
    }
    #[inline(always)]
    fn load_px(self, px: &[Lanes]) -> Self::V {
        [self.0.load(&px[0]), self.0.load(&px[1])]
    }
    #[inline(always)]
    fn store_px(self, px: &mut [Lanes], v: Self::V) {
        self.0.store(&mut px[0], v[0]);
        self.0.store(&mut px[1], v[1]);
    }
    #[inline(always)]
    fn dup(self, lanes: &Lanes) -> Self::V {
        [self.0.load(lanes); 2]
    }
    on_each_half! {
        add(a, b);
        sub(a, b);
        mul(a, b);
        mul_add(a, b, c);
        div(a, b);
        min(a, b);
        max(a, b);
        floor(a);
        pow2i(n);
        gt(a, b);
        select(mask, if_true, if_false);
    }
}

/// The instruction sets the kernels can run on, best last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Portable,
    Avx2,
    Avx512,
}

impl Isa {
    /// What `RUNNER_SIMD` calls it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// The best instruction set this CPU has.
fn detected() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        if Avx512::detect().is_some() {
            return Isa::Avx512;
        }
        if Avx2Fma::detect().is_some() {
            return Isa::Avx2;
        }
    }
    Isa::Portable
}

/// The instruction set the kernels use: the CPU's best, capped by
/// `RUNNER_SIMD` when it names one (an unknown name draws a warning and
/// is ignored: the variable only ever slows things down).
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let cap = match std::env::var("RUNNER_SIMD").as_deref() {
            Ok("portable") => Isa::Portable,
            Ok("avx2") => Isa::Avx2,
            Ok("avx512") | Err(_) => Isa::Avx512,
            Ok(other) => {
                eprintln!(
                    "warning: RUNNER_SIMD={other:?} is not one of portable, avx2, avx512: ignored"
                );
                Isa::Avx512
            }
        };
        detected().min(cap)
    })
}

/// The AVX-512 path, when chosen (see [`isa`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn avx512() -> Option<Avx512> {
    if isa() == Isa::Avx512 {
        Avx512::detect()
    } else {
        None
    }
}

/// The AVX2+FMA path, when chosen (see [`isa`]).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn avx2_fma() -> Option<Avx2Fma> {
    if isa() >= Isa::Avx2 {
        Avx2Fma::detect()
    } else {
        None
    }
}

/// `with_simd!(|s| kernel(s, args...))`: evaluates the body with `s` the
/// [`Simd`] of the chosen instruction set ([`isa`]), compiled for it.
/// Exported, so that `cargo bench --bench kernels` runs the kernels as
/// training does.
#[macro_export]
macro_rules! with_simd {
    (|$s:ident| $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if let Some($s) = $crate::kernels::simd::avx512() {
                // SAFETY: `avx512()` returned Some, so the CPU has AVX-512.
                unsafe {
                    $crate::kernels::simd::run_avx512(
                        #[inline(always)]
                        || $body,
                    )
                }
            } else if let Some($s) = $crate::kernels::simd::avx2_fma() {
                // SAFETY: `avx2_fma()` returned Some, so the CPU has AVX2 and FMA.
                unsafe {
                    $crate::kernels::simd::run_avx2_fma(
                        #[inline(always)]
                        || $body,
                    )
                }
            } else {
                let $s = $crate::kernels::simd::Portable;
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let $s = $crate::kernels::simd::Portable;
            $body
        }
    }};
}
pub use crate::with_simd;

#[cfg(test)]
mod tests {
    use super::*;

    fn fma_sum<S: Simd>(s: S, a: &[Lanes], b: &[Lanes]) -> Lanes {
        let mut acc = s.zero();
        for (x, y) in a.iter().zip(b) {
            acc = s.mul_add(s.load(x), s.load(y), acc);
        }
        acc = s.add(acc, s.splat(0.5));
        let mut out = [0.0; LANES];
        s.store(&mut out, acc);
        out
    }

    #[test]
    fn both_instruction_sets_compute_the_same() {
        let a: Vec<Lanes> = (0..5)
            .map(|i| std::array::from_fn(|l| (i * 8 + l) as f32 * 0.25))
            .collect();
        let b: Vec<Lanes> = (0..5)
            .map(|i| std::array::from_fn(|l| l as f32 - i as f32))
            .collect();
        // Small integers and quarters: exact with or without fusing.
        let want: Lanes = std::array::from_fn(|l| {
            (0..5)
                .map(|i| (i * 8 + l) as f32 * 0.25 * (l as f32 - i as f32))
                .sum::<f32>()
                + 0.5
        });
        assert_eq!(fma_sum(Portable, &a, &b), want);
        assert_eq!(with_simd!(|s| fma_sum(s, &a, &b)), want);
    }

    fn transposed<S: Simd>(s: S, rows: &[Lanes; LANES]) -> [Lanes; LANES] {
        let t = s.transpose(std::array::from_fn(|i| s.load(&rows[i])));
        let mut out = [[0.0; LANES]; LANES];
        for (o, v) in out.iter_mut().zip(t) {
            s.store(o, v);
        }
        out
    }

    #[test]
    fn transpose_swaps_rows_and_lanes() {
        let rows: [Lanes; LANES] =
            std::array::from_fn(|i| std::array::from_fn(|j| (10 * i + j) as f32));
        let want: [Lanes; LANES] =
            std::array::from_fn(|j| std::array::from_fn(|i| (10 * i + j) as f32));
        assert_eq!(transposed(Portable, &rows), want);
        assert_eq!(with_simd!(|s| transposed(s, &rows)), want);
    }
}
