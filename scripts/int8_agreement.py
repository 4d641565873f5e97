#!/usr/bin/env python3
"""fp32 against int8, model by model, on a fixed benign set, and the CPU time of each in
the same run.

The set: the generated test patterns, every scikit-image photo in the setup cache, and
five transformed copies of each photo (half size, 0.8 size, a centre crop, an off-centre
crop, Gaussian noise) that calibration never saw. Frames go through the Rust side's
preprocessing and decoding (scripts/int8_common.py) at the operating thresholds of the
manifests and of vigil-fusion's default policy (config/policies/default.toml).

- nudenet-320n: fp32 detections matched to int8 ones (IoU >= 0.5, greedy by fp32
  score): recall of int8 against fp32 at the operating threshold of each label (faces
  and unsignalled labels: the manifest's score_threshold, since every face goes to the
  age model; sexual_exposed labels: exposed_min_score). A fp32 detection counts as found
  when int8 has a box over it at or above that threshold carrying the same signal (a
  face, sexual exposure) or, for labels without one, the same label. The verdict uses
  the detections the worker acts on (labels with a signal); every label's recall is
  reported beside it. Then box IoU and exact label agreement of matched pairs, score
  differences, the largest raw class-score difference per class over every anchor, and
  per frame the highest sexual-exposure class score of each precision (its bias shows
  whether int8 leans towards missing exposure, which the benign set cannot show by
  detections).
- Beside each figure, the same for fp32 on the frames with every value moved by ±1
  level: the model's own sensitivity to an invisible change, the yardstick for int8.
- age-v1: on every face the fp32 detector finds, and on each with its box jittered
  (shifted and scaled 10%): the expected-age difference, the P(minor) difference, and
  whether both sides agree on a likely minor (minor_min_probability).
- open-nsfw: the score difference per frame, and whether both sides agree on
  nsfw_min_score.
- Time: CPU seconds per frame (batch 1) for each precision with 1 and 2 intra-op
  threads (thread pool spinning off, so CPU time is work), and the wall time; rounds
  alternate fp32 and int8 so both see the same machine load.

Writes JSON (--json) and a markdown table (--markdown, and stdout). Exit status 0 whatever
the verdicts: this measures, the verdicts are in the report.
"""

import argparse
import datetime
import hashlib
import json
import os
import platform
import sys
import time
import tomllib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import int8_common as C  # noqa: E402

POLICY = tomllib.loads((C.ROOT / "config" / "policies" / "default.toml").read_text())["thresholds"]

# The verdict thresholds, chosen before measuring. A missed detection matters most.
THRESHOLDS = {
    "nudenet-320n": {
        "recall_min": 0.95,  # int8 recall of fp32's detections at the operating thresholds
        "recall_clear_min": 1.0,  # ...and of those at least 0.1 above it: none may be missed
        "clear_margin": 0.1,
        "iou_mean_min": 0.85,  # matched boxes
        "label_agreement_min": 0.95,
        "score_diff_mean_max": 0.05,
    },
    "age-v1": {
        "age_diff_mean_max": 1.5,  # years
        "age_diff_max": 5.0,
        "p_minor_diff_max": 0.1,
        "minor_agreement_min": 1.0,
    },
    "open-nsfw": {
        "score_diff_mean_max": 0.01,
        "score_diff_max": 0.05,
        "threshold_agreement_min": 1.0,
    },
}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.machine()


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def model_file(name: str, folder: Path | None) -> Path:
    m = C.manifest(name)
    path = (folder or C.CACHE / "models") / m["file"]
    if not path.is_file():
        sys.exit(f"{path} is missing (scripts/setup.sh builds it)")
    if folder is None and sha256_of(path) != m["sha256"]:
        sys.exit(f"{path} does not match the sha256 in models/{name}.toml")
    return path


def session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def benign_set() -> list[tuple[str, np.ndarray]]:
    frames = list(C.test_patterns())
    for name, img in C.photos():
        frames.append((name, img))
        frames += C.variants(name, img)
    return [(n, C.analysis_frame(f)) for n, f in frames]


