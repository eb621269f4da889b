//! Plain arrays: the kernels on any CPU, without fused multiply-add.

use super::{Lanes, Simd, Twice, Vector, LANES};

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
