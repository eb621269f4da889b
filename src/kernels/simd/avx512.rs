//! AVX-512 (F, DQ and VL): eight-lane vectors are AVX2's, compiled where
//! the CPU has 32 registers, and a pair of pixels is one 16-lane register.

use std::arch::x86_64::*;

use super::{Avx2Fma, Lanes, Simd, Vector, LANES};

/// AVX-512's eight-lane vectors. The only way to get one is
/// [`Avx512::detect`].
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

/// Methods that `Avx512` does as the `Avx2Fma` inside it: the same
/// instructions (so the same bits), compiled inside `run_avx512`.
macro_rules! as_avx2 {
    ($($op:ident($($arg:ident: $t:ty),*) -> $ret:ty;)*) => {$(
        #[inline(always)]
        fn $op(self, $($arg: $t),*) -> $ret {
            self.0.$op($($arg),*)
        }
    )*};
}

impl Vector for Avx512 {
    type V = __m256;
    const PIXELS: usize = 1;
    as_avx2! {
        zero() -> __m256;
        splat(x: f32) -> __m256;
        load_px(px: &[Lanes]) -> __m256;
        store_px(px: &mut [Lanes], v: __m256) -> ();
        dup(lanes: &Lanes) -> __m256;
        add(a: __m256, b: __m256) -> __m256;
        sub(a: __m256, b: __m256) -> __m256;
        mul(a: __m256, b: __m256) -> __m256;
        mul_add(a: __m256, b: __m256, c: __m256) -> __m256;
        div(a: __m256, b: __m256) -> __m256;
        min(a: __m256, b: __m256) -> __m256;
        max(a: __m256, b: __m256) -> __m256;
        floor(a: __m256) -> __m256;
        pow2i(n: __m256) -> __m256;
        gt(a: __m256, b: __m256) -> __m256;
        select(mask: __m256, if_true: __m256, if_false: __m256) -> __m256;
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
        // SAFETY: an `Avx512` exists only where `detect` found AVX-512 F;
        // registers only.
        unsafe { _mm512_castps512_ps256(p) }
    }
    as_avx2! {
        load(from: &Lanes) -> __m256;
        store(to: &mut Lanes, v: __m256) -> ();
        transpose(rows: [__m256; LANES]) -> [__m256; LANES];
    }
}

/// `Vector` methods that are one AVX-512 intrinsic on their arguments.
macro_rules! intrinsics {
    ($($op:ident($($arg:ident),*) = $intrinsic:ident;)*) => {$(
        #[inline(always)]
        fn $op(self, $($arg: __m512),*) -> __m512 {
            // SAFETY: an `Avx512Pair` is made only by an `Avx512`, which
            // exists only where `detect` found AVX-512 F, DQ and VL; this
            // intrinsic reads only its register arguments.
            unsafe { $intrinsic($($arg),*) }
        }
    )*};
}

impl Vector for Avx512Pair {
    type V = __m512;
    const PIXELS: usize = 2;
    intrinsics! {
        zero() = _mm512_setzero_ps;
        add(a, b) = _mm512_add_ps;
        sub(a, b) = _mm512_sub_ps;
        mul(a, b) = _mm512_mul_ps;
        mul_add(a, b, c) = _mm512_fmadd_ps;
        div(a, b) = _mm512_div_ps;
        min(a, b) = _mm512_min_ps;
        max(a, b) = _mm512_max_ps;
    }
    #[inline(always)]
    fn splat(self, x: f32) -> __m512 {
        // SAFETY: `self` proves AVX-512 F (see `Avx512::detect`); no memory.
        unsafe { _mm512_set1_ps(x) }
    }
    #[inline(always)]
    fn load_px(self, px: &[Lanes]) -> __m512 {
        let two: &[f32; 16] = px[..2].as_flattened().try_into().expect("two pixels");
        // SAFETY: `self` proves AVX-512 F; `two` is a reference to the 16
        // floats the unaligned load reads.
        unsafe { _mm512_loadu_ps(two.as_ptr()) }
    }
    #[inline(always)]
    fn store_px(self, px: &mut [Lanes], v: __m512) {
        let two: &mut [f32; 16] = px[..2].as_flattened_mut().try_into().expect("two pixels");
        // SAFETY: `self` proves AVX-512 F; `two` is a unique reference to
        // the 16 floats the unaligned store writes.
        unsafe { _mm512_storeu_ps(two.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn dup(self, lanes: &Lanes) -> __m512 {
        // SAFETY: `self` proves AVX-512 F and DQ; `lanes` is a reference to
        // the eight floats the unaligned load reads.
        unsafe { _mm512_broadcast_f32x8(_mm256_loadu_ps(lanes.as_ptr())) }
    }
    #[inline(always)]
    fn floor(self, a: __m512) -> __m512 {
        // SAFETY: `self` proves AVX-512 F; registers only.
        unsafe { _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(a) }
    }
    #[inline(always)]
    fn pow2i(self, n: __m512) -> __m512 {
        // As `portable::biased_exponent`, then shifted into the exponent field.
        const TWO_23: f32 = 8_388_608.0;
        // SAFETY: `self` proves AVX-512 F; registers only.
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
        // Ordered, quiet: false when either is NaN, like `>`. The mask
        // register becomes all-ones lanes, as AVX2's compare.
        // SAFETY: `self` proves AVX-512 F and DQ; registers only.
        unsafe {
            let mask = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(a, b);
            _mm512_castsi512_ps(_mm512_movm_epi32(mask))
        }
    }
    #[inline(always)]
    fn select(self, mask: __m512, if_true: __m512, if_false: __m512) -> __m512 {
        // SAFETY: `self` proves AVX-512 F and DQ; registers only.
        unsafe {
            let mask = _mm512_movepi32_mask(_mm512_castps_si512(mask));
            _mm512_mask_blend_ps(mask, if_false, if_true)
        }
    }
}

/// Runs `f` in a function compiled for AVX-512 (and AVX2 and FMA).
///
/// # Safety
/// The CPU must have them: call it with the `Avx512` from `detect()` in
/// hand.
#[target_feature(enable = "avx2,fma,avx512f,avx512dq,avx512vl")]
pub unsafe fn run_avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}