def noisy(f: np.ndarray, seed: int) -> np.ndarray:
    """The frame with every value moved by -1, 0 or +1 level: invisible, and less than a
    re-encode changes. fp32 on this against fp32 on the frame is the model's own
    sensitivity, the yardstick for int8's differences."""
    step = np.random.default_rng(seed).integers(-1, 2, f.shape)
    return np.clip(f.astype(np.int16) + step, 0, 255).astype(np.uint8)


def compare(frames, a: dict, b: dict, same_frames: bool) -> dict:
    """Every model, fp32 (`a`) against `b`, on the frames or (same_frames False) on
    their ±1-level noisy copies."""
    trip = [(n, f, f if same_frames else noisy(f, i)) for i, (n, f) in enumerate(frames)]
    det, faces = detector(trip, a["nudenet-320n"], b["nudenet-320n"])
    return {"nudenet-320n": det, "age-v1": age(faces, a["age-v1"], b["age-v1"]),
            "open-nsfw": classifier(trip, a["open-nsfw"], b["open-nsfw"])}


def run(sess, spec, x: np.ndarray, out_name: str) -> np.ndarray:
    return sess.run([out_name], {spec["name"]: x[None]})[0][0]


def stats(xs) -> dict:
    xs = np.asarray(list(xs), dtype=np.float64)
    if xs.size == 0:
        return {"n": 0}
    return {
        "n": int(xs.size),
        "mean": float(xs.mean()),
        "p95": float(np.percentile(xs, 95)),
        "max": float(xs.max()),
        "min": float(xs.min()),
    }


# ---------------------------------------------------------------------------------------
# nudenet-320n


