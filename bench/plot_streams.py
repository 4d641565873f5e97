"""The PNG plot of a `vigil bench streams` report: streams against CPU, and latency.

Left: CPU-s per second of video against streams, one line per sampling mode, with the
Python baselines as flat lines (their cost per stream does not fall with more streams).
Right: banked frame on air to interrupt (p50, p95, max) per mode, push and pull.

Drawn with OpenCV (already in the test virtualenv for the baseline), so no plotting
package is added. Usage: python bench/plot_streams.py REPORT.json OUT.png
"""

import json
import sys

import cv2
import numpy as np

W, H = 1200, 520
PANEL_W = 560
MARGIN = dict(left=80, right=20, top=70, bottom=70)
COLOURS = {  # BGR, readable on white
    "keyframes": (180, 90, 20),
    "adaptive": (40, 140, 40),
    "fixed": (30, 30, 200),
    "nudenet": (120, 120, 120),
    "equal": (60, 60, 60),
}
FONT = cv2.FONT_HERSHEY_SIMPLEX


def legend(img, s, xy, colour):
    """Legend text on a white box, so lines under it do not hide it."""
    (w, h), _ = cv2.getTextSize(s, FONT, 0.45, 1)
    cv2.rectangle(img, (int(xy[0]) - 3, int(xy[1]) - h - 3), (int(xy[0]) + w + 3, int(xy[1]) + 4), (255, 255, 255), -1)
    text(img, s, xy, 0.45, colour)


def text(img, s, xy, scale=0.45, colour=(20, 20, 20), thickness=1):
    cv2.putText(img, s, (int(xy[0]), int(xy[1])), FONT, scale, colour, thickness, cv2.LINE_AA)


class Axes:
    """A panel with linear axes from (x0, y0) to (x1, y1) in data units."""

    def __init__(self, img, left, title, xlabel, ylabel, xr, yr):
        self.img, self.xr, self.yr = img, xr, yr
        self.px0 = left + MARGIN["left"]
        self.px1 = left + PANEL_W - MARGIN["right"]
        self.py0 = H - MARGIN["bottom"]
        self.py1 = MARGIN["top"]
        cv2.rectangle(img, (self.px0, self.py1), (self.px1, self.py0), (0, 0, 0), 1)
        text(img, title, (self.px0, self.py1 - 35), 0.55)
        text(img, xlabel, ((self.px0 + self.px1) / 2 - 60, H - 20))
        text(img, ylabel, (left + 5, self.py1 - 10), 0.4)
        for i in range(5):
            xv = xr[0] + (xr[1] - xr[0]) * i / 4
            yv = yr[0] + (yr[1] - yr[0]) * i / 4
            x, y = self.x(xv), self.y(yv)
            cv2.line(img, (x, self.py0), (x, self.py0 + 5), (0, 0, 0), 1)
            text(img, f"{xv:g}", (x - 10, self.py0 + 22), 0.4)
            cv2.line(img, (self.px0 - 5, y), (self.px0, y), (0, 0, 0), 1)
            cv2.line(img, (self.px0, y), (self.px1, y), (225, 225, 225), 1)
            text(img, f"{yv:.3g}", (self.px0 - 55, y + 4), 0.4)

    def x(self, v):
        return int(self.px0 + (v - self.xr[0]) / max(self.xr[1] - self.xr[0], 1e-9) * (self.px1 - self.px0))

    def y(self, v):
        return int(self.py0 - (v - self.yr[0]) / max(self.yr[1] - self.yr[0], 1e-9) * (self.py0 - self.py1))

    def polyline(self, points, colour, dashed=False):
        pts = [(self.x(a), self.y(b)) for a, b in points]
        for (a, b) in zip(pts, pts[1:]):
            if dashed:
                n = max(int(np.hypot(b[0] - a[0], b[1] - a[1]) / 10), 1)
                for k in range(0, n, 2):
                    p = (int(a[0] + (b[0] - a[0]) * k / n), int(a[1] + (b[1] - a[1]) * k / n))
                    q = (int(a[0] + (b[0] - a[0]) * (k + 1) / n), int(a[1] + (b[1] - a[1]) * (k + 1) / n))
                    cv2.line(self.img, p, q, colour, 2, cv2.LINE_AA)
            else:
                cv2.line(self.img, a, b, colour, 2, cv2.LINE_AA)
        for p in pts:
            cv2.circle(self.img, p, 4, colour, -1, cv2.LINE_AA)


def main():
    report = json.load(open(sys.argv[1]))
    img = np.full((H, W, 3), 255, np.uint8)
    levels = report.get("levels", [])
    baselines = report.get("baselines", [])
    max_n = max([l["streams"] for l in levels] + [1])
    cpu = [l["cpu_secs_per_video_sec"] for l in levels] + [b["cpu_secs_per_video_sec"] for b in baselines]
    left = Axes(img, 0, "CPU per second of video (lower is better)", "streams", "CPU-s / video-s",
                (0, max_n * 1.1), (0, max(cpu + [0.01]) * 1.15))
    legend_y = MARGIN["top"] + 20
    for mode in dict.fromkeys(l["mode"] for l in levels):
        pts = [(l["streams"], l["cpu_secs_per_video_sec"]) for l in levels if l["mode"] == mode]
        left.polyline(pts, COLOURS.get(mode, (0, 0, 0)))
        for l in levels:
            if l["mode"] == mode and not l.get("held"):
                cv2.drawMarker(img, (left.x(l["streams"]), left.y(l["cpu_secs_per_video_sec"])), (0, 0, 255),
                               cv2.MARKER_TILTED_CROSS, 14, 2)
        legend(img, f"Vigil {mode}", (left.px1 - 170, legend_y), COLOURS.get(mode, (0, 0, 0)))
        legend_y += 18
    for b in baselines:
        c = b["cpu_secs_per_video_sec"]
        left.polyline([(0, c), (max_n * 1.1, c)], COLOURS.get(b["work"], (0, 0, 0)), dashed=True)
        legend(img, f"Python {b['work']}", (left.px1 - 170, legend_y), COLOURS.get(b["work"], (0, 0, 0)))
        legend_y += 18
    text(img, "x: not held (coverage < 99% or a growing queue)", (left.px0 + 5, left.py0 - 8), 0.38, (0, 0, 200))

    lat = report.get("latency", [])
    vals = [v for l in lat for v in (l.get("ms_p50"), l.get("ms_p95"), l.get("ms_max")) if v is not None]
    right = Axes(img, PANEL_W + 60, "Banked frame on air to interrupt", "p50 / p95 / max", "ms",
                 (0, 3), (0, max(vals + [100]) * 1.15))
    legend_y = MARGIN["top"] + 20
    for l in lat:
        pts = [(i + 0.5, l[k]) for i, k in enumerate(("ms_p50", "ms_p95", "ms_max")) if l.get(k) is not None]
        colour = COLOURS.get(l["mode"], (0, 0, 0))
        right.polyline(pts, colour, dashed=l["ingest"].startswith("pull"))
        legend(img, f"{l['mode']} {l['ingest'].split(' ')[0]}", (right.px1 - 150, legend_y), colour)
        legend_y += 18
    machine = report.get("machine", {})
    text(img, f"{machine.get('cpu') or 'unknown CPU'}, {machine.get('cores')} cores", (10, 18), 0.45)
    cv2.imwrite(sys.argv[2], img)


if __name__ == "__main__":
    main()
