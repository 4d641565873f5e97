"""Tiny ONNX interpreter for the three Vigil reference models.

A graph is the JSON written by export.py, the weights come from weights.npz
(stored float16, cast back to float32 here). The same op functions run on two
backends:
  NumpyBackend  reference; proves the graph semantics against onnxruntime
  TorchBackend  thin mapping of the same primitives onto torch (CUDA bench)

Nodes whose value depends only on initializers and input *shapes* (Shape,
Gather on shapes, Range, the YOLO anchor grid, ...) are "static": they are
evaluated once per input shape with the numpy backend and cached, like a
runtime's constant folding. So the torch forward pass issues only tensor work,
never a device->host sync, and can be captured in a CUDA graph.

Needs numpy; torch only for OnnxModule.
"""
import json
import math
import os

try:
    import numpy as np
except ImportError as e:  # pragma: no cover
    raise SystemExit("torch_onnx: numpy is required (pip install numpy): %s" % e)

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["nudenet-320n", "open-nsfw", "age-v1"]

# ONNX TensorProto element types -> numpy dtype names
ONNX_DTYPE = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64",
              9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64"}


# --------------------------------------------------------------------------- loading

def load_graph(name, root=HERE):
    with open(os.path.join(root, "graphs", name + ".json")) as f:
        return json.load(f)


def load_weights(graph, npz=None, root=HERE):
    """Initializers as numpy arrays in their original dtype (fp16 -> fp32)."""
    own = npz is None
    if own:
        npz = np.load(os.path.join(root, "weights.npz"))
    try:
        out = {}
        for ini in graph["initializers"]:
            a = np.asarray(npz[ini["key"]])
            out[ini["name"]] = a.astype(ini["dtype"], copy=False).reshape(ini["shape"])
        return out
    finally:
        if own:
            npz.close()


def make_input(model, imgs_u8):
    """Benign uint8 RGB images [N,H,W,3] (already at the model's size) -> model input."""
    x = imgs_u8.astype(np.float32)
    if model == "nudenet-320n":
        return np.ascontiguousarray((x / 255.0).transpose(0, 3, 1, 2))
    if model == "open-nsfw":  # NHWC, BGR minus the Caffe means
        return np.ascontiguousarray(x[..., ::-1] - np.array([104.0, 117.0, 123.0], np.float32))
    if model == "age-v1":
        return np.ascontiguousarray((x / 255.0).transpose(0, 3, 1, 2))
    raise KeyError(model)


INPUT_HW = {"nudenet-320n": 320, "open-nsfw": 224, "age-v1": 64}


def input_shape(model, batch):
    s = INPUT_HW[model]
    return (batch, s, s, 3) if model == "open-nsfw" else (batch, 3, s, s)


# --------------------------------------------------------------------------- attributes

def attr(node, name, default=None):
    a = node["attrs"].get(name)
    if a is None:
        return default
    for k in ("i", "f", "s", "ints", "floats", "strings"):
        if k in a:
            return a[k]
    if "t" in a:
        return np.array(a["t"], dtype=a["dtype"]).reshape(a["shape"])
    raise ValueError("bad attribute %r" % (a,))


def ints(v):
    """Shape-like value (numpy array, torch CPU tensor, list) -> list of python ints."""
    if v is None:
        return None
    if hasattr(v, "tolist"):
        v = v.tolist()
    if isinstance(v, (int, float)):
        return [int(v)]
    return [int(i) for i in v]


# --------------------------------------------------------------------------- backends

