//! 2x2, stride 2 pooling on blocks of eight images in lanes: the forward
//! (which `conv.rs` also fuses into the convolution's forward), and the
//! backward through pooling and activation together, which also sums the
//! convolution's bias gradient.

use super::activation::Act;
use super::pack::sum_lanes;
use super::shapes::{Pool, RowLayout};
use super::simd::{prefetch, Lanes, Simd};

/// 2x2, stride 2 pooling of `planes` planes of `h` x `w` pixels.
#[inline(always)]
pub fn pool_forward<S: Simd>(
    s: S,
    kind: Pool,
    (planes, h, w): (usize, usize, usize),
    a: &[Lanes],
    p: &mut [Lanes],
) {
    let (ho, wo) = (h / 2, w / 2);
    assert_eq!((a.len(), p.len()), (planes * h * w, planes * ho * wo));
    let quarter = s.splat(0.25);
    for (r, out) in p.chunks_exact_mut(wo).enumerate() {
        let (top, bottom) = window_rows(a, r, ho, w);
        for (ox, out) in out.iter_mut().enumerate() {
            let q = window(s, top, bottom, ox);
            let v = match kind {
                Pool::Avg => s.mul(s.add(s.add(s.add(q[0], q[1]), q[2]), q[3]), quarter),
                Pool::Max => max_of_four(s, q).0,
            };
            s.store(out, v);
        }
    }
}

/// The two input rows under output row `r` of a pooled plane stack.
#[inline(always)]
fn window_rows(a: &[Lanes], r: usize, ho: usize, w: usize) -> (&[Lanes], &[Lanes]) {
    let (plane, oy) = (r / ho, r % ho);
    let base = (plane * ho + oy) * 2 * w;
    a[base..base + 2 * w].split_at(w)
}

/// The four inputs of window `ox`: top left, top right, bottom left, bottom right.
#[inline(always)]
fn window<S: Simd>(s: S, top: &[Lanes], bottom: &[Lanes], ox: usize) -> [S::V; 4] {
    let (x0, x1) = (2 * ox, 2 * ox + 1);
    [
        s.load(&top[x0]),
        s.load(&top[x1]),
        s.load(&bottom[x0]),
        s.load(&bottom[x1]),
    ]
}

/// The largest of a window's four values, and masks saying which one it
/// is: the first on ties, as PyTorch routes the gradient. A tournament:
/// left or right in each row, then top or bottom.
#[inline(always)]
fn max_of_four<S: Simd>(s: S, q: [S::V; 4]) -> (S::V, [S::V; 3]) {
    let right_top = s.gt(q[1], q[0]);
    let right_bottom = s.gt(q[3], q[2]);
    let m_top = s.select(right_top, q[1], q[0]);
    let m_bottom = s.select(right_bottom, q[3], q[2]);
    let bottom = s.gt(m_bottom, m_top);
    (
        s.select(bottom, m_bottom, m_top),
        [right_top, right_bottom, bottom],
    )
}

/// How many rows of pooling windows ahead `pool_act_backward` asks for
/// its inputs (4 and 8 measured the same; 2 and 16 slower).
const PREFETCH_ROWS: usize = 4;

/// Backward of `pool(act(z))`: writes into `dz` the gradient w.r.t. the
/// activation's input, from the activations `a` (its output, before
/// pooling) and `dp`, the gradient w.r.t. the pooled output. Max pooling
/// finds each window's winner again from `a`. `dz`'s rows are laid out
/// as `dz_rows` says; nothing outside them (margins) is written.
///
/// Also writes into `db` [planes] the sum of `dz` per plane (the
/// convolution's bias gradient), adding pixels in the order
/// a plain per-plane sum does (`tests.rs` checks the bits); summed here, each row
/// is added while it is still in cache instead of in a pass of its own
/// over `dz` (c1: 150 KB per block).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn pool_act_backward<S: Simd>(
    s: S,
    kind: Pool,
    act: Act,
    (planes, h, w): (usize, usize, usize),
    a: &[Lanes],
    dp: &[Lanes],
    dz: &mut [Lanes],
    dz_rows: RowLayout,
    db: &mut [f32],
) {
    let (ho, wo) = (h / 2, w / 2);
    assert!(dz_rows.offset + w <= dz_rows.stride);
    assert_eq!(
        (a.len(), dz.len()),
        (planes * h * w, planes * h * dz_rows.stride)
    );
    assert_eq!((dp.len(), db.len()), (planes * ho * wo, planes));
    let (zero, quarter) = (s.zero(), s.splat(0.25));
    let mut plane_sum = s.zero();
    for (r, dp) in dp.chunks_exact(wo).enumerate() {
        // The forward wrote `a` long before (a batch of blocks ago), so it
        // comes from memory, faster when asked for a few rows ahead (c1,
        // 256 blocks cycled, on a Zen 3: 33 -> 18 us per block).
        let ahead = a.get((r + PREFETCH_ROWS) * 2 * w..).unwrap_or_default();
        ahead.iter().take(2 * w).step_by(2).for_each(prefetch);
        let (top, bottom) = window_rows(a, r, ho, w);
        let top_row = r / ho * h + r % ho * 2;
        let (above, below) = dz.split_at_mut(dz_rows.row(top_row + 1));
        let dz_top = &mut above[dz_rows.row(top_row)..][..w];
        let dz_bottom = &mut below[..w];
        for (ox, g) in dp.iter().enumerate() {
            let (g, q) = (s.load(g), window(s, top, bottom, ox));
            let routed = match kind {
                Pool::Avg => [s.mul(g, quarter); 4],
                Pool::Max => {
                    let (_, [right_top, right_bottom, bottom]) = max_of_four(s, q);
                    let g_top = s.select(bottom, zero, g);
                    let g_bottom = s.select(bottom, g, zero);
                    [
                        s.select(right_top, zero, g_top),
                        s.select(right_top, g_top, zero),
                        s.select(right_bottom, zero, g_bottom),
                        s.select(right_bottom, g_bottom, zero),
                    ]
                }
            };
            let (x0, x1) = (2 * ox, 2 * ox + 1);
            let (g0, g1) = (
                act.backward(s, q[0], routed[0]),
                act.backward(s, q[1], routed[1]),
            );
            // The top row's pixels come in row order: summed as they go.
            plane_sum = s.add(s.add(plane_sum, g0), g1);
            s.store(&mut dz_top[x0], g0);
            s.store(&mut dz_top[x1], g1);
            s.store(&mut dz_bottom[x0], act.backward(s, q[2], routed[2]));
            s.store(&mut dz_bottom[x1], act.backward(s, q[3], routed[3]));
        }
        for px in dz_bottom.iter() {
            plane_sum = s.add(plane_sum, s.load(px));
        }
        if r % ho == ho - 1 {
            db[r / ho] = sum_lanes(s, plane_sum);
            plane_sum = s.zero();
        }
    }
}
