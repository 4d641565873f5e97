#!/usr/bin/env python3
"""GPU inference timings of the three Vigil reference models, executed by PyTorch.

Models are rebuilt by torch_onnx.py from graphs/*.json + weights.npz (fp16-stored
weights, cast back to fp32). Run from anywhere; writes $OUT/gpu-figures.json
(incrementally) and $OUT/gpu-figures.md. Whole run is budgeted (--budget-s).

Stages, in priority order (later ones are skipped when the budget runs out):
  0 check     torch output vs numpy-backend reference (ref.npz): fp32 with TF32
              off, fp32 (cuDNN default, TF32 on), fp16
  A eager     fp32 (cuDNN defaults: TF32 allowed) and fp16 (module.half())
  B cudagraph fp16 and fp32, whole forward captured with torch.cuda.graph
  C extra     fp16 channels_last eager; fp32 with TF32 disabled
  D ort-cpu   onnxruntime CPU EP on the same rebuilt model, only if `onnx` imports
  E compile   torch.compile (default mode) fp16, in a child process, <= 60-90 s

Usage: python3 gpu_bench.py [--device cuda] [--quick] [--budget-s 330] [--out DIR]
"""
import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback

T0 = time.time()
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

try:
    import numpy as np
except ImportError:
    sys.exit("gpu_bench: numpy is required next to torch (pip install numpy); not found for "
             + sys.executable)
try:
    import torch
except ImportError:
    sys.exit("gpu_bench: torch not importable by " + sys.executable)

import torch_onnx as T

BATCHES = {"nudenet-320n": [1, 8, 32, 128], "open-nsfw": [1, 8, 32, 128],
           "age-v1": [1, 8, 32, 128, 256]}


def log(msg):
    print("[%6.1fs] %s" % (time.time() - T0, msg), flush=True)


class Results:
    def __init__(self, out_dir):
        self.path = os.path.join(out_dir, "gpu-figures.json")
        self.data = {"env": {}, "check": {}, "runs": [], "memory": {}, "notes": [],
                     "errors": []}

    def save(self):
        self.data["elapsed_s"] = round(time.time() - T0, 1)
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)

    def note(self, msg):
        log("NOTE " + msg)
        self.data["notes"].append(msg)
        self.save()

    def error(self, where, exc):
        tb = traceback.format_exc(limit=6)
        log("ERROR in %s: %r\n%s" % (where, exc, tb))
        self.data["errors"].append({"where": where, "error": repr(exc), "traceback": tb})
        self.save()


