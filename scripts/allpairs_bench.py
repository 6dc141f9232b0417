#!/usr/bin/env python3
"""Issue 13's benchmark: all layer pairs of two ResNet-50-shaped networks (54 × 54 pairs of
centre-pixel layers, m = 10,000 stimuli, 5 folds), scored by `repflow pairs` as a user runs
it (the whole command: reading 108 files, preparing them, scoring, writing the table) on a
device, against

  - the 2-core CPU path: `repflow score --device cpu` on a random sample of pairs, pinned to
    two cores (`taskset -c 0,1`, RAYON_NUM_THREADS=2), its mean time per pair times the
    number of pairs (a random sample's mean is an unbiased estimate of the mean);
  - a torch loop over `torch.linalg.svd` on the same device (Procrustes only), float64,
    the same folds (scikit-learn's KFold(5, shuffle=True, random_state=42), written out),
    on a random sample of pairs, extrapolated the same way.

Scores are compared pair by pair on the samples (largest absolute difference), and the
device's memory is sampled with nvidia-smi while `repflow pairs` runs (its peak).

On a GPU machine (what scripts/gpu-check.sh runs):
    python3 allpairs_bench.py --repflow ./repflow
The 2-core CPU path's estimate alone, on a machine without a device:
    python3 scripts/allpairs_bench.py --repflow target/release/repflow --cpu-only --cpu-sample 12
A small run of the same code on a CPU-only machine (checks the script, not a speed):
    python3 scripts/allpairs_bench.py --repflow target/release/repflow --device cpu \
        --layers 6 --scale 0.05 --stimuli 600 --cpu-sample 3 --torch-sample 3
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

# ResNet-50's 54 layers with weights, in forward order: conv1, then per bottleneck block its
# three convolutions (and the block's downsample first where it has one), then fc.
RESNET50 = [64]
for planes, blocks in [(64, 3), (128, 4), (256, 6), (512, 3)]:
    RESNET50.append(4 * planes)  # the stage's downsample
    RESNET50 += [planes, planes, 4 * planes] * blocks
RESNET50.append(1000)
assert len(RESNET50) == 54


def widths(layers, scale):
    """`layers` of ResNet-50's widths spread over its depth, scaled by `scale` (at least 4)."""
    idx = np.linspace(0, len(RESNET50) - 1, layers).round().astype(int) if layers < 54 else range(54)
    return [max(4, int(round(RESNET50[i] * scale))) for i in idx]


def write_network(folder, name, ws, m, seed, latent):
    """One network's layers as float32 .npy files: a shared latent signal through a random
    mix per layer, plus noise (so that pairs have structure to align)."""
    rng = np.random.default_rng(seed)
    paths = []
    for k, n in enumerate(ws):
        x = latent @ rng.standard_normal((latent.shape[1], n)) + rng.standard_normal((m, n))
        p = folder / f"{name}_{k:02d}.npy"
        np.save(p, np.maximum(x, 0).astype(np.float32) + 0.01 * x.astype(np.float32))
        paths.append(p)
    return paths


