//! Eight f32 lanes, with a runtime choice between AVX2+FMA and portable code.
//!
//! The convolution kernels (`lanes.rs`) put eight images side by side, one
//! per lane, so every vector operation does the same work for eight images
//! and no shape in LeNet-5 ever leaves a ragged edge. The width is fixed at
//! eight whatever the CPU (AVX-512 would offer sixteen), because the batch
//! is cut into blocks of that many images and results must not depend on
//! the machine's SIMD width beyond rounding.
//!
//! Kernels are written once, generic over [`Simd`], and marked
//! `#[inline(always)]`; [`with_simd!`] runs a kernel call inside a function
//! compiled for AVX2+FMA when the CPU has them (checked once, at run time)
//! and as portable code otherwise, so release builds stay portable.

/// Floats per vector: the images in one block.
pub const LANES: usize = 8;

/// One value per image of a block.
pub type Lanes = [f32; LANES];

/// The vector operations the kernels use.
pub trait Simd: Copy {
    type V: Copy;
    fn zero(self) -> Self::V;
    fn splat(self, x: f32) -> Self::V;
    fn load(self, from: &Lanes) -> Self::V;
    fn store(self, to: &mut Lanes, v: Self::V);
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
    /// The 8 x 8 transpose: lane `j` of vector `i` becomes lane `i` of
    /// vector `j` (eight rows of one image each become eight pixels of
    /// eight images).
    fn transpose(self, rows: [Self::V; LANES]) -> [Self::V; LANES];
}

/// Plain arrays: what the compiler makes of them on any CPU.
#[derive(Debug, Clone, Copy)]
pub struct Portable;