class NumpyBackend:
    name = "numpy"

    @staticmethod
    def asarray(x):
        return np.asarray(x)

    # elementwise
    def add(self, a, b): return np.asarray(a + b)
    def sub(self, a, b): return np.asarray(a - b)
    def mul(self, a, b): return np.asarray(a * b)

    def div(self, a, b):
        a, b = np.asarray(a), np.asarray(b)
        if a.dtype.kind in "iu" and b.dtype.kind in "iu":
            return np.trunc(a / b).astype(a.dtype)
        return np.asarray(a / b)

    def relu(self, x): return np.maximum(x, 0).astype(x.dtype, copy=False)
    def sigmoid(self, x):
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-x))).astype(x.dtype, copy=False)

    def softmax(self, x, axis):
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return (e / e.sum(axis=axis, keepdims=True)).astype(x.dtype, copy=False)

    # layout
    def reshape(self, x, shape): return np.reshape(x, shape)
    def transpose(self, x, perm): return np.ascontiguousarray(np.transpose(x, perm))
    def concat(self, xs, axis): return np.concatenate([np.asarray(x) for x in xs], axis=axis)

    def split(self, x, sizes, axis):
        return np.split(x, np.cumsum(sizes)[:-1], axis=axis)

    def slice(self, x, slices): return np.asarray(x[tuple(slices)])
    def expand(self, x, shape): return np.broadcast_to(x, shape).copy()
    def take(self, x, idx, axis): return np.take(x, idx, axis=axis)
    def cast(self, x, dtype): return np.asarray(x).astype(dtype)
    def repeat(self, x, factor, axis): return np.repeat(x, factor, axis=axis)

    def pad(self, x, begins, ends, value):
        assert min(begins + ends) >= 0, "negative pads not implemented"
        return np.pad(x, list(zip(begins, ends)), mode="constant", constant_values=value)

    # nn
    def matmul(self, a, b): return np.matmul(a, b)

    def conv2d(self, x, w, b, stride, pad, dilation, group):
        x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
        o, cg, kh, kw = w.shape
        ekh, ekw = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
        win = np.lib.stride_tricks.sliding_window_view(x, (ekh, ekw), axis=(2, 3))
        win = win[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]
        og = o // group
        outs = []
        for g in range(group):
            wg = win[:, g * cg:(g + 1) * cg]
            outs.append(np.tensordot(wg, w[g * og:(g + 1) * og], axes=([1, 4, 5], [1, 2, 3])))
        y = np.concatenate(outs, axis=-1).transpose(0, 3, 1, 2)
        if b is not None:
            y = y + b.reshape(1, -1, 1, 1)
        return np.ascontiguousarray(y, dtype=x.dtype)

    def _windows(self, x, kernel, stride, dilation):
        ekh = (kernel[0] - 1) * dilation[0] + 1
        ekw = (kernel[1] - 1) * dilation[1] + 1
        win = np.lib.stride_tricks.sliding_window_view(x, (ekh, ekw), axis=(2, 3))
        return win[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]

    def maxpool2d(self, x, kernel, stride, pad, dilation, ceil_mode):
        assert not ceil_mode, "ceil_mode not implemented in the numpy backend"
        x = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])),
                   constant_values=-np.inf)
        return self._windows(x, kernel, stride, dilation).max(axis=(4, 5))

    def avgpool2d(self, x, kernel, stride, pad, ceil_mode, count_include_pad):
        assert not ceil_mode, "ceil_mode not implemented in the numpy backend"
        p = ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1]))
        s = self._windows(np.pad(x, p), kernel, stride, (1, 1)).sum(axis=(4, 5))
        if count_include_pad or not any(pad):
            return (s / (kernel[0] * kernel[1])).astype(x.dtype)
        ones = np.pad(np.ones((1, 1) + x.shape[2:], x.dtype), p)
        cnt = self._windows(ones, kernel, stride, (1, 1)).sum(axis=(4, 5))
        return (s / cnt).astype(x.dtype)

    def global_avgpool(self, x): return x.mean(axis=(2, 3), keepdims=True)

    def upsample_nearest(self, x, factors):
        for ax, f in enumerate(factors):
            if f != 1:
                x = np.repeat(x, f, axis=ax)
        return x