def env_info(dev):
    e = {"python": sys.version.split()[0], "python_full": sys.version,
         "platform": platform.platform(), "torch": torch.__version__,
         "cuda_runtime": torch.version.cuda, "numpy": np.__version__,
         "cpu_count": os.cpu_count(), "device": str(dev)}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        e.update({"gpu": torch.cuda.get_device_name(dev),
                  "gpu_capability": "%d.%d" % torch.cuda.get_device_capability(dev),
                  "gpu_total_memory_gib": round(p.total_memory / 2**30, 1),
                  "cudnn": torch.backends.cudnn.version(),
                  "cudnn_benchmark": torch.backends.cudnn.benchmark,
                  "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
                  "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32})
        try:
            e["nvidia_smi"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version,clocks.max.sm,power.limit",
                 "--format=csv,noheader"], capture_output=True, text=True, timeout=10).stdout.strip()
        except Exception as ex:  # noqa: BLE001
            e["nvidia_smi"] = repr(ex)
    return e


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def pct(xs, q):
    return float(np.percentile(np.asarray(xs), q)) if xs else None


def measure(fn, bs, dev, lat_s, tp_s, quick):
    """fn() runs one batch. Returns timing dict (ms per batch, images/s)."""
    t = time.perf_counter()
    fn()
    sync(dev)
    first_ms = (time.perf_counter() - t) * 1e3            # includes cuDNN autotune
    for _ in range(2 if quick else 5):
        fn()
    sync(dev)
    # latency: one batch at a time, synchronised
    ev_ms, wall_ms = [], []
    use_ev = dev.type == "cuda"
    t_end = time.perf_counter() + lat_s
    max_it = 10 if quick else 300
    while len(wall_ms) < max_it and (len(wall_ms) < 5 or time.perf_counter() < t_end):
        if use_ev:
            s_ev, e_ev = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t = time.perf_counter()
            s_ev.record()
            fn()
            e_ev.record()
            e_ev.synchronize()
            wall_ms.append((time.perf_counter() - t) * 1e3)
            ev_ms.append(s_ev.elapsed_time(e_ev))
        else:
            t = time.perf_counter()
            fn()
            wall_ms.append((time.perf_counter() - t) * 1e3)
    # throughput: back-to-back batches, one sync at the end
    p50 = pct(wall_ms, 50)
    n = max(3, min(1000, int(tp_s * 1e3 / max(p50, 1e-3))))
    if quick:
        n = min(n, 5)
    sync(dev)
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync(dev)
    tp_wall = time.perf_counter() - t
    r = {"batch": bs, "first_call_ms": round(first_ms, 3), "lat_iters": len(wall_ms),
         "p50_ms": round(pct(ev_ms or wall_ms, 50), 4), "p95_ms": round(pct(ev_ms or wall_ms, 95), 4),
         "wall_p50_ms": round(p50, 4), "wall_p95_ms": round(pct(wall_ms, 95), 4),
         "tp_iters": n, "tp_ms_per_batch": round(tp_wall / n * 1e3, 4),
         "images_per_s": round(n * bs / tp_wall, 1),
         "latency_timer": "cuda_events" if ev_ms else "perf_counter"}
    return r


def make_x(model, bs, dev, dtype, channels_last=False):
    g = torch.Generator(device="cpu").manual_seed(bs)
    x = torch.rand(T.input_shape(model, bs), generator=g)
    if model == "open-nsfw":
        x = x * 255.0 - 120.0
    x = x.to(dev, dtype)
    if channels_last and x.dim() == 4 and model != "open-nsfw":
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class Bench:
    def __init__(self, args):
        self.args = args
        self.dev = torch.device(args.device)
        self.res = Results(args.out)
        self.deadline = T0 + args.budget_s
        self.npz = np.load(os.path.join(HERE, "weights.npz"))
        self.graphs = {m: T.load_graph(m) for m in args.models}
        self.weights = {}

    def left(self):
        return self.deadline - time.time()

    def w(self, m):
        if m not in self.weights:
            self.weights[m] = T.load_weights(self.graphs[m], self.npz)
        return self.weights[m]

    def module(self, m, mode):
        mod = T.build_torch_module(self.graphs[m], self.w(m)).to(self.dev).eval()
        if "fp16" in mode:
            mod = mod.half()
        if "cl" in mode.split("-"):
            mod = mod.to(memory_format=torch.channels_last)
        return mod

    @staticmethod
    def dtype(mode):
        return torch.float16 if "fp16" in mode else torch.float32

    # ---------------------------------------------------------------- check
    def check(self):
        ref = np.load(os.path.join(HERE, "ref.npz"))
        for m in self.args.models:
            for mode in ("fp32-notf32", "fp32", "fp16"):
                tf32_prev = torch.backends.cudnn.allow_tf32
                torch.backends.cudnn.allow_tf32 = "notf32" not in mode and tf32_prev
                try:
                    mod = self.module(m, mode)
                    x = torch.from_numpy(T.make_input(m, ref["img_" + m])).to(self.dev, self.dtype(mode))
                    with torch.inference_mode():
                        y = mod(x).float().cpu().numpy()
                        y2 = mod(x).float().cpu().numpy()           # cached static path
                    exp, orig = ref["out_" + m], ref["ortorig_" + m]
                    d = float(np.abs(y - exp).max())
                    c = {"max_abs_diff_vs_numpy_ref": d,
                         "max_abs_diff_vs_ort_original": float(np.abs(y - orig).max()),
                         "ref_max_abs": float(np.abs(exp).max()),
                         "second_call_max_abs_diff": float(np.abs(y - y2).max()),
                         "shape_ok": list(y.shape) == list(exp.shape)}
                    if m == "nudenet-320n":
                        c["scores_max_abs_diff_vs_numpy_ref"] = float(np.abs(y[:, 4:] - exp[:, 4:]).max())
                        c["boxes_max_abs_diff_vs_numpy_ref"] = float(np.abs(y[:, :4] - exp[:, :4]).max())
                    else:
                        c["argmax_equal"] = bool((y.argmax(1) == exp.argmax(1)).all())
                    rel = d / max(1.0, c["ref_max_abs"])
                    tol = {"fp32-notf32": 1e-3, "fp32": 1e-2, "fp16": 2e-2}[mode]
                    c["pass"] = bool(c["shape_ok"] and rel < tol)
                    c["rel_tol"] = tol
                    self.res.data["check"]["%s/%s" % (m, mode)] = c
                    log("check %s %s: max|diff| %.3g (ref max %.3g) pass=%s" %
                        (m, mode, d, c["ref_max_abs"], c["pass"]))
                    del mod
                except Exception as e:  # noqa: BLE001
                    self.res.error("check %s %s" % (m, mode), e)
                finally:
                    torch.backends.cudnn.allow_tf32 = tf32_prev
        self.res.save()

    # ---------------------------------------------------------------- torch runs
    def run_mode(self, m, mode, graphed=False, batches=None):
        a = self.args
        batches = batches or a.batches or BATCHES[m]
        cl = "cl" in mode.split("-")
        tf32_prev = torch.backends.cudnn.allow_tf32
        if "notf32" in mode:
            torch.backends.cudnn.allow_tf32 = False
        try:
            if self.dev.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(self.dev)
            mod = self.module(m, mode)
            for bs in batches:
                if self.left() < 8:
                    self.res.note("budget: skipped %s %s%s bs>=%d" % (m, mode, " graph" if graphed else "", bs))
                    break
                try:
                    x = make_x(m, bs, self.dev, self.dtype(mode), cl)
                    with torch.inference_mode():
                        if graphed:
                            fn, keep = self.graph_fn(mod, x)
                        else:
                            fn = (lambda mod=mod, x=x: mod(x))
                        r = measure(fn, bs, self.dev, a.lat_s, a.tp_s, a.quick)
                    r.update({"model": m, "mode": mode, "executor": "cudagraph" if graphed else "eager"})
                    self.res.data["runs"].append(r)
                    self.res.save()
                    log("%-13s %-12s %-9s bs%-4d p50 %8.3f ms p95 %8.3f ms  %9.1f img/s" %
                        (m, mode, r["executor"], bs, r["p50_ms"], r["p95_ms"], r["images_per_s"]))
                    if graphed:
                        del fn, keep
                except Exception as e:  # noqa: BLE001
                    self.res.error("%s %s graph=%s bs%d" % (m, mode, graphed, bs), e)
                    if "out of memory" in str(e).lower():
                        break
            if self.dev.type == "cuda":
                key = "%s/%s%s" % (m, mode, "/cudagraph" if graphed else "")
                self.res.data["memory"][key] = {
                    "max_memory_allocated_mib": round(torch.cuda.max_memory_allocated(self.dev) / 2**20, 1),
                    "max_memory_reserved_mib": round(torch.cuda.max_memory_reserved(self.dev) / 2**20, 1)}
                per = self.res.data.setdefault("memory_per_model_max_allocated_mib", {})
                per[m] = max(per.get(m, 0.0), self.res.data["memory"][key]["max_memory_allocated_mib"])
                self.res.save()
            del mod
        except Exception as e:  # noqa: BLE001
            self.res.error("%s %s graph=%s" % (m, mode, graphed), e)
        finally:
            torch.backends.cudnn.allow_tf32 = tf32_prev

    def graph_fn(self, mod, x):
        s = torch.cuda.Stream(self.dev)
        s.wait_stream(torch.cuda.current_stream(self.dev))
        with torch.cuda.stream(s):
            for _ in range(3):
                mod(x)                          # fills the static cache, cuDNN autotune
        torch.cuda.current_stream(self.dev).wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = mod(x)
        return g.replay, (g, out)

    # ---------------------------------------------------------------- onnxruntime CPU
    def ort_cpu(self):
        try:
            import onnx  # noqa: F401
            import onnxruntime as ort
        except Exception as e:  # noqa: BLE001
            self.res.note("ort-cpu skipped: onnx/onnxruntime not importable (%r)" % (e,))
            return
        self.res.data["env"]["onnxruntime"] = ort.__version__
        stop = time.time() + min(self.args.ort_s, self.left() - 5)
        for m in self.args.models:
            try:
                so = ort.SessionOptions()
                so.intra_op_num_threads = os.cpu_count() or 1
                sess = ort.InferenceSession(T.rebuild_onnx(self.graphs[m], self.w(m)).SerializeToString(),
                                            so, providers=["CPUExecutionProvider"])
                name = self.graphs[m]["inputs"][0]["name"]
                for bs in (1, 8, 32):
                    if time.time() > stop:
                        self.res.note("ort-cpu: time cap reached at %s bs%d" % (m, bs))
                        return
                    x = make_x(m, bs, torch.device("cpu"), torch.float32).numpy()
                    r = measure(lambda: sess.run(None, {name: x}), bs, torch.device("cpu"),
                                min(0.5, self.args.lat_s), min(0.5, self.args.tp_s), self.args.quick)
                    r.update({"model": m, "mode": "fp32", "executor": "ort-cpu-%dthr" % so.intra_op_num_threads})
                    self.res.data["runs"].append(r)
                    self.res.save()
                    log("%-13s %-12s %-9s bs%-4d p50 %8.3f ms  %9.1f img/s" %
                        (m, "fp32", "ort-cpu", bs, r["p50_ms"], r["images_per_s"]))
            except Exception as e:  # noqa: BLE001
                self.res.error("ort-cpu %s" % m, e)

    # ---------------------------------------------------------------- torch.compile (child)
    def compile_stage(self):
        for m in self.args.models:
            left = self.left() - 10
            if left < 45:
                self.res.note("compile: skipped %s and later (budget)" % m)
                return
            part = os.path.join(self.args.out, "compile-%s.json" % m)
            cmd = [sys.executable, os.path.abspath(__file__), "--compile-worker", m,
                   "--device", self.args.device, "--out", self.args.out,
                   "--lat-s", str(self.args.lat_s), "--tp-s", str(self.args.tp_s)]
            if self.args.quick:
                cmd.append("--quick")
            tmo = min(self.args.compile_timeout_s, left)
            log("compile %s (timeout %.0f s)" % (m, tmo))
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)      # own group: kill inductor workers too
            try:
                so, _ = p.communicate(timeout=tmo)
                tail = (so or "")[-3000:]
                print(tail, flush=True)
                if p.returncode != 0:
                    self.res.data["errors"].append({"where": "compile %s" % m, "error": "rc %d" % p.returncode,
                                                    "traceback": tail})
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
                so, _ = p.communicate()
                print((so or "")[-1500:], flush=True)
                self.res.note("compile %s: timed out after %.0f s" % (m, tmo))
            if os.path.exists(part):
                with open(part) as f:
                    d = json.load(f)
                self.res.data["runs"].extend(d.get("runs", []))
                self.res.data.setdefault("compile", {})[m] = {k: v for k, v in d.items() if k != "runs"}
                os.remove(part)
            self.res.save()


