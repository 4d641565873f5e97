#!/usr/bin/env python3
"""Builds tiny ONNX models whose output is driven by a marker in the input, so the
tests can drive the positive paths (sexual exposure, a minor's face) deterministically
without any real abusive content. Run by setup with the pinned `onnx` package.

- marker-detector: input [N,3,320,320] like NudeNet. When the top-left 16x16 of the red
  channel is bright (a red square in the frame's corner), it reports a MARKER_FACE box
  and a MARKER_EXPOSED box at fixed places; otherwise nothing.
- marker-age: input [N,3,64,64] like age-v1. A green face crop is "8 years old"
  (probability 1 at bin 8), anything else "40 years old".
- failing-age: loads and warms up like an age model, but its run fails (an impossible
  reshape) when a crop is green: the runtime inference error path, deterministically.

Writes the models to $CACHE/models/ and their manifests (with the sha256 of the files
just written) to $CACHE/test-models/, next to a copy of the open-nsfw manifest.
"""

import hashlib
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("VIGIL_CACHE_DIR", ROOT / ".cache" / "vigil"))
OPSET = 17
AGE_BINS = [0.25] + list(range(1, 81))


def const(name, array):
    return numpy_helper.from_array(np.asarray(array, dtype=np.float32), name)


def marker_score(prefix, channel, threshold, nodes, inits):
    """Sigmoid((mean of images[:, channel, 0:16, 0:16] - threshold) * 40), shape [N,1,1]."""
    inits += [
        numpy_helper.from_array(np.array([0, channel, 0, 0], dtype=np.int64), f"{prefix}_starts"),
        numpy_helper.from_array(np.array([2**31 - 1, channel + 1, 16, 16], dtype=np.int64), f"{prefix}_ends"),
        numpy_helper.from_array(np.array([-1, 1, 1], dtype=np.int64), f"{prefix}_shape"),
        const(f"{prefix}_thr", threshold),
        const(f"{prefix}_gain", 40.0),
    ]
    nodes += [
        helper.make_node("Slice", ["images", f"{prefix}_starts", f"{prefix}_ends"], [f"{prefix}_patch"]),
        helper.make_node("ReduceMean", [f"{prefix}_patch"], [f"{prefix}_mean"], axes=[1, 2, 3], keepdims=1),
        helper.make_node("Reshape", [f"{prefix}_mean", f"{prefix}_shape"], [f"{prefix}_m"]),
        helper.make_node("Sub", [f"{prefix}_m", f"{prefix}_thr"], [f"{prefix}_d"]),
        helper.make_node("Mul", [f"{prefix}_d", f"{prefix}_gain"], [f"{prefix}_z"]),
        helper.make_node("Sigmoid", [f"{prefix}_z"], [f"{prefix}_s"]),
    ]
    return f"{prefix}_s"


def save(graph, name):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vigil-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = CACHE / "models" / f"{name}.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = model.SerializeToString()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def detector():
    nodes, inits = [], []
    s = marker_score("red", 0, 0.8, nodes, inits)
    # anchors: 0 = face at (160,100) 60x60, 1 = exposure at (160,150) 120x30 (input pixels;
    # a 16:9 frame fills the top 180 rows of the letterboxed square)
    boxes = np.array([[[160, 160], [100, 150], [60, 120], [60, 30]]], dtype=np.float32)
    mask = np.array([[[1, 0], [0, 1]]], dtype=np.float32)  # [1, classes, anchors]
    inits += [const("boxes", boxes), const("mask", mask), const("zeros", np.zeros((1, 4, 2)))]
    nodes += [
        helper.make_node("Mul", [s, "mask"], ["scores"]),
        helper.make_node("Mul", [s, "zeros"], ["zb"]),
        helper.make_node("Add", ["zb", "boxes"], ["bx"]),
        helper.make_node("Concat", ["bx", "scores"], ["output0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "marker-detector",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 320, 320])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 6, 2])],
        inits,
    )
    return save(graph, "test-marker-detector")


def age():
    nodes, inits = [], []
    s = marker_score("green", 1, 0.3, nodes, inits)
    young = np.zeros((1, 81), dtype=np.float32)
    young[0, AGE_BINS.index(8)] = 1
    old = np.zeros((1, 81), dtype=np.float32)
    old[0, AGE_BINS.index(40)] = 1
    inits += [
        const("young", young),
        const("old", old),
        const("one", 1.0),
        numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "flat"),
    ]
    nodes += [
        helper.make_node("Reshape", [s, "flat"], ["p"]),
        helper.make_node("Sub", ["one", "p"], ["q"]),
        helper.make_node("Mul", ["p", "young"], ["a"]),
        helper.make_node("Mul", ["q", "old"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["probabilities"]),
    ]
    graph = helper.make_graph(
        nodes,
        "marker-age",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 81])],
        inits,
    )
    return save(graph, "test-marker-age")


