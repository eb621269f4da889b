//! Blocks of eight images in lanes: packing NCHW images into [C][H][W]
//! of [`Lanes`] (pixel (c, y, x) of all eight images side by side) and
//! back, and the reused buffers the blocks live in.

use super::simd::{Lanes, Simd, LANES};
use crate::with_simd;

/// Images per block, and so per parallel work item. Fixed, so that the
/// order of floating point sums (and so every result bit) is the same for
/// any thread count and instruction set.
pub const BLOCK: usize = LANES;

/// Copies up to eight images, each [C][H][W] (NCHW, one after the other
/// in `x`), into lanes with `pad` zero pixels around every plane. Missing
/// images (a short last block) are zeros. `out` holds [C][H+2p][W+2p].
pub fn pack(x: &[f32], (c, h, w): (usize, usize, usize), pad: usize, out: &mut [Lanes]) {
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let image_len = c * h * w;
    assert!(x.len() <= LANES * image_len && x.len().is_multiple_of(image_len));
    assert_eq!(out.len(), c * hp * wp);
    let full = x.len() == LANES * image_len;
    if pad > 0 || !full {
        // Borders and missing images stay zero; everything else is overwritten.
        out.fill([0.0; LANES]);
    }
    if full {
        return with_simd!(|s| pack_full(s, x, (c, h, w), pad, out));
    }
    for (lane, image) in x.chunks_exact(image_len).enumerate() {
        for (row, src) in image.chunks_exact(w).enumerate() {
            let dst = &mut out[padded_row(row, (h, w), pad)..][..w];
            for (px, v) in dst.iter_mut().zip(src) {
                px[lane] = *v;
            }
        }
    }
}

/// Where row `row` (counted over all planes of `h` rows of `w`) starts
/// once the planes are padded.
fn padded_row(row: usize, (h, w): (usize, usize), pad: usize) -> usize {
    let (plane, y) = (row / h, row % h);
    (plane * (h + 2 * pad) + y + pad) * (w + 2 * pad) + pad
}

/// `pack` for eight images: 8 x 8 tiles (eight floats of a row of each
/// image) transposed in registers, the rest of each row one by one.
#[inline(always)]
fn pack_full<S: Simd>(
    s: S,
    x: &[f32],
    (c, h, w): (usize, usize, usize),
    pad: usize,
    out: &mut [Lanes],
) {
    let image_len = c * h * w;
    for row in 0..c * h {
        let dst = &mut out[padded_row(row, (h, w), pad)..][..w];
        let (tiles, tail) = dst.as_chunks_mut::<LANES>();
        for (t, tile) in tiles.iter_mut().enumerate() {
            let at = row * w + t * LANES;
            let mut v = [s.zero(); LANES];
            for (lane, v) in v.iter_mut().enumerate() {
                *v = s.load(
                    x[lane * image_len + at..][..LANES]
                        .try_into()
                        .expect("8 floats"),
                );
            }
            for (px, v) in tile.iter_mut().zip(s.transpose(v)) {
                s.store(px, v);
            }
        }
        let done = row * w + tiles.len() * LANES;
        for (i, px) in tail.iter_mut().enumerate() {
            for (lane, v) in px.iter_mut().enumerate() {
                *v = x[lane * image_len + done + i];
            }
        }
    }
}

/// The inverse of an unpadded `pack`: lane `i` of `planes` becomes image
/// `i` of `out` (as many images as `out` holds).
pub fn unpack(planes: &[Lanes], out: &mut [f32]) {
    let image_len = planes.len();
    assert!(out.len() <= LANES * image_len && out.len().is_multiple_of(image_len));
    if out.len() == LANES * image_len {
        return with_simd!(|s| unpack_full(s, planes, out));
    }
    for (lane, image) in out.chunks_exact_mut(image_len).enumerate() {
        for (v, px) in image.iter_mut().zip(planes) {
            *v = px[lane];
        }
    }
}

/// `unpack` for eight images: 8 x 8 tiles transposed in registers.
#[inline(always)]
fn unpack_full<S: Simd>(s: S, planes: &[Lanes], out: &mut [f32]) {
    let image_len = planes.len();
    let (tiles, tail) = planes.as_chunks::<LANES>();
    for (t, tile) in tiles.iter().enumerate() {
        let mut v = [s.zero(); LANES];
        for (v, px) in v.iter_mut().zip(tile) {
            *v = s.load(px);
        }
        for (lane, v) in s.transpose(v).into_iter().enumerate() {
            let at = lane * image_len + t * LANES;
            s.store((&mut out[at..at + LANES]).try_into().expect("8 floats"), v);
        }
    }
    let done = tiles.len() * LANES;
    for (i, px) in tail.iter().enumerate() {
        for (lane, v) in px.iter().enumerate() {
            out[lane * image_len + done + i] = *v;
        }
    }
}

/// The sum of a vector's lanes, in lane order (images 0..8 of the block).
#[inline(always)]
pub(crate) fn sum_lanes<S: Simd>(s: S, v: S::V) -> f32 {
    let mut lanes = [0.0; LANES];
    s.store(&mut lanes, v);
    lanes.iter().sum()
}

/// A zeroed buffer whose contents are about to be overwritten anyway.
pub(crate) fn buffer(len: usize) -> Vec<f32> {
    vec![0.0f32; len]
}

/// `len` lane pixels of a reused buffer, with stale contents: every
/// caller overwrites all of them (zeroing was a measurable cost).
pub(crate) fn lane_buffer(buf: &mut Vec<Lanes>, len: usize) -> &mut [Lanes] {
    buf.resize(len, [0.0; LANES]);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_and_unpack_move_each_pixel_to_its_lane() {
        let (c, h, w) = (2, 3, 11); // 11: one 8 x 8 tile and a tail per row
        for images in [8, 5] {
            let x: Vec<f32> = (0..images * c * h * w).map(|i| i as f32).collect();
            for pad in [0, 2] {
                let (hp, wp) = (h + 2 * pad, w + 2 * pad);
                let mut packed = vec![[f32::NAN; LANES]; c * hp * wp];
                pack(&x, (c, h, w), pad, &mut packed);
                for lane in 0..LANES {
                    for ch in 0..c {
                        for y in 0..hp {
                            for xx in 0..wp {
                                let (iy, ix) =
                                    (y as isize - pad as isize, xx as isize - pad as isize);
                                let inside = lane < images
                                    && (0..h as isize).contains(&iy)
                                    && (0..w as isize).contains(&ix);
                                let want = if inside {
                                    x[((lane * c + ch) * h + iy as usize) * w + ix as usize]
                                } else {
                                    0.0
                                };
                                assert_eq!(packed[(ch * hp + y) * wp + xx][lane], want);
                            }
                        }
                    }
                }
                if pad == 0 {
                    let mut back = vec![f32::NAN; x.len()];
                    unpack(&packed, &mut back);
                    assert_eq!(back, x);
                }
            }
        }
    }
}
