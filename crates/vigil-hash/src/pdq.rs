//! PDQ, following ThreatExchange's reference (`pdq/cpp/hashing/pdqhashing.cpp`) step for
//! step in 32-bit floats, so the hashes are bit-exact on identical pixels:
//! RGB → luma → two passes of a Jarosz box filter → 64×64 decimation → quality →
//! 16×16 of a 64-point DCT (DC dropped) → threshold at the median.

// Index loops mirror the reference so the order of float operations is visibly the same.
#![allow(clippy::needless_range_loop)]

use crate::Hash256;

/// PDQ hashes images smaller than this in either dimension as all zeroes, quality 0.
pub const MIN_HASHABLE_DIM: usize = 5;
const JAROSZ_PASSES: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdqOutput {
    pub hash: Hash256,
    /// ThreatExchange's integer quality metric, 0..=100.
    pub quality: u8,
}

/// Reusable PDQ state: the working buffers live here so hashing a stream of frames of
/// one size allocates nothing after the first frame.
pub struct PdqHasher {
    dct: Box<[[f32; 64]; 16]>,
    luma: Vec<f32>,
    scratch: Vec<f32>,
    b64: Box<[[f32; 64]; 64]>,
    b16x64: Box<[[f32; 64]; 16]>,
    b16: Box<[[f32; 16]; 16]>,
}

impl Default for PdqHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl PdqHasher {
    pub fn new() -> Self {
        let mut dct = Box::new([[0f32; 64]; 16]);
        let scale = (2.0f64 / 64.0).sqrt();
        for (i, row) in dct.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = (scale * ((std::f64::consts::PI / 2.0 / 64.0) * (i as f64 + 1.0) * (2.0 * j as f64 + 1.0)).cos())
                    as f32;
            }
        }
        Self {
            dct,
            luma: Vec::new(),
            scratch: Vec::new(),
            b64: Box::new([[0f32; 64]; 64]),
            b16x64: Box::new([[0f32; 64]; 16]),
            b16: Box::new([[0f32; 16]; 16]),
        }
    }

    /// Hashes packed RGB pixels (`rgb.len() == width * height * 3`).
    pub fn hash_rgb(&mut self, rgb: &[u8], width: usize, height: usize) -> PdqOutput {
        assert_eq!(rgb.len(), width * height * 3, "packed RGB buffer size");
        let n = width * height;
        self.luma.resize(n, 0.0);
        self.scratch.resize(n, 0.0);
        for (l, px) in self.luma.iter_mut().zip(rgb.chunks_exact(3)) {
            *l = 0.299f32 * px[0] as f32 + 0.587f32 * px[1] as f32 + 0.114f32 * px[2] as f32;
        }
        self.hash_luma(height, width)
    }

    fn hash_luma(&mut self, rows: usize, cols: usize) -> PdqOutput {
        if rows < MIN_HASHABLE_DIM || cols < MIN_HASHABLE_DIM {
            return PdqOutput { hash: Hash256::default(), quality: 0 };
        }
        let win_along_rows = jarosz_window(cols, 64);
        let win_along_cols = jarosz_window(rows, 64);
        for _ in 0..JAROSZ_PASSES {
            for r in 0..rows {
                let span = r * cols..(r + 1) * cols;
                box_1d(&self.luma[span.clone()], &mut self.scratch[span], cols, 1, win_along_rows);
            }
            for c in 0..cols {
                box_1d(&self.scratch[c..], &mut self.luma[c..], rows, cols, win_along_cols);
            }
        }
        for i in 0..64 {
            let ini = (((i as f64 + 0.5) * rows as f64) / 64.0) as usize;
            for j in 0..64 {
                let inj = (((j as f64 + 0.5) * cols as f64) / 64.0) as usize;
                self.b64[i][j] = self.luma[ini * cols + inj];
            }
        }
        let quality = quality_metric(&self.b64);
        self.dct_64_to_16();
        PdqOutput { hash: bits_above_median(&self.b16), quality }
    }

    /// The hashes of all eight rotations and reflections of the image, from one DCT:
    /// each is a sign pattern and/or a transpose of the 16×16 coefficients (as the
    /// reference's `pdqHash256sFromFloatLuma`). Order: [`DIHEDRAL`].
    pub fn hash_rgb_dihedral(&mut self, rgb: &[u8], width: usize, height: usize) -> [PdqOutput; 8] {
        let first = self.hash_rgb(rgb, width, height);
        let mut out = [first; 8];
        if width < MIN_HASHABLE_DIM || height < MIN_HASHABLE_DIM {
            return out;
        }
        let a = &*self.b16;
        let mut b = [[0f32; 16]; 16];
        for (k, slot) in out.iter_mut().enumerate().skip(1) {
            for i in 0..16 {
                for j in 0..16 {
                    let (odd_i, odd_j) = (i & 1 == 1, j & 1 == 1);
                    let v = a[i][j];
                    match DIHEDRAL[k] {
                        Dihedral::Rotate90 => b[j][i] = if odd_j { v } else { -v },
                        Dihedral::Rotate180 => b[i][j] = if odd_i ^ odd_j { -v } else { v },
                        Dihedral::Rotate270 => b[j][i] = if odd_i { v } else { -v },
                        Dihedral::FlipX => b[i][j] = if odd_i { v } else { -v },
                        Dihedral::FlipY => b[i][j] = if odd_j { v } else { -v },
                        Dihedral::FlipPlus1 => b[j][i] = v,
                        Dihedral::FlipMinus1 => b[j][i] = if odd_i ^ odd_j { -v } else { v },
                        Dihedral::Original => b[i][j] = v,
                    }
                }
            }
            slot.hash = bits_above_median(&b);
        }
        out
    }

    fn dct_64_to_16(&mut self) {
        let (d, a, t) = (&*self.dct, &*self.b64, &mut *self.b16x64);
        for i in 0..16 {
            for j in 0..64 {
                let mut sum = 0f32;
                for k in 0..64 {
                    sum += d[i][k] * a[k][j];
                }
                t[i][j] = sum;
            }
        }
        for i in 0..16 {
            for j in 0..16 {
                let mut sum = 0f32;
                for k in 0..64 {
                    sum += t[i][k] * d[j][k];
                }
                self.b16[i][j] = sum;
            }
        }
    }
}

