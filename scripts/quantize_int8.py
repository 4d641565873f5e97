#!/usr/bin/env python3
"""Builds the int8 models from the fp32 ones: ONNX Runtime static quantisation, calibrated
on benign frames only (generated test patterns and the scikit-image photos in the setup
cache, preprocessed exactly as vigil-infer does for each model).

Two steps, so that setup's output is byte-identical on every machine:

  quantize_int8.py --calibrate   runs each fp32 model over the calibration frames and
                                 writes the activation ranges to
                                 models/int8/<name>.ranges.jsonl (committed; a developer
                                 runs this when the calibration set or settings change)
  quantize_int8.py               (setup) quantises each fp32 model with those committed
                                 ranges into $VIGIL_CACHE_DIR/models/<name>-int8.onnx and
                                 checks it against the sha256 in models/<name>-int8.toml;
                                 a file already there with the right sum is left alone

Building from committed ranges runs no model: the weights are quantised by numpy, so the
output depends only on the fp32 file, the ranges and the pinned onnx/onnxruntime/numpy,
not on which CPU kernels computed the activations. `--write-manifests` puts the sums of
freshly built files into the int8 manifests (after a deliberate change).

Settings, and why (measured with onnxruntime 1.32 CPU on the AVX-512 VNNI build machine):
- QDQ with uint8 activations and int8 weights (U8S8): at session load ONNX Runtime fuses
  each DequantizeLinear -> op -> QuantizeLinear group into QLinearConv, QLinearSigmoid,
  QLinearMul, QLinearConcat..., the same kernels that the QOperator format names
  directly, and the CPU time matched QOperator's within 2% on all three models. QDQ is
  the format ONNX Runtime recommends and the one TensorRT and CUDA execution providers
  read, which the worker tries first on a GPU host. int8 activations (S8S8) are not
  fused on this CPU build: the detector ran 1.8x slower than fp32.
- Weights per channel, symmetric: no slower than per tensor, closer to fp32 (age).
- reduce_range off: VNNI (vpdpbusd) does not saturate u8*s8 sums; on a CPU without
  VNNI (AVX2 only) the u8s8 kernel can saturate and the agreement figures may not hold.
- Per model (SETTINGS below): which nodes stay fp32 (the detector's first convolution
  and output head, the classifiers' last layer and softmax), MinMax or percentile
  ranges, and the calibration frames.
"""

import argparse
import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import int8_common as C  # noqa: E402

RANGES_DIR = C.ROOT / "models" / "int8"
MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear need opset 13


def _nudenet_exclude(graph) -> list[str]:
    """Kept fp32: the first convolution and its SiLU (they see the raw pixels; int8 there
    cost a face at 0.44 in the agreement set), and the YOLOv8 head after its last 3x3
    convolutions: the final 1x1 convolutions give the box distributions and class
    logits, and everything after them (DFL softmax, anchor arithmetic, sigmoid, the
    concatenation of boxes in pixels with scores in 0..1 into output0) would lose the
    scores entirely in one 8-bit range."""
    keep = re.compile(r"^/model\.22/cv[23]\.\d/cv[23]\.\d\.[01]/")
    head = [n.name for n in graph.node if n.name.startswith("/model.22/") and not keep.match(n.name)]
    return [n.name for n in graph.node if n.name.startswith("/model.0/")] + head


def _last_ops_exclude(op_types: tuple[str, ...]):
    """The classifier layer and softmax at the end stay fp32 (tiny, and an 8-bit
    probability would be coarse exactly where thresholds apply)."""

    def exclude(graph) -> list[str]:
        return [n.name for n in graph.node if n.op_type in op_types]

    return exclude