def detector(frames, fp32, int8) -> tuple[dict, list]:
    """`frames`: (name, frame for fp32, frame for the other side); `int8` may be the fp32
    file again (the noise baseline)."""
    m = C.manifest("nudenet-320n")
    spec, o = m["input"], m["output"]
    labels = o["labels"]
    exposed = set(m["signals"]["sexual_exposed"])
    faces = set(m["signals"]["face"])

    signal = {lbl: sig for sig, ls in m["signals"].items() for lbl in ls}

    def acts_as(label: str) -> str:
        return signal.get(label, label)

    def op_threshold(label: str) -> float:
        return POLICY["exposed_min_score"] if label in exposed else o["score_threshold"]

    s32, s8 = session(fp32, 1), session(int8, 1)
    pairs, misses, extras, per_frame, face_boxes = [], [], [], [], []
    # [at the operating threshold, found, clear (threshold + margin), found], for the
    # detections the worker acts on (a label with a signal) and for every label.
    count = {"acted_on": [0, 0, 0, 0], "all_labels": [0, 0, 0, 0]}
    class_diff = np.zeros(len(labels))
    exposed_max = {"fp32": 0.0, "int8": 0.0}
    exposed_frame = []  # per frame: the highest exposure-class score anywhere, fp32 and int8
    ex = [labels.index(lbl) for lbl in sorted(exposed)]
    for name, f, fb in frames:
        x, mapping = C.fill_input(spec, f, C.whole(f))
        xb, _ = C.fill_input(spec, fb, C.whole(fb))
        size = (f.shape[1], f.shape[0])
        raw = {"fp32": run(s32, spec, x, o["name"]), "int8": run(s8, spec, xb, o["name"])}
        class_diff = np.maximum(class_diff, np.abs(raw["fp32"][4:] - raw["int8"][4:]).max(axis=1))
        for p in raw:
            exposed_max[p] = max(exposed_max[p], float(raw[p][4:][ex].max()))
        exposed_frame.append((float(raw["fp32"][4:][ex].max()), float(raw["int8"][4:][ex].max())))
        d32, d8 = (C.yolov8(raw[p], len(labels), mapping, size, o["score_threshold"], o["iou_threshold"]) for p in raw)
        face_boxes.append((name, f, fb, [b for c, _, b in d32 if labels[c] in faces][: C.MAX_FACES]))
        used = set()
        for c, s, b in d32:  # highest score first
            best, best_iou = None, 0.5
            for j, (c8, s8_, b8) in enumerate(d8):
                v = C.iou(b, b8)
                if j not in used and v >= best_iou:
                    best, best_iou = j, v
            lbl = labels[c]
            t = op_threshold(lbl)
            # What the worker acts on is the signal (a face is a face, FACE_MALE or
            # FACE_FEMALE); a label without a signal must match itself.
            hit = best is not None and acts_as(labels[d8[best][0]]) == acts_as(lbl) and d8[best][1] >= t
            if s >= t:
                for k in ("acted_on", "all_labels") if lbl in signal else ("all_labels",):
                    count[k][0] += 1
                    count[k][1] += hit
                    if s >= t + THRESHOLDS["nudenet-320n"]["clear_margin"]:
                        count[k][2] += 1
                        count[k][3] += hit
                if not hit:
                    misses.append(
                        {"frame": name, "label": lbl, "fp32_score": s, "bbox": b,
                         "int8": None if best is None else {"label": labels[d8[best][0]], "score": d8[best][1], "iou": best_iou}}
                    )
            if best is not None:
                used.add(best)
                pairs.append({"label": lbl, "label8": labels[d8[best][0]], "iou": best_iou, "d": d8[best][1] - s})
        for j, (c8, s8_, b8) in enumerate(d8):
            if j not in used and s8_ >= op_threshold(labels[c8]):
                extras.append({"frame": name, "label": labels[c8], "int8_score": s8_, "bbox": b8})
        per_frame.append({"frame": name, "fp32": [[labels[c], round(s, 4)] for c, s, _ in d32],
                          "int8": [[labels[c], round(s, 4)] for c, s, _ in d8]})
    t = THRESHOLDS["nudenet-320n"]
    res = {
        "frames": len(frames),
        "fp32_detections_at_operating_threshold": count["acted_on"][0],
        "recall": count["acted_on"][1] / count["acted_on"][0] if count["acted_on"][0] else None,
        "recall_clear": count["acted_on"][3] / count["acted_on"][2] if count["acted_on"][2] else None,
        "clear_detections": count["acted_on"][2],
        "all_labels": {
            "fp32_detections_at_operating_threshold": count["all_labels"][0],
            "recall": count["all_labels"][1] / count["all_labels"][0] if count["all_labels"][0] else None,
            "recall_clear": count["all_labels"][3] / count["all_labels"][2] if count["all_labels"][2] else None,
            "clear_detections": count["all_labels"][2],
        },
        "exposure_score_per_frame": {
            "signed_mean": float(np.mean([b - a for a, b in exposed_frame])),
            "abs": stats(abs(b - a) for a, b in exposed_frame),
            "largest_drop": max(a - b for a, b in exposed_frame),  # towards missing exposure
            "largest_rise": max(b - a for a, b in exposed_frame),
        },
        "misses": misses,
        "int8_only_detections": extras,
        "matched": len(pairs),
        "iou": stats(p["iou"] for p in pairs),
        "label_agreement": (sum(p["label"] == p["label8"] for p in pairs) / len(pairs)) if pairs else None,
        "score_diff_abs": stats(abs(p["d"]) for p in pairs),
        "score_diff_signed_mean": float(np.mean([p["d"] for p in pairs])) if pairs else None,
        "raw_class_score_max_abs_diff": {lbl: float(v) for lbl, v in zip(labels, class_diff)},
        "exposed_label_max_score": exposed_max,
        "operating_thresholds": {"faces_and_unsignalled": o["score_threshold"], "sexual_exposed": POLICY["exposed_min_score"]},
        "per_frame": per_frame,
    }
    res["exposed_detections_fp32"] = sum(1 for p in per_frame for lbl, _ in p["fp32"] if lbl in exposed)
    checks = {
        "recall": res["recall"] is not None and res["recall"] >= t["recall_min"],
        "recall_clear": res["recall_clear"] is None or res["recall_clear"] >= t["recall_clear_min"],
        "iou_mean": bool(pairs) and res["iou"]["mean"] >= t["iou_mean_min"],
        "label_agreement": bool(pairs) and res["label_agreement"] >= t["label_agreement_min"],
        "score_diff_mean": bool(pairs) and res["score_diff_abs"]["mean"] <= t["score_diff_mean_max"],
    }
    return res | {"checks": checks, "holds": all(checks.values())}, face_boxes


# ---------------------------------------------------------------------------------------
# age-v1


