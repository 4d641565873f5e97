"""Checks pdq.py against ThreatExchange's reference hashes (tests/data/pdq) and, where
the `pdqhash` package happens to be installed, against it too, hash for hash and in
time per 640x360 frame. Prints one line per check; exits non-zero past the tolerance.

    python bench/baseline/check_pdq.py
"""

import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import pdq  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests/data/pdq"
# The reference decoded JPEGs with another decoder; PNGs decode identically everywhere.
MAX_BITS = {"png": 2, "jpg": 8}


def distance(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def rows(csv: Path):
    for line in csv.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        f = line.split(",")
        yield DATA / f[0], f[1], int(f[2])


def main() -> int:
    worst = {"png": 0, "jpg": 0}
    quality_off = 0
    bad = 0
    checked = 0
    for path, want, want_q in [*rows(DATA / "expected-pdq.csv"), *rows(DATA / "odd-sizes/expected-pdq-odd.csv")]:
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        got, q = pdq.compute(rgb)
        kind = "png" if path.suffix == ".png" else "jpg"
        d = distance(got, want)
        worst[kind] = max(worst[kind], d)
        quality_off = max(quality_off, abs(q - want_q))
        checked += 1
        if d > MAX_BITS[kind]:
            bad += 1
            print(f"  {path.relative_to(DATA)}: {d} bits from the reference")
    print(f"reference: {checked} images, worst png {worst['png']} bits, worst jpg {worst['jpg']} bits, "
          f"quality within {quality_off}; {bad} past tolerance")

    photo = cv2.imread(str(DATA / "bridge-mods/aaa-orig.jpg"))
    rgb = cv2.cvtColor(cv2.resize(photo, (640, 360), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
    # The dihedral variants, checked against hashing the rotated image directly.
    hashes, _ = pdq.compute_dihedral(rgb)
    turned = {
        "rotate90": np.rot90(rgb, 1), "rotate180": np.rot90(rgb, 2), "rotate270": np.rot90(rgb, 3),
        "flip_x": rgb[::-1], "flip_y": rgb[:, ::-1], "flip_plus1": rgb.transpose(1, 0, 2),
    }
    dihedral_worst = max(distance(hashes[k], pdq.compute(np.ascontiguousarray(v))[0]) for k, v in turned.items())
    print(f"dihedral: worst variant {dihedral_worst} bits from hashing the turned image")

    def per_call(f, n=200):
        f(rgb)
        t = time.perf_counter()
        for _ in range(n):
            f(rgb)
        return (time.perf_counter() - t) / n * 1000

    line = f"time per 640x360 frame: pdq.compute_dihedral {per_call(pdq.compute_dihedral):.2f} ms"
    try:
        import pdqhash
    except ImportError:
        print(line + " (pdqhash not installed: no comparison)")
    else:
        vectors, _ = pdqhash.compute_dihedral(rgb)
        # pdqhash lists bit 255 first
        refs = [f"{int(''.join(str(int(b)) for b in v), 2):064x}" for v in vectors]
        apart = max(min(distance(r, h) for h in hashes.values()) for r in refs)
        theirs = per_call(pdqhash.compute_dihedral)
        print(line + f", pdqhash.compute_dihedral {theirs:.2f} ms; its 8 hashes at most {apart} bits from ours")
    return 1 if bad or dihedral_worst > 8 else 0


if __name__ == "__main__":
    sys.exit(main())
