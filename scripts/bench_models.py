"""`make bench-models`: training and inference throughput of repflow's candle networks
beside PyTorch CPU eager on the same architecture, width, batch and optimiser, in the same
run (2 threads each). Needs torch (installed only for this benchmark):

    make setup-torch     # torch and torchvision, pinned in python/requirements-torch.txt
    python3 scripts/bench_models.py
"""

import json
import statistics
import pathlib
import subprocess
import sys
import time

import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from model_fixtures import resnet, vgg  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASES = [("resnet18", 16), ("vgg16-bn", 8)]


def torch_speed(arch, width, batch=128, warm_up=20, steps=30):
    """Median of ten timed training steps (after twenty warm-up steps) and of eight inference
    batches of 256 (after one warm-up), as `metrics model-speed` measures candle."""
    torch.set_num_threads(2)
    torch.manual_seed(0)
    m = (resnet if arch.startswith("resnet") else vgg)(arch, width, 1, True)
    params = sum(p.numel() for p in m.parameters())
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    m.train()
    step_s = []
    for i in range(steps):
        t = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        if i >= warm_up:
            step_s.append(time.perf_counter() - t)
    m.eval()
    xe = torch.rand(256, 1, 28, 28)
    batch_s = []
    with torch.no_grad():
        m(xe)
        for _ in range(8):
            t = time.perf_counter()
            m(xe)
            batch_s.append(time.perf_counter() - t)
    return batch / statistics.median(step_s), 256 / statistics.median(batch_s), params


def candle_speed(arch, width):
    exe = sorted((ROOT / "target" / "release" / "deps").glob("metrics-*"), key=lambda p: p.stat().st_mtime)
    exe = [p for p in exe if p.suffix == "" and p.is_file()][-1]
    out = subprocess.run([str(exe), "model-speed", arch, str(width)], check=True, capture_output=True, text=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    return r["train_images_per_s"], r["infer_images_per_s"], r["params"]


ROUNDS = 3


def main():
    print("| model | round | params | candle train (img/s) | torch train | ratio | candle infer (img/s) | torch infer | ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    # Rounds interleaved, candle then torch in each: this machine's speed drifts by 10-40%
    # between minutes, so each round's ratio compares neighbours in time; the summary row
    # of each model is the median of its rounds' ratios.
    ratios = {case: ([], []) for case in CASES}
    for r in range(ROUNDS):
        for arch, width in CASES:
            ct, ci, cp = candle_speed(arch, width)
            tt, ti, tp = torch_speed(arch, width)
            assert cp == tp, f"parameter counts differ: {cp} vs {tp}"
            ratios[(arch, width)][0].append(ct / tt)
            ratios[(arch, width)][1].append(ci / ti)
            print(f"| {arch} w{width} | {r + 1} | {cp:,} | {ct:.0f} | {tt:.0f} | {ct / tt:.2f}x | {ci:.0f} | {ti:.0f} | {ci / ti:.2f}x |", flush=True)
    for (arch, width), (train, infer) in ratios.items():
        print(f"| **{arch} w{width}** | median | | | | **{statistics.median(train):.2f}x** | | | **{statistics.median(infer):.2f}x** |")


if __name__ == "__main__":
    main()
