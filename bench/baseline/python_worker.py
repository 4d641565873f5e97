"""The obvious Python alternative to Vigil, as a baseline for `vigil bench streams`.

Reads each live stream with OpenCV (FFmpeg backend), one thread per stream, decoding
every frame in order, and analyses one frame per second of stream time:

  --mode nudenet  the `nudenet` package's detector (NudeNet 320n);
  --mode equal    NudeNet, the age model on each face it finds, open-nsfw and PDQ
                  (with its eight rotations and reflections): the models Vigil runs,
                  preprocessed as models/*.toml describe.

After a warm-up, it measures a window of --seconds and writes a JSON report: per stream
and in total, video seconds, frames decoded, samples due (one per second of live
stream in the window) and analysed (within 2 s after the window), coverage, sample age
(on air to analysed), and the process's CPU seconds in the window (getrusage: every
thread, and any children) against wall seconds.

    python bench/baseline/python_worker.py --mode nudenet --seconds 30 \\
        --url rtmp://127.0.0.1:1935/live/a --url rtmp://127.0.0.1:1935/live/b --json out.json
"""

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import sys
import threading
import time
import tomllib
from importlib import metadata
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from nudenet import NudeDetector

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pdq  # noqa: E402  (stands in for the pdqhash package: see pdq.py)

ROOT = Path(__file__).resolve().parents[2]
# A count is held when coverage is at least this and the sample age p95 within a GOP,
# as `vigil bench streams` judges the worker.
HELD_COVERAGE = 0.99
HELD_AGE_MS = 2000.0
MAX_FACES = 16  # as crates/vigil-infer


def manifest(name: str) -> dict:
    return tomllib.loads((ROOT / "models" / f"{name}.toml").read_text())


def cache_dir() -> Path:
    return Path(os.environ.get("VIGIL_CACHE_DIR") or ROOT / ".cache/vigil")