def jitter(box):
    x, y, w, h = box
    for dx in (-0.1, 0.0, 0.1):
        for dy in (-0.1, 0.1):
            for ds in (0.9, 1.1):
                bw, bh = w * ds, h * ds
                yield [x + dx * w + (w - bw) / 2, y + dy * h + (h - bh) / 2, bw, bh]


def age(face_boxes, fp32, int8) -> dict:
    m = C.manifest("age-v1")
    spec, o = m["input"], m["output"]
    s32, s8 = session(fp32, 1), session(int8, 1)
    minor_t = POLICY["minor_min_probability"]
    rows = []
    for name, f, fb, boxes in face_boxes:
        for k, box in enumerate(boxes):
            for j, b in enumerate([box] + list(jitter(box))):
                x, _ = C.fill_input(spec, f, C.face_region(spec, b))
                xb, _ = C.fill_input(spec, fb, C.face_region(spec, b))
                a32 = C.age_bins(run(s32, spec, x, o["name"]), o["bins"], o["minor_below_years"])
                a8 = C.age_bins(run(s8, spec, xb, o["name"]), o["bins"], o["minor_below_years"])
                rows.append({"frame": name, "face": k, "jittered": j > 0, "fp32": a32, "int8": a8})
    ok = [r for r in rows if r["fp32"] and r["int8"]]

    def summary(rs):
        return {
            "faces": len(rs),
            "age_diff_years": stats(abs(r["fp32"][0] - r["int8"][0]) for r in rs),
            "age_signed_mean": float(np.mean([r["int8"][0] - r["fp32"][0] for r in rs])) if rs else None,
            "p_minor_diff": stats(abs(r["fp32"][1] - r["int8"][1]) for r in rs),
            "minor_agreement": (sum((r["fp32"][1] >= minor_t) == (r["int8"][1] >= minor_t) for r in rs) / len(rs)) if rs else None,
            "fp32_age_range": [min(r["fp32"][0] for r in rs), max(r["fp32"][0] for r in rs)] if rs else None,
            "fp32_likely_minors": sum(r["fp32"][1] >= minor_t for r in rs),
        }

    res = {
        "detected_faces": summary([r for r in ok if not r["jittered"]]),
        "with_jittered_boxes": summary(ok),
        "undecodable": len(rows) - len(ok),
        "minor_min_probability": minor_t,
        "per_face": [{"frame": r["frame"], "fp32": r["fp32"], "int8": r["int8"]} for r in ok if not r["jittered"]],
    }
    t, s = THRESHOLDS["age-v1"], res["with_jittered_boxes"]
    checks = {
        "faces_present": s["faces"] > 0,
        "age_diff_mean": s["faces"] > 0 and s["age_diff_years"]["mean"] <= t["age_diff_mean_max"],
        "age_diff_max": s["faces"] > 0 and s["age_diff_years"]["max"] <= t["age_diff_max"],
        "p_minor_diff_max": s["faces"] > 0 and s["p_minor_diff"]["max"] <= t["p_minor_diff_max"],
        "minor_agreement": s["faces"] > 0 and s["minor_agreement"] >= t["minor_agreement_min"],
        "none_undecodable": res["undecodable"] == 0,
    }
    return res | {"checks": checks, "holds": all(checks.values())}


# ---------------------------------------------------------------------------------------
# open-nsfw


def classifier(frames, fp32, int8) -> dict:
    m = C.manifest("open-nsfw")
    spec, o = m["input"], m["output"]
    idx = o["labels"].index(m["signals"]["nsfw_score"][0])
    s32, s8 = session(fp32, 1), session(int8, 1)
    t_nsfw = POLICY["nsfw_min_score"]
    rows = []
    for name, f, fb in frames:
        x, _ = C.fill_input(spec, f, C.whole(f))
        xb, _ = C.fill_input(spec, fb, C.whole(fb))
        rows.append((name, float(run(s32, spec, x, o["name"])[idx]), float(run(s8, spec, xb, o["name"])[idx])))
    d = [abs(a - b) for _, a, b in rows]
    res = {
        "frames": len(rows),
        "score_diff_abs": stats(d),
        "score_signed_mean": float(np.mean([b - a for _, a, b in rows])),
        "threshold_agreement": sum((a >= t_nsfw) == (b >= t_nsfw) for _, a, b in rows) / len(rows),
        "fp32_score_range": [min(a for _, a, _ in rows), max(a for _, a, _ in rows)],
        "nsfw_min_score": t_nsfw,
        "per_frame": [{"frame": n, "fp32": a, "int8": b} for n, a, b in rows],
    }
    t = THRESHOLDS["open-nsfw"]
    checks = {
        "score_diff_mean": res["score_diff_abs"]["mean"] <= t["score_diff_mean_max"],
        "score_diff_max": res["score_diff_abs"]["max"] <= t["score_diff_max"],
        "threshold_agreement": res["threshold_agreement"] >= t["threshold_agreement_min"],
    }
    return res | {"checks": checks, "holds": all(checks.values())}


