//! Eight f32 lanes, with a runtime choice between AVX-512, AVX2+FMA and
//! portable code.
//!
//! The convolution kernels (`lanes.rs`) put eight images side by side, one
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

use std::sync::OnceLock;

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
    #[inline(always)]
    fn add(self, a: Self::V, b: Self::V) -> Self::V {
        [self.0.add(a[0], b[0]), self.0.add(a[1], b[1])]
    }
    #[inline(always)]
    fn sub(self, a: Self::V, b: Self::V) -> Self::V {
        [self.0.sub(a[0], b[0]), self.0.sub(a[1], b[1])]
    }
    #[inline(always)]
    fn mul(self, a: Self::V, b: Self::V) -> Self::V {
        [self.0.mul(a[0], b[0]), self.0.mul(a[1], b[1])]
    }
    #[inline(always)]
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V {
        [
            self.0.mul_add(a[0], b[0], c[0]),
            self.0.mul_add(a[1], b[1], c[1]),
        ]
    }
    #[inline(always)]
    fn div(self, a: Self::V, b: Self::V) -> Self::V {
        [self.0.div(a[0], b[0]), self.0.div(a[1], b[1])]
    }
    #[inline(always)]
    fn min(self, a: Self::V, b: Self::V) -> Self::V {
        [self.0.min(a[0], b[0]), self.0.min(a[1], b[1])]
    }
    #[inline(always)]
    fn max(self, a: Self::V, b: Self::V) -> Self::V {
        [self.0.max(a[0], b[0]), self.0.max(a[1], b[1])]
    }
    #[inline(always)]
    fn floor(self, a: Self::V) -> Self::V {
        [self.0.floor(a[0]), self.0.floor(a[1])]
    }
    #[inline(always)]
    fn pow2i(self, n: Self::V) -> Self::V {
        [self.0.pow2i(n[0]), self.0.pow2i(n[1])]
    }
    #[inline(always)]
    fn gt(self, a: Self::V, b: Self::V) -> Self::V {
        [self.0.gt(a[0], b[0]), self.0.gt(a[1], b[1])]
    }
    #[inline(always)]
    fn select(self, mask: Self::V, if_true: Self::V, if_false: Self::V) -> Self::V {
        [
            self.0.select(mask[0], if_true[0], if_false[0]),
            self.0.select(mask[1], if_true[1], if_false[1]),
        ]
    }
}

/// Plain arrays: what the compiler makes of them on any CPU.
#[derive(Debug, Clone, Copy)]
pub struct Portable;

impl Vector for Portable {
    type V = Lanes;
    const PIXELS: usize = 1;
    #[inline(always)]
    fn zero(self) -> Lanes {
        [0.0; LANES]
    }
    #[inline(always)]
    fn splat(self, x: f32) -> Lanes {
        [x; LANES]
    }
    #[inline(always)]
    fn load_px(self, px: &[Lanes]) -> Lanes {
        px[0]
    }
    #[inline(always)]
    fn store_px(self, px: &mut [Lanes], v: Lanes) {
        px[0] = v;
    }
    #[inline(always)]
    fn dup(self, lanes: &Lanes) -> Lanes {
        *lanes
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
}

impl Simd for Portable {
    type Pair = Twice<Portable>;
    const NATIVE_PAIRS: bool = false;
    #[inline(always)]
    fn pair(self) -> Twice<Portable> {
        Twice(self)
    }
    #[inline(always)]
    fn first(self, p: [Lanes; 2]) -> Lanes {
        p[0]
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
pub use x86::{run_avx2_fma, run_avx512, Avx2Fma, Avx512, Avx512Pair};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Lanes, Simd, Twice, Vector, LANES};
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
    impl Vector for Avx2Fma {
        type V = __m256;
        const PIXELS: usize = 1;
        #[inline(always)]
        fn zero(self) -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }
        #[inline(always)]
        fn load_px(self, px: &[Lanes]) -> __m256 {
            self.load(&px[0])
        }
        #[inline(always)]
        fn store_px(self, px: &mut [Lanes], v: __m256) {
            self.store(&mut px[0], v)
        }
        #[inline(always)]
        fn dup(self, lanes: &Lanes) -> __m256 {
            self.load(lanes)
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
    }

