#!/usr/bin/env python3
"""FAISS baseline for `vigil bench hash --faiss`: radius search on the same 256-bit
hashes (raw 32-byte rows in two files). Prints one JSON object. Needs faiss-cpu."""

import json
import sys
import time

import faiss
import numpy as np

db = np.fromfile(sys.argv[1], dtype=np.uint8).reshape(-1, 32)
q = np.fromfile(sys.argv[2], dtype=np.uint8).reshape(-1, 32)
radius = int(sys.argv[3])
faiss.omp_set_num_threads(1)
out = {}
for name, make in [
    ("IndexBinaryFlat", lambda: faiss.IndexBinaryFlat(256)),
    ("IndexBinaryMultiHash", lambda: faiss.IndexBinaryMultiHash(256, 8, 32)),
]:
    index = make()
    if name == "IndexBinaryMultiHash":
        index.nflip = 3
    t = time.perf_counter()
    index.add(db)
    build = time.perf_counter() - t
    n = min(len(q), 100 if name == "IndexBinaryFlat" else 300)
    times = []
    for i in range(n):
        t = time.perf_counter()
        index.range_search(q[i : i + 1], radius + 1)  # FAISS keeps distances < radius
        times.append(time.perf_counter() - t)
    times.sort()
    out[name] = {
        "build_s": build,
        "query_p50_ms": times[len(times) // 2] * 1000,
        "query_p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        "queries": n,
    }
print(json.dumps(out))