class TorchBackend:
    """Same primitives on torch tensors. Static values arrive as numpy (ints)."""
    name = "torch"

    def __init__(self):
        import torch
        import torch.nn.functional as F
        self.torch, self.F = torch, F

    def _pair(self, a, b):
        t = self.torch
        if isinstance(a, (int, float)) or isinstance(b, (int, float)):
            return a, b  # python scalars: no host->device copy
        if not isinstance(a, t.Tensor):
            a = t.as_tensor(np.asarray(a), device=b.device)
            if a.is_floating_point() and b.is_floating_point():
                a = a.to(b.dtype)
        elif not isinstance(b, t.Tensor):
            b = t.as_tensor(np.asarray(b), device=a.device)
            if a.is_floating_point() and b.is_floating_point():
                b = b.to(a.dtype)
        return a, b

    def add(self, a, b): a, b = self._pair(a, b); return a + b
    def sub(self, a, b): a, b = self._pair(a, b); return a - b
    def mul(self, a, b): a, b = self._pair(a, b); return a * b

    def div(self, a, b):
        a, b = self._pair(a, b)
        if not a.is_floating_point() and not b.is_floating_point():
            return self.torch.div(a, b, rounding_mode="trunc")
        return a / b

    def relu(self, x): return self.torch.relu(x)
    def sigmoid(self, x): return self.torch.sigmoid(x)
    def softmax(self, x, axis): return self.torch.softmax(x, dim=axis)

    def reshape(self, x, shape): return x.reshape(shape)
    def transpose(self, x, perm): return x.permute(*perm)

    def concat(self, xs, axis):
        t = self.torch
        ref = next(x for x in xs if isinstance(x, t.Tensor))
        xs = [x if isinstance(x, t.Tensor) else self._pair(x, ref)[0] for x in xs]
        return t.cat(xs, dim=axis)

    def split(self, x, sizes, axis): return list(self.torch.split(x, list(sizes), dim=axis))

    def slice(self, x, slices):
        assert all(s.step is None or s.step > 0 for s in slices), "negative Slice steps"
        return x[tuple(slices)]

    def expand(self, x, shape): return x.expand(*shape)

    def take(self, x, idx, axis):
        idx = np.asarray(idx)
        i = self.torch.as_tensor(idx.reshape(-1), device=x.device)
        y = x.index_select(axis, i)
        return y.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])

    def cast(self, x, dtype): return x.to(getattr(self.torch, dtype))
    def repeat(self, x, factor, axis): return x.repeat_interleave(factor, dim=axis)

    def pad(self, x, begins, ends, value):
        flat = []
        for b, e in zip(reversed(begins), reversed(ends)):
            flat += [b, e]
        return self.F.pad(x, flat, mode="constant", value=value)

    def matmul(self, a, b): return self.torch.matmul(a, b)

    def conv2d(self, x, w, b, stride, pad, dilation, group):
        return self.F.conv2d(x, w, b, stride=tuple(stride), padding=tuple(pad),
                             dilation=tuple(dilation), groups=group)

    def maxpool2d(self, x, kernel, stride, pad, dilation, ceil_mode):
        return self.F.max_pool2d(x, tuple(kernel), tuple(stride), tuple(pad),
                                 tuple(dilation), ceil_mode=bool(ceil_mode))

    def avgpool2d(self, x, kernel, stride, pad, ceil_mode, count_include_pad):
        return self.F.avg_pool2d(x, tuple(kernel), tuple(stride), tuple(pad),
                                 ceil_mode=bool(ceil_mode),
                                 count_include_pad=bool(count_include_pad))

    def global_avgpool(self, x): return x.mean(dim=(2, 3), keepdim=True)

    def upsample_nearest(self, x, factors):
        assert factors[0] == 1 and factors[1] == 1 and x.dim() == 4
        # integer factors: floor(dst / f) == torch "nearest" exactly
        return self.F.interpolate(x, scale_factor=(float(factors[2]), float(factors[3])),
                                  mode="nearest")


# --------------------------------------------------------------------------- ops
# Every op: fn(B, node, opset, *inputs) -> value or list of values.
# Missing optional inputs arrive as None.

OPS = {}


def op(*names):
    def deco(fn):
        for n in names:
            OPS[n] = fn
        return fn
    return deco