impl Simd for Portable {
    type V = Lanes;
    #[inline(always)]
    fn zero(self) -> Lanes {
        [0.0; LANES]
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Lanes {
        [x; LANES]
    }
    #[inline(always)]
    fn load(self, from: &Lanes) -> Lanes {
        *from
    }
    #[inline(always)]
    fn store(self, to: &mut Lanes, v: Lanes) {
        *to = v;
    }
    #[inline(always)]
    fn add(self, a: Lanes, b: Lanes) -> Lanes {
        std::array::from_fn(|l| a[l] + b[l])
    }
    #[inline(always)]
    fn sub(self, a: Lanes, b: Lanes) -> Lanes {
        std::array::from_fn(|l| a[l] - b[l])
    }
    #[inline(always)]
    fn mul(self, a: Lanes, b: Lanes) -> Lanes {
        std::array::from_fn(|l| a[l] * b[l])
    }
    #[inline(always)]
    fn mul_add(self, a: Lanes, b: Lanes, c: Lanes) -> Lanes {
        std::array::from_fn(|l| a[l] * b[l] + c[l])
    }
    #[inline(always)]
    fn div(self, a: Lanes, b: Lanes) -> Lanes {
        std::array::from_fn(|l| a[l] / b[l])
    }
    #[inline(always)]
    fn min(self, a: Lanes, b: Lanes) -> Lanes {
        std::array::from_fn(|l| if a[l] < b[l] { a[l] } else { b[l] })
    }
    #[inline(always)]
    fn max(self, a: Lanes, b: Lanes) -> Lanes {
        std::array::from_fn(|l| if a[l] > b[l] { a[l] } else { b[l] })
    }
    #[inline(always)]
    fn floor(self, a: Lanes) -> Lanes {
        a.map(f32::floor)
    }
    #[inline(always)]
    fn pow2i(self, n: Lanes) -> Lanes {
        n.map(|n| f32::from_bits(biased_exponent(n) << 23))
    }
    /// The mask is 1.0 for true and 0.0 for false.
    #[inline(always)]
    fn gt(self, a: Lanes, b: Lanes) -> Lanes {
        std::array::from_fn(|l| if a[l] > b[l] { 1.0 } else { 0.0 })
    }
    #[inline(always)]
    fn select(self, mask: Lanes, if_true: Lanes, if_false: Lanes) -> Lanes {
        std::array::from_fn(|l| {
            if mask[l] != 0.0 {
                if_true[l]
            } else {
                if_false[l]
            }
        })
    }
    #[inline(always)]
    fn transpose(self, rows: [Lanes; LANES]) -> [Lanes; LANES] {
        std::array::from_fn(|j| std::array::from_fn(|i| rows[i][j]))
    }
}

/// The bits of the whole number `n + 127`, for n in [-126, 127]: adding
/// 2^23 puts it in the low mantissa bits, where it can be read without a
/// float-to-int conversion (Rust's saturating `as` does not vectorize).
#[inline(always)]
fn biased_exponent(n: f32) -> u32 {
    const TWO_23: f32 = 8_388_608.0;
    (n + (127.0 + TWO_23))
        .to_bits()
        .wrapping_sub(TWO_23.to_bits())
}

#[cfg(target_arch = "x86_64")]
pub use x86::{run_avx2_fma, Avx2Fma};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, Simd};
    use std::arch::x86_64::*;

    /// AVX2 + FMA. The only way to get one is [`Avx2Fma::detect`], so
    /// holding one proves the CPU has the instructions its methods use.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx2Fma(());

    impl Avx2Fma {
        pub fn detect() -> Option<Self> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
                .then_some(Avx2Fma(()))
        }
    }

    // SAFETY (every method): an `Avx2Fma` exists only on CPUs with AVX2
    // and FMA, and the loads and stores go through references to whole
    // eight-float arrays (unaligned access is allowed).
    impl Simd for Avx2Fma {
        type V = __m256;
        #[inline(always)]
        fn zero(self) -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        fn load(self, from: &Lanes) -> __m256 {
            unsafe { _mm256_loadu_ps(from.as_ptr()) }
        }
        #[inline(always)]
        fn store(self, to: &mut Lanes, v: __m256) {
            unsafe { _mm256_storeu_ps(to.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn div(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_div_ps(a, b) }
        }
        #[inline(always)]
        fn min(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_min_ps(a, b) }
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_max_ps(a, b) }
        }
        #[inline(always)]
        fn floor(self, a: __m256) -> __m256 {
            unsafe { _mm256_floor_ps(a) }
        }
        #[inline(always)]
        fn pow2i(self, n: __m256) -> __m256 {
            // As `biased_exponent`, then shifted into the exponent field.
            const TWO_23: f32 = 8_388_608.0;
            unsafe {
                let shifted = _mm256_add_ps(n, _mm256_set1_ps(127.0 + TWO_23));
                let biased = _mm256_sub_epi32(
                    _mm256_castps_si256(shifted),
                    _mm256_set1_epi32(TWO_23.to_bits() as i32),
                );
                _mm256_castsi256_ps(_mm256_slli_epi32::<23>(biased))
            }
        }
        #[inline(always)]
        fn gt(self, a: __m256, b: __m256) -> __m256 {
            // Ordered, quiet: false when either is NaN, like `>`.
            unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(a, b) }
        }
        #[inline(always)]
        fn select(self, mask: __m256, if_true: __m256, if_false: __m256) -> __m256 {
            unsafe { _mm256_blendv_ps(if_false, if_true, mask) }
        }
        #[inline(always)]
        fn transpose(self, r: [__m256; 8]) -> [__m256; 8] {
            // Interleave pairs of rows, then pairs of pairs within each
            // 128-bit half, then swap the halves.
            unsafe {
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ]
            }
        }
    }

    /// Runs `f` in a function compiled for AVX2 and FMA, so that the
    /// `#[inline(always)]` kernel code inside `f` is compiled for them too.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA: call it with the `Avx2Fma` from
    /// `detect()` in hand.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn run_avx2_fma<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
}

/// The AVX2+FMA path, when this CPU has it (std caches the detection).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub fn avx2_fma() -> Option<Avx2Fma> {
    Avx2Fma::detect()
}

/// `with_simd!(|s| kernel(s, args...))`: evaluates the body with `s` the
/// best [`Simd`] this CPU has, compiled for that instruction set.
macro_rules! with_simd {
    (|$s:ident| $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if let Some($s) = $crate::model::simd::avx2_fma() {
                // SAFETY: `avx2_fma()` returned Some, so the CPU has AVX2 and FMA.
                unsafe {
                    $crate::model::simd::run_avx2_fma(
                        #[inline(always)]
                        || $body,
                    )
                }
            } else {
                let $s = $crate::model::simd::Portable;
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let $s = $crate::model::simd::Portable;
            $body
        }
    }};
}
pub(crate) use with_simd;

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
