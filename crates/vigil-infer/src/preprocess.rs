//! Frame → model input tensor, driven by the manifest: resize mode, layout, colour
//! order and normalisation. Writes into a caller-owned buffer so the hot path does not
//! allocate.

use crate::manifest::{ColorOrder, InputSpec, Layout, Resize};
use vigil_core::Frame;

/// A region of the frame, in pixels (may extend past the frame: edges are replicated).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Region {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Region {
    pub fn whole(frame: &Frame) -> Region {
        Region { x: 0.0, y: 0.0, w: frame.width as f32, h: frame.height as f32 }
    }
}

/// How input coordinates map back to the frame, for decoding boxes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mapping {
    /// Frame pixels per input pixel.
    pub scale_x: f32,
    pub scale_y: f32,
    pub offset_x: f32,
    pub offset_y: f32,
}

/// Writes one image into `out` (length `3 * width * height`) and returns the mapping.
pub fn fill_input(spec: &InputSpec, frame: &Frame, region: Region, out: &mut [f32]) -> Mapping {
    let (iw, ih) = (spec.width as usize, spec.height as usize);
    assert_eq!(out.len(), 3 * iw * ih, "input buffer size");
    // Source coordinate of input pixel (x, y): (x + 0.5) * s + o - 0.5, plus a limit
    // beyond which the letterbox pad (black) is shown.
    let (sx, sy, ox, oy, limit) = match spec.resize {
        Resize::Letterbox => {
            let side = region.w.max(region.h);
            (side / iw as f32, side / ih as f32, region.x, region.y, Some((region.w, region.h)))
        }
        Resize::Stretch => (region.w / iw as f32, region.h / ih as f32, region.x, region.y, None),
        Resize::ResizeCenterCrop => {
            let r = spec.resize_to.unwrap_or(spec.width) as f32;
            let (sx, sy) = (region.w / r, region.h / r);
            let (cx, cy) = ((r - iw as f32) / 2.0, (r - ih as f32) / 2.0);
            (sx, sy, region.x + cx * sx, region.y + cy * sy, None)
        }
    };
    let channel = |c: usize| match spec.color {
        ColorOrder::Rgb => c,
        ColorOrder::Bgr => 2 - c,
    };
    for y in 0..ih {
        let fy = (y as f32 + 0.5) * sy + oy - 0.5;
        for x in 0..iw {
            let fx = (x as f32 + 0.5) * sx + ox - 0.5;
            let padded = limit.is_some_and(|(lw, lh)| fx - region.x > lw - 0.5 || fy - region.y > lh - 0.5);
            let rgb = if padded { [0.0; 3] } else { bilinear(frame, fx, fy) };
            for c in 0..3 {
                let v = (rgb[channel(c)] - spec.mean[c]) * spec.scale;
                let i = match spec.layout {
                    Layout::Nchw => c * iw * ih + y * iw + x,
                    Layout::Nhwc => (y * iw + x) * 3 + c,
                };
                out[i] = v;
            }
        }
    }
    Mapping { scale_x: sx, scale_y: sy, offset_x: ox, offset_y: oy }
}

fn bilinear(frame: &Frame, fx: f32, fy: f32) -> [f32; 3] {
    let maxx = frame.width as f32 - 1.0;
    let maxy = frame.height as f32 - 1.0;
    let fx = fx.clamp(0.0, maxx);
    let fy = fy.clamp(0.0, maxy);
    let (x0, y0) = (fx.floor() as u32, fy.floor() as u32);
    let (x1, y1) = ((x0 + 1).min(frame.width - 1), (y0 + 1).min(frame.height - 1));
    let (ax, ay) = (fx - x0 as f32, fy - y0 as f32);
    let (p00, p10, p01, p11) = (frame.pixel(x0, y0), frame.pixel(x1, y0), frame.pixel(x0, y1), frame.pixel(x1, y1));
    let mut out = [0f32; 3];
    for c in 0..3 {
        let top = p00[c] as f32 * (1.0 - ax) + p10[c] as f32 * ax;
        let bottom = p01[c] as f32 * (1.0 - ax) + p11[c] as f32 * ax;
        out[c] = top * (1.0 - ay) + bottom * ay;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ColorOrder, Layout, Resize};
    use vigil_core::StreamId;

    fn spec(resize: Resize, layout: Layout, color: ColorOrder) -> InputSpec {
        InputSpec {
            name: "x".into(),
            layout,
            width: 4,
            height: 4,
            color,
            resize,
            resize_to: Some(8),
            mean: [0.0; 3],
            scale: 1.0,
            face_padding: 0.0,
        }
    }

    fn frame(w: u32, h: u32, rgb: [u8; 3]) -> Frame {
        Frame {
            stream: StreamId("t".into()),
            pts_ms: 0,
            keyframe: true,
            width: w,
            height: h,
            rgb: rgb.iter().copied().cycle().take((w * h * 3) as usize).collect(),
            arrived_unix_ms: 0,
        }
    }

    #[test]
    fn letterbox_pads_the_short_side_with_black() {
        let f = frame(8, 4, [200, 100, 50]);
        let mut out = vec![0f32; 48];
        let s = spec(Resize::Letterbox, Layout::Nchw, ColorOrder::Rgb);
        let m = fill_input(&s, &f, Region::whole(&f), &mut out);
        assert_eq!(m.scale_x, 2.0);
        // Red plane: top two rows are the image, bottom two rows the pad.
        assert_eq!(&out[0..8], &[200.0; 8]);
        assert_eq!(&out[8..16], &[0.0; 8]);
    }

    #[test]
    fn bgr_nhwc_orders_channels() {
        let f = frame(4, 4, [1, 2, 3]);
        let mut out = vec![0f32; 48];
        fill_input(&spec(Resize::Stretch, Layout::Nhwc, ColorOrder::Bgr), &f, Region::whole(&f), &mut out);
        assert_eq!(&out[0..3], &[3.0, 2.0, 1.0]);
    }
}