    impl Simd for Avx2Fma {
        type Pair = Twice<Avx2Fma>;
        const NATIVE_PAIRS: bool = false;
        #[inline(always)]
        fn pair(self) -> Twice<Avx2Fma> {
            Twice(self)
        }
        #[inline(always)]
        fn first(self, p: [__m256; 2]) -> __m256 {
            p[0]
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

    /// AVX-512 (F, DQ and VL): eight-lane vectors are AVX2's, run where
    /// the compiler has 32 registers, and pairs are one 16-lane register.
    /// The only way to get one is [`Avx512::detect`].
    #[derive(Debug, Clone, Copy)]
    pub struct Avx512(Avx2Fma);

    /// Two pixels of a block in one AVX-512 register.
    #[derive(Debug, Clone, Copy)]
    pub struct Avx512Pair(());

    impl Avx512 {
        pub fn detect() -> Option<Self> {
            let wide = is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512dq")
                && is_x86_feature_detected!("avx512vl");
            Avx2Fma::detect().filter(|_| wide).map(Avx512)
        }
    }

    /// Eight lanes: AVX2's operations (the same bits), compiled inside
    /// `run_avx512`.
    impl Vector for Avx512 {
        type V = __m256;
        const PIXELS: usize = 1;
        #[inline(always)]
        fn zero(self) -> __m256 {
            self.0.zero()
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            self.0.splat(x)
        }
        #[inline(always)]
        fn load_px(self, px: &[Lanes]) -> __m256 {
            self.0.load_px(px)
        }
        #[inline(always)]
        fn store_px(self, px: &mut [Lanes], v: __m256) {
            self.0.store_px(px, v)
        }
        #[inline(always)]
        fn dup(self, lanes: &Lanes) -> __m256 {
            self.0.dup(lanes)
        }
        #[inline(always)]
        fn add(self, a: __m256, b: __m256) -> __m256 {
            self.0.add(a, b)
        }
        #[inline(always)]
        fn sub(self, a: __m256, b: __m256) -> __m256 {
            self.0.sub(a, b)
        }
        #[inline(always)]
        fn mul(self, a: __m256, b: __m256) -> __m256 {
            self.0.mul(a, b)
        }
        #[inline(always)]
        fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            self.0.mul_add(a, b, c)
        }
        #[inline(always)]
        fn div(self, a: __m256, b: __m256) -> __m256 {
            self.0.div(a, b)
        }
        #[inline(always)]
        fn min(self, a: __m256, b: __m256) -> __m256 {
            self.0.min(a, b)
        }
        #[inline(always)]
        fn max(self, a: __m256, b: __m256) -> __m256 {
            self.0.max(a, b)
        }
        #[inline(always)]
        fn floor(self, a: __m256) -> __m256 {
            self.0.floor(a)
        }
        #[inline(always)]
        fn pow2i(self, n: __m256) -> __m256 {
            self.0.pow2i(n)
        }
        #[inline(always)]
        fn gt(self, a: __m256, b: __m256) -> __m256 {
            self.0.gt(a, b)
        }
        #[inline(always)]
        fn select(self, mask: __m256, if_true: __m256, if_false: __m256) -> __m256 {
            self.0.select(mask, if_true, if_false)
        }
    }

    impl Simd for Avx512 {
        type Pair = Avx512Pair;
        const NATIVE_PAIRS: bool = true;
        #[inline(always)]
        fn pair(self) -> Avx512Pair {
            Avx512Pair(())
        }
        #[inline(always)]
        fn first(self, p: __m512) -> __m256 {
            unsafe { _mm512_castps512_ps256(p) }
        }
        #[inline(always)]
        fn load(self, from: &Lanes) -> __m256 {
            self.0.load(from)
        }
        #[inline(always)]
        fn store(self, to: &mut Lanes, v: __m256) {
            self.0.store(to, v)
        }
        #[inline(always)]
        fn transpose(self, rows: [__m256; LANES]) -> [__m256; LANES] {
            self.0.transpose(rows)
        }
    }

