//! What matching survives: benign sample photos (scikit-image's, from the setup cache)
//! banked by their PDQ, then shown in generated video after what streamers do to an
//! image, decoded by the real media path and looked up three ways:
//! - plain PDQ (the frame's own hash, distance <= 31),
//! - PDQ with the variants (dihedral hashes + crop reach 2% and 5%),
//! - pHash (`image_hasher`, 64-bit DCT mean hash, distance <= 10).
//!
//! False matches: every transformed frame against the *other* photos' hashes (natural
//! images are correlated, so this is the telling number), and against a bank of
//! 1,000,000 random PDQ hashes. Costs: variant hashing against plain PDQ, per frame.

use super::{p50_p99_ms, percentile_ms};
use anyhow::Context;
use image_hasher::{HashAlg, HasherConfig, ImageHash};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use vigil_core::StreamId;
use vigil_hash::config::DEFAULT_CROP_MAX_DISTANCE;
use vigil_hash::{DIHEDRAL, Hash256, HashIndex, PdqHasher, VariantHasher};
use vigil_media::SampleConfig;

const PDQ_MATCH: u32 = 31;
const PHASH_MATCH: u32 = 10;

#[derive(clap::Args)]
pub struct RobustnessArgs {
    /// Two photos, three transforms, a 10,000-hash random bank: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Crop-reach fractions to evaluate (the bank default is 0.02,0.05).
    #[arg(long, value_delimiter = ',', default_value = "0.02,0.05")]
    crops: Vec<f32>,
    /// Distance at which crop-reach variants match for review (a bank's
    /// `crop_max_distance`); every variant matches for the bank's own action at 31.
    #[arg(long, default_value_t = DEFAULT_CROP_MAX_DISTANCE)]
    crop_max_distance: u32,
}

/// Hashes of a frame's variants in `VariantHasher` order: the eight dihedral ones,
/// then the crops. The distance at which variant `k` matches.
fn variant_radius(k: usize, crop_max_distance: u32) -> u32 {
    if k < DIHEDRAL.len() { PDQ_MATCH } else { crop_max_distance }
}

struct Transform {
    name: &'static str,
    /// GStreamer elements between the decoded photo and the encoder; `{w}` and `{h}`
    /// are the photo's size.
    elements: &'static str,
    kbps: u32,
}

const TRANSFORMS: [Transform; 7] = [
    Transform { name: "reencode 2 Mbit/s", elements: "videoconvert", kbps: 2000 },
    Transform {
        name: "480p 300 kbit/s",
        elements: "videoscale ! video/x-raw,width={w480},height=480,pixel-aspect-ratio=1/1",
        kbps: 300,
    },
    Transform { name: "half size", elements: "videoscale ! video/x-raw,width={hw},height={hh}", kbps: 1000 },
    Transform {
        name: "text overlay",
        elements: "textoverlay text=\"LIVE NOW chat with me\" font-desc=\"Sans Bold 28\" valignment=bottom",
        kbps: 1000,
    },
    Transform {
        name: "crop 1%/side",
        elements: "videocrop left={c1w} right={c1w} top={c1h} bottom={c1h} ! videoscale ! video/x-raw,width={w},height={h}",
        kbps: 1000,
    },
    Transform {
        name: "crop 5%/side",
        elements: "videocrop left={c5w} right={c5w} top={c5h} bottom={c5h} ! videoscale ! video/x-raw,width={w},height={h}",
        kbps: 1000,
    },
    Transform { name: "mirrored", elements: "videoflip video-direction=horiz", kbps: 1000 },
];

const PHOTOS: [&str; 8] = [
    "astronaut.png",
    "skimage/camera.png",
    "skimage/chelsea.png",
    "skimage/coffee.png",
    "skimage/rocket.jpg",
    "skimage/motorcycle_left.png",
    "skimage/coins.png",
    "skimage/moon.png",
];

struct Banked {
    name: String,
    path: PathBuf,
    size: (u32, u32),
    pdq: Hash256,
    phash: ImageHash,
}

fn phash(rgb: &image::RgbImage) -> ImageHash {
    HasherConfig::new().hash_size(8, 8).preproc_dct().hash_alg(HashAlg::Mean).to_hasher().hash_image(rgb)
}