class DeviceMemory(threading.Thread):
    """Peak device memory in use (MB, nvidia-smi) while it runs; None without nvidia-smi."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = None, shutil.which("nvidia-smi") is not None

    def run(self):
        while self.running:
            out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True)
            if out.returncode == 0 and out.stdout.strip():
                used = int(out.stdout.split()[0])
                self.peak = used if self.peak is None else max(self.peak, used)
            time.sleep(0.2)

    def stop(self):
        self.running = False
        self.join(timeout=2)
        return self.peak


def repflow_pairs(repflow, xs, ys, metric, device, out):
    cmd = [repflow, "pairs", "--device", device, "--metric", metric, "--out", str(out), "--x", *map(str, xs),
           "--y", *map(str, ys)]
    memory = DeviceMemory()
    memory.start()
    t = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    peak = memory.stop()
    if run.returncode not in (0, 1):
        sys.exit(f"repflow pairs failed ({run.returncode}): {run.stderr}")
    table = {}
    for line in out.read_text().splitlines()[1:]:
        f = line.split(",")
        table[(f[0], f[1])] = float(f[3]) if f[3] else float("nan")
    return seconds, peak, table


def cpu_sample(repflow, pairs, metric):
    """Mean seconds per pair of `repflow score` on two cores, its standard error, and the
    scores."""
    pin = ["taskset", "-c", "0,1"] if shutil.which("taskset") else []
    env = dict(os.environ, RAYON_NUM_THREADS="2")
    times, scores = [], {}
    for x, y in pairs:
        t = time.perf_counter()
        run = subprocess.run([*pin, repflow, "score", str(x), str(y), "--metric", metric, "--device", "cpu",
                              "--json"], capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t)
        if run.returncode != 0:
            sys.exit(f"repflow score failed: {run.stderr}")
        scores[(str(x), str(y))] = json.loads(run.stdout)["score"]
    sem = float(np.std(times, ddof=1) / np.sqrt(len(times))) if len(times) > 1 else float("nan")
    return float(np.mean(times)), sem, scores


def kfold(m, k=5, seed=42):
    """scikit-learn's KFold(k, shuffle=True, random_state=seed) test folds."""
    idx = np.random.RandomState(seed).permutation(m)
    sizes = np.full(k, m // k)
    sizes[: m % k] += 1
    return np.split(idx, np.cumsum(sizes)[:-1])


def torch_procrustes(x, y, folds, torch):
    """Cross-validated Procrustes (repflow's and scripts/reference.py's definition, equal or
    zero-padded widths) with torch.linalg.svd, float64, on x's device."""
    m = x.shape[0]
    scores = []
    for te in folds:
        mask = torch.ones(m, dtype=torch.bool, device=x.device)
        mask[te] = False
        xtr, ytr = x[mask], y[mask]
        mx, my = xtr.mean(0), ytr.mean(0)
        c = (xtr - mx).T @ (ytr - my)
        u, _, vh = torch.linalg.svd(c, full_matrices=False)
        r = u @ vh
        xte, yte = x[te] - mx, y[te] - my

        def colcorr(p, a):
            p, a = p - p.mean(0), a - a.mean(0)
            r = (p * a).sum(0) / (p.norm(dim=0) * a.norm(dim=0))
            return torch.nan_to_num(r, nan=0.0).mean()

        scores.append(0.5 * (colcorr(xte @ r, yte) + colcorr(yte @ r.T, xte)))
    return float(torch.stack(scores).mean())


def torch_sample(pairs, device):
    try:
        import torch
    except ImportError:
        return None, {}, "torch is not installed"
    if device.startswith("cuda") and not torch.cuda.is_available():
        return None, {}, "torch has no CUDA device"
    dev = torch.device("cuda" if device.startswith("cuda") else "cpu")
    times, scores = [], {}
    folds = None
    for x, y in pairs:
        t = time.perf_counter()
        a = torch.from_numpy(np.load(x).astype(np.float64)).to(dev)
        b = torch.from_numpy(np.load(y).astype(np.float64)).to(dev)
        folds = folds or [torch.from_numpy(f).to(dev) for f in kfold(a.shape[0])]
        scores[(str(x), str(y))] = torch_procrustes(a, b, folds, torch)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return float(np.mean(times)), scores, f"torch {torch.__version__} on {dev}"


def largest_difference(table, sample):
    diffs = [abs(table[k] - v) for k, v in sample.items() if k in table]
    return max(diffs) if diffs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repflow", required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--metrics", default="procrustes,linear")
    ap.add_argument("--stimuli", type=int, default=10000)
    ap.add_argument("--layers", type=int, default=54)
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--cpu-sample", type=int, default=6)
    ap.add_argument("--torch-sample", type=int, default=40)
    ap.add_argument("--work", default="allpairs-data")
    ap.add_argument("--cpu-only", action="store_true",
                    help="only the 2-core CPU path's sample (on a machine without a device)")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(exist_ok=True)
    ws = widths(args.layers, args.scale)
    t = time.perf_counter()
    latent = np.random.default_rng(0).standard_normal((args.stimuli, 64))
    xs = write_network(work, "a", ws, args.stimuli, 1, latent)
    ys = write_network(work, "b", ws, args.stimuli, 2, latent)
    print(f"data: 2 × {len(ws)} layers ({sum(ws)} units each network), m = {args.stimuli}: "
          f"{time.perf_counter() - t:.1f} s to write", flush=True)
    pairs = [(x, y) for x in xs for y in ys]
    sample_rng = random.Random(0)
    rows = []
    for metric in args.metrics.split(","):
        if args.cpu_only:
            cpu_pairs = sample_rng.sample(pairs, min(args.cpu_sample, len(pairs)))
            per_pair, sem, _ = cpu_sample(args.repflow, cpu_pairs, metric)
            print(f"{metric}: 2-core CPU path, {len(cpu_pairs)} random pairs: {per_pair:.2f} ± {sem:.2f} s "
                  f"a pair, all {len(pairs)} pairs ≈ {per_pair * len(pairs):.0f} ± {sem * len(pairs):.0f} s",
                  flush=True)
            continue
        seconds, peak, table = repflow_pairs(args.repflow, xs, ys, metric, args.device, work / f"{metric}.csv")
        print(f"{metric}: repflow pairs --device {args.device}: {seconds:.1f} s for {len(pairs)} pairs"
              + (f", device memory peak {peak} MB" if peak is not None else ""), flush=True)
        cpu_pairs = sample_rng.sample(pairs, min(args.cpu_sample, len(pairs)))
        per_pair, _, cpu_scores = cpu_sample(args.repflow, cpu_pairs, metric)
        cpu_total = per_pair * len(pairs)
        row = dict(metric=metric, pairs=len(pairs), device=args.device, repflow_s=seconds,
                   device_memory_mb=peak, cpu_2core_s=cpu_total, cpu_sample=len(cpu_pairs),
                   vs_cpu=cpu_total / seconds, cpu_max_diff=largest_difference(table, cpu_scores))
        if metric == "procrustes" and args.torch_sample > 0:
            torch_pairs = sample_rng.sample(pairs, min(args.torch_sample, len(pairs)))
            per_pair, torch_scores, what = torch_sample(torch_pairs, args.device)
            row["torch"] = what
            if per_pair is not None:
                row.update(torch_s=per_pair * len(pairs), torch_sample=len(torch_pairs),
                           vs_torch=per_pair * len(pairs) / seconds,
                           torch_max_diff=largest_difference(table, torch_scores))
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.cpu_only:
        return
    (work / "allpairs.json").write_text(json.dumps(rows, indent=1))
    print(f"\n{'metric':<11} {'pairs':>6} {'repflow s':>10} {'2-core CPU s':>13} {'ratio':>7} "
          f"{'torch s':>9} {'ratio':>7} {'max |Δ|':>9} {'dev MB':>7}")
    for r in rows:
        torch_s = f"{r['torch_s']:9.1f}" if "torch_s" in r else f"{'-':>9}"
        vs_torch = f"{r['vs_torch']:6.1f}x" if "vs_torch" in r else f"{'-':>7}"
        diff = max(r["cpu_max_diff"], r.get("torch_max_diff", 0.0))
        mem = f"{r['device_memory_mb']:7d}" if r["device_memory_mb"] is not None else f"{'-':>7}"
        print(f"{r['metric']:<11} {r['pairs']:>6} {r['repflow_s']:10.1f} {r['cpu_2core_s']:13.0f} "
              f"{r['vs_cpu']:6.1f}x {torch_s} {vs_torch} {diff:9.1e} {mem}")


if __name__ == "__main__":
    main()
