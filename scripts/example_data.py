"""Writes the activations behind pipelines/example*.toml into data/example/: three
"networks" (two seeds of one architecture and a narrower one) seen on the same 1,000
stimuli, each a stack of ReLU layers driven by shared latent factors whose share of each
layer shrinks with depth, so alignment falls with depth as in the seed paper.

    python3 scripts/example_data.py [OUTDIR]
"""

import pathlib
import sys

import numpy as np

STIMULI = 1000
MODELS = {"convnet_seed0": (0, [32, 64, 64, 128]), "convnet_seed1": (1, [32, 64, 64, 128]), "narrow_seed0": (2, [16, 32, 48])}


def main():
    out = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "data/example")
    shared = np.random.default_rng(2026).standard_normal((STIMULI, 16))
    for name, (seed, widths) in MODELS.items():
        rng = np.random.default_rng(seed)
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        for k, w in enumerate(widths):
            depth = k / max(len(widths) - 1, 1)
            private = rng.standard_normal((STIMULI, 16))
            z = (1 - 0.6 * depth) * shared + 0.6 * depth * private
            x = np.maximum(z @ rng.standard_normal((16, w)) + 0.5 * rng.standard_normal((STIMULI, w)), 0)
            np.save(d / f"layer{k + 1}.npy", x.astype(np.float32))
        (d / "stimuli.txt").write_text("".join(f"stimulus_{i:04d}\n" for i in range(STIMULI)))
    print(f"wrote {len(MODELS)} models x {STIMULI} stimuli under {out}")


if __name__ == "__main__":
    main()