# ---------------------------------------------------------------------------------------
# Time


def timing(name: str, fp32: Path, int8: Path, frame: np.ndarray, rounds: int) -> dict:
    m = C.manifest(name)
    spec, out = m["input"], m["output"]["name"]
    region = C.whole(frame) if name != "age-v1" else (170.0, 80.0, 105.0, 105.0)
    x = C.fill_input(spec, frame, region)[0][None]
    per_round = 40 if name == "age-v1" else 3
    res = {}
    for threads in (1, 2):
        sess = {"fp32": session(fp32, threads), "int8": session(int8, threads)}
        cpu = {p: [] for p in sess}
        wall = {p: [] for p in sess}
        for p, s in sess.items():
            s.run([out], {spec["name"]: x})  # warm-up
        for _ in range(rounds):
            for p, s in sess.items():
                for _ in range(per_round):
                    c, w = time.process_time(), time.perf_counter()
                    s.run([out], {spec["name"]: x})
                    cpu[p].append(time.process_time() - c)
                    wall[p].append(time.perf_counter() - w)
        r = {p: {"cpu_ms": 1e3 * float(np.median(cpu[p])), "wall_ms": 1e3 * float(np.median(wall[p])), "runs": len(cpu[p])} for p in sess}
        r["speedup_cpu"] = r["fp32"]["cpu_ms"] / r["int8"]["cpu_ms"]
        r["speedup_wall"] = r["fp32"]["wall_ms"] / r["int8"]["wall_ms"]
        res[f"threads_{threads}"] = r
    return res


# ---------------------------------------------------------------------------------------


def fmt(v, spec=".3f"):
    return "—" if v is None else format(v, spec)