/// How often near-duplicate skipping fires (distance <= 6 to the last analysed sample,
/// at most 5 reuses in a row, the defaults) on static and on high-motion content.
fn near_duplicate_rates(photo: &Path, dir: &Path) -> anyhow::Result<()> {
    let hash_cfg = vigil_hash::HashConfig::default();
    let sources = [
        (
            "static photo",
            format!("filesrc location={} ! decodebin ! videoconvert ! imagefreeze num-buffers=300", photo.display()),
        ),
        ("moving test bars", "videotestsrc num-buffers=300 pattern=smpte horizontal-speed=6".to_string()),
        ("noise", "videotestsrc num-buffers=300 pattern=snow".to_string()),
    ];
    for (name, src) in sources {
        let clip = dir.join("motion.mp4");
        vigil_media::launch::run_pipeline(
            &format!(
                "{src} ! video/x-raw,framerate=30/1 ! videoconvert ! videoscale ! video/x-raw,width=640,height=360 \
                 ! x264enc speed-preset=ultrafast bitrate=2000 ! mp4mux ! filesink location={}",
                clip.display()
            ),
            Duration::from_secs(120),
        )?;
        let mut rates = Vec::new();
        for fps in [1.0, 4.0] {
            let media = SampleConfig { sample_fps: fps, ..SampleConfig::default() };
            let uri = vigil_media::to_uri(clip.to_str().unwrap_or_default())?;
            let mut pdq = PdqHasher::new();
            let (mut last, mut reused, mut skips, mut total) = (None::<Hash256>, 0, 0, 0);
            for frame in vigil_media::open_uri(&uri, StreamId(name.into()), &media)? {
                let frame = frame?;
                let h = pdq.hash_rgb(&frame.rgb, frame.width as usize, frame.height as usize).hash;
                total += 1;
                match last {
                    Some(l)
                        if reused < hash_cfg.near_duplicate_max_reuse
                            && l.distance(&h) <= hash_cfg.near_duplicate_max_distance =>
                    {
                        reused += 1;
                        skips += 1;
                    }
                    _ => {
                        last = Some(h);
                        reused = 0;
                    }
                }
            }
            rates.push(format!("{:.0}% of {total} samples at {fps} fps", 100.0 * skips as f64 / total.max(1) as f64));
        }
        println!("near-duplicate skips, {name}: {}", rates.join(", "));
    }
    Ok(())
}

fn even(v: u32) -> u32 {
    (v / 2) * 2
}

