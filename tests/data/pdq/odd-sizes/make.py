"""Makes the odd-size PNGs and their reference PDQ hashes (expected-pdq-odd.csv).

Run with a Python that has Pillow and `pdqhash` (ThreatExchange's C++ PDQ through its
Python binding), from the repository root:
    python3 -m venv /tmp/pdqvenv && /tmp/pdqvenv/bin/pip install pdqhash pillow numpy
    /tmp/pdqvenv/bin/python tests/data/pdq/odd-sizes/make.py
"""
import numpy as np
import pdqhash
from PIL import Image, ImageFilter

HERE = "tests/data/pdq/odd-sizes"
BRIDGE = "tests/data/pdq/bridge-mods/aaa-orig.jpg"
PEN = "tests/data/pdq/reg-test-input/pen-and-coaster.png"

# (name, source, scale-to (w, h) or None, crop box (left, top, right, bottom))
CASES = [
    ("bridge-451x300.png", BRIDGE, (560, 351), (60, 40, 511, 340)),
    ("bridge-384x303.png", BRIDGE, (500, 314), (33, 5, 417, 308)),
    ("bridge-131x257.png", BRIDGE, (400, 251), (201, 0, 332, 257)),
    ("pen-451x300.png", PEN, (560, 445), (50, 70, 501, 370)),
    ("pen-33x17.png", PEN, (231, 184), (99, 83, 132, 100)),
]


def reference(path):
    pixels = np.asarray(Image.open(path).convert("RGB"))
    bits, quality = pdqhash.compute(pixels)
    # pdqhash returns bit 255 first, ThreatExchange's hex order.
    return "%064x" % int("".join(str(int(b)) for b in bits), 2), quality


rows = []
for name, src, scale, box in CASES:
    img = Image.open(src).convert("RGB")
    if scale:
        img = img.resize(scale, Image.BILINEAR)
    # A light blur keeps each PNG small (< 200 KB); PDQ sees through it anyway.
    img = img.crop(box).filter(ImageFilter.GaussianBlur(1))
    out = f"{HERE}/{name}"
    img.save(out, optimize=True)
    h, q = reference(out)
    rows.append(f"odd-sizes/{name},{h},{q}")
with open(f"{HERE}/expected-pdq-odd.csv", "w") as f:
    f.write("# file,pdq_hma,quality  (pdqhash 0.2.8 = ThreatExchange C++ PDQ, full size; see README.md)\n")
    f.write("\n".join(rows) + "\n")
print("\n".join(rows))
