"""Writes two demo layers for `make run`: 2,000 stimuli, ReLU units driven by shared latent
factors (a 256-unit and a 192-unit layer), so every metric has something to find.

    python3 scripts/demo_data.py OUTDIR
"""

import pathlib
import sys

import numpy as np


def main():
    out = pathlib.Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2026)
    z = rng.standard_normal((2000, 32))
    x = np.maximum(z @ rng.standard_normal((32, 256)) + rng.standard_normal((2000, 256)), 0)
    y = np.maximum(z @ rng.standard_normal((32, 192)) + rng.standard_normal((2000, 192)), 0)
    np.save(out / "x.npy", x.astype(np.float32))
    np.save(out / "y.npy", y.astype(np.float32))
    print(f"wrote {out}/x.npy (2000 x 256) and {out}/y.npy (2000 x 192)")


if __name__ == "__main__":
    main()