# Per model: what stays fp32, how ranges are taken, on which frames (see calibration_inputs).
# Chosen on the agreement set (scripts/int8_agreement.py), missed detections first:
# - the detector needs MinMax: percentile ranges (99.99 / 99.999) clip the rare large
#   activations YOLO's scores come from (recall 0.48 / 0.74 against 0.87);
# - the detector and the age model are calibrated on the photos only: the test patterns'
#   flat and high-frequency frames drive activations that natural frames never reach,
#   and the wider MinMax ranges pulled the detector's scores down (signed mean -0.053
#   against -0.010) and doubled the age model's error on detected faces (mean 1.34 y
#   against 0.63 y);
# - open-nsfw is best with 99.99th-percentile ranges, which the patterns' extremes do not
#   move (|Δscore| max 0.011 against 0.080 with MinMax).
SETTINGS = {
    "nudenet-320n": {"exclude": _nudenet_exclude, "method": "MinMax", "frames": "photos"},
    "age-v1": {"exclude": _last_ops_exclude(("Gemm", "Softmax")), "method": "MinMax", "frames": "photos"},
    "open-nsfw": {
        "exclude": _last_ops_exclude(("MatMul", "Softmax")),
        "method": "Percentile",
        "percentile": 99.99,
        "frames": "patterns+photos",
    },
}
# Shared by every model; see the module docstring.
QUANT = {
    "quant_format": "QDQ",
    "activation_type": "QUInt8",
    "weight_type": "QInt8",
    "per_channel": True,
    "reduce_range": False,  # AVX-512 VNNI has no u8*s8 saturation to avoid
    "extra_options": {"ActivationSymmetric": False, "WeightSymmetric": True},
}


def fail(msg: str) -> None:
    print(f"setup: error: {msg}", file=sys.stderr)
    sys.exit(1)


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def int8_name(name: str) -> str:
    return f"{name}-int8"


def fp32_path(name: str) -> Path:
    m = C.manifest(name)
    path = C.CACHE / "models" / m["file"]
    if not path.is_file():
        fail(f"{path} is missing: the fp32 models come first (scripts/fetch_assets.py)")
    got = sha256_of(path)
    if got != m["sha256"]:
        fail(f"checksum mismatch for {path}: got {got}, models/{name}.toml expects {m['sha256']}")
    return path


def prepare(name: str, tmp: Path) -> Path:
    """The fp32 model brought to opset 13 and through ONNX Runtime's basic graph
    optimisations (constant folding, Conv+Mul+Add fusion), as quantisation expects."""
    import onnx
    from onnx import version_converter
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(fp32_path(name)))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < MIN_OPSET:
        model = version_converter.convert_version(model, MIN_OPSET)
    src = tmp / f"{name}.opset.onnx"
    onnx.save(model, str(src))
    out = tmp / f"{name}.prepared.onnx"
    quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


