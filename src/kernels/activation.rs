//! The elementwise activations, on vectors of lanes ([`Vector`]), so
//! that the convolution kernels can apply them to their accumulators
//! before storing, and on plain slices for everything else.
//!
//! Backward passes use only the activation's output `y`, which the
//! forward keeps anyway: sigmoid' = y (1 - y), tanh' = 1 - y^2, relu' =
//! [y > 0].

use super::simd::{Simd, Vector, LANES};
use crate::with_simd;

/// An elementwise activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Act {
    Identity,
    Sigmoid,
    Relu,
    Tanh,
}

impl Act {
    /// The activation of each lane.
    #[inline(always)]
    pub fn forward<S: Vector>(self, s: S, x: S::V) -> S::V {
        let one = s.splat(1.0);
        match self {
            Act::Identity => x,
            Act::Sigmoid => s.div(one, s.add(one, exp(s, s.sub(s.zero(), x)))),
            // max(0, x) but NaN stays NaN.
            Act::Relu => s.max(s.zero(), x),
            // tanh(x) = 1 - 2 / (e^2x + 1): no call per element, unlike
            // libm's tanhf, and an absolute error of about 1e-7.
            Act::Tanh => s.sub(one, s.div(s.splat(2.0), s.add(exp(s, s.add(x, x)), one))),
        }
    }

    /// `dy` (the gradient w.r.t. the output `y`) turned into the gradient
    /// w.r.t. the input.
    #[inline(always)]
    pub fn backward<S: Vector>(self, s: S, y: S::V, dy: S::V) -> S::V {
        let one = s.splat(1.0);
        match self {
            Act::Identity => dy,
            Act::Sigmoid => s.mul(dy, s.mul(y, s.sub(one, y))),
            Act::Relu => s.select(s.gt(y, s.zero()), dy, s.zero()),
            Act::Tanh => s.mul(dy, s.sub(one, s.mul(y, y))),
        }
    }

    /// Applies the activation in place.
    pub fn apply(self, v: &mut [f32]) {
        if self != Act::Identity {
            with_simd!(|s| self.apply_with(s, v));
        }
    }

    #[inline(always)]
    fn apply_with<S: Simd>(self, s: S, v: &mut [f32]) {
        let (lanes, tail) = v.as_chunks_mut::<LANES>();
        for x in lanes {
            let y = self.forward(s, s.load(x));
            s.store(x, y);
        }
        if !tail.is_empty() {
            let mut x = [0.0; LANES];
            x[..tail.len()].copy_from_slice(tail);
            let y = self.forward(s, s.load(&x));
            s.store(&mut x, y);
            tail.copy_from_slice(&x[..tail.len()]);
        }
    }

    /// Turns `dy` (gradient w.r.t. the activation's output `y`) into the
    /// gradient w.r.t. its input, in place.
    pub fn backward_from_output(self, y: &[f32], dy: &mut [f32]) {
        assert_eq!(y.len(), dy.len());
        if self != Act::Identity {
            with_simd!(|s| self.backward_with(s, y, dy));
        }
    }

    #[inline(always)]
    fn backward_with<S: Simd>(self, s: S, y: &[f32], dy: &mut [f32]) {
        let (y_lanes, y_tail) = y.as_chunks::<LANES>();
        let (dy_lanes, dy_tail) = dy.as_chunks_mut::<LANES>();
        for (y, dy) in y_lanes.iter().zip(dy_lanes) {
            let g = self.backward(s, s.load(y), s.load(dy));
            s.store(dy, g);
        }
        if !dy_tail.is_empty() {
            let (mut y, mut dy) = ([0.0; LANES], [0.0; LANES]);
            y[..y_tail.len()].copy_from_slice(y_tail);
            dy[..dy_tail.len()].copy_from_slice(dy_tail);
            let g = self.backward(s, s.load(&y), s.load(&dy));
            s.store(&mut dy, g);
            dy_tail.copy_from_slice(&dy[..dy_tail.len()]);
        }
    }
}

