//! AVX2 + FMA: eight lanes in one 256-bit register; pairs are two of them.

use std::arch::x86_64::*;

use super::{Lanes, Simd, Twice, Vector, LANES};

/// AVX2 + FMA. The only way to get one is [`Avx2Fma::detect`], so holding
/// one proves the CPU has the instructions its methods use.
#[derive(Debug, Clone, Copy)]
pub struct Avx2Fma(());

impl Avx2Fma {
    pub fn detect() -> Option<Self> {
        (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")).then_some(Avx2Fma(()))
    }
}

/// `Vector` methods that are one AVX2/FMA intrinsic on their arguments.
macro_rules! intrinsics {
    ($($op:ident($($arg:ident),*) = $intrinsic:ident;)*) => {$(
        #[inline(always)]
        fn $op(self, $($arg: __m256),*) -> __m256 {
            // SAFETY: an `Avx2Fma` exists only where `detect` found AVX2
            // and FMA, and this intrinsic reads only its register arguments.
            unsafe { $intrinsic($($arg),*) }
        }
    )*};
}

impl Vector for Avx2Fma {
    type V = __m256;
    const PIXELS: usize = 1;
    intrinsics! {
        zero() = _mm256_setzero_ps;
        add(a, b) = _mm256_add_ps;
        sub(a, b) = _mm256_sub_ps;
        mul(a, b) = _mm256_mul_ps;
        mul_add(a, b, c) = _mm256_fmadd_ps;
        div(a, b) = _mm256_div_ps;
        min(a, b) = _mm256_min_ps;
        max(a, b) = _mm256_max_ps;
        floor(a) = _mm256_floor_ps;
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m256 {
        // SAFETY: `self` proves AVX2 (see `detect`); no memory is touched.
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
    fn pow2i(self, n: __m256) -> __m256 {
        // As `portable::biased_exponent`, then shifted into the exponent field.
        const TWO_23: f32 = 8_388_608.0;
        // SAFETY: `self` proves AVX2 (see `detect`); registers only.
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
        // SAFETY: `self` proves AVX (see `detect`); registers only.
        unsafe { _mm256_cmp_ps::<_CMP_GT_OQ>(a, b) }
    }
    #[inline(always)]
    fn select(self, mask: __m256, if_true: __m256, if_false: __m256) -> __m256 {
        // SAFETY: `self` proves AVX (see `detect`); registers only.
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
        // SAFETY: `self` proves AVX (see `detect`); `from` is a reference
        // to eight floats, all the unaligned load reads.
        unsafe { _mm256_loadu_ps(from.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, to: &mut Lanes, v: __m256) {
        // SAFETY: `self` proves AVX (see `detect`); `to` is a unique
        // reference to eight floats, all the unaligned store writes.
        unsafe { _mm256_storeu_ps(to.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn transpose(self, r: [__m256; LANES]) -> [__m256; LANES] {
        // Interleave pairs of rows, then pairs of pairs within each
        // 128-bit half, then swap the halves.
        // SAFETY: `self` proves AVX (see `detect`); registers only.
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