def _norm_axis(axis, rank):
    return axis + rank if axis < 0 else axis


def _spatial_pads(node, in_hw, kernel, stride, dilation):
    """-> (begins, ends) for the two spatial dims, honouring auto_pad."""
    auto = attr(node, "auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        p = attr(node, "pads", [0, 0, 0, 0])
        return list(p[:2]), list(p[2:])
    if auto == "VALID":
        return [0, 0], [0, 0]
    begins, ends = [], []
    for i in range(2):
        out = -(-in_hw[i] // stride[i])
        total = max(0, (out - 1) * stride[i] + (kernel[i] - 1) * dilation[i] + 1 - in_hw[i])
        small, big = total // 2, total - total // 2
        begins.append(small if auto == "SAME_UPPER" else big)
        ends.append(big if auto == "SAME_UPPER" else small)
    return begins, ends


@op("Conv")
def op_conv(B, n, opset, x, w, b=None):
    k = list(w.shape[2:])
    assert len(k) == 2, "only 2-D Conv"
    stride = attr(n, "strides", [1, 1])
    dil = attr(n, "dilations", [1, 1])
    beg, end = _spatial_pads(n, list(x.shape[2:]), k, stride, dil)
    if beg != end:
        x = B.pad(x, [0, 0] + beg, [0, 0] + end, 0.0)
        beg = [0, 0]
    return B.conv2d(x, w, b, stride, beg, dil, attr(n, "group", 1))


@op("MaxPool")
def op_maxpool(B, n, opset, x):
    k = attr(n, "kernel_shape")
    assert len(k) == 2 and attr(n, "storage_order", 0) == 0 and len(n["outputs"]) == 1
    stride = attr(n, "strides", [1, 1])
    dil = attr(n, "dilations", [1, 1])
    beg, end = _spatial_pads(n, list(x.shape[2:]), k, stride, dil)
    if beg != end:
        x = B.pad(x, [0, 0] + beg, [0, 0] + end, -math.inf)
        beg = [0, 0]
    return B.maxpool2d(x, k, stride, beg, dil, attr(n, "ceil_mode", 0))


@op("AveragePool")
def op_avgpool(B, n, opset, x):
    k = attr(n, "kernel_shape")
    assert len(k) == 2
    stride = attr(n, "strides", [1, 1])
    beg, end = _spatial_pads(n, list(x.shape[2:]), k, stride, [1, 1])
    if beg != end:
        raise NotImplementedError("asymmetric AveragePool pads")
    return B.avgpool2d(x, k, stride, beg, attr(n, "ceil_mode", 0),
                       attr(n, "count_include_pad", 0))


@op("GlobalAveragePool")
def op_gap(B, n, opset, x):
    return B.global_avgpool(x)


@op("Relu")
def op_relu(B, n, opset, x): return B.relu(x)


@op("Sigmoid")
def op_sigmoid(B, n, opset, x): return B.sigmoid(x)


@op("Add")
def op_add(B, n, opset, a, b): return B.add(a, b)


@op("Sub")
def op_sub(B, n, opset, a, b): return B.sub(a, b)


@op("Mul")
def op_mul(B, n, opset, a, b): return B.mul(a, b)


@op("Div")
def op_div(B, n, opset, a, b): return B.div(a, b)


@op("Softmax")
def op_softmax(B, n, opset, x):
    rank = len(x.shape)
    if opset >= 13:
        return B.softmax(x, _norm_axis(attr(n, "axis", -1), rank))
    axis = _norm_axis(attr(n, "axis", 1), rank)
    shape = list(x.shape)
    if axis == rank - 1:
        return B.softmax(x, axis)
    inner = int(math.prod(shape[axis:]))
    y = B.softmax(B.reshape(x, [int(math.prod(shape[:axis])), inner]), 1)
    return B.reshape(y, shape)


@op("MatMul")
def op_matmul(B, n, opset, a, b): return B.matmul(a, b)


@op("Gemm")
def op_gemm(B, n, opset, a, b, c=None):
    if attr(n, "transA", 0):
        a = B.transpose(a, [1, 0])
    if attr(n, "transB", 0):
        b = B.transpose(b, [1, 0])
    y = B.matmul(a, b)
    alpha, beta = attr(n, "alpha", 1.0), attr(n, "beta", 1.0)
    if alpha != 1.0:
        y = B.mul(y, alpha)
    if c is not None:
        y = B.add(y, c if beta == 1.0 else B.mul(c, beta))
    return y


@op("Flatten")
def op_flatten(B, n, opset, x):
    shape = list(x.shape)
    axis = _norm_axis(attr(n, "axis", 1), len(shape))
    return B.reshape(x, [int(math.prod(shape[:axis])), int(math.prod(shape[axis:]))])


def _reshape_target(in_shape, shape, allowzero):
    out = list(shape)
    for i, d in enumerate(out):
        if d == 0 and not allowzero:
            out[i] = in_shape[i]
    if -1 in out:
        known = int(math.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(math.prod(in_shape)) // known if known else 0
    return out


@op("Reshape")
def op_reshape(B, n, opset, x, shape):
    return B.reshape(x, _reshape_target(list(x.shape), ints(shape), attr(n, "allowzero", 0)))


@op("Transpose")
def op_transpose(B, n, opset, x):
    perm = attr(n, "perm") or list(reversed(range(len(x.shape))))
    return B.transpose(x, perm)


@op("Concat")
def op_concat(B, n, opset, *xs):
    rank = max(len(x.shape) for x in xs)
    return B.concat(list(xs), _norm_axis(attr(n, "axis"), rank))


@op("Split")
def op_split(B, n, opset, x, split=None):
    axis = _norm_axis(attr(n, "axis", 0), len(x.shape))
    sizes = ints(split) if split is not None else attr(n, "split")
    if sizes is None:
        k = len(n["outputs"])
        dim = x.shape[axis]
        step = -(-dim // k)
        sizes = [step] * (k - 1) + [dim - step * (k - 1)]
    return B.split(x, sizes, axis)


@op("Slice")
def op_slice(B, n, opset, x, starts=None, ends=None, axes=None, steps=None):
    if opset < 10:
        starts, ends, axes = attr(n, "starts"), attr(n, "ends"), attr(n, "axes")
    starts, ends = ints(starts), ints(ends)
    rank = len(x.shape)
    axes = [_norm_axis(a, rank) for a in ints(axes)] if axes is not None else list(range(len(starts)))
    steps = ints(steps) if steps is not None else [1] * len(starts)
    sl = [slice(None)] * rank
    big = 2 ** 62
    for s, e, a, st in zip(starts, ends, axes, steps):
        e = None if (st > 0 and e >= big) or (st < 0 and e <= -big) else e
        sl[a] = slice(s, e, st)
    return B.slice(x, sl)


@op("Unsqueeze")
def op_unsqueeze(B, n, opset, x, axes=None):
    axes = ints(axes) if axes is not None else attr(n, "axes")
    shape = list(x.shape)
    out_rank = len(shape) + len(axes)
    for a in sorted(_norm_axis(a, out_rank) for a in axes):
        shape.insert(a, 1)
    return B.reshape(x, shape)


@op("Expand")
def op_expand(B, n, opset, x, shape):
    return B.expand(x, list(np.broadcast_shapes(tuple(x.shape), tuple(ints(shape)))))


@op("Gather")
def op_gather(B, n, opset, x, idx):
    axis = _norm_axis(attr(n, "axis", 0), len(x.shape))
    idx = np.asarray(idx)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return B.take(x, idx, axis)


@op("Pad")
def op_pad(B, n, opset, x, pads=None, value=None, axes=None):
    mode = attr(n, "mode", "constant")
    if mode != "constant":
        raise NotImplementedError("Pad mode " + mode)
    rank = len(x.shape)
    if opset < 11:
        pads, value = attr(n, "pads"), attr(n, "value", 0.0)
    pads = ints(pads)
    value = 0.0 if value is None else float(_host(value).reshape(-1)[0])
    axes = [_norm_axis(a, rank) for a in ints(axes)] if axes is not None else list(range(rank))
    k = len(axes)
    begins, ends = [0] * rank, [0] * rank
    for i, a in enumerate(axes):
        begins[a], ends[a] = pads[i], pads[i + k]
    return B.pad(x, begins, ends, value)


@op("Resize")
def op_resize(B, n, opset, x, roi=None, scales=None, sizes=None):
    mode = attr(n, "mode", "nearest")
    ctm = attr(n, "coordinate_transformation_mode", "half_pixel")
    nm = attr(n, "nearest_mode", "round_prefer_floor")
    if mode != "nearest" or ctm != "asymmetric" or nm != "floor":
        raise NotImplementedError("Resize %s/%s/%s" % (mode, ctm, nm))
    in_shape = list(x.shape)
    if sizes is not None and len(ints(sizes)):
        out = ints(sizes)
        sc = [o / i for o, i in zip(out, in_shape)]
    else:
        sc = [float(s) for s in np.asarray(scales).reshape(-1)]
        out = [int(math.floor(i * s)) for i, s in zip(in_shape, sc)]
    if all(float(s).is_integer() and o == i * int(s) for s, o, i in zip(sc, out, in_shape)):
        return B.upsample_nearest(x, [int(s) for s in sc])
    for ax, (i, o, s) in enumerate(zip(in_shape, out, sc)):  # general: index gather
        if o != i:
            idx = np.minimum(np.floor(np.arange(o) / s).astype(np.int64), i - 1)
            x = B.take(x, idx, ax)
    return x


# --- shape ops: always computed on host values (static in these graphs)

def _host(x):
    if isinstance(x, (np.ndarray, list, tuple, int, float)) or np.isscalar(x):
        return np.asarray(x)
    return x.detach().cpu().numpy()  # torch (only if a shape op ever turns dynamic)


@op("Shape")
def op_shape(B, n, opset, x):
    s = np.array(list(x.shape), dtype=np.int64)
    start, end = attr(n, "start", 0), attr(n, "end", None)
    return s[start:end] if (start or end is not None) else s


@op("Cast")
def op_cast(B, n, opset, x):
    return B.cast(x, ONNX_DTYPE[attr(n, "to")])


@op("Range")
def op_range(B, n, opset, start, limit, delta):
    s, l, d = _host(start), _host(limit), _host(delta)
    return np.arange(s.item(), l.item(), d.item()).astype(s.dtype)


@op("ConstantOfShape")
def op_cos(B, n, opset, shape):
    v = attr(n, "value")
    v = np.zeros(1, np.float32) if v is None else v
    return np.full(ints(_host(shape)), v.reshape(-1)[0], dtype=v.dtype)


@op("Constant")
def op_constant(B, n, opset):
    v = attr(n, "value")
    if v is None:
        for k, dt in (("value_float", np.float32), ("value_int", np.int64),
                      ("value_floats", np.float32), ("value_ints", np.int64)):
            if k in n["attrs"]:
                return np.array(attr(n, k), dtype=dt)
        raise NotImplementedError("Constant attribute")
    return v


# Ops that only ever see host values in these graphs; used to decide what is static.
SHAPE_OPS = {"Shape"}

# Input positions that are shape-like parameters, read on the host (never device buffers).
HOST_ARGS = {"Reshape": {1}, "Split": {1}, "Slice": {1, 2, 3, 4}, "Unsqueeze": {1},
             "Squeeze": {1}, "Expand": {1}, "Pad": {1, 2, 3}, "Resize": {1, 2, 3},
             "Gather": {1}, "Range": {0, 1, 2}, "ConstantOfShape": {0}}


def _host_form(v):
    """Static value for a host parameter slot: python scalars/lists (compile friendly)."""
    return np.asarray(v).tolist()


# --------------------------------------------------------------------------- executor

class Executor:
    """Runs a graph on backend B.

    First call for an input signature: every node runs; static nodes (shape
    arithmetic, anchor grids, constants) on numpy. Meanwhile a plan is recorded:
    the dynamic nodes only, with static arguments resolved to constants (device
    tensors for data slots, python lists for shape slots). Later calls with the
    same signature run only that plan: no numpy, no host<->device traffic."""

    def __init__(self, graph, weights):
        self.graph = graph
        self.opset = int(graph["opset"])
        self.input_names = [i["name"] for i in graph["inputs"]]
        self.output_names = [o["name"] for o in graph["outputs"]]
        self.weights = weights                        # name -> numpy
        missing = sorted({nd["op"] for nd in graph["nodes"]} - set(OPS))
        if missing:
            raise NotImplementedError("ops not implemented: %s" % missing)
        static = set(weights)
        self.static_node = []
        dyn_inits = set()
        for nd in graph["nodes"]:
            ins = [i for i in nd["inputs"] if i]
            is_static = nd["op"] in SHAPE_OPS or nd["op"] == "Constant" or all(i in static for i in ins)
            self.static_node.append(is_static)
            if is_static:
                static.update(nd["outputs"])
            else:
                host = HOST_ARGS.get(nd["op"], ())
                dyn_inits.update(i for pos, i in enumerate(nd["inputs"])
                                 if i in weights and pos not in host)
        self.static_names = static
        self.dynamic_inits = sorted(dyn_inits)       # initializers a backend must hold
        self.n_static = sum(self.static_node)

    def run(self, B, inputs, dyn_weights, cache, convert):
        """inputs: list in graph order; dyn_weights: name -> backend tensor (data
        initializers); cache: dict for this input signature (holds the plan);
        convert(np_array) -> backend value for static values in data slots."""
        plan = cache.get("plan")
        if plan is None:
            return self._first_run(B, inputs, dyn_weights, cache, convert)
        steps, out_specs = plan
        env = dict(zip(self.input_names, inputs))
        opset = self.opset
        for fn, nd, specs in steps:
            args = [None if sp is None else env[sp[1]] if sp[0] == "e"
                    else dyn_weights[sp[1]] if sp[0] == "w" else sp[1] for sp in specs]
            outs = fn(B, nd, opset, *args)
            if isinstance(outs, list):
                for name, v in zip(nd["outputs"], outs):
                    env[name] = v
            else:
                env[nd["outputs"][0]] = outs
        return [env[sp[1]] if sp[0] == "e" else sp[1] for sp in out_specs]

    def _first_run(self, B, inputs, dyn_weights, cache, convert):
        NP = NUMPY
        env = dict(zip(self.input_names, inputs))
        svals = {}
        conv = {}
        opset = self.opset

        def static_value(name):
            return svals[name] if name in svals else self.weights[name]

        def spec(name, host):
            if not name:
                return None
            if name in env:
                return ("e", name)
            if name in dyn_weights and not host:
                return ("w", name)
            key = (name, host)
            if key not in conv:
                v = static_value(name)
                conv[key] = _host_form(v) if host else convert(v)
            return ("c", conv[key])

        steps = []
        for nd, is_static in zip(self.graph["nodes"], self.static_node):
            if is_static:
                args = [(svals[i] if i in svals else self.weights[i] if i in self.weights
                         else env[i]) if i else None for i in nd["inputs"]]
                outs = OPS[nd["op"]](NP, nd, opset, *args)
                outs = outs if isinstance(outs, list) else [outs]
                for name, v in zip(nd["outputs"], outs):
                    svals[name] = np.asarray(v)
                continue
            host = HOST_ARGS.get(nd["op"], ())
            specs = [spec(i, pos in host) for pos, i in enumerate(nd["inputs"])]
            args = [None if sp is None else env[sp[1]] if sp[0] == "e"
                    else dyn_weights[sp[1]] if sp[0] == "w" else sp[1] for sp in specs]
            fn = OPS[nd["op"]]
            outs = fn(B, nd, opset, *args)
            steps.append((fn, nd, specs))
            outs = outs if isinstance(outs, list) else [outs]
            for name, v in zip(nd["outputs"], outs):
                if name:
                    env[name] = v
        out_specs = [spec(o, False) for o in self.output_names]
        cache["plan"] = (steps, out_specs)
        cache["n_static_values"] = len(svals)
        return [env[sp[1]] if sp[0] == "e" else sp[1] for sp in out_specs]


NUMPY = NumpyBackend()


def run_numpy(graph, weights, inputs, executor=None, cache=None):
    """Reference run: all nodes on numpy. Returns list of outputs."""
    ex = executor or Executor(graph, weights)
    return ex.run(NUMPY, list(inputs), {k: weights[k] for k in ex.dynamic_inits},
                  {} if cache is None else cache, lambda a: a)


# --------------------------------------------------------------------------- torch module

def build_torch_module(graph, weights):
    import torch

    class OnnxModule(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ex = Executor(graph, weights)
            self.backend = TorchBackend()
            self._names = {}
            for i, name in enumerate(self.ex.dynamic_inits):
                a = weights[name]
                t = torch.from_numpy(np.ascontiguousarray(a))
                attr_name = "w%d" % i
                self.register_buffer(attr_name, t)
                self._names[name] = attr_name
            self._ref = next((self._names[n] for n in self.ex.dynamic_inits
                              if weights[n].dtype.kind == "f"), None)
            self._cache = {}

        def float_dtype(self):
            return getattr(self, self._ref).dtype if self._ref else torch.float32

        def forward(self, *xs):
            fdt = self.float_dtype()
            dev = xs[0].device
            key = (tuple(tuple(x.shape) for x in xs), str(dev), str(fdt))
            cache = self._cache.setdefault(key, {})

            def convert(a):
                if a.dtype.kind == "f":
                    return torch.as_tensor(a, device=dev).to(fdt)
                return a  # ints stay on the host (shapes, split sizes, indices)

            dw = {n: getattr(self, a) for n, a in self._names.items()}
            outs = self.ex.run(self.backend, list(xs), dw, cache, convert)
            return outs[0] if len(outs) == 1 else tuple(outs)

    return OnnxModule()


# --------------------------------------------------------------------------- onnx rebuild

def rebuild_onnx(graph, weights):
    """JSON + (rounded) weights -> onnx.ModelProto. Needs the `onnx` package."""
    import onnx
    from onnx import helper, numpy_helper

    def mk_attr(k, a):
        if "i" in a:
            return helper.make_attribute(k, a["i"])
        if "f" in a:
            return helper.make_attribute(k, a["f"])
        if "s" in a:
            return helper.make_attribute(k, a["s"].encode())
        if "ints" in a:
            return helper.make_attribute(k, a["ints"], attr_type=onnx.AttributeProto.INTS)
        if "floats" in a:
            return helper.make_attribute(k, a["floats"], attr_type=onnx.AttributeProto.FLOATS)
        if "strings" in a:
            return helper.make_attribute(k, [s.encode() for s in a["strings"]])
        if "t" in a:
            return helper.make_attribute(k, numpy_helper.from_array(
                np.array(a["t"], dtype=a["dtype"]).reshape(a["shape"])))
        raise ValueError(a)

    nodes = []
    for nd in graph["nodes"]:
        node = helper.make_node(nd["op"], nd["inputs"], nd["outputs"], name=nd["name"])
        node.attribute.extend(mk_attr(k, a) for k, a in nd["attrs"].items())
        nodes.append(node)

    def vi(v):
        return helper.make_tensor_value_info(v["name"], v["elem_type"], v["shape"])

    inits = [numpy_helper.from_array(weights[i["name"]], i["name"]) for i in graph["initializers"]]
    g = helper.make_graph(nodes, graph["name"], [vi(v) for v in graph["inputs"]],
                          [vi(v) for v in graph["outputs"]], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", int(graph["opset"]))])
    m.ir_version = int(graph["ir_version"])
    return m
