#!/usr/bin/env bash
# Every GPU check in one call, for a machine with a CUDA device and the binaries built
# elsewhere (it needs no Rust toolchain):
#   here:   cargo test --release -p repflow-cuda --no-run; cargo build --release
#           scripts/gpu-check.sh --stage gpu-check      # copies the binaries it needs
#   there:  gpu-check/run.sh                            # prints a table; under 8 minutes
# Checks: the backend self-check, GPU-vs-CPU parity of every backend operation, every metric
# and every custom kernel (cuda/tests/parity.rs), and `repflow score` timed with
# --device cpu and cuda on m = 10,000 stimuli × 2,048 units, and `repflow shift` (the
# spatial-shift search) on 2,000 stimuli × 64 channels × 14 × 14 maps (the whole command as
# a user runs it), scores compared; then issue 13's all-pairs benchmark (allpairs_bench.py:
# 54 × 54 ResNet-50-shaped layer pairs, m = 10,000, `repflow pairs` on the GPU against the
# 2-core CPU path and a torch.linalg.svd loop, both on random samples of pairs) for
# Procrustes, within what is left of the 8 minutes (linear: `python3 allpairs_bench.py
# --repflow ./repflow --metrics linear`, separately).
set -euo pipefail
if [[ "${1:-}" == "--stage" ]]; then
    out=${2:?folder}
    mkdir -p "$out"
    cp target/release/repflow "$out/"
    for t in parity nvrtc; do
        cp "$(ls -t target/release/deps/$t-* | grep -v '\.d$' | head -1)" "$out/$t"
    done
    cp "$0" "$out/run.sh"
    cp scripts/allpairs_bench.py "$out/"
    exit 0
fi
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
echo "== parity (GPU vs CPU)"
./parity --test-threads 1 --nocapture
echo "== timing: repflow score, m=10000, n=2048 (whole command)"
python3 - <<'PY'
import numpy as np
rng = np.random.default_rng(0)
z = rng.normal(size=(10000, 64))
np.save("x.npy", z @ rng.normal(size=(64, 2048)) + rng.normal(size=(10000, 2048)))
np.save("y.npy", z @ rng.normal(size=(64, 2048)) + rng.normal(size=(10000, 2048)))
PY
printf "%-12s %10s %10s %8s %s\n" metric cpu_s cuda_s ratio "scores (cpu / cuda)"
for metric in procrustes linear; do
    t0=$(date +%s.%N); c=$(./repflow score x.npy y.npy --metric $metric --device cpu --json); t1=$(date +%s.%N)
    g=$(./repflow score x.npy y.npy --metric $metric --device cuda --json); t2=$(date +%s.%N)
    sc=$(echo "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["score"])')
    sg=$(echo "$g" | python3 -c 'import json,sys; print(json.load(sys.stdin)["score"])')
    python3 -c "print(f'%-12s %10.2f %10.2f %7.1fx %s / %s' % ('$metric', $t1-$t0, $t2-$t1, ($t1-$t0)/($t2-$t1), '$sc', '$sg'))"
done
echo "== timing: repflow shift, 2000 x 64 x 14 x 14 maps (whole command)"
python3 - <<'PY'
import numpy as np
rng = np.random.default_rng(1)
a = rng.standard_normal((2000, 64, 14, 14)).astype(np.float32)
mix = np.einsum("ij,nihw->njhw", rng.standard_normal((64, 64)), a)
np.save("ma.npy", a)
np.save("mb.npy", (np.roll(mix, (2, -3), axis=(2, 3)) + rng.standard_normal(a.shape)).astype(np.float32))
PY
t0=$(date +%s.%N); c=$(./repflow shift ma.npy mb.npy --device cpu --json); t1=$(date +%s.%N)
g=$(./repflow shift ma.npy mb.npy --device cuda --json); t2=$(date +%s.%N)
sc=$(echo "$c" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["score"], v["shifts"][0])')
sg=$(echo "$g" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["score"], v["shifts"][0])')
python3 -c "print(f'%-12s %10.2f %10.2f %7.1fx %s / %s' % ('shift', $t1-$t0, $t2-$t1, ($t1-$t0)/($t2-$t1), '$sc', '$sg'))"
echo "== all pairs: 54 x 54 ResNet-50-shaped layers, m=10000, Procrustes (whole command)"
timeout 330 python3 allpairs_bench.py --repflow ./repflow --metrics procrustes --cpu-sample 4 --torch-sample 30 \
    || echo "all-pairs benchmark stopped (exit $?): run it alone for its table"
