#!/usr/bin/env python3
"""Dump the three reference ONNX models to JSON graphs + one compressed fp16 .npz.

Runs locally (needs the `onnx` package and numpy). Output, next to this file:
  graphs/<model>.json   nodes (op_type, inputs, outputs, attributes), graph
                        inputs/outputs with shapes, initializer table, opset,
                        inferred value_info shapes
  weights.npz           all initializers of all models, compressed; float
                        tensors with more than SMALL_MAX elements stored as
                        float16, small float tensors (anchor/scale constants)
                        kept float32, non-float tensors kept as is
(verify.py then writes ref.npz: benign test images + reference outputs.)

Usage: python export.py [--models-dir DIR]
"""
import argparse
import json
import os
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["nudenet-320n", "open-nsfw", "age-v1"]
SMALL_MAX = 256          # float initializers up to this many elements stay fp32
FP16_MAX = 60000.0       # larger magnitudes would overflow fp16: keep fp32


def attr_to_json(a):
    v = helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return {"s": v.decode()}
    if isinstance(v, onnx.TensorProto):
        arr = numpy_helper.to_array(v)
        return {"t": arr.tolist(), "dtype": arr.dtype.name, "shape": list(arr.shape)}
    if isinstance(v, (list, tuple)):
        if v and isinstance(v[0], bytes):
            return {"strings": [x.decode() for x in v]}
        if v and isinstance(v[0], float):
            return {"floats": list(v)}
        return {"ints": [int(x) for x in v]}
    if isinstance(v, float):
        return {"f": v}
    if isinstance(v, int):
        return {"i": v}
    raise ValueError(f"unsupported attribute {a.name}: {type(v)}")


def vi_to_json(vi):
    tt = vi.type.tensor_type
    dims = []
    for d in tt.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or None))
    return {"name": vi.name, "elem_type": tt.elem_type,
            "dtype": np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
            if tt.elem_type else None, "shape": dims}


def export_model(name, path, arrays):
    model = onnx.load(path)
    try:
        inferred = shape_inference.infer_shapes(model).graph.value_info
    except Exception as e:  # shapes are informative only
        print(f"  shape inference failed: {e}", file=sys.stderr)
        inferred = []
    g = model.graph
    inits = []
    for i, t in enumerate(g.initializer):
        arr = numpy_helper.to_array(t)
        key = f"{name}__{i}"
        stored = arr
        if arr.dtype == np.float32 and arr.size > SMALL_MAX and \
                (arr.size == 0 or float(np.abs(arr).max()) < FP16_MAX):
            stored = arr.astype(np.float16)
        arrays[key] = stored
        inits.append({"name": t.name, "key": key, "dtype": arr.dtype.name,
                      "stored": stored.dtype.name, "shape": list(arr.shape)})
    nodes = []
    for n in g.node:
        if n.domain not in ("", "ai.onnx"):
            raise ValueError(f"custom domain op {n.domain}:{n.op_type}")
        nodes.append({"op": n.op_type, "name": n.name, "inputs": list(n.input),
                      "outputs": list(n.output),
                      "attrs": {a.name: attr_to_json(a) for a in n.attribute}})
    opset = {o.domain or "": o.version for o in model.opset_import}
    init_names = {t.name for t in g.initializer}
    return {
        "name": name,
        "source": os.path.basename(path),
        "ir_version": model.ir_version,
        "opset": opset.get("", opset.get("ai.onnx")),
        "inputs": [vi_to_json(v) for v in g.input if v.name not in init_names],
        "outputs": [vi_to_json(v) for v in g.output],
        "initializers": inits,
        "nodes": nodes,
        "value_info": [vi_to_json(v) for v in inferred],
        "op_types": sorted({n["op"] for n in nodes}),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models-dir", default=os.path.join(os.environ.get("VIGIL_CACHE_DIR", os.path.join(HERE, "..", "..", ".cache", "vigil")), "models"))
    args = ap.parse_args()
    os.makedirs(os.path.join(HERE, "graphs"), exist_ok=True)
    arrays = {}
    for m in MODELS:
        g = export_model(m, os.path.join(args.models_dir, m + ".onnx"), arrays)
        with open(os.path.join(HERE, "graphs", m + ".json"), "w") as f:
            json.dump(g, f, separators=(",", ":"))
        print(f"{m}: {len(g['nodes'])} nodes, ops {g['op_types']}")
    out = os.path.join(HERE, "weights.npz")
    np.savez_compressed(out, **arrays)
    print(f"weights.npz: {os.path.getsize(out) / 2**20:.2f} MiB, {len(arrays)} tensors")


if __name__ == "__main__":
    main()
