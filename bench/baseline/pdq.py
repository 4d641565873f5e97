"""PDQ in numpy, standing in for the `pdqhash` package, which PyPI ships for macOS and
Windows only (its Linux install builds C++ from the sdist, which the project's
`--only-binary` install refuses).

The algorithm is ThreatExchange's (pdq/cpp/hashing/pdqhashing.cpp): float luma, two
passes of the clipped running-mean box filter ("Jarosz") along rows then columns,
64x64 decimation, the 16x16 block of a 64-point DCT without DC, thresholded at the
lower median; quality from the 64x64 gradients. The eight rotations and reflections
come from sign patterns and transposes of the 16x16 coefficients, as the reference's
`pdqHash256esFromFloatLuma` does (and as `pdqhash.compute_dihedral` returns).
The box filter is OpenCV's (float32 sums, not the reference's running sums), so a
coefficient within rounding of the median could land on the other side; `check_pdq.py`
measures the distance to the reference hashes.
"""

import cv2
import numpy as np

_DCT = (np.sqrt(2.0 / 64.0) * np.cos((np.pi / 2 / 64.0) * np.outer(np.arange(1, 17), 2 * np.arange(64) + 1))).astype(
    np.float32
)
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
_ODD = (np.arange(16) & 1).astype(bool)
_ODD_I, _ODD_J = np.meshgrid(_ODD, _ODD, indexing="ij")
_SIGN = {
    # name: (transpose, sign pattern over [i][j] of the original)
    "original": (False, None),
    "rotate90": (True, np.where(_ODD_J, 1, -1)),
    "rotate180": (False, np.where(_ODD_I ^ _ODD_J, -1, 1)),
    "rotate270": (True, np.where(_ODD_I, 1, -1)),
    "flip_x": (False, np.where(_ODD_I, 1, -1)),
    "flip_y": (False, np.where(_ODD_J, 1, -1)),
    "flip_plus1": (True, None),
    "flip_minus1": (True, np.where(_ODD_I ^ _ODD_J, -1, 1)),
}


def _window(old_dim: int) -> int:
    return (old_dim + 2 * 64 - 1) // (2 * 64)


def _box(a: np.ndarray, window: int, axis: int) -> np.ndarray:
    """The reference's box filter along `axis` (1: along rows, 0: along columns): output
    k is the mean of the inputs k-(window-half) .. k+half-1 that exist, half =
    (window+2)//2, so windows are clipped at the ends and divided by what they hold."""
    n = a.shape[axis]
    half = (window + 2) // 2
    back = window - half
    ksize, anchor = ((window, 1), (back, 0)) if axis == 1 else ((1, window), (0, back))
    sums = cv2.boxFilter(a, -1, ksize, anchor=anchor, normalize=False, borderType=cv2.BORDER_CONSTANT)
    k = np.arange(n)
    count = (np.minimum(k + half, n) - np.maximum(k - back, 0)).astype(np.float32)
    return sums / (count[None, :] if axis == 1 else count[:, None])


def _bits(b16: np.ndarray) -> str:
    median = np.partition(b16.ravel(), 127)[127]
    bits = (b16 > median).ravel()  # bit k = i*16 + j
    words = np.packbits(bits.reshape(16, 16)[:, ::-1], axis=1).view(">u2").ravel()
    return "".join(f"{w:04x}" for w in words[::-1])


def _quality(b64: np.ndarray) -> int:
    dv = np.trunc((b64[:-1, :] - b64[1:, :]) * np.float32(100) / np.float32(255)).astype(np.int64)
    dh = np.trunc((b64[:, :-1] - b64[:, 1:]) * np.float32(100) / np.float32(255)).astype(np.int64)
    return int(min((np.abs(dv).sum() + np.abs(dh).sum()) // 90, 100))


def _coefficients(rgb: np.ndarray) -> tuple[np.ndarray, int]:
    luma = cv2.cvtColor(rgb.astype(np.float32), cv2.COLOR_RGB2GRAY)
    rows, cols = luma.shape
    for _ in range(2):
        luma = _box(luma, _window(cols), axis=1)
        luma = _box(luma, _window(rows), axis=0)
    ri = (((np.arange(64) + 0.5) * rows) / 64.0).astype(np.int64)
    ci = (((np.arange(64) + 0.5) * cols) / 64.0).astype(np.int64)
    b64 = luma[np.ix_(ri, ci)]
    return _DCT @ b64 @ _DCT.T, _quality(b64)


def compute(rgb: np.ndarray) -> tuple[str, int]:
    """(hash as 64 hex digits, quality) of an RGB uint8 image (height x width x 3)."""
    b16, quality = _coefficients(rgb)
    return _bits(b16), quality


def compute_dihedral(rgb: np.ndarray) -> tuple[dict[str, str], int]:
    """The hashes of the image's eight rotations and reflections, and its quality."""
    b16, quality = _coefficients(rgb)
    out = {}
    for name, (transpose, sign) in _SIGN.items():
        b = b16 if sign is None else b16 * sign
        out[name] = _bits(b.T if transpose else b)
    return out, quality
