//! Still images (PNG, JPEG, GIF, WebP, BMP), decoded by the `image` crate at their exact
//! size.
//!
//! Stills are not scaled to analysis size: hash-sharing partners (HMA,
//! python-threatexchange, ThreatExchange's Java code) hash an image at its full decoded
//! size, and a bank built with `vigil hash` must agree with theirs bit for bit. Scaling
//! (or the video path's rounding of odd sizes to even) moves a hash by up to 32 bits.
//! The models resize frames themselves, so they lose nothing.
//!
//! Animated GIF and WebP: every frame is decoded (composited on the canvas, as a
//! browser shows it) and sampled at `sample_fps` by the file's own frame delays, like a
//! video; the first frame is always taken, so the first hash is the one partners compute
//! (they hash the first frame). A still never waits on GStreamer.

use crate::{MediaError, SampleConfig};
use image::{AnimationDecoder, ImageDecoder, ImageFormat};
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use vigil_core::{Frame, StreamId};

const STILL_EXTENSIONS: [&str; 6] = [".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp"];

/// Browsers show frames with delays under 20 ms for 100 ms (a GIF saying "0" means
/// "as fast as you can", not "never"); sampling follows what a viewer sees.
const MIN_DELAY_MS: u64 = 20;
const SHORT_DELAY_AS_MS: u64 = 100;

/// Whether `input` names a still image this module decodes (by extension).
pub fn is_still_image(input: &str) -> bool {
    let lower = input.to_ascii_lowercase();
    STILL_EXTENSIONS.iter().any(|ext| lower.ends_with(ext)) && !input.contains("://")
}

/// The frames of a still image: one, or an animation's sampled frames.
pub struct StillFrames {
    input: String,
    stream: StreamId,
    inner: Inner,
    /// Milliseconds between samples (from `sample_fps`).
    every_ms: f64,
    /// Media time at which the next sample is due.
    next_due_ms: f64,
    /// Media time at which the next decoded frame starts.
    at_ms: u64,
    done: bool,
}

enum Inner {
    One(Option<Frame>),
    Animation(image::Frames<'static>),
}

/// Opens `path`: checks its declared size against the limits, then decodes it (the
/// first frame now, so a broken file fails here, not half-way).
pub fn open(path: &Path, stream: StreamId, cfg: &SampleConfig) -> Result<StillFrames, MediaError> {
    let input = path.display().to_string();
    let open_err = |e: std::io::Error| MediaError::Open { input: input.clone(), reason: e.to_string() };
    let decode_err = |e: image::ImageError| MediaError::Decode { input: input.clone(), reason: e.to_string() };
    let reader = image::ImageReader::open(path).map_err(open_err)?.with_guessed_format().map_err(open_err)?;
    let format = reader.format();
    let (w, h) = reader.into_dimensions().map_err(decode_err)?;
    if w > cfg.max_input_px || h > cfg.max_input_px {
        return Err(MediaError::Refused {
            input,
            reason: format!("image is {w}x{h}, the limit is {0}x{0}", cfg.max_input_px),
        });
    }
    let every_ms = if cfg.sample_fps > 0.0 { 1000.0 / cfg.sample_fps } else { f64::INFINITY };
    let mut frames = StillFrames {
        input: input.clone(),
        stream,
        inner: Inner::One(None),
        every_ms,
        next_due_ms: 0.0,
        at_ms: 0,
        done: false,
    };
    frames.inner = match animation(path, format).map_err(decode_err)? {
        Some(anim) => Inner::Animation(anim),
        None => {
            let img = image::ImageReader::open(path)
                .and_then(|r| r.with_guessed_format())
                .map_err(open_err)?
                .decode()
                .map_err(decode_err)?
                .to_rgb8();
            let (width, height) = img.dimensions();
            Inner::One(Some(frames.frame(0, width, height, img.into_raw())))
        }
    };
    Ok(frames)
}

/// The frame iterator of an animated GIF or WebP; `None` for anything else (a GIF of
/// one frame is an animation of one frame).
fn animation(path: &Path, format: Option<ImageFormat>) -> image::ImageResult<Option<image::Frames<'static>>> {
    let reader = || File::open(path).map(BufReader::new).map_err(image::ImageError::IoError);
    Ok(match format {
        Some(ImageFormat::Gif) => {
            let mut d = image::codecs::gif::GifDecoder::new(reader()?)?;
            d.set_limits(image::Limits::default())?;
            Some(d.into_frames())
        }
        Some(ImageFormat::WebP) => {
            let mut d = image::codecs::webp::WebPDecoder::new(reader()?)?;
            if !d.has_animation() {
                return Ok(None);
            }
            d.set_limits(image::Limits::default())?;
            Some(d.into_frames())
        }
        _ => None,
    })
}

