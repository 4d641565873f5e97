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
    /// One sampling map per crop, rebuilt only when the frame size changes.
    maps: Vec<Option<CropMap>>,
}

impl VariantHasher {
    /// `crop_fractions`: share cropped from each side to reach for (e.g. 0.02, 0.05).
    pub fn new(crop_fractions: &[f32]) -> Self {
        let mut crops_per_mille: Vec<u16> =
            crop_fractions.iter().map(|f| (f * 1000.0).round().clamp(1.0, 400.0) as u16).collect();
        crops_per_mille.sort_unstable();
        crops_per_mille.dedup();
        let maps = crops_per_mille.iter().map(|_| None).collect();
        Self { pdq: PdqHasher::new(), scratch: Vec::new(), crops_per_mille, maps }
    }

    pub fn hash(&mut self, rgb: &[u8], width: usize, height: usize) -> FrameHashes {
        let dihedral = self.pdq.hash_rgb_dihedral(rgb, width, height);
        let mut variants: Vec<VariantHash> = DIHEDRAL
            .iter()
            .zip(dihedral.iter())
            .map(|(d, out)| VariantHash { variant: Variant::Dihedral(*d), hash: out.hash })
            .collect();
        let canvas = crop_canvas(width, height);
        for (&pm, slot) in self.crops_per_mille.iter().zip(self.maps.iter_mut()) {
            let map = match slot {
                Some(map) if map.frame == (width, height) => map,
                _ => slot.insert(CropMap::new((width, height), pm as f32 / 1000.0, canvas)),
            };
            map.draw(rgb, &mut self.scratch);
            let out = self.pdq.hash_rgb(&self.scratch, canvas.0, canvas.1);
            variants.push(VariantHash { variant: Variant::Crop { per_mille: pm }, hash: out.hash });
        }
        FrameHashes { pdq: dihedral[0], variants }
    }

    /// Only the plain PDQ, for near-duplicate checks and `vigil hash`.
    pub fn hash_plain(&mut self, rgb: &[u8], width: usize, height: usize) -> PdqOutput {
        self.pdq.hash_rgb(rgb, width, height)
    }
}

/// Crop-reach variants are drawn at most this wide or high: PDQ reduces every image
/// to 64×64 anyway, and a smaller canvas makes the variant several times cheaper.
pub const CROP_CANVAS_MAX_PX: usize = 448;

/// The canvas size for crop-reach variants of a `width`×`height` frame.
pub fn crop_canvas(width: usize, height: usize) -> (usize, usize) {
    let scale = (CROP_CANVAS_MAX_PX as f32 / width.max(height) as f32).min(1.0);
    (((width as f32 * scale).round() as usize).max(1), ((height as f32 * scale).round() as usize).max(1))
}

/// Writes into `out` (an `ow`×`oh` RGB canvas) the frame scaled by `1 - 2 * fraction`
/// about its centre, the border filled by replicating the edge pixels (sampling clamps
/// to the frame).
pub fn shrink_and_pad(rgb: &[u8], frame: (usize, usize), fraction: f32, canvas: (usize, usize), out: &mut Vec<u8>) {
    CropMap::new(frame, fraction, canvas).draw(rgb, out);
}

/// Where each pixel of a crop-reach canvas samples the frame: per column and per row,
/// the two neighbouring source indices and the blend weight. A stream's frames keep
/// their size, so the map is built once and drawing a variant is a plain gather, with
/// no allocation per frame.
struct CropMap {
    frame: (usize, usize),
    canvas: (usize, usize),
    xs: Vec<(usize, usize, f32)>,
    ys: Vec<(usize, usize, f32)>,
}

impl CropMap {
    fn new((width, height): (usize, usize), fraction: f32, (ow, oh): (usize, usize)) -> CropMap {
        let s = 1.0 - 2.0 * fraction;
        let axis = |n_out: usize, n_in: usize| -> Vec<(usize, usize, f32)> {
            let (fo, fi) = (n_out as f32, n_in as f32);
            (0..n_out)
                .map(|i| {
                    let pos = (i as f32 + 0.5) * fi / fo;
                    let src = ((pos - fi * fraction) / s - 0.5).clamp(0.0, fi - 1.0);
                    let i0 = src.floor() as usize;
                    (i0, (i0 + 1).min(n_in - 1), src - i0 as f32)
                })
                .collect()
        };
        CropMap { frame: (width, height), canvas: (ow, oh), xs: axis(ow, width), ys: axis(oh, height) }
    }

    fn draw(&self, rgb: &[u8], out: &mut Vec<u8>) {
        let ((width, _), (ow, oh)) = (self.frame, self.canvas);
        out.resize(ow * oh * 3, 0);
        for (y, &(y0, y1, ay)) in self.ys.iter().enumerate() {
            let (r0, r1) = (&rgb[y0 * width * 3..(y0 + 1) * width * 3], &rgb[y1 * width * 3..(y1 + 1) * width * 3]);
            let row = &mut out[y * ow * 3..(y + 1) * ow * 3];
            for (x, &(x0, x1, ax)) in self.xs.iter().enumerate() {
                for c in 0..3 {
                    let top = r0[x0 * 3 + c] as f32 * (1.0 - ax) + r0[x1 * 3 + c] as f32 * ax;
                    let bottom = r1[x0 * 3 + c] as f32 * (1.0 - ax) + r1[x1 * 3 + c] as f32 * ax;
                    row[x * 3 + c] = (top + (bottom - top) * ay + 0.5) as u8;
                }
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
        shrink_and_pad(&rgb, (10, 10), 0.1, (10, 10), &mut out);
        assert_eq!(out.len(), rgb.len());
        assert_eq!(out[0], 0, "left edge replicated");
        assert_eq!(out[9 * 3], 255, "right edge replicated");
    }

    #[test]
    fn cached_crop_maps_follow_a_change_of_frame_size() {
        let frame = |w: usize, h: usize| -> Vec<u8> { (0..w * h * 3).map(|i| (i * 31 % 253) as u8).collect() };
        let mut reused = VariantHasher::new(&[0.05]);
        for (w, h) in [(64, 48), (64, 48), (80, 60), (64, 48)] {
            let fresh = VariantHasher::new(&[0.05]).hash(&frame(w, h), w, h);
            assert_eq!(reused.hash(&frame(w, h), w, h).variants, fresh.variants, "{w}x{h}");
        }
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