def markdown(rep: dict) -> str:
    d, a, c = rep["models"]["nudenet-320n"], rep["models"]["age-v1"], rep["models"]["open-nsfw"]
    aj, ad = a["with_jittered_boxes"], a["detected_faces"]
    verdict = lambda r: "**holds**" if r["holds"] else "**does not hold** (" + ", ".join(k for k, v in r["checks"].items() if not v) + ")"  # noqa: E731
    lines = [
        f"int8 against fp32 on {rep['set']['frames']} benign frames ({rep['set']['description']}); "
        f"{rep['machine']}, onnxruntime {rep['onnxruntime']}, {rep['date']}.",
        "",
        "| model | agreement | thresholds | verdict |",
        "|---|---|---|---|",
        f"| nudenet-320n | recall {fmt(d['recall'])} of {d['fp32_detections_at_operating_threshold']} fp32 detections the worker acts on (faces; "
        f"exposure ≥ {POLICY['exposed_min_score']}), clear ones (≥ threshold + {THRESHOLDS['nudenet-320n']['clear_margin']}) {fmt(d['recall_clear'])} "
        f"of {d['clear_detections']}; every label: {fmt(d['all_labels']['recall'])} of {d['all_labels']['fp32_detections_at_operating_threshold']}; "
        f"matched {d['matched']}: IoU mean {fmt(d['iou'].get('mean'))}, "
        f"min {fmt(d['iou'].get('min'))}; labels agree {fmt(d['label_agreement'])}; |Δscore| mean {fmt(d['score_diff_abs'].get('mean'))}, "
        f"max {fmt(d['score_diff_abs'].get('max'))}, signed mean {fmt(d['score_diff_signed_mean'])}; {len(d['int8_only_detections'])} int8-only detections; "
        f"highest exposure score per frame, int8 − fp32: mean {fmt(d['exposure_score_per_frame']['signed_mean'])}, "
        f"largest drop {fmt(d['exposure_score_per_frame']['largest_drop'])}, largest rise {fmt(d['exposure_score_per_frame']['largest_rise'])} "
        f"| recall ≥ {THRESHOLDS['nudenet-320n']['recall_min']}, none missed at ≥ threshold + {THRESHOLDS['nudenet-320n']['clear_margin']}, "
        f"IoU mean ≥ {THRESHOLDS['nudenet-320n']['iou_mean_min']}, labels ≥ {THRESHOLDS['nudenet-320n']['label_agreement_min']}, "
        f"|Δscore| mean ≤ {THRESHOLDS['nudenet-320n']['score_diff_mean_max']} | {verdict(d)} |",
        f"| age-v1 | {ad['faces']} detected faces: |Δage| mean {fmt(ad['age_diff_years'].get('mean'), '.2f')} y, max {fmt(ad['age_diff_years'].get('max'), '.2f')} y; "
        f"with jittered boxes ({aj['faces']} crops): mean {fmt(aj['age_diff_years'].get('mean'), '.2f')} y, p95 {fmt(aj['age_diff_years'].get('p95'), '.2f')} y, "
        f"max {fmt(aj['age_diff_years'].get('max'), '.2f')} y; |ΔP(minor)| max {fmt(aj['p_minor_diff'].get('max'))}; minor flag agrees {fmt(aj['minor_agreement'])} "
        f"| |Δage| mean ≤ {THRESHOLDS['age-v1']['age_diff_mean_max']} y, max ≤ {THRESHOLDS['age-v1']['age_diff_max']} y, |ΔP(minor)| ≤ {THRESHOLDS['age-v1']['p_minor_diff_max']}, "
        f"minor flag agrees on all | {verdict(a)} |",
        f"| open-nsfw | {c['frames']} frames: |Δscore| mean {fmt(c['score_diff_abs']['mean'], '.4f')}, max {fmt(c['score_diff_abs']['max'], '.4f')}; "
        f"same side of {c['nsfw_min_score']}: {fmt(c['threshold_agreement'])}; fp32 scores {fmt(c['fp32_score_range'][0], '.4f')}–{fmt(c['fp32_score_range'][1], '.4f')} "
        f"| |Δscore| mean ≤ {THRESHOLDS['open-nsfw']['score_diff_mean_max']}, max ≤ {THRESHOLDS['open-nsfw']['score_diff_max']}, all on the same side of {c['nsfw_min_score']} | {verdict(c)} |",
        "",
        "The yardstick: each figure for int8, and for fp32 on the same frames with every value moved by "
        "±1 level (invisible; what the model does with a change smaller than a re-encode's):",
        "",
        "| model | figure | int8 vs fp32 | fp32 ±1 level vs fp32 |",
        "|---|---|---|---|",
    ]
    b = rep["baseline_fp32_noise"]
    for label, get in (
        ("nudenet-320n", lambda r: ("recall, detections acted on", fmt(r["recall"]))),
        ("nudenet-320n", lambda r: ("recall, acted on, ≥ threshold + 0.1", fmt(r["recall_clear"]))),
        ("nudenet-320n", lambda r: ("recall, every label", fmt(r["all_labels"]["recall"]))),
        ("nudenet-320n", lambda r: ("highest exposure score per frame: signed mean; largest drop; largest rise",
                                    f"{fmt(r['exposure_score_per_frame']['signed_mean'])}; {fmt(r['exposure_score_per_frame']['largest_drop'])}; "
                                    f"{fmt(r['exposure_score_per_frame']['largest_rise'])}")),
        ("nudenet-320n", lambda r: ("IoU mean / min", f"{fmt(r['iou'].get('mean'))} / {fmt(r['iou'].get('min'))}")),
        ("nudenet-320n", lambda r: ("|Δscore| mean / max", f"{fmt(r['score_diff_abs'].get('mean'))} / {fmt(r['score_diff_abs'].get('max'))}")),
        ("nudenet-320n", lambda r: ("score, signed mean (int8 − fp32)", fmt(r["score_diff_signed_mean"]))),
        ("age-v1", lambda r: ("|Δage| mean / p95 / max, all crops", "{} / {} / {} y".format(
            *(fmt(r["with_jittered_boxes"]["age_diff_years"].get(k), ".2f") for k in ("mean", "p95", "max"))))),
        ("age-v1", lambda r: ("|ΔP(minor)| max; minor flag agrees", f"{fmt(r['with_jittered_boxes']['p_minor_diff'].get('max'))}; "
                              f"{fmt(r['with_jittered_boxes']['minor_agreement'])}")),
        ("open-nsfw", lambda r: ("|Δscore| mean / max", f"{fmt(r['score_diff_abs']['mean'], '.4f')} / {fmt(r['score_diff_abs']['max'], '.4f')}")),
    ):
        what, v8 = get(rep["models"][label])
        lines.append(f"| {label} | {what} | {v8} | {get(b[label])[1]} |")
    lines += [
        "",
        "CPU time per frame, batch 1 (median; rounds alternate fp32 and int8):",
        "",
        "| model | threads | fp32 CPU ms | int8 CPU ms | speed-up (CPU) | fp32 wall ms | int8 wall ms | speed-up (wall) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, t in rep["timing"].items():
        for k, r in t.items():
            lines.append(
                f"| {name} | {k.split('_')[1]} | {r['fp32']['cpu_ms']:.2f} | {r['int8']['cpu_ms']:.2f} | {r['speedup_cpu']:.2f}× "
                f"| {r['fp32']['wall_ms']:.2f} | {r['int8']['wall_ms']:.2f} | {r['speedup_wall']:.2f}× |"
            )
    lines += [
        "",
        "CPU ms is the work (intra-op spinning off); with 2 threads the wall time drops only as far as the "
        "second core is free, and the load in the first line says how shared the machine was.",
        "",
        f"Not measurable on a benign set: fp32 found {d['exposed_detections_fp32']} sexual-exposure detections and the highest "
        f"exposure class score was {d['exposed_label_max_score']['fp32']:.3f} (int8 {d['exposed_label_max_score']['int8']:.3f}); "
        f"open-nsfw's fp32 scores stayed at or under {c['fp32_score_range'][1]:.3f}. So the recall of the exposure labels at "
        f"{POLICY['exposed_min_score']} and open-nsfw near {c['nsfw_min_score']} are not tested here; agreement is measured where "
        "the benign frames put the models (faces, clothing labels, low scores).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--int8-dir", type=Path, help="int8 files from here (e.g. quantize_int8.py --out), unchecked")
    ap.add_argument("--json", type=Path, default=C.CACHE / "int8-agreement.json")
    ap.add_argument("--markdown", type=Path, default=C.CACHE / "int8-agreement.md")
    ap.add_argument("--rounds", type=int, default=15, help="timing rounds per model and thread count")
    ap.add_argument("--no-timing", action="store_true")
    args = ap.parse_args()

    import onnxruntime as ort

    frames = benign_set()
    files = {n: (model_file(n, None), model_file(f"{n}-int8", args.int8_dir)) for n in C.MODELS}
    rep = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "onnxruntime": ort.__version__,
        "set": {
            "frames": len(frames),
            "description": f"{len(C.test_patterns())} test patterns, {len(C.photos())} scikit-image photos and 5 transformed copies of each",
        },
        "thresholds": THRESHOLDS,
        "policy": POLICY,
        "files": {n: {"fp32": a.name, "int8": b.name, "int8_sha256": sha256_of(b)} for n, (a, b) in files.items()},
        "models": compare(frames, {n: f[0] for n, f in files.items()}, {n: f[1] for n, f in files.items()}, True),
        "baseline_fp32_noise": compare(frames, {n: f[0] for n, f in files.items()}, {n: f[0] for n, f in files.items()}, False),
        "timing": {},
    }
    if not args.no_timing:
        frame = C.analysis_frame(C.photos()[0][1])
        for n in C.MODELS:
            rep["timing"][n] = timing(n, *files[n], frame, args.rounds)
    rep["machine"] += f" (at the end {os.getloadavg()[0]:.1f})"
    args.json.write_text(json.dumps(rep, indent=1) + "\n")
    md = markdown(rep)
    args.markdown.write_text(md)
    print(md)
    print(f"wrote {args.json} and {args.markdown}")


if __name__ == "__main__":
    main()