def compile_worker(args):
    """Child process: torch.compile one model (fp16), write compile-<model>.json."""
    m = args.compile_worker
    b = Bench(args)
    out = {"runs": []}
    path = os.path.join(args.out, "compile-%s.json" % m)

    def save():
        with open(path + ".tmp", "w") as f:
            json.dump(out, f)
        os.replace(path + ".tmp", path)

    mod = b.module(m, "fp16")
    for bs in (args.batches or [32, 1, 128]):
        x = make_x(m, bs, b.dev, torch.float16)
        with torch.no_grad():
            mod(x)                                   # fill static cache eagerly
            cm = torch.compile(mod, dynamic=False)
            t = time.time()
            cm(x)
            sync(b.dev)
            out["compile_s_bs%d" % bs] = round(time.time() - t, 1)
            log("compiled %s bs%d in %.1f s" % (m, bs, time.time() - t))
            save()
            r = measure(lambda: cm(x), bs, b.dev, args.lat_s, args.tp_s, args.quick)
            y_e, y_c = mod(x).float(), cm(x).float()
        r.update({"model": m, "mode": "fp16", "executor": "torch.compile",
                  "max_abs_diff_vs_eager": float((y_e - y_c).abs().max())})
        out["runs"].append(r)
        save()
        log("%-13s fp16 compile bs%-4d p50 %8.3f ms  %9.1f img/s" % (m, bs, r["p50_ms"], r["images_per_s"]))