/// The eight rotations and reflections, in the reference's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dihedral {
    Original,
    Rotate90,
    Rotate180,
    Rotate270,
    /// Mirrored top to bottom (ThreatExchange's "flipx").
    FlipX,
    /// Mirrored left to right (ThreatExchange's "flipy"): what a mirrored webcam shows.
    FlipY,
    FlipPlus1,
    FlipMinus1,
}

impl Dihedral {
    pub fn name(self) -> &'static str {
        match self {
            Dihedral::Original => "original",
            Dihedral::Rotate90 => "rotate90",
            Dihedral::Rotate180 => "rotate180",
            Dihedral::Rotate270 => "rotate270",
            Dihedral::FlipX => "flip_x",
            Dihedral::FlipY => "flip_y",
            Dihedral::FlipPlus1 => "flip_plus1",
            Dihedral::FlipMinus1 => "flip_minus1",
        }
    }
}

pub const DIHEDRAL: [Dihedral; 8] = [
    Dihedral::Original,
    Dihedral::Rotate90,
    Dihedral::Rotate180,
    Dihedral::Rotate270,
    Dihedral::FlipX,
    Dihedral::FlipY,
    Dihedral::FlipPlus1,
    Dihedral::FlipMinus1,
];

fn bits_above_median(b16: &[[f32; 16]; 16]) -> Hash256 {
    let mut sorted = [0f32; 256];
    for (i, row) in b16.iter().enumerate() {
        sorted[i * 16..i * 16 + 16].copy_from_slice(row);
    }
    sorted.sort_unstable_by(f32::total_cmp);
    // Torben's median in the reference returns the lower middle element.
    let median = sorted[127];
    let mut hash = Hash256::default();
    for i in 0..16 {
        for j in 0..16 {
            if b16[i][j] > median {
                hash.set_bit(i * 16 + j);
            }
        }
    }
    hash
}

fn jarosz_window(old_dim: usize, new_dim: usize) -> usize {
    old_dim.div_ceil(2 * new_dim)
}

/// The reference's running-sum box filter: windows are clipped at both ends and the
/// sum is divided by the number of samples actually inside.
fn box_1d(input: &[f32], out: &mut [f32], len: usize, stride: usize, window: usize) {
    let half = (window + 2) / 2;
    let phase1 = half - 1;
    let phase2 = window - half + 1;
    let phase3 = len.saturating_sub(window);
    let phase4 = half - 1;
    let (mut li, mut ri, mut oi) = (0usize, 0usize, 0usize);
    let mut sum = 0f32;
    let mut count = 0usize;
    for _ in 0..phase1 {
        sum += input[ri];
        count += 1;
        ri += stride;
    }
    for _ in 0..phase2 {
        sum += input[ri];
        count += 1;
        out[oi] = sum / count as f32;
        ri += stride;
        oi += stride;
    }
    for _ in 0..phase3 {
        sum += input[ri];
        sum -= input[li];
        out[oi] = sum / count as f32;
        li += stride;
        ri += stride;
        oi += stride;
    }
    for _ in 0..phase4 {
        sum -= input[li];
        count -= 1;
        out[oi] = sum / count as f32;
        li += stride;
        oi += stride;
    }
}

/// ThreatExchange's quality: neighbour differences scaled to 0..100 and truncated to
/// integers before summing, then divided by 90 and capped at 100.
fn quality_metric(b: &[[f32; 64]; 64]) -> u8 {
    let mut sum: i32 = 0;
    for i in 0..63 {
        for j in 0..64 {
            let d = ((b[i][j] - b[i + 1][j]) * 100.0 / 255.0) as i32;
            sum += d.abs();
        }
    }
    for row in b.iter() {
        for j in 0..63 {
            let d = ((row[j] - row[j + 1]) * 100.0 / 255.0) as i32;
            sum += d.abs();
        }
    }
    (sum / 90).min(100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_images_hash_to_zero() {
        let mut h = PdqHasher::new();
        let out = h.hash_rgb(&[0u8; 4 * 4 * 3], 4, 4);
        assert_eq!(out.quality, 0);
        assert_eq!(out.hash, Hash256::default());
    }

    #[test]
    fn flat_image_has_quality_zero() {
        let mut h = PdqHasher::new();
        let out = h.hash_rgb(&vec![128u8; 64 * 64 * 3], 64, 64);
        assert_eq!(out.quality, 0);
    }

    #[test]
    fn box_window_phases_cover_every_output() {
        for window in 1..9 {
            let input: Vec<f32> = (0..20).map(|v| v as f32).collect();
            let mut out = vec![f32::NAN; 20];
            box_1d(&input, &mut out, 20, 1, window);
            assert!(out.iter().all(|v| v.is_finite()), "window {window}: {out:?}");
        }
    }
}
