"""Writes tests/fixtures/: small activation matrices, the scores reference.py computes on
them, scikit-learn's fold indices and numpy's Haar rotations. Rerun after changing a
convention:  python3 scripts/make_fixtures.py
"""

import json
import pathlib

import numpy as np

import reference as ref

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def latent_pair(m, nx, ny, d=6, noise=0.5, seed=0, relu=False):
    """Two layers driven by shared latent factors plus independent noise."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((m, d))
    x = z @ rng.standard_normal((d, nx)) + noise * rng.standard_normal((m, nx))
    y = z @ rng.standard_normal((d, ny)) + noise * rng.standard_normal((m, ny))
    if relu:
        x, y = np.maximum(x, 0), np.maximum(y, 0)
    return x, y


def case(name, x, y, metrics, k=5, seed=42, corr="pearson", test_zscore="train", alphas=None,
         dim_match="zeropad", hsic="biased", rsa_compare="spearman", rotate_x=None):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    if rotate_x is not None:
        x = x @ ref.haar_rotation(x.shape[1], rotate_x)
    xk, dropped_x = ref.drop_dead(x)
    yk, dropped_y = ref.drop_dead(y)
    folds = ref.kfold(x.shape[0], k, seed)
    spearman = corr == "spearman"
    expected = {}
    for metric in metrics:
        if metric == "linear":
            a = ref.ALPHAS if alphas is None else np.array(alphas, dtype=float)
            expected[metric] = ref.linear(xk, yk, folds, a, spearman, test_zscore == "own")
        elif metric == "procrustes":
            expected[metric] = ref.procrustes(xk, yk, folds, spearman, dim_match)
        elif metric == "permutation":
            expected[metric] = ref.permutation(xk, yk, folds, spearman)
        elif metric == "soft-matching":
            expected[metric] = ref.soft_matching(xk, yk, folds, spearman)
        elif metric == "cka":
            expected[metric] = ref.cka(xk, yk, hsic == "unbiased")
        elif metric == "rsa":
            expected[metric] = ref.rsa(xk, yk, rsa_compare)
    return dict(
        name=name, x=f"{name}/x.npy", y=f"{name}/y.npy",
        settings=dict(folds=k, seed=seed, corr=corr, test_zscore=test_zscore, alphas=alphas,
                      dim_match=dim_match, hsic=hsic, rsa_compare=rsa_compare, rotate_x=rotate_x),
        dropped_x=len(dropped_x), dropped_y=len(dropped_y), expected=expected,
    )


ALL = ["linear", "procrustes", "permutation", "soft-matching", "cka", "rsa"]


def write_summaries():
    """Means over seed pairs and correlation tests (the report's summaries)."""
    rng = np.random.default_rng(21)
    seeds4 = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    pair_sets = [[(0, 1), (0, 2), (1, 2)], seeds4, [(0, 1), (1, 2)], [(0, 1), (0, 2), (0, 3)],
                 [(0, 1), (2, 3)], [(0, 1)]]
    pair_means = []
    for pairs in pair_sets:
        values = [(a, b, float(rng.uniform(0.3, 0.9))) for a, b in pairs]
        mean, se = ref.pair_mean(values)
        pair_means.append(dict(values=values, mean=mean, se=se))
    correlations = []
    for n, n_random, seed in [(3, 0, 0), (5, 0, 0), (6, 0, 0), (8, 0, 0), (9, 999, 3), (20, 199, 8)]:
        x = rng.normal(size=n)
        y = 0.6 * x + rng.normal(size=n)
        r, p = ref.correlation_test(x, y, n_random, seed)
        correlations.append(dict(x=x.tolist(), y=y.tolist(), n_random=n_random, seed=seed, r=r, p=p))
    # ties: a pairing equal to r up to rounding counts as at least r
    x, y = [1.0, 2.0, 2.0, 3.0, 4.0, 4.0], [0.1, 0.2, 0.2, 0.3, 0.5, 0.5]
    r, p = ref.correlation_test(x, y, 0, 0)
    correlations.append(dict(x=x, y=y, n_random=0, seed=0, r=r, p=p))
    (OUT / "summaries.json").write_text(json.dumps(dict(pair_means=pair_means, correlations=correlations), indent=1))


def shift_maps(n, ca, cb, h, w, shift, seed, noise=0.5):
    """Two layers' full maps: b holds a random mix of a's channels moved by `shift` (plus
    noise), so the shift search should find `shift` back."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, ca, h, w))
    mix = np.einsum("ij,nihw->njhw", rng.standard_normal((ca, cb)), a)
    b = np.roll(mix, shift, axis=(2, 3)) + noise * rng.standard_normal((n, cb, h, w))
    return a.astype(np.float32), b.astype(np.float32)


def write_shift_cases():
    """tests/fixtures/shift.json: the spatial-shift search on small full maps (f32 values,
    exact in JSON), by brute force over np.roll shifts (reference.shift_procrustes)."""
    cases = []
    def add(name, a, b, k=5, seed=42, corr="pearson"):
        folds = ref.kfold(a.shape[0], k, seed)
        expected = ref.shift_procrustes(a, b, folds, corr == "spearman")
        cases.append(dict(name=name, a=a.ravel().tolist(), a_shape=list(a.shape),
                          b=b.ravel().tolist(), b_shape=list(b.shape), folds=k, seed=seed,
                          corr=corr, expected=expected))
    a, b = shift_maps(40, 4, 4, 5, 6, (2, -1), seed=11)
    add("equal_channels", a, b)
    a, b = shift_maps(36, 3, 5, 4, 4, (1, 2), seed=12, noise=1.0)
    add("unequal_channels_spearman", a, b, k=3, seed=0, corr="spearman")
    a, b = shift_maps(30, 4, 3, 3, 3, (0, 0), seed=13)
    a[:, 1] = 0.5                      # dead channel
    add("dead_channel_no_shift", a, b)
    a, b = shift_maps(50, 5, 4, 1, 1, (0, 0), seed=14)
    add("dense_1x1", a, b)
    (OUT / "shift.json").write_text(json.dumps(cases))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    write_shift_cases()
    cases = []
    x, y = latent_pair(103, 12, 12, seed=1)
    cases.append(case("equal_widths", x, y, ALL))
    cases.append(case("equal_widths_seed0_k3", x, y, ALL, k=3, seed=0))
    cases.append(case("equal_widths_unshuffled", x, y, ["linear", "procrustes", "permutation"], seed=None))
    cases.append(case("equal_widths_spearman", x, y, ALL, corr="spearman", rsa_compare="pearson"))
    cases.append(case("equal_widths_own_zscore_lstsq", x, y, ["linear"], test_zscore="own", alphas=[0.0]))
    cases.append(case("equal_widths_custom_alphas", x, y, ["linear"], alphas=[0.01, 1.0, 100.0]))
    cases.append(case("equal_widths_unbiased_cka", x, y, ["cka"], hsic="unbiased"))
    cases.append(case("equal_widths_rotated", x, y, ALL, rotate_x=7))

    x, y = latent_pair(90, 10, 7, seed=2)
    cases.append(case("unequal_widths", x, y, ["linear", "procrustes", "soft-matching", "cka", "rsa"]))
    cases.append(case("unequal_widths_pca", x, y, ["procrustes"], dim_match="pca"))
    cases.append(case("unequal_widths_pca_swapped", y, x, ["procrustes"], dim_match="pca"))
    cases.append(case("unequal_widths_spearman", x, y, ["linear", "procrustes", "soft-matching"], corr="spearman"))

    # Ties (rounded values), dead units and units constant within some folds (sparse ReLU).
    x, y = latent_pair(77, 9, 9, seed=3, relu=True)
    x = np.round(x, 1)
    x[:, 2] = 0.0                      # dead over all stimuli
    y[:, 4] = 0.0
    y[:, 5] = 0.0
    y[[3, 40], 5] = [1.0, 2.0]         # constant on most folds' test rows
    # (No RSA here: with rounded values, RDM entries equal in exact arithmetic differ in
    # the last bit between any two implementations, so Spearman's tie groups differ.)
    cases.append(case("dead_and_sparse_units", x, y, ["linear", "procrustes", "soft-matching", "cka"]))
    cases.append(case("dead_and_sparse_units_spearman", x, y, ["linear", "procrustes", "soft-matching"], corr="spearman"))

    # ReLU patterns: some stimuli have all-zero (constant) patterns, at RDM distance 1.
    x, y = latent_pair(60, 8, 8, seed=6, relu=True, noise=0.1)
    x[:5] = 0.0
    cases.append(case("constant_patterns", x, y, ["rsa", "cka", "linear"]))

    # More units than train rows: RidgeCV switches to its eigen (Gram) mode.
    x, y = latent_pair(40, 30, 25, seed=4)
    cases.append(case("wide", x, y, ["linear", "soft-matching", "cka", "rsa"]))
    cases.append(case("wide_unbiased_cka", x, y, ["cka"], hsic="unbiased"))

    (OUT / "cases.json").write_text(json.dumps(cases, indent=1))

    folds = []
    for m in [5, 7, 10, 103, 1000, 12345]:
        for k in [2, 5, 10]:
            if k > m:
                continue
            for seed in [0, 42, 4294967295, None]:
                tests = [te.tolist() for _, te in ref.kfold(m, k, seed)]
                folds.append(dict(m=m, k=k, seed=seed, test=tests))
    (OUT / "folds.json").write_text(json.dumps(folds))

    # Statistics: the first draws of the null, the bootstrap and the rotation null.
    x, y = latent_pair(40, 4, 4, seed=11)
    d = OUT / "inference"
    d.mkdir(exist_ok=True)
    np.save(d / "x.npy", x)
    np.save(d / "y.npy", y)
    folds = ref.kfold(40, 5, 42)
    scorers = {
        "linear": lambda a, b, f: ref.linear(a, b, f),
        "procrustes": lambda a, b, f: ref.procrustes(a, b, f),
        "permutation": lambda a, b, f: ref.permutation(a, b, f),
        "cka": lambda a, b, f: ref.cka(a, b),
    }
    inference = dict(x="inference/x.npy", y="inference/y.npy", null_seed=3, bootstrap_seed=5,
                     rotation_seed=9, null={}, bootstrap={}, rotation={})
    for name, f in scorers.items():
        inference["null"][name] = ref.null_draws(f, x, y, folds, 3, 3)
        inference["bootstrap"][name] = ref.bootstrap_draws(f, x, y, folds, 2, 5, name != "cka")
    inference["rotation"]["permutation"] = ref.rotation_draws(scorers["permutation"], x, y, folds, 3, 9)
    (OUT / "inference.json").write_text(json.dumps(inference, indent=1))

    write_summaries()

    rotations = []
    for n, seed in [(1, 0), (2, 5), (8, 3), (33, 123)]:
        rotations.append(dict(n=n, seed=seed, q=ref.haar_rotation(n, seed).tolist()))
    (OUT / "rotations.json").write_text(json.dumps(rotations))

    # The same matrix in the other layouts and containers the loader accepts.
    x, _ = latent_pair(20, 4, 4, seed=5)
    np.save(OUT / "layout_c_f64.npy", x)
    np.save(OUT / "layout_c_f32.npy", x.astype(np.float32))
    np.save(OUT / "layout_fortran_f64.npy", np.asfortranarray(x))
    from safetensors.numpy import save_file
    save_file({"acts": x.astype(np.float32), "other": x[:, :2].copy()}, str(OUT / "layout.safetensors"))
    # Inputs that must be refused with a clear message (tests/cli.rs).
    bad = OUT / "bad"
    bad.mkdir(exist_ok=True)
    good, _ = latent_pair(30, 5, 5, seed=7)
    np.save(bad / "rows30.npy", good)
    np.save(bad / "rows29.npy", good[:29])
    np.save(bad / "rows3.npy", good[:3])
    np.save(bad / "width4.npy", good[:, :4])
    np.save(bad / "one_d.npy", good[:, 0])
    np.save(bad / "three_d.npy", good.reshape(30, 5, 1))
    with_nan = good.copy()
    with_nan[7, 3] = np.nan
    np.save(bad / "nan.npy", with_nan)
    with_inf = good.copy()
    with_inf[2, 1] = np.inf
    np.save(bad / "inf.npy", with_inf)
    np.save(bad / "int64.npy", np.arange(150).reshape(30, 5))
    np.save(bad / "float16.npy", good.astype(np.float16))
    (bad / "garbage.npy").write_bytes(b"this is not a numpy file")
    save_file({"a": good.astype(np.float32), "b": good.astype(np.float32)}, str(bad / "two_tensors.safetensors"))
    print(f"wrote {len(cases)} score cases, {len(folds)} fold splits, {len(rotations)} rotations to {OUT}")


if __name__ == "__main__":
    main()