impl StillFrames {
    fn frame(&self, pts_ms: u64, width: u32, height: u32, rgb: Vec<u8>) -> Frame {
        Frame { stream: self.stream.clone(), pts_ms, keyframe: true, width, height, rgb, arrived_unix_ms: 0 }
    }

    fn next_animation_frame(&mut self) -> Option<Result<Frame, MediaError>> {
        loop {
            let Inner::Animation(frames) = &mut self.inner else { return None };
            let decoded = match frames.next()? {
                Ok(f) => f,
                Err(e) => {
                    self.done = true;
                    return Some(Err(MediaError::Decode { input: self.input.clone(), reason: e.to_string() }));
                }
            };
            let (num, den) = decoded.delay().numer_denom_ms();
            let delay = u64::from(num) / u64::from(den.max(1));
            let delay = if delay < MIN_DELAY_MS { SHORT_DELAY_AS_MS } else { delay };
            let start = self.at_ms;
            self.at_ms = self.at_ms.saturating_add(delay);
            // A frame is taken when the sample due falls within its display time.
            if (self.next_due_ms as u64) < self.at_ms || start == 0 {
                while self.next_due_ms < self.at_ms as f64 {
                    self.next_due_ms += self.every_ms;
                }
                let rgba = decoded.into_buffer();
                let (w, h) = rgba.dimensions();
                let rgb = image::DynamicImage::ImageRgba8(rgba).to_rgb8().into_raw();
                return Some(Ok(self.frame(start, w, h, rgb)));
            }
        }
    }
}

impl Iterator for StillFrames {
    type Item = Result<Frame, MediaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match &mut self.inner {
            Inner::One(f) => f.take().map(Ok),
            Inner::Animation(_) => self.next_animation_frame(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::codecs::gif::GifEncoder;
    use image::{Delay, Frame as ImageFrame, RgbaImage};

    fn gif(path: &Path, frames: usize, delay_ms: u32, w: u32, h: u32) {
        let mut enc = GifEncoder::new(File::create(path).unwrap());
        for i in 0..frames {
            let img =
                RgbaImage::from_fn(w, h, |x, y| image::Rgba([(x * 7 + i as u32 * 40) as u8, (y * 5) as u8, 90, 255]));
            enc.encode_frame(ImageFrame::from_parts(img, 0, 0, Delay::from_numer_denom_ms(delay_ms, 1))).unwrap();
        }
    }

    fn open_at(path: &Path, fps: f64) -> Vec<Frame> {
        let cfg = SampleConfig { sample_fps: fps, ..SampleConfig::default() };
        open(path, StreamId("t".into()), &cfg).unwrap().map(Result::unwrap).collect()
    }

    #[test]
    fn odd_sized_stills_keep_their_exact_size() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("odd.png");
        // Larger than the analysis size, odd both ways: neither scaled nor rounded.
        let img = image::RgbImage::from_fn(901, 641, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
        img.save(&p).unwrap();
        let f = open_at(&p, 1.0);
        assert_eq!(f.len(), 1);
        assert_eq!((f[0].width, f[0].height), (901, 641));
        assert_eq!(f[0].rgb, img.into_raw());
    }

    #[test]
    fn animated_gif_is_sampled_by_its_own_delays() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("anim.gif");
        gif(&p, 10, 250, 31, 17); // 2.5 s
        let f = open_at(&p, 1.0);
        let pts: Vec<u64> = f.iter().map(|f| f.pts_ms).collect();
        assert_eq!(pts, [0, 1000, 2000]);
        assert!(f.iter().all(|f| (f.width, f.height) == (31, 17)));
        // Every frame at a rate above the GIF's own.
        assert_eq!(open_at(&p, 10.0).len(), 10);
        // Zero delays count as 100 ms, as browsers show them.
        let z = dir.path().join("zero.gif");
        gif(&z, 4, 0, 8, 8);
        assert_eq!(open_at(&z, 10.0).iter().map(|f| f.pts_ms).collect::<Vec<_>>(), [0, 100, 200, 300]);
    }
}