def failing_age():
    nodes, inits = [], []
    s = marker_score("green", 1, 0.3, nodes, inits)
    old = np.zeros((1, 81), dtype=np.float32)
    old[0, AGE_BINS.index(40)] = 1
    inits += [
        const("old", old),
        const("zero", 0.0),
        numpy_helper.from_array(np.array([-1, 1], dtype=np.int64), "flat"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one_shape"),
        numpy_helper.from_array(np.array([81], dtype=np.int64), "bins"),
        numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"),
    ]
    nodes += [
        helper.make_node("Reshape", [s, "flat"], ["p"]),
        helper.make_node("Mul", ["p", "zero"], ["z"]),
        helper.make_node("Add", ["z", "old"], ["base"]),
        # [-1, 81 + round(max score)]: [-1, 82] for a green crop, which cannot hold N x 81.
        helper.make_node("ReduceMax", [s], ["m"], keepdims=0),
        helper.make_node("Round", ["m"], ["r"]),
        helper.make_node("Cast", ["r"], ["k"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["k", "one_shape"], ["k1"]),
        helper.make_node("Add", ["k1", "bins"], ["w"]),
        helper.make_node("Concat", ["minus_one", "w"], ["shape"], axis=0),
        helper.make_node("Reshape", ["base", "shape"], ["probabilities"]),
    ]
    graph = helper.make_graph(
        nodes,
        "failing-age",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", 81])],
        inits,
    )
    return save(graph, "test-failing-age")


DETECTOR_MANIFEST = """# Generated by scripts/make_test_models.py: a marker-driven stand-in detector.
name = "test-marker-detector"
kind = "detector"
version = "test"
file = "test-marker-detector.onnx"
sha256 = "{sha}"
[license]
spdx = "Apache-2.0"
note = "generated by the test suite"
[input]
name = "images"
layout = "nchw"
width = 320
height = 320
color = "rgb"
resize = "letterbox"
mean = [0.0, 0.0, 0.0]
scale = 0.003921569
[output]
name = "output0"
decode = "yolov8"
score_threshold = 0.25
iou_threshold = 0.45
labels = ["MARKER_FACE", "MARKER_EXPOSED"]
[signals]
face = ["MARKER_FACE"]
sexual_exposed = ["MARKER_EXPOSED"]
"""

AGE_MANIFEST = """# Generated by scripts/make_test_models.py: a marker-driven stand-in age model.
name = "test-marker-age"
kind = "age"
version = "test"
file = "test-marker-age.onnx"
sha256 = "{sha}"
[license]
spdx = "Apache-2.0"
note = "generated by the test suite"
[input]
name = "images"
layout = "nchw"
width = 64
height = 64
color = "rgb"
resize = "stretch"
mean = [122.781998, 117.000999, 104.297997]
scale = 0.00390625
face_padding = 0.2
[output]
name = "probabilities"
decode = "age_bins"
bins = [{bins}]
minor_below_years = 18.0
"""


def main():
    manifests = CACHE / "test-models"
    manifests.mkdir(parents=True, exist_ok=True)
    (manifests / "test-marker-detector.toml").write_text(DETECTOR_MANIFEST.format(sha=detector()))
    bins = ", ".join(str(b) for b in AGE_BINS)
    (manifests / "test-marker-age.toml").write_text(AGE_MANIFEST.format(sha=age(), bins=bins))
    failing = AGE_MANIFEST.format(sha=failing_age(), bins=bins).replace("test-marker-age", "test-failing-age")
    (manifests / "test-failing-age.toml").write_text(failing.replace("a marker-driven stand-in age model", "an age model that fails at run time on green crops"))
    shutil.copy(ROOT / "models" / "open-nsfw.toml", manifests / "open-nsfw.toml")
    print(f"setup: test models ready in {manifests}")


if __name__ == "__main__":
    sys.exit(main())
