#!/usr/bin/env python3
"""The numbers behind the GPU backend's batched polar factors (`cuda/src/batched.rs`):
Newton–Schulz steps X ← X (1.5 I − 0.5 XᵀX) from X₀ = C / ‖C‖_F, at most 56 of them, stopped
early (checked before step 16, 20, 24, …) once ‖XᵀX − I‖_max ≤ 1e-9 — that step still
runs — and accepted when ‖XᵀX − I‖_max ≤ 1e-10, else the matrix goes to an SVD. Run here in float64 numpy on
cross-covariances of `make bench`'s layer pairs and on constructed conditioning, against
numpy's SVD polar factor: the difference is what the GPU parity tests (1e-9) allow for.

    python3 scripts/newton_schulz.py
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (layer_pair: the benchmark's synthetic layers)

STEPS, TOL, STOP_TOL = 56, 1e-10, 1e-9


def newton_schulz(c):
    """The polar iteration as the GPU runs it (one matrix a batch): the factor, its
    ‖XᵀX − I‖_max, and the steps taken."""
    x = c / np.linalg.norm(c)
    q = c.shape[1]
    for step in range(1, STEPS + 1):
        h = 1.5 * np.eye(q) - 0.5 * (x.T @ x)
        last = step >= 16 and step % 4 == 0 and 2 * np.abs(h - np.eye(q)).max() <= STOP_TOL
        x = x @ h
        if last:
            break
    return x, np.abs(x.T @ x - np.eye(q)).max(), step


def svd_polar(c):
    u, s, vt = np.linalg.svd(c, full_matrices=False)
    return u @ vt, s


def row(name, c):
    p, s = svd_polar(c)
    x, err, steps = newton_schulz(c)
    verdict = "accepted" if err <= TOL else "to SVD"
    diff = np.abs(x - p).max() if err <= TOL else float("nan")
    print(f"{name:<34} {s[0] / s[-1]:>10.3g} {steps:>6} {err:>10.2e} {verdict:>9} {diff:>12.2e}")


def main():
    print(f"{'matrix':<34} {'condition':>10} {'steps':>6} {'|XtX-I|':>10} {'':>9} {'vs SVD polar':>12}")
    for nx, ny in [(64, 64), (256, 256), (512, 512), (512, 256)]:
        x, y = bench.layer_pair(10000, nx, ny, 0)
        x, y = x - x.mean(0), y - y.mean(0)
        row(f"train XᵀY, m=8,000, {nx}×{ny}", x[:8000].T @ y[:8000])
    x, y = bench.layer_pair(10000, 256, 256, 1)
    u, _, vt = np.linalg.svd((x - x.mean(0)).T @ (y - y.mean(0)))
    for decades in (6, 7, 9):
        row(f"singular values 1 … 1e-{decades}", (u * np.logspace(0, -decades, 256)) @ vt)
    s = np.linspace(1, 0.5, 256)
    s[-1] = 1e-14
    row("one singular value 1e-14", (u * s) @ vt)


if __name__ == "__main__":
    main()