pub fn run(args: RobustnessArgs, cache: &Path) -> anyhow::Result<ExitCode> {
    let photos: Vec<&str> = if args.quick { PHOTOS[..2].to_vec() } else { PHOTOS.to_vec() };
    let transforms: Vec<&Transform> = if args.quick {
        TRANSFORMS
            .iter()
            .filter(|t| t.name.starts_with("crop 5") || t.name == "mirrored" || t.name == "half size")
            .collect()
    } else {
        TRANSFORMS.iter().collect()
    };
    let mut pdq = PdqHasher::new();
    let mut banked = Vec::new();
    for p in &photos {
        let path = cache.join("testdata").join(p);
        let img = image::open(&path).with_context(|| format!("{} (run make setup)", path.display()))?.to_rgb8();
        let (w, h) = img.dimensions();
        let out = pdq.hash_rgb(img.as_raw(), w as usize, h as usize);
        banked.push(Banked { name: p.to_string(), path, size: (even(w), even(h)), pdq: out.hash, phash: phash(&img) });
    }

    let dir = tempfile::tempdir()?;
    let media = SampleConfig::default();
    let mut variants = VariantHasher::new(&args.crops);
    let mut all_frames: Vec<(usize, Vec<Hash256>, ImageHash)> = Vec::new();
    println!(
        "share of banked photos matched after each transform ({} photos; PDQ <= {PDQ_MATCH}; crop reach: crop variants <= {} for review; pHash <= {PHASH_MATCH})",
        banked.len(),
        args.crop_max_distance
    );
    let crop_r = args.crop_max_distance;
    // Every variant within 31 acts as the bank says; reach adds crop variants up to crop_r.
    let var_match = |hashes: &[Hash256], target: &Hash256| hashes.iter().any(|h| h.distance(target) <= PDQ_MATCH);
    let reach_match = |hashes: &[Hash256], target: &Hash256| {
        hashes.iter().enumerate().any(|(k, h)| h.distance(target) <= variant_radius(k, crop_r))
    };
    println!(
        "{:<20} {:>10} {:>12} {:>12} {:>8} {:>16} {:>18}",
        "transform", "plain PDQ", "PDQ+variants", "+crop reach", "pHash", "plain dist (avg)", "variant dist (avg)"
    );
    for t in &transforms {
        let (mut plain, mut var, mut reach, mut ph, mut dplain, mut dvar) = (0, 0, 0, 0, 0u32, 0u32);
        for (i, b) in banked.iter().enumerate() {
            let (w, h) = b.size;
            let elements = t
                .elements
                .replace("{w}", &w.to_string())
                .replace("{h}", &h.to_string())
                .replace("{w480}", &even(w * 480 / h).to_string())
                .replace("{hw}", &even(w / 2).to_string())
                .replace("{hh}", &even(h / 2).to_string())
                .replace("{c1w}", &(w / 100).to_string())
                .replace("{c1h}", &(h / 100).to_string())
                .replace("{c5w}", &(w / 20).to_string())
                .replace("{c5h}", &(h / 20).to_string());
            let clip = dir.path().join(format!("{i}.mp4"));
            vigil_media::launch::run_pipeline(
                &format!(
                    "filesrc location={} ! decodebin ! videoconvert ! videoscale ! video/x-raw,width={w},height={h} \
                     ! {elements} ! videoconvert ! imagefreeze num-buffers=25 \
                     ! video/x-raw,framerate=25/1 ! videoconvert ! x264enc speed-preset=ultrafast bitrate={} ! mp4mux \
                     ! filesink location={}",
                    b.path.display(),
                    t.kbps,
                    clip.display()
                ),
                Duration::from_secs(60),
            )?;
            let uri = vigil_media::to_uri(clip.to_str().unwrap_or_default())?;
            let frame = vigil_media::open_uri(&uri, StreamId(b.name.clone()), &media)?.next().context("no frame")??;
            let fh = variants.hash(&frame.rgb, frame.width as usize, frame.height as usize);
            let hashes: Vec<Hash256> = fh.variants.iter().map(|v| v.hash).collect();
            let d_plain = fh.pdq.hash.distance(&b.pdq);
            let d_var = hashes.iter().map(|h| h.distance(&b.pdq)).min().unwrap_or(256);
            let img = image::RgbImage::from_raw(frame.width, frame.height, frame.rgb).context("frame size")?;
            let p = phash(&img);
            plain += usize::from(d_plain <= PDQ_MATCH);
            var += usize::from(var_match(&hashes, &b.pdq));
            reach += usize::from(reach_match(&hashes, &b.pdq));
            ph += usize::from(p.dist(&b.phash) <= PHASH_MATCH);
            dplain += d_plain;
            dvar += d_var;
            all_frames.push((i, hashes, p));
        }
        let n = banked.len();
        let pct = |k: usize| format!("{:.0}%", 100.0 * k as f64 / n as f64);
        println!(
            "{:<20} {:>10} {:>12} {:>12} {:>8} {:>16.1} {:>18.1}",
            t.name,
            pct(plain),
            pct(var),
            pct(reach),
            pct(ph),
            dplain as f64 / n as f64,
            dvar as f64 / n as f64
        );
    }

    // False matches between unrelated photos.
    let (mut fp_plain, mut fp_var, mut fp_reach, mut fp_ph, mut pairs) = (0, 0, 0, 0, 0);
    // The margin: how close an unrelated photo ever came, plain and over all variants.
    let (mut closest_plain, mut closest_var) = (256, 256);
    for (i, hashes, p) in &all_frames {
        for (j, b) in banked.iter().enumerate() {
            if *i == j {
                continue;
            }
            pairs += 1;
            fp_plain += usize::from(hashes[0].distance(&b.pdq) <= PDQ_MATCH);
            fp_var += usize::from(var_match(hashes, &b.pdq));
            fp_reach += usize::from(reach_match(hashes, &b.pdq));
            closest_plain = closest_plain.min(hashes[0].distance(&b.pdq));
            closest_var = closest_var.min(hashes.iter().map(|h| h.distance(&b.pdq)).min().unwrap_or(256));
            fp_ph += usize::from(p.dist(&b.phash) <= PHASH_MATCH);
        }
    }
    println!(
        "false matches between unrelated photos ({pairs} frame/photo pairs): plain PDQ {fp_plain}, PDQ+variants {fp_var}, +crop reach {fp_reach}, pHash {fp_ph}; closest unrelated: {closest_plain} bits plain, {closest_var} over all variants"
    );

    // False matches against a large random bank.
    let n_random = if args.quick { 10_000 } else { 1_000_000 };
    let mut rng = vigil_core::SeededRng::new(0x2545_f491_4f6c_dd1d);
    let random: Vec<Hash256> = (0..n_random).map(|_| vigil_hash::synthetic::random_hash(&mut rng)).collect();
    let index = HashIndex::build(random);
    let (mut rnd_plain, mut rnd_var, mut rnd_reach) = (0, 0, 0);
    for (_, hashes, _) in &all_frames {
        rnd_plain += usize::from(!index.search(&hashes[0], PDQ_MATCH).is_empty());
        rnd_var += usize::from(hashes.iter().any(|h| !index.search(h, PDQ_MATCH).is_empty()));
        rnd_reach +=
            usize::from(hashes.iter().enumerate().any(|(k, h)| !index.search(h, variant_radius(k, crop_r)).is_empty()));
    }
    println!(
        "false matches against {n_random} random hashes ({} frames): plain PDQ {rnd_plain}, PDQ+variants {rnd_var}, +crop reach {rnd_reach}",
        all_frames.len()
    );

    // A wider crop radius costs index work: crop-variant queries at both radii, same run.
    let crop_queries: Vec<&Hash256> = all_frames.iter().flat_map(|(_, h, _)| h.iter().skip(DIHEDRAL.len())).collect();
    if crop_r != PDQ_MATCH && !crop_queries.is_empty() {
        let timed = |radius: u32| {
            p50_p99_ms(&crop_queries, |q| {
                std::hint::black_box(index.search(q, radius));
            })
        };
        let ((b50, b99), (c50, c99)) = (timed(PDQ_MATCH), timed(crop_r));
        println!(
            "crop-variant query on {n_random} random hashes: radius {PDQ_MATCH} p50 {b50:.3} ms p99 {b99:.3} ms; \
             radius {crop_r} p50 {c50:.3} ms ({:.1}x) p99 {c99:.3} ms ({:.1}x)",
            c50 / b50.max(1e-9),
            c99 / b99.max(1e-9)
        );
        // What a bank pays per frame: all its variants as one batch, with and without reach.
        let per_frame = |reach: u32| {
            let batches: Vec<Vec<(Hash256, u32)>> = all_frames
                .iter()
                .map(|(_, hashes, _)| hashes.iter().enumerate().map(|(k, h)| (*h, variant_radius(k, reach))).collect())
                .collect();
            p50_p99_ms(&batches, |batch| {
                std::hint::black_box(index.search_batch(batch));
            })
        };
        let ((f50, f99), (r50, r99)) = (per_frame(PDQ_MATCH), per_frame(crop_r));
        println!(
            "whole-frame lookup ({} variants as one batch) on {n_random} random hashes: all at {PDQ_MATCH} p50 {f50:.3} ms p99 {f99:.3} ms; \
             crops at {crop_r} p50 {r50:.3} ms ({:.1}x) p99 {r99:.3} ms ({:.1}x)",
            all_frames.first().map_or(0, |f| f.1.len()),
            r50 / f50.max(1e-9),
            r99 / f99.max(1e-9)
        );
    }

    near_duplicate_rates(&banked[0].path, dir.path())?;

    // What the variants cost, per 640x360 frame.
    let frame: Vec<u8> = (0..640 * 360 * 3).map(|i| ((i * 2654435761u64 as usize) >> 7) as u8).collect();
    let time = |f: &mut dyn FnMut()| {
        let mut t: Vec<Duration> = (0..30)
            .map(|_| {
                let s = Instant::now();
                f();
                s.elapsed()
            })
            .collect();
        t.sort_unstable();
        percentile_ms(&t, 50.0)
    };
    let mut plain_h = PdqHasher::new();
    let base = time(&mut || {
        std::hint::black_box(plain_h.hash_rgb(&frame, 640, 360));
    });
    let mut dih = VariantHasher::new(&[]);
    let dih_ms = time(&mut || {
        std::hint::black_box(dih.hash(&frame, 640, 360));
    });
    let mut full = VariantHasher::new(&args.crops);
    let full_ms = time(&mut || {
        std::hint::black_box(full.hash(&frame, 640, 360));
    });
    println!(
        "hashing cost per 640x360 frame: plain PDQ {base:.2} ms; + 7 dihedral {dih_ms:.2} ms ({:.2}x); + {} crop variants {full_ms:.2} ms ({:.2}x)",
        dih_ms / base,
        args.crops.len(),
        full_ms / base
    );
    Ok(ExitCode::SUCCESS)
}