    /// The pixels of a pair as one slice of 16 floats.
    #[inline(always)]
    fn two(px: &[Lanes]) -> &[f32; 16] {
        px[..2].as_flattened().try_into().expect("two pixels")
    }

    // SAFETY (every method): an `Avx512Pair` is made only by an `Avx512`,
    // which exists only on CPUs with AVX-512 F, DQ and VL, and the loads
    // and stores go through references to two whole pixels.
    impl Vector for Avx512Pair {
        type V = __m512;
        const PIXELS: usize = 2;
        #[inline(always)]
        fn zero(self) -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        fn splat(self, x: f32) -> __m512 {
            unsafe { _mm512_set1_ps(x) }
        }
        #[inline(always)]
        fn load_px(self, px: &[Lanes]) -> __m512 {
            unsafe { _mm512_loadu_ps(two(px).as_ptr()) }
        }
        #[inline(always)]
        fn store_px(self, px: &mut [Lanes], v: __m512) {
            let out: &mut [f32; 16] = px[..2].as_flattened_mut().try_into().expect("two pixels");
            unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) }
        }
        #[inline(always)]
        fn dup(self, lanes: &Lanes) -> __m512 {
            unsafe { _mm512_broadcast_f32x8(_mm256_loadu_ps(lanes.as_ptr())) }
        }
        #[inline(always)]
        fn add(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        fn sub(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        fn mul(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        fn mul_add(self, a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        fn div(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_div_ps(a, b) }
        }
        #[inline(always)]
        fn min(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_min_ps(a, b) }
        }
        #[inline(always)]
        fn max(self, a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_max_ps(a, b) }
        }
        #[inline(always)]
        fn floor(self, a: __m512) -> __m512 {
            unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a) }
        }
        #[inline(always)]
        fn pow2i(self, n: __m512) -> __m512 {
            // As `biased_exponent`, then shifted into the exponent field.
            const TWO_23: f32 = 8_388_608.0;
            unsafe {
                let shifted = _mm512_add_ps(n, _mm512_set1_ps(127.0 + TWO_23));
                let biased = _mm512_sub_epi32(
                    _mm512_castps_si512(shifted),
                    _mm512_set1_epi32(TWO_23.to_bits() as i32),
                );
                _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased))
            }
        }
        #[inline(always)]
        fn gt(self, a: __m512, b: __m512) -> __m512 {
            // Ordered, quiet: false when either is NaN, like `>`. The
            // mask register becomes all-ones lanes, as AVX2's compare.
            unsafe {
                let mask = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b);
                _mm512_castsi512_ps(_mm512_movm_epi32(mask))
            }
        }
        #[inline(always)]
        fn select(self, mask: __m512, if_true: __m512, if_false: __m512) -> __m512 {
            unsafe {
                let mask = _mm512_movepi32_mask(_mm512_castps_si512(mask));
                _mm512_mask_blend_ps(mask, if_false, if_true)
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

    /// Runs `f` in a function compiled for AVX-512 (and AVX2 and FMA).
    ///
    /// # Safety
    /// The CPU must have them: call it with the `Avx512` from `detect()`
    /// in hand.
    #[target_feature(enable = "avx2,fma,avx512f,avx512dq,avx512vl")]
    pub unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
        f()
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
/// `RUNNER_SIMD` when it names one (an unknown name is ignored: the
/// variable only ever slows things down, it cannot break a run).
pub fn isa() -> Isa {
    static CHOSEN: OnceLock<Isa> = OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let cap = match std::env::var("RUNNER_SIMD").as_deref() {
            Ok("portable") => Isa::Portable,
            Ok("avx2") => Isa::Avx2,
            _ => Isa::Avx512,
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
macro_rules! with_simd {
    (|$s:ident| $body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            if let Some($s) = $crate::model::simd::avx512() {
                // SAFETY: `avx512()` returned Some, so the CPU has AVX-512.
                unsafe {
                    $crate::model::simd::run_avx512(
                        #[inline(always)]
                        || $body,
                    )
                }
            } else if let Some($s) = $crate::model::simd::avx2_fma() {
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
