#!/usr/bin/env python3
"""Local check of torch_onnx's graph semantics (numpy backend) against onnxruntime.

Needs numpy, onnx, onnxruntime, Pillow (e.g. a venv under /tmp). For each model:
  loose: numpy backend (fp16-rounded weights) vs ORT on the original fp32 model
  tight: numpy backend vs ORT on the model rebuilt from JSON + the same rounded
         weights (proves the interpreter, independent of the fp16 rounding)
Also checks the static-value cache (second call), other batch sizes, and writes
ref.npz (benign images + numpy-backend outputs) for the on-device torch check.
"""
import os
import sys
import time

import numpy as np
import onnxruntime as ort
from PIL import Image

import torch_onnx as T

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get("VIGIL_CACHE_DIR", os.path.join(HERE, "..", "..", ".cache", "vigil"))
MODELS_DIR = os.path.join(CACHE, "models")
IMG_DIR = os.path.join(CACHE, "testdata", "skimage")
IMAGES = ["chelsea.png", "coffee.png"]


def load_imgs(size):
    out = []
    for f in IMAGES:
        im = Image.open(os.path.join(IMG_DIR, f)).convert("RGB").resize((size, size), Image.BILINEAR)
        out.append(np.asarray(im, dtype=np.uint8))
    return np.stack(out)


def ort_run(model_bytes_or_path, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    s = ort.InferenceSession(model_bytes_or_path, so, providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def main():
    ref = {}
    ok = True
    for m in T.MODELS:
        g = T.load_graph(m)
        w = T.load_weights(g)
        ex = T.Executor(g, w)
        imgs = load_imgs(T.INPUT_HW[m])
        ref["img_" + m] = imgs
        x = T.make_input(m, imgs)
        feeds = {g["inputs"][0]["name"]: x}
        t0 = time.time()
        cache = {}
        y = T.run_numpy(g, w, [x], ex, cache)[0]
        t_np = time.time() - t0
        y2 = T.run_numpy(g, w, [x], ex, cache)[0]          # cached static values
        y_orig = ort_run(os.path.join(MODELS_DIR, m + ".onnx"), feeds)[0]
        rebuilt = T.rebuild_onnx(g, w).SerializeToString()
        y_rnd = ort_run(rebuilt, feeds)[0]
        loose = float(np.abs(y - y_orig).max())
        tight = float(np.abs(y - y_rnd).max())
        rnd_vs_orig = float(np.abs(y_rnd - y_orig).max())
        cache_same = bool(np.array_equal(y, y2))
        scale = float(np.abs(y_orig).max())
        # other batch sizes (dynamic batch, separate cache entries)
        bdiffs = []
        for bs in (1, 3):
            xb = np.concatenate([x] * 2)[:bs] if bs <= 2 * len(x) else x
            yb = T.run_numpy(g, w, [xb], ex, {})[0]
            yo = ort_run(rebuilt, {g["inputs"][0]["name"]: xb})[0]
            assert yb.shape == yo.shape, (yb.shape, yo.shape)
            bdiffs.append(float(np.abs(yb - yo).max()))
        print(f"{m}: out {y.shape} |ref|max={scale:.4g} numpy {t_np:.1f}s static nodes "
              f"{ex.n_static}/{len(g['nodes'])}")
        print(f"  max|numpy - ORT(original fp32)|   = {loose:.3e}")
        print(f"  max|numpy - ORT(rebuilt fp16-rounded)| = {tight:.3e}  (bs1,bs3: "
              f"{bdiffs[0]:.3e}, {bdiffs[1]:.3e})")
        print(f"  max|ORT rounded - ORT original|   = {rnd_vs_orig:.3e}; cached rerun identical: {cache_same}")
        if m == "nudenet-320n":
            print(f"  nudenet split vs ORT original: boxes(rows 0-3) {np.abs(y[:, :4] - y_orig[:, :4]).max():.3e}"
                  f", class scores(rows 4-21) {np.abs(y[:, 4:] - y_orig[:, 4:]).max():.3e}")
        else:
            am = (y.argmax(1) == y_orig.argmax(1)).all()
            print(f"  argmax equal to original: {bool(am)}")
        ok &= cache_same and tight <= 1e-4 * max(1.0, scale) and max(bdiffs) <= 1e-4 * max(1.0, scale)
        ref["out_" + m] = y.astype(np.float32)
        ref["ortorig_" + m] = y_orig.astype(np.float32)
    np.savez_compressed(os.path.join(HERE, "ref.npz"), **ref)
    print("ref.npz written;", "ALL OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