def checked(path: Path, m: dict) -> str:
    """The model file, refused unless its sha256 is the manifest's."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != m["sha256"]:
        sys.exit(f"{path}: sha256 {digest}, models/{m['name']}.toml expects {m['sha256']} (run make setup)")
    return str(path)


def session_options(threads: int) -> ort.SessionOptions | None:
    if threads <= 0:
        return None  # onnxruntime's defaults, as NudeDetector() uses
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    return o


class Analyzer:
    """The models, loaded once and shared by every stream's thread (an onnxruntime
    session may be run from several threads at once)."""

    def __init__(self, mode: str, ort_threads: int):
        self.mode = mode
        self.nudenet = NudeDetector()
        m = manifest("nudenet-320n")
        model = checked(Path(sys.modules["nudenet"].__file__).parent / "320n.onnx", m)
        if ort_threads > 0:
            # NudeDetector takes no session options: give it the same model, threads set.
            self.nudenet.onnx_session = ort.InferenceSession(
                model, session_options(ort_threads), providers=["CPUExecutionProvider"]
            )
        self.face_labels = set(m["signals"]["face"])
        if mode != "equal":
            return
        self.age_m, self.nsfw_m = manifest("age-v1"), manifest("open-nsfw")
        models = cache_dir() / "models"
        self.age = ort.InferenceSession(
            checked(models / self.age_m["file"], self.age_m), session_options(ort_threads), providers=["CPUExecutionProvider"]
        )
        self.nsfw = ort.InferenceSession(
            checked(models / self.nsfw_m["file"], self.nsfw_m), session_options(ort_threads), providers=["CPUExecutionProvider"]
        )
        i = self.age_m["input"]
        self.age_mean = np.array(i["mean"], np.float32)
        self.age_bins = np.array(self.age_m["output"]["bins"], np.float32)
        self.minor = self.age_bins < self.age_m["output"]["minor_below_years"]
        self.nsfw_mean = np.array(self.nsfw_m["input"]["mean"], np.float32)  # BGR order
        self.nsfw_index = self.nsfw_m["output"]["labels"].index(self.nsfw_m["signals"]["nsfw_score"][0])

    def analyse(self, bgr: np.ndarray, stage_secs: dict) -> dict:
        t = time.perf_counter()
        detections = self.nudenet.detect(bgr)
        t = lap(stage_secs, "nudenet", t)
        faces = [d["box"] for d in detections if d["class"] in self.face_labels][:MAX_FACES]
        out = {"detections": len(detections), "faces": len(faces)}
        if self.mode != "equal":
            return out
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if faces:
            out["p_minor"] = self.ages(rgb, faces)
        t = lap(stage_secs, "age", t)
        out["nsfw"] = self.nsfw_score(bgr)
        t = lap(stage_secs, "open_nsfw", t)
        hashes, out["pdq_quality"] = pdq.compute_dihedral(rgb)
        lap(stage_secs, "pdq", t)
        return out

    def ages(self, rgb: np.ndarray, boxes: list) -> list[float]:
        """P(minor) per face: each box grown by face_padding per side, stretched to 64x64
        (edges replicated past the frame), (RGB - mean) * scale, NCHW, one batch."""
        i = self.age_m["input"]
        size, pad = (i["width"], i["height"]), i["face_padding"]
        crops = []
        for x, y, w, h in boxes:
            x0, y0, cw, ch = x - w * pad, y - h * pad, w * (1 + 2 * pad), h * (1 + 2 * pad)
            sx, sy = size[0] / cw, size[1] / ch
            # pixel centres: output (u + 0.5) samples input (u + 0.5) / s + x0 - 0.5
            warp = np.float32([[sx, 0, (0.5 - x0) * sx - 0.5], [0, sy, (0.5 - y0) * sy - 0.5]])
            crops.append(cv2.warpAffine(rgb, warp, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE))
        batch = ((np.stack(crops).astype(np.float32) - self.age_mean) * i["scale"]).transpose(0, 3, 1, 2)
        (probs,) = self.age.run([self.age_m["output"]["name"]], {i["name"]: np.ascontiguousarray(batch)})
        return [float(p[self.minor].sum()) for p in probs]

    def nsfw_score(self, bgr: np.ndarray) -> float:
        """Resize to 256x256, keep the centre 224x224, BGR - mean, NHWC."""
        i = self.nsfw_m["input"]
        r, w, h = i["resize_to"], i["width"], i["height"]
        x0, y0 = (r - w) // 2, (r - h) // 2
        img = cv2.resize(bgr, (r, r), interpolation=cv2.INTER_LINEAR)[y0 : y0 + h, x0 : x0 + w]
        x = (img.astype(np.float32) - self.nsfw_mean) * i["scale"]
        (probs,) = self.nsfw.run([self.nsfw_m["output"]["name"]], {i["name"]: x[None]})
        return float(probs[0][self.nsfw_index])


def lap(stage_secs: dict, stage: str, since: float) -> float:
    now = time.perf_counter()
    stage_secs[stage] = stage_secs.get(stage, 0.0) + now - since
    return now


class Stream(threading.Thread):
    """One stream: decode every frame in order (grab), convert and analyse the first
    frame of each second of stream time (retrieve), record what happened when."""

    def __init__(self, url: str, analyzer: Analyzer, analysis_width: int, stop: threading.Event):
        super().__init__(daemon=True, name=url)
        self.url, self.analyzer, self.width, self.stop = url, analyzer, analysis_width, stop
        self.frames = 0
        self.last_pts = None  # seconds of stream time, of the last frame decoded
        self.first_pts = None
        # min over frames of (arrival - pts): where stream time 0 was on air, in
        # time.monotonic(); frames cannot arrive before they are on air, and a reader
        # that keeps up sees them within a frame or two of it.
        self.offset = float("inf")
        self.samples = []  # (slot, done at, monotonic)
        self.stage_secs = {}
        self.faces = 0
        self.errors = []
        self.reopens = 0
        self.thread_cpu = 0.0

    def run(self):
        while not self.stop.is_set():
            cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG)
            if not cap.isOpened():
                self.errors.append(f"open failed at {time.monotonic():.1f}")
                self.stop.wait(0.5)
                continue
            try:
                self.read(cap)
            except Exception as e:  # a failed analysis must not end the stream's thread silently
                self.errors.append(f"{type(e).__name__}: {e}")
            finally:
                cap.release()
            self.reopens += 1
        self.thread_cpu = time.thread_time()

    def read(self, cap):
        next_slot = None
        while not self.stop.is_set():
            if not cap.grab():
                self.errors.append(f"stream ended at {time.monotonic():.1f}")
                return
            arrived = time.monotonic()
            pts = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if self.first_pts is None:
                self.first_pts = pts
            pts -= self.first_pts
            self.frames += 1
            self.last_pts = pts
            self.offset = min(self.offset, arrived - pts)
            if next_slot is None or pts < next_slot - 1:  # first frame, or a reconnect
                next_slot = math.floor(pts)
            if pts < next_slot:
                continue
            ok, bgr = cap.retrieve()
            if not ok:
                continue
            h, w = bgr.shape[:2]
            if self.width and w > self.width:
                t = time.perf_counter()
                bgr = cv2.resize(bgr, (self.width, round(h * self.width / w)), interpolation=cv2.INTER_AREA)
                lap(self.stage_secs, "scale", t)
            result = self.analyzer.analyse(bgr, self.stage_secs)
            self.faces += result["faces"]
            self.samples.append((math.floor(pts), time.monotonic()))
            next_slot = math.floor(pts) + 1


def snapshot(streams: list[Stream]) -> dict:
    r = resource.getrusage(resource.RUSAGE_SELF)
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "at": time.monotonic(),
        "user": r.ru_utime + c.ru_utime,
        "sys": r.ru_stime + c.ru_stime,
        "frames": [s.frames for s in streams],
        "pts": [s.last_pts for s in streams],
    }


def percentile(values: list[float], p: float):
    if not values:
        return None
    v = sorted(values)
    return v[round(p / 100 * (len(v) - 1))]


def in_window(s: Stream, a: dict, b: dict) -> tuple[int, list[float]]:
    """Samples due in the window (each whole second of stream time that went on air
    inside it) and the ages (ms from on air to analysed) of those analysed at most
    HELD_AGE_MS after the window's end; the rest count as missed."""
    if s.offset == float("inf"):
        return int(b["at"] - a["at"]), []
    first, end = math.ceil(a["at"] - s.offset), math.ceil(b["at"] - s.offset)
    late = b["at"] + HELD_AGE_MS / 1000
    ages = [(at - (s.offset + slot)) * 1000 for slot, at in s.samples if first <= slot < end and at <= late]
    return max(0, end - first), ages