/// e^x to about 2 ulp, with no branches, so it runs on all lanes at once:
/// x = n ln 2 + r with |r| <= ln 2 / 2, e^r = 1 + r + r^2 P(r), 2^n from
/// the exponent bits. P has degree 4, fitted for the least relative error
/// over that range (3e-9, far below a float's rounding:
/// `scripts/fit_exp.py`); Cephes' expf takes degree 5 for the same
/// accuracy, and the FMA saved is 13 % of a sigmoid. NaN stays NaN.
#[inline(always)]
pub fn exp<S: Vector>(s: S, x: S::V) -> S::V {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // P's coefficients, highest power first (near 1/6!, 1/5!, ..., 1/2!).
    const POLY: [f32; 5] = [
        0.001_381_461_3,
        0.008_368_71,
        0.041_668_39,
        0.166_665_21,
        0.499_999_94,
    ];
    // Clamped so that 2^n stays a normal float; the clamp bound comes
    // first so that a NaN x is what min and max pass on.
    let x = s.max(s.splat(-87.0), s.min(s.splat(88.0), x));
    let n = s.floor(s.mul_add(x, s.splat(LOG2E), s.splat(0.5)));
    let r = s.mul_add(n, s.splat(-LN2_HI), x);
    let r = s.mul_add(n, s.splat(-LN2_LO), r);
    let mut p = s.splat(POLY[0]);
    for c in &POLY[1..] {
        p = s.mul_add(p, r, s.splat(*c));
    }
    let e = s.add(s.mul_add(s.mul(p, r), r, r), s.splat(1.0));
    s.mul(e, s.pow2i(n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::simd::Portable;

    fn exp_of(x: f32) -> f32 {
        let mut v = [x; LANES];
        with_simd!(|s| {
            let e = exp(s, s.load(&v));
            s.store(&mut v, e)
        });
        v[0]
    }

    #[test]
    fn exp_is_accurate_over_the_float_range() {
        let mut worst = 0.0f64;
        let mut x = -80.0f32;
        while x < 80.0 {
            let rel = ((exp_of(x) as f64 - (x as f64).exp()) / (x as f64).exp()).abs();
            worst = worst.max(rel);
            x += 0.01;
        }
        // Rounding alone costs about 1e-7 here; the polynomial adds little.
        assert!(worst < 1.5e-7, "exp relative error {worst}");
        assert!(exp_of(f32::NAN).is_nan());
        let floor = (-87f64).exp();
        assert!((exp_of(-1e4) as f64 - floor).abs() < 1e-6 * floor);
    }

    #[test]
    fn sigmoid_and_tanh_are_accurate_and_saturate() {
        let mut v: Vec<f32> = (-2000..2001).map(|i| i as f32 * 0.01).collect();
        let exact: Vec<f64> = v
            .iter()
            .map(|&x| 1.0 / (1.0 + (-(x as f64)).exp()))
            .collect();
        Act::Sigmoid.apply(&mut v); // 4001 values: a tail past the last full vector
        for (got, want) in v.iter().zip(exact) {
            assert!((*got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
        let mut t: Vec<f32> = (-2000..2000).map(|i| i as f32 * 0.005).collect();
        let exact: Vec<f64> = t.iter().map(|&x| (x as f64).tanh()).collect();
        Act::Tanh.apply(&mut t);
        for (got, want) in t.iter().zip(exact) {
            assert!((*got as f64 - want).abs() < 5e-7, "tanh {got} vs {want}");
        }
        let mut ends = vec![-1e4f32, 1e4, f32::MIN, f32::MAX];
        Act::Tanh.apply(&mut ends);
        assert_eq!(ends, vec![-1.0, 1.0, -1.0, 1.0]);
        let mut extreme = vec![-1e4f32, 1e4, f32::MIN, f32::MAX];
        Act::Sigmoid.apply(&mut extreme);
        assert!(
            extreme[0] < 1e-30 && extreme[1] == 1.0 && extreme[2] < 1e-30 && extreme[3] == 1.0,
            "{extreme:?}"
        );
        let mut nan = vec![f32::NAN; 3];
        Act::Sigmoid.apply(&mut nan);
        Act::Relu.apply(&mut nan);
        assert!(nan.iter().all(|v| v.is_nan()));
    }

    #[test]
    fn the_portable_path_agrees_with_the_dispatched_one() {
        let x: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) * 0.37).collect();
        let dy: Vec<f32> = (0..64).map(|i| (i % 7) as f32 - 3.0).collect();
        for act in [Act::Identity, Act::Sigmoid, Act::Relu, Act::Tanh] {
            let mut fast = x.clone();
            act.apply(&mut fast);
            let mut portable = x.clone();
            act.apply_with(Portable, &mut portable);
            let mut g_fast = dy.clone();
            act.backward_from_output(&fast, &mut g_fast);
            let mut g_portable = dy.clone();
            act.backward_with(Portable, &portable, &mut g_portable);
            for (a, b) in fast
                .iter()
                .zip(&portable)
                .chain(g_fast.iter().zip(&g_portable))
            {
                assert!(
                    (a - b).abs() <= 1e-6 * (1.0 + a.abs()),
                    "{act:?}: {a} vs {b}"
                );
            }
        }
    }
}