def quantize(name: str, prepared: Path, out: Path, ranges: Path, reader=None) -> None:
    """quantize_static with the settings above; with `reader`, calibrates first and
    leaves the ranges in `ranges` (ONNX Runtime's calibration cache), else reads them
    from there."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    cfg = SETTINGS[name]
    graph = onnx.load(str(prepared), load_external_data=False).graph
    extra = dict(QUANT["extra_options"])
    if "percentile" in cfg:
        extra["CalibPercentile"] = cfg["percentile"]
    quantize_static(
        str(prepared),
        str(out),
        calibration_data_reader=reader,
        calibration_cache_path=str(ranges),
        calibrate_method=CalibrationMethod[cfg["method"]],
        quant_format=QuantFormat[QUANT["quant_format"]],
        activation_type=QuantType[QUANT["activation_type"]],
        weight_type=QuantType[QUANT["weight_type"]],
        per_channel=QUANT["per_channel"],
        reduce_range=QUANT["reduce_range"],
        nodes_to_exclude=cfg["exclude"](graph),
        extra_options=extra,
    )


# ---------------------------------------------------------------------------------------
# Calibration


def calibration_frames(which: str) -> list[tuple[str, np.ndarray]]:
    """Every scikit-image photo and, for "patterns+photos", the test patterns, as
    analysis frames."""
    frames = (C.test_patterns() if which == "patterns+photos" else []) + C.photos()
    return [(n, C.analysis_frame(img)) for n, img in frames]


def _session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def face_boxes(frames) -> list[tuple[np.ndarray, list[float]]]:
    """Faces the fp32 detector finds in the frames (as the worker would pass them on)."""
    m = C.manifest("nudenet-320n")
    spec, o = m["input"], m["output"]
    faces = set(m["signals"]["face"])
    sess = _session(fp32_path("nudenet-320n"))
    found = []
    for _, f in frames:
        x, mapping = C.fill_input(spec, f, C.whole(f))
        out = sess.run([o["name"]], {spec["name"]: x[None]})[0][0]
        dets = C.yolov8(out, len(o["labels"]), mapping, (f.shape[1], f.shape[0]), o["score_threshold"], o["iou_threshold"])
        found += [(f, box) for c, _, box in dets if o["labels"][c] in faces][: C.MAX_FACES]
    return found


def age_regions(frames) -> list[tuple[np.ndarray, tuple]]:
    """Crops for the age model: each detected face with its box shifted and scaled a
    little (what a detector's jitter gives), plus a 3x3 grid of square crops from every
    frame (the age model also sees whatever the detector takes for a face)."""
    spec = C.manifest("age-v1")["input"]
    out = []
    for f, (x, y, w, h) in face_boxes(frames):
        for dx in (-0.1, 0.0, 0.1):
            for ds in (0.9, 1.0, 1.1):
                bw, bh = w * ds, h * ds
                box = (x + dx * w + (w - bw) / 2, y + (h - bh) / 2, bw, bh)
                out.append((f, C.face_region(spec, box)))
    for _, f in frames:
        fh, fw = f.shape[:2]
        side = min(fw, fh) / 2.5
        for gy in range(3):
            for gx in range(3):
                out.append((f, ((fw - side) * gx / 2, (fh - side) * gy / 2, side, side)))
    return out


def calibration_inputs(name: str) -> list[np.ndarray]:
    spec = C.manifest(name)["input"]
    frames = calibration_frames(SETTINGS[name]["frames"])
    regions = age_regions(frames) if name == "age-v1" else [(f, C.whole(f)) for _, f in frames]
    return [C.fill_input(spec, f, r)[0][None] for f, r in regions]


class Reader:
    def __init__(self, input_name: str, batches: list[np.ndarray]):
        self.input_name, self.batches = input_name, iter(batches)

    def get_next(self):
        b = next(self.batches, None)
        return None if b is None else {self.input_name: b}


def write_ranges(ort_cache: Path, dest: Path, name: str, count: int) -> None:
    """ONNX Runtime's calibration cache reduced to what quantisation reads (each
    tensor's lowest and highest value, float32 written exactly), sorted by tensor name
    (its own order follows a Python set, which changes from run to run), under a header
    that says how the ranges were taken."""
    data = json.loads(ort_cache.read_text())["data"]
    cfg = SETTINGS[name]

    def scalar(v) -> float:  # a 0-d or 1-element array, or a plain number
        v = v["data"] if isinstance(v, dict) else v
        return float(np.asarray(v, dtype=np.float32).reshape(-1)[0])

    ranges = {k: [scalar(v["lowest"]), scalar(v["highest"])] for k, v in sorted(data.items())}
    for k, (lo, hi) in ranges.items():
        assert np.float32(lo) == lo and np.float32(hi) == hi, k
    head = {
        "model": name,
        "fp32_sha256": C.manifest(name)["sha256"],
        "method": cfg["method"],
        "percentile": cfg.get("percentile"),
        "frames": cfg["frames"],
        "inputs": count,
        "made_by": "scripts/quantize_int8.py --calibrate",
    }
    lines = [json.dumps(head, sort_keys=True)] + [json.dumps([k, lo, hi]) for k, (lo, hi) in ranges.items()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text("\n".join(lines) + "\n")


def calibrate(name: str) -> None:
    spec = C.manifest(name)["input"]
    inputs = calibration_inputs(name)
    with tempfile.TemporaryDirectory(prefix="vigil-int8-") as tmp:
        tmp = Path(tmp)
        prepared = prepare(name, tmp)
        cache = tmp / "ranges.json"
        with contextlib.redirect_stdout(sys.stderr):  # the percentile calibrator prints
            quantize(name, prepared, tmp / "discard.onnx", cache, Reader(spec["name"], inputs))
        write_ranges(cache, RANGES_DIR / f"{name}.ranges.jsonl", name, len(inputs))
    print(f"calibrated {name} on {len(inputs)} benign inputs: models/int8/{name}.ranges.jsonl")


# ---------------------------------------------------------------------------------------
# Building


def ranges_for(name: str, tmp: Path) -> Path:
    """The committed ranges, checked to belong to this fp32 file and these settings, as
    ONNX Runtime's calibration cache."""
    src = RANGES_DIR / f"{name}.ranges.jsonl"
    if not src.is_file():
        fail(f"{src} is missing (scripts/quantize_int8.py --calibrate makes it)")
    lines = src.read_text().splitlines()
    head = json.loads(lines[0])
    cfg = SETTINGS[name]
    if head.get("fp32_sha256") != C.manifest(name)["sha256"]:
        fail(f"{src} was calibrated for another fp32 file; run scripts/quantize_int8.py --calibrate")
    if (head.get("method"), head.get("percentile"), head.get("frames")) != (cfg["method"], cfg.get("percentile"), cfg["frames"]):
        fail(f"{src} was calibrated with other settings than SETTINGS[{name!r}]; run scripts/quantize_int8.py --calibrate")

    def arr(v):
        return {"CLS": "numpy.array", "data": [v], "dtype": "float32"}

    data = {}
    for line in lines[1:]:
        k, lo, hi = json.loads(line)
        data[k] = {"CLS": "TensorData", "lowest": arr(lo), "highest": arr(hi)}
    method = {"CLS": "CalibrationMethod", "value": f"CalibrationMethod.{cfg['method']}"}
    out = tmp / f"{name}.ranges.json"
    out.write_text(json.dumps({"CLS": "TensorsData", "calibration_method": method, "data": data, "smooth_quant": False}))
    return out


def build(name: str, folder: Path) -> Path:
    """Quantises `name` into a temporary file in `folder`; the caller checks and names it."""
    with tempfile.TemporaryDirectory(prefix="vigil-int8-") as tmp:
        tmp = Path(tmp)
        prepared = prepare(name, tmp)
        built = tmp / "int8.onnx"
        quantize(name, prepared, built, ranges_for(name, tmp))
        folder.mkdir(parents=True, exist_ok=True)
        fd, part = tempfile.mkstemp(dir=folder, prefix=f".{name}-int8.")
        os.close(fd)
        os.replace(built, part)
        os.chmod(part, 0o644)
        return Path(part)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="*", default=C.MODELS, help="fp32 manifest names (default: all three)")
    ap.add_argument("--calibrate", action="store_true", help="recompute models/int8/*.ranges.json from the benign frames")
    ap.add_argument("--out", type=Path, help="build into this folder instead of the cache, ignoring what is there")
    ap.add_argument("--write-manifests", action="store_true", help="record the built files' sha256 in models/*-int8.toml")
    args = ap.parse_args()
    for name in args.models:
        if name not in SETTINGS:
            fail(f"no int8 settings for {name} (known: {', '.join(SETTINGS)})")
    import logging

    logging.getLogger().setLevel(logging.ERROR)  # ONNX Runtime's advice on pre-processing
    if args.calibrate:
        for name in args.models:
            calibrate(name)
        return
    for name in args.models:
        q = int8_name(name)
        manifest_path = C.ROOT / "models" / f"{q}.toml"
        if not manifest_path.is_file():
            fail(f"{manifest_path} is missing")
        m = C.manifest(q)
        folder = args.out or (C.CACHE / "models")
        dest = folder / m["file"]
        if args.out is None and not args.write_manifests and dest.is_file() and sha256_of(dest) == m["sha256"]:
            print(f"setup: ok models/{dest.name}")
            continue
        part = build(name, folder)
        got = sha256_of(part)
        if args.write_manifests:
            text = manifest_path.read_text()
            manifest_path.write_text(re.sub(r'(?m)^sha256 = "[0-9a-f]*"', f'sha256 = "{got}"', text, count=1))
            print(f"built models/{dest.name}: sha256 {got} (written to models/{q}.toml)")
        elif got != m["sha256"]:
            part.unlink()
            fail(
                f"checksum mismatch for models/{dest.name} built by scripts/quantize_int8.py: got {got}, "
                f"models/{q}.toml expects {m['sha256']}. Refusing to install it: the build did not "
                "reproduce (other onnx/onnxruntime/numpy than scripts/requirements-test.txt pins, or "
                "changed ranges or settings without --write-manifests)."
            )
        os.replace(part, dest)
        if not args.write_manifests:
            print(f"setup: built models/{dest.name} (sha256 verified)")


if __name__ == "__main__":
    main()
