//! The hashes a frame is looked up with. Plain PDQ misses a banked image shown mirrored
//! (114–122 bits away) or slightly cropped (5% per side: 86–134 bits), the cheapest
//! evasions there are. So a frame is queried with:
//! - its eight dihedral hashes, from the same DCT (no extra hashing cost);
//! - "crop reach" variants: for each configured fraction `f`, the frame shrunk by
//!   `1 - 2f` into its own centre and padded back with its edge pixels, which
//!   approximates the uncropped original a banked hash was taken from.

use crate::Hash256;
use crate::pdq::{DIHEDRAL, Dihedral, PdqHasher, PdqOutput};

/// A hash of one variant of a frame, named for reports (`original`, `flip_y`, `crop_5%`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariantHash {
    pub variant: Variant,
    pub hash: Hash256,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Dihedral(Dihedral),
    /// Crop reach for this many per-mille cropped from each side.
    Crop {
        per_mille: u16,
    },
}

impl Variant {
    pub fn name(&self) -> String {
        match self {
            Variant::Dihedral(d) => d.name().to_string(),
            Variant::Crop { per_mille } => format!("crop_{}%", *per_mille as f32 / 10.0),
        }
    }

    pub fn is_original(&self) -> bool {
        matches!(self, Variant::Dihedral(Dihedral::Original))
    }
}

/// All hashes of one frame: the plain PDQ (with the frame's quality) and the variants.
#[derive(Debug, Clone)]
pub struct FrameHashes {
    pub pdq: PdqOutput,
    /// Index 0 is the original; then the other seven dihedral hashes; then crops.
    pub variants: Vec<VariantHash>,
}

/// Computes frame hashes, reusing its buffers from frame to frame.
pub struct VariantHasher {
    pdq: PdqHasher,
    scratch: Vec<u8>,
    crops_per_mille: Vec<u16>,
}

impl VariantHasher {
    /// `crop_fractions`: share cropped from each side to reach for (e.g. 0.02, 0.05).
    pub fn new(crop_fractions: &[f32]) -> Self {
        let mut crops_per_mille: Vec<u16> =
            crop_fractions.iter().map(|f| (f * 1000.0).round().clamp(1.0, 400.0) as u16).collect();
        crops_per_mille.sort_unstable();
        crops_per_mille.dedup();
        Self { pdq: PdqHasher::new(), scratch: Vec::new(), crops_per_mille }
    }

    pub fn hash(&mut self, rgb: &[u8], width: usize, height: usize) -> FrameHashes {
        let dihedral = self.pdq.hash_rgb_dihedral(rgb, width, height);
        let mut variants: Vec<VariantHash> = DIHEDRAL
            .iter()
            .zip(dihedral.iter())
            .map(|(d, out)| VariantHash { variant: Variant::Dihedral(*d), hash: out.hash })
            .collect();
        for &pm in &self.crops_per_mille {
            shrink_and_pad(rgb, width, height, pm as f32 / 1000.0, &mut self.scratch);
            let out = self.pdq.hash_rgb(&self.scratch, width, height);
            variants.push(VariantHash { variant: Variant::Crop { per_mille: pm }, hash: out.hash });
        }
        FrameHashes { pdq: dihedral[0], variants }
    }

    /// Only the plain PDQ, for near-duplicate checks and `vigil hash`.
    pub fn hash_plain(&mut self, rgb: &[u8], width: usize, height: usize) -> PdqOutput {
        self.pdq.hash_rgb(rgb, width, height)
    }
}

/// Writes into `out` the frame scaled by `1 - 2 * fraction` about its centre, with the
/// border filled by replicating the edge pixels (sampling clamps to the frame).
pub fn shrink_and_pad(rgb: &[u8], width: usize, height: usize, fraction: f32, out: &mut Vec<u8>) {
    out.resize(rgb.len(), 0);
    let s = 1.0 - 2.0 * fraction;
    let (fw, fh) = (width as f32, height as f32);
    for y in 0..height {
        let sy = (((y as f32 + 0.5) - fh * fraction) / s - 0.5).clamp(0.0, fh - 1.0);
        let (y0, ay) = (sy.floor() as usize, sy.fract());
        let y1 = (y0 + 1).min(height - 1);
        for x in 0..width {
            let sx = (((x as f32 + 0.5) - fw * fraction) / s - 0.5).clamp(0.0, fw - 1.0);
            let (x0, ax) = (sx.floor() as usize, sx.fract());
            let x1 = (x0 + 1).min(width - 1);
            for c in 0..3 {
                let p = |xx: usize, yy: usize| rgb[(yy * width + xx) * 3 + c] as f32;
                let top = p(x0, y0) * (1.0 - ax) + p(x1, y0) * ax;
                let bottom = p(x0, y1) * (1.0 - ax) + p(x1, y1) * ax;
                out[(y * width + x) * 3 + c] = (top * (1.0 - ay) + bottom * ay).round() as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_readable() {
        assert_eq!(Variant::Dihedral(Dihedral::FlipY).name(), "flip_y");
        assert_eq!(Variant::Dihedral(Dihedral::FlipPlus1).name(), "flip_plus1");
        assert_eq!(Variant::Dihedral(Dihedral::Rotate90).name(), "rotate90");
        assert_eq!(Variant::Crop { per_mille: 50 }.name(), "crop_5%");
    }

    #[test]
    fn shrink_keeps_size_and_replicates_edges() {
        // 10x10, left half black, right half white.
        let rgb: Vec<u8> = (0..100).flat_map(|i| if i % 10 < 5 { [0u8; 3] } else { [255u8; 3] }).collect();
        let mut out = Vec::new();
        shrink_and_pad(&rgb, 10, 10, 0.1, &mut out);
        assert_eq!(out.len(), rgb.len());
        assert_eq!(out[0], 0, "left edge replicated");
        assert_eq!(out[9 * 3], 255, "right edge replicated");
    }

    #[test]
    fn variant_set_has_dihedral_then_crops() {
        let rgb: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = VariantHasher::new(&[0.05, 0.02, 0.05]);
        let fh = h.hash(&rgb, 64, 48);
        assert_eq!(fh.variants.len(), 10);
        assert!(fh.variants[0].variant.is_original());
        assert_eq!(fh.variants[0].hash, fh.pdq.hash);
        assert_eq!(fh.variants[8].variant, Variant::Crop { per_mille: 20 });
    }
}
