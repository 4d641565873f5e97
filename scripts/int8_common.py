"""What scripts/quantize_int8.py and scripts/int8_agreement.py share: the benign frames
(generated test patterns and the scikit-image photos in the setup cache), the model
manifests, and the Rust side's preprocessing and decoding, reproduced in numpy.

The preprocessing follows crates/vigil-infer/src/preprocess.rs operation for operation in
float32 (the sampling grid, the letterbox limit, the edge clamp, bilinear weights, then
(value - mean) * scale in the model's channel order and layout), and the decoding follows
decode.rs (YOLOv8 best class per anchor, threshold, mapping, clipping, greedy
class-agnostic NMS; age bins renormalised). No sexual imagery is used or made here: every
frame is a generated pattern or a public-domain sample photo.
"""

import os
import tomllib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("VIGIL_CACHE_DIR", ROOT / ".cache" / "vigil"))
MODELS = ["nudenet-320n", "age-v1", "open-nsfw"]
# [media] analysis_max_px (config/vigil.toml): analysis frames fit in this square, aspect
# kept, never upscaled.
ANALYSIS_MAX_PX = 640
# analyzer.rs: faces beyond this many per frame are not age-estimated.
MAX_FACES = 16
F32 = np.float32


def manifest(name: str) -> dict:
    return tomllib.loads((ROOT / "models" / f"{name}.toml").read_text())


# ---------------------------------------------------------------------------------------
# Frames