def markdown(data):
    rows = ["| model | mode | executor | batch | p50 ms | p95 ms | ms/batch (tp) | images/s |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in data["runs"]:
        rows.append("| %s | %s | %s | %d | %.3f | %.3f | %.3f | %.1f |" % (
            r["model"], r["mode"], r["executor"], r["batch"], r["p50_ms"], r["p95_ms"],
            r["tp_ms_per_batch"], r["images_per_s"]))
    e = data["env"]
    head = ["GPU: %s; torch %s; CUDA %s; cuDNN %s; python %s" % (
        e.get("gpu", e.get("device")), e.get("torch"), e.get("cuda_runtime"), e.get("cudnn"),
        e.get("python")), ""]
    mem = ["", "| model/mode | max_memory_allocated MiB |", "|---|---:|"] + [
        "| %s | %.1f |" % (k, v["max_memory_allocated_mib"]) for k, v in data["memory"].items()]
    chk = ["", "| check | max abs diff vs numpy ref | ref max | pass |", "|---|---:|---:|---|"] + [
        "| %s | %.3g | %.3g | %s |" % (k, v["max_abs_diff_vs_numpy_ref"], v["ref_max_abs"], v["pass"])
        for k, v in data["check"].items()]
    return "\n".join(head + rows + mem + chk) + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="few iterations (smoke test)")
    ap.add_argument("--budget-s", type=float, default=330.0, help="whole-run budget")
    ap.add_argument("--out", default=os.environ.get("OUT") or os.path.join(HERE, "out"))
    ap.add_argument("--models", default=",".join(T.MODELS))
    ap.add_argument("--batches", default="", help="comma list overriding the defaults")
    ap.add_argument("--stages", default="check,A,B,C,D,E")
    ap.add_argument("--lat-s", type=float, default=0.5, help="latency loop seconds per config")
    ap.add_argument("--tp-s", type=float, default=0.5, help="throughput loop seconds per config")
    ap.add_argument("--ort-s", type=float, default=25.0)
    ap.add_argument("--compile-timeout-s", type=float, default=90.0)
    ap.add_argument("--compile-worker", default="")
    a = ap.parse_args()
    a.models = [m for m in a.models.split(",") if m]
    a.batches = [int(b) for b in a.batches.split(",") if b]
    os.makedirs(a.out, exist_ok=True)
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_bench: CUDA not available to torch %s" % torch.__version__)
    torch.backends.cudnn.benchmark = True
    if a.compile_worker:
        return compile_worker(a)

    b = Bench(a)
    b.res.data["env"] = env_info(b.dev)
    b.res.data["env"]["args"] = {k: v for k, v in vars(a).items()}
    b.res.data["method"] = (
        "inputs pre-allocated on the device (no H2D copy in the timings); first call "
        "(cuDNN autotune) reported separately, then 5 warm-up calls; latency p50/p95 from "
        "CUDA events around one synchronised batch at a time; images/s from back-to-back "
        "batches with one synchronize at the end; weights are the fp16-rounded exports")
    b.res.save()
    log("env: %s" % json.dumps({k: v for k, v in b.res.data["env"].items() if k != "args"}))
    stages = a.stages.split(",")
    if "check" in stages:
        b.check()
    if "A" in stages:
        for m in a.models:
            for mode in ("fp32", "fp16"):
                b.run_mode(m, mode)
    if "B" in stages and b.dev.type == "cuda":
        for mode in ("fp16", "fp32"):
            for m in a.models:
                b.run_mode(m, mode, graphed=True)
    if "C" in stages:
        for m in a.models:
            b.run_mode(m, "fp16-cl")
        if b.dev.type == "cuda":
            for m in a.models:
                b.run_mode(m, "fp32-notf32")
    if "D" in stages:
        b.ort_cpu()
    if "E" in stages:
        b.compile_stage()
    b.res.save()
    md = markdown(b.res.data)
    with open(os.path.join(a.out, "gpu-figures.md"), "w") as f:
        f.write(md)
    print(md, flush=True)
    log("done; %d runs, %d errors -> %s" % (len(b.res.data["runs"]), len(b.res.data["errors"]), b.res.path))


if __name__ == "__main__":
    main()
