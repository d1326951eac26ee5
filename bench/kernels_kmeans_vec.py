"""Micro-benchmark of the vector palettization kernel on MiniLM-shaped weights.

Synthetic normal weights (std 0.04, 1e-4 of the values 10x larger), one group per
weight: 30522x384, 24x 384x384, 6x 1536x384, 6x 384x1536 (22.7 M values).  Vectors
are ``d`` consecutive output-channel values; groups of one shape go in one call.

    python bench/kernels_kmeans_vec.py            # d2-k16, d4-k16, d2-k256
    python bench/kernels_kmeans_vec.py --configs d2-k16 --repeat 3 --quality

Times are wall and process CPU time with BLAS limited to one thread (``--threads``).
``calibration`` is a fixed float32 matmul workload: compare it between runs to see
how busy the machine was.  ``--quality`` also compares the SSE with scikit-learn's
``KMeans(n_init=1, random_state=0)`` on 50k-vector subsamples of a few groups.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from coreai_opt.coreai_utils._kernels.kmeans_vec import palettize_vectors

SHAPES = [(1, 30522, 384), (24, 384, 384), (6, 1536, 384), (6, 384, 1536)]


def weights(shape_index, count, rows, cols, d, seed=0):
    """(count, rows * cols / d, d) float32 vectors of d consecutive output channels."""
    rng = np.random.default_rng([seed, shape_index])
    w = (rng.standard_normal((count, rows, cols)) * 0.04).astype(np.float32)
    w[rng.random(w.shape) < 1e-4] *= 10
    if rows % d:  # e.g. 30522 rows and d = 4: group along the input channels instead
        return w.reshape(count, -1, d)
    return w.reshape(count, rows // d, d, cols).transpose(0, 1, 3, 2).reshape(count, -1, d)


def calibration():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((16, 4)).astype(np.float32), rng.standard_normal((4, 1 << 16)).astype(np.float32)
    start = time.process_time()
    for _ in range(200):
        a @ b
    return time.process_time() - start


def run(d, k, data, repeat):
    best = None
    for _ in range(repeat):
        rows = []
        for x in data:
            wall, cpu = time.perf_counter(), time.process_time()
            lut, indices = palettize_vectors(x, k)
            rows.append((x.shape, time.perf_counter() - wall, time.process_time() - cpu))
        total = sum(r[2] for r in rows)
        if best is None or total < sum(r[2] for r in best[0]):
            best = rows, lut, indices
    return best


def quality(d, k, data):
    from sklearn.cluster import KMeans

    ratios = []
    rng = np.random.default_rng(1)
    for x in (data[1][0], data[2][0], data[0][0]):
        sub = x[np.sort(rng.choice(len(x), min(len(x), 50000), replace=False))]
        lut, idx = palettize_vectors(sub[None], k)
        sub64 = sub.astype(np.float64)
        ours = np.square(sub64 - lut[0][idx[0]]).sum()
        model = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=0).fit(sub64)
        ratios.append(ours / np.square(sub64 - model.cluster_centers_[model.labels_]).sum())
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="d2-k16,d4-k16,d2-k256")
    parser.add_argument("--repeat", type=int, default=1, help="runs per config; the fastest counts")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (threadpoolctl)")
    parser.add_argument("--quality", action="store_true")
    args = parser.parse_args()
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:
        print("threadpoolctl missing: BLAS threads not limited")
    print(f"calibration (200 float32 16x4 @ 4x65536 products): {calibration():.3f} s cpu")
    for config in args.configs.split(","):
        d, k = (int(part[1:]) for part in config.split("-"))
        data = [weights(i, *shape, d) for i, shape in enumerate(SHAPES)]
        rows, _, _ = run(d, k, data, args.repeat)
        print(f"\n{config}: {sum(x.size for x in data) / 1e6:.1f} M values")
        for shape, wall, cpu in rows:
            print(f"  {str(shape):24s} wall {wall:6.3f} s   cpu {cpu:6.3f} s")
        print(f"  {'total':24s} wall {sum(r[1] for r in rows):6.3f} s   cpu {sum(r[2] for r in rows):6.3f} s")
        if args.quality:
            print("  SSE / sklearn SSE on 50k subsamples:", " ".join(f"{r:.4f}" for r in quality(d, k, data)))


if __name__ == "__main__":
    main()