def load_image(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB (grey images replicated into three channels, as
    the Rust side's decoder does). Decoded with PyAV (FFmpeg); PNG is lossless, so those
    frames are the Rust side's bit for bit; a JPEG decoder may differ by a level or two."""
    import av  # the test venv has it (aiortc's dependency)

    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        if frame.format.name.startswith("gray"):
            g = frame.to_ndarray(format="gray")
            return np.repeat(g[:, :, None], 3, axis=2)
        return frame.to_ndarray(format="rgb24")


def resize_bilinear(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize with half-pixel centres and, when shrinking, a box prefilter of the whole
    factor (so a half-size frame averages 2x2 blocks, as a video scaler would), rounded
    back to uint8. Deterministic: float32 arithmetic only."""
    src = img.astype(F32)
    fx, fy = img.shape[1] // w, img.shape[0] // h
    if fx >= 2 or fy >= 2:
        fx, fy = max(fx, 1), max(fy, 1)
        hh, ww = (src.shape[0] // fy) * fy, (src.shape[1] // fx) * fx
        src = src[:hh, :ww].reshape(hh // fy, fy, ww // fx, fx, 3).mean(axis=(1, 3), dtype=F32)
    sh, sw = src.shape[:2]
    ys = np.clip((np.arange(h, dtype=F32) + F32(0.5)) * F32(sh / h) - F32(0.5), 0, sh - 1)
    xs = np.clip((np.arange(w, dtype=F32) + F32(0.5)) * F32(sw / w) - F32(0.5), 0, sw - 1)
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    y1, x1 = np.minimum(y0 + 1, sh - 1), np.minimum(x0 + 1, sw - 1)
    ay, ax = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = src[y0][:, x0] * (1 - ax) + src[y0][:, x1] * ax
    bottom = src[y1][:, x0] * (1 - ax) + src[y1][:, x1] * ax
    out = top * (1 - ay) + bottom * ay
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def analysis_frame(img: np.ndarray) -> np.ndarray:
    """What media hands to analysis: the frame fitted into ANALYSIS_MAX_PX, never upscaled."""
    h, w = img.shape[:2]
    s = min(1.0, ANALYSIS_MAX_PX / max(w, h))
    if s >= 1.0:
        return img
    return resize_bilinear(img, max(1, round(w * s)), max(1, round(h * s)))


def test_patterns() -> list[tuple[str, np.ndarray]]:
    """Generated 640x360 test patterns, fixed seeds (numpy's PCG64 is the same everywhere)."""
    w, h = 640, 360
    yy, xx = np.mgrid[0:h, 0:w].astype(F32)
    out = []
    # SMPTE-style 75% colour bars over a PLUGE-like bottom strip.
    bars = np.array(
        [[191, 191, 191], [191, 191, 0], [0, 191, 191], [0, 191, 0], [191, 0, 191], [191, 0, 0], [0, 0, 191]],
        np.uint8,
    )
    img = bars[np.minimum((xx * 7 / w).astype(int), 6)]
    img[int(h * 0.75) :] = np.array([16, 16, 16], np.uint8)
    img[int(h * 0.75) :, : w // 4] = np.array([0, 33, 76], np.uint8)
    img[int(h * 0.75) :, w // 4 : w // 2] = 235
    out.append(("bars", img))
    noise = np.random.default_rng(17).normal(0, 20, img.shape)
    out.append(("bars-noise", np.clip(img + noise, 0, 255).astype(np.uint8)))
    ramp = np.stack([xx / (w - 1) * 255, yy / (h - 1) * 255, (1 - xx / (w - 1)) * 255], axis=2)
    out.append(("ramp", np.rint(ramp).astype(np.uint8)))
    checker = (((xx // 20) + (yy // 20)) % 2 * 255).astype(np.uint8)
    out.append(("checker", np.repeat(checker[:, :, None], 3, axis=2)))
    r2 = ((xx - w / 2) ** 2 + (yy - h / 2) ** 2) / 400.0
    zone = np.rint(127.5 + 127.5 * np.cos(r2)).astype(np.uint8)
    out.append(("zoneplate", np.repeat(zone[:, :, None], 3, axis=2)))
    out.append(("snow", np.random.default_rng(18).integers(0, 256, (h, w, 3), dtype=np.uint8)))
    ball = np.zeros((h, w, 3), np.uint8)
    ball[(xx - 400) ** 2 + (yy - 150) ** 2 < 60**2] = 255
    out.append(("ball", ball))
    for name, v in (("black", 0), ("grey", 128), ("white", 255)):
        out.append((name, np.full((h, w, 3), v, np.uint8)))
    return out


def photos() -> list[tuple[str, np.ndarray]]:
    """Every scikit-image sample photo setup put in the cache, astronaut first."""
    paths = [CACHE / "testdata" / "astronaut.png"] + sorted((CACHE / "testdata" / "skimage").glob("*"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"missing test images (run scripts/setup.sh): {', '.join(missing)}")
    return [(p.stem, load_image(p)) for p in paths]


def variants(name: str, img: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Transformed copies for the agreement set (never used for calibration): half
    size, 1280x720-style upscale-then-fit (a different resampling), a centre crop, an
    off-centre crop, and Gaussian noise."""
    h, w = img.shape[:2]
    out = [(f"{name}/half", resize_bilinear(img, max(1, w // 2), max(1, h // 2)))]
    out.append((f"{name}/scale0.8", resize_bilinear(img, max(1, round(w * 0.8)), max(1, round(h * 0.8)))))
    out.append((f"{name}/crop-centre", img[h // 6 : h - h // 6, w // 6 : w - w // 6]))
    out.append((f"{name}/crop-left", img[: (h * 3) // 4, : (w * 3) // 4]))
    rng = np.random.default_rng(sum(name.encode()))  # a fixed seed per photo
    noisy = np.clip(img.astype(F32) + rng.normal(0, 12, img.shape).astype(F32), 0, 255)
    out.append((f"{name}/noise12", np.rint(noisy).astype(np.uint8)))
    return out


# ---------------------------------------------------------------------------------------
# preprocess.rs


def fill_input(spec: dict, frame: np.ndarray, region: tuple[float, float, float, float]):
    """One image as the model's input (float32, CHW or HWC) and the mapping back to the
    frame (scale_x, scale_y, offset_x, offset_y): preprocess.rs's fill_input."""
    iw, ih = int(spec["width"]), int(spec["height"])
    rx, ry, rw, rh = (F32(v) for v in region)
    fh, fw = frame.shape[:2]
    limit = None
    if spec["resize"] == "letterbox":
        side = max(rw, rh)
        sx, sy, ox, oy = side / F32(iw), side / F32(ih), rx, ry
        limit = (rw, rh)
    elif spec["resize"] == "stretch":
        sx, sy, ox, oy = rw / F32(iw), rh / F32(ih), rx, ry
    elif spec["resize"] == "resize_center_crop":
        r = F32(spec.get("resize_to", iw))
        sx, sy = rw / r, rh / r
        cx, cy = (r - F32(iw)) / F32(2), (r - F32(ih)) / F32(2)
        ox, oy = rx + cx * sx, ry + cy * sy
    else:
        raise ValueError(f"unknown resize {spec['resize']}")
    fxs = (np.arange(iw, dtype=F32) + F32(0.5)) * sx + ox - F32(0.5)
    fys = (np.arange(ih, dtype=F32) + F32(0.5)) * sy + oy - F32(0.5)
    fx = np.clip(fxs, F32(0), F32(fw - 1))
    fy = np.clip(fys, F32(0), F32(fh - 1))
    x0, y0 = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, fw - 1), np.minimum(y0 + 1, fh - 1)
    ax = (fx - x0.astype(F32))[None, :, None]
    ay = (fy - y0.astype(F32))[:, None, None]
    p = frame.astype(F32)
    top = p[y0][:, x0] * (F32(1) - ax) + p[y0][:, x1] * ax
    bottom = p[y1][:, x0] * (F32(1) - ax) + p[y1][:, x1] * ax
    rgb = top * (F32(1) - ay) + bottom * ay
    if limit is not None:
        lw, lh = limit
        padded = ((fxs - rx) > lw - F32(0.5))[None, :] | ((fys - ry) > lh - F32(0.5))[:, None]
        rgb[padded] = 0
    if spec["color"] == "bgr":
        rgb = rgb[:, :, ::-1]
    mean = np.asarray(spec["mean"], F32)
    v = (rgb - mean) * F32(spec["scale"])
    if spec["layout"] == "nchw":
        v = v.transpose(2, 0, 1)
    return np.ascontiguousarray(v, dtype=F32), (sx, sy, ox, oy)


def whole(frame: np.ndarray) -> tuple[float, float, float, float]:
    return (0.0, 0.0, float(frame.shape[1]), float(frame.shape[0]))


def face_region(spec: dict, bbox) -> tuple[float, float, float, float]:
    """analyzer.rs's estimate_ages: the face box grown by face_padding on each side."""
    pad = F32(spec.get("face_padding", 0.0))
    x, y, w, h = (F32(v) for v in bbox)
    return (x - w * pad, y - h * pad, w * (F32(1) + F32(2) * pad), h * (F32(1) + F32(2) * pad))


# ---------------------------------------------------------------------------------------
# decode.rs


def iou(a, b) -> float:
    ix = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    iy = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    return float(inter / (a[2] * a[3] + b[2] * b[3] - inter))


def yolov8(out: np.ndarray, classes: int, mapping, frame_size, score_threshold, iou_threshold):
    """One image's [4 + classes, anchors] output → [(class, score, [x, y, w, h])]."""
    sx, sy, ox, oy = mapping
    fw, fh = F32(frame_size[0]), F32(frame_size[1])
    out = out.reshape(4 + classes, -1)
    scores = out[4:]
    cls = np.argmax(scores, axis=0)
    best = scores[cls, np.arange(scores.shape[1])]
    keep = np.nonzero(best >= F32(score_threshold))[0]
    found = []
    for a in keep:
        cx, cy, w, h = out[0, a], out[1, a], out[2, a], out[3, a]
        if not np.all(np.isfinite([cx, cy, w, h])):
            continue
        x = np.clip((cx - w / F32(2)) * sx + ox, F32(0), fw)
        y = np.clip((cy - h / F32(2)) * sy + oy, F32(0), fh)
        bw = min(w * sx, fw - x)
        bh = min(h * sy, fh - y)
        if bw > 0 and bh > 0:
            found.append((int(cls[a]), float(best[a]), [float(x), float(y), float(bw), float(bh)]))
    found.sort(key=lambda d: -d[1])  # stable, as Rust's sort_by
    kept = []
    for d in found:
        if all(iou(k[2], d[2]) <= iou_threshold for k in kept):
            kept.append(d)
    return kept


def age_bins(probs: np.ndarray, bins, minor_below: float):
    """(expected years, P(minor)) or None: decode.rs's age_bins."""
    p = probs.astype(F32)
    if p.shape[0] != len(bins) or not np.all(np.isfinite(p)) or np.any(p < 0):
        return None
    total = p.sum(dtype=F32)
    if total <= 0:
        return None
    b = np.asarray(bins, F32)
    return float((p * b).sum(dtype=F32) / total), float(p[b < F32(minor_below)].sum(dtype=F32) / total)