def stream_report(s: Stream, i: int, a: dict, b: dict) -> dict:
    read = (b["pts"][i] - a["pts"][i]) if a["pts"][i] is not None and b["pts"][i] is not None else 0.0
    due, ages = in_window(s, a, b)
    return {
        "url": s.url,
        "video_secs_on_air": b["at"] - a["at"],
        "video_secs_read": read,
        "frames_decoded": b["frames"][i] - a["frames"][i],
        "samples_due": due,
        "samples_analysed": len(ages),
        "coverage": len(ages) / due if due else 0.0,
        "sample_age_ms_p50": percentile(ages, 50),
        "sample_age_ms_p95": percentile(ages, 95),
        "sample_age_ms_max": percentile(ages, 100),
        "faces_seen": s.faces,
        "reader_thread_cpu_secs": s.thread_cpu,
        "reopens": s.reopens,
        "errors": s.errors[:10],
    }


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ["opencv-python-headless", "onnxruntime", "numpy", "nudenet"]:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    out["opencv_build"] = cv2.__version__
    out["pdq"] = "bench/baseline/pdq.py (numpy + OpenCV; pdqhash has no Linux wheel)"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=["nudenet", "equal"], required=True)
    ap.add_argument("--url", action="append", required=True, help="a live stream (repeat per stream)")
    ap.add_argument("--seconds", type=float, default=30.0, help="the measured window, after the warm-up")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after every stream's first frame before measuring")
    ap.add_argument("--json", type=Path, help="where the report goes")
    ap.add_argument("--analysis-width", type=int, default=640,
                    help="scale analysed frames down to this width first, as Vigil does (0: full size)")
    ap.add_argument("--ort-threads", type=int, default=1,
                    help="onnxruntime intra-op threads per model (0: its default, one per core)")
    args = ap.parse_args()

    started = time.monotonic()
    analyzer = Analyzer(args.mode, args.ort_threads)
    stop = threading.Event()
    streams = [Stream(u, analyzer, args.analysis_width, stop) for u in args.url]
    for s in streams:
        s.start()
    deadline = time.monotonic() + 60
    while any(s.first_pts is None for s in streams) and time.monotonic() < deadline:
        time.sleep(0.1)
    waiting = [s.url for s in streams if s.first_pts is None]
    if waiting:
        print(f"python baseline: no frame within 60 s from {waiting}; measuring anyway", file=sys.stderr)
    time.sleep(args.warmup)
    a = snapshot(streams)
    time.sleep(args.seconds)
    b = snapshot(streams)
    time.sleep(HELD_AGE_MS / 1000)  # the window's last samples may finish within this
    stop.set()
    for s in streams:
        s.join(timeout=10)

    per_stream = [stream_report(s, i, a, b) for i, s in enumerate(streams)]
    wall = b["at"] - a["at"]
    cpu = (b["user"] - a["user"]) + (b["sys"] - a["sys"])
    on_air = wall * len(streams)
    due = sum(p["samples_due"] for p in per_stream)
    done = sum(p["samples_analysed"] for p in per_stream)
    ages = [x for s in streams for x in in_window(s, a, b)[1]]
    coverage = done / due if due else 0.0
    age_p95 = percentile(ages, 95)
    analysed_total = sum(len(s.samples) for s in streams)
    stage_ms = {}
    for s in streams:
        for k, v in s.stage_secs.items():
            stage_ms[k] = stage_ms.get(k, 0.0) + v
    total = {
        "streams": len(streams),
        "window_secs": wall,
        "video_secs_on_air": on_air,
        "video_secs_read": sum(p["video_secs_read"] for p in per_stream),
        "frames_decoded": sum(p["frames_decoded"] for p in per_stream),
        "samples_due": due,
        "samples_analysed": done,
        "coverage": coverage,
        "cpu_user_secs": b["user"] - a["user"],
        "cpu_sys_secs": b["sys"] - a["sys"],
        "cpu_secs": cpu,
        "wall_secs": wall,
        "cpu_secs_per_video_sec": cpu / on_air if on_air else None,
        "streams_per_core_at_this_load": on_air / cpu if cpu else None,
        "cpu_ms_per_sample": cpu / done * 1000 if done else None,
        "sample_age_ms_p50": percentile(ages, 50),
        "sample_age_ms_p95": age_p95,
        "sample_age_ms_max": percentile(ages, 100),
        "held": coverage >= HELD_COVERAGE and age_p95 is not None and age_p95 <= HELD_AGE_MS,
        # wall time in each stage on the streams' threads, per sample, whole run
        "stage_wall_ms_per_sample": {k: v / analysed_total * 1000 for k, v in stage_ms.items()} if analysed_total else {},
    }
    report = {
        "baseline": "python",
        "mode": args.mode,
        "work": "NudeNet 320n" if args.mode == "nudenet" else "NudeNet 320n, age-v1 per face, open-nsfw, PDQ + 7 dihedral",
        "settings": {
            "concurrency": "one thread per stream, models shared",
            "decode": "cv2.VideoCapture (FFmpeg), grab() every frame, retrieve() the analysed ones",
            "sample_fps": 1.0,
            "analysis_width": args.analysis_width,
            "ort_intra_op_threads": args.ort_threads,
            "warmup_secs": args.warmup,
            "cores": os.cpu_count(),
        },
        "versions": versions(),
        "total": total,
        "per_stream": per_stream,
        "run_secs": time.monotonic() - started,
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"python baseline {args.mode}: {len(streams)} streams, {wall:.1f} s, coverage {coverage:.1%} ({done}/{due}), "
        f"{total['cpu_secs_per_video_sec']:.4f} CPU-s per video-s ({total['streams_per_core_at_this_load']:.1f} streams/core), "
        f"age p95 {age_p95 if age_p95 is None else round(age_p95)} ms, held: {'yes' if total['held'] else 'no'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
