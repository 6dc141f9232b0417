"""The Python package against the command line it wraps: same numbers, same errors.

Run by `make test` after `pip install ./python` (the CLI binary: target/release/repflow, or
$REPFLOW_BIN)."""

import json
import os
import pathlib
import subprocess
import threading
import time

import numpy as np
import pytest

import repflow

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = os.environ.get("REPFLOW_BIN", str(ROOT / "target" / "release" / "repflow"))
METRICS = ["linear", "procrustes", "permutation", "soft-matching", "cka", "rsa"]


def pair(m=120, nx=10, ny=10, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(m, 6))
    x = np.maximum(z @ rng.normal(size=(6, nx)) + 0.5 * rng.normal(size=(m, nx)), 0)
    y = z @ rng.normal(size=(6, ny)) + 0.5 * rng.normal(size=(m, ny))
    return x, y


def cli(tmp_path, x, y, *flags):
    px, py = tmp_path / "x.npy", tmp_path / "y.npy"
    np.save(px, x)
    np.save(py, y)
    out = subprocess.run([BIN, "score", str(px), str(py), "--json", *flags],
                         capture_output=True, text=True)
    return out, (json.loads(out.stdout) if out.stdout.strip() else None)


def assert_same(a, b, path=""):
    """Equal JSON values, numbers to 1e-12."""
    if isinstance(a, dict):
        assert set(a) == set(b), f"{path}: {set(a) ^ set(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), path
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert abs(a - b) <= 1e-12, f"{path}: {a} vs {b}"
    else:
        assert a == b, f"{path}: {a} vs {b}"


def test_score_equals_the_cli_json_for_every_metric(tmp_path):
    x, y = pair()
    _, want = cli(tmp_path, x, y, "--metric", "all")
    got = repflow.score(x, y, "all")
    assert [o["metric"] for o in got] == METRICS
    assert_same(got, want)
    for m in METRICS:
        assert_same(repflow.score(x, y, m), [o for o in want if o["metric"] == m][0])


def test_options_and_statistics_are_the_cli_flags(tmp_path):
    x, y = pair(seed=3)
    flags = ["--metric", "soft-matching", "--folds", "3", "--seed", "7", "--corr", "spearman",
             "--null", "9", "--null-seed", "4", "--rotations", "5", "--bootstrap", "7"]
    _, want = cli(tmp_path, x, y, *flags)
    got = repflow.score(x, y, "soft-matching", folds=3, seed=7, corr="spearman", null=9,
                        null_seed=4, rotations=5, bootstrap=7)
    assert_same(got, want)
    assert len(got["null"]["draws"]) == 9 and "p_value" in got["rotation_null"]
    _, want = cli(tmp_path, x, y, "--metric", "linear", "--no-shuffle", "--alphas", "0.1,10")
    assert_same(repflow.score(x, y, "linear", shuffle=False, alphas=[0.1, 10]), want)


def test_float32_fortran_strided_and_array_like_inputs(tmp_path):
    x, y = pair(seed=1)
    x32 = x.astype(np.float32)
    _, want = cli(tmp_path, x32, y, "--metric", "procrustes")
    assert_same(repflow.score(np.asfortranarray(x32), y), want)
    assert_same(repflow.score(x32, y), want)
    wide = np.repeat(x, 2, axis=1)
    # a strided view (every other column) is read in place, not copied
    assert_same(repflow.score(wide[:, ::2], y), repflow.score(np.ascontiguousarray(wide[:, ::2]), y))
    assert_same(repflow.score(np.asfortranarray(x), y), repflow.score(x, y))

    class Tensor:  # what torch's CPU tensors offer numpy
        def __init__(self, a):
            self.a = a

        def __array__(self, dtype=None, copy=None):
            return self.a

    assert_same(repflow.score(Tensor(x), Tensor(y)), repflow.score(x, y))


@pytest.mark.parametrize("make, message", [
    (lambda x, y: (x[:50], y), "`X` has 50 rows (stimuli) but `Y` has 120"),
    (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 37, np.nan, x), y),
     "`X` has a non-finite value (NaN) at row 3, column 7"),
    (lambda x, y: (x, np.where(np.arange(y.size).reshape(y.shape) == 15, np.inf, y)),
     "`Y` has a non-finite value (inf) at row 1, column 5"),
    (lambda x, y: (x[:3], y[:3]), "3 stimuli are fewer than the 5 folds"),
    (lambda x, y: (x.reshape(120, 2, 5), y), "3-D array of shape [120, 2, 5]"),
    (lambda x, y: (x.astype(np.int64), y), "dtype int64"),
    (lambda x, y: (x.astype(np.float16), y), "dtype float16"),
])
def test_bad_input_raises_value_error_with_the_cli_message(make, message):
    x, y = pair()
    a, b = make(x, y)
    with pytest.raises(ValueError) as e:
        repflow.score(a, b, "linear")
    assert message in str(e.value)


def test_bad_options_raise_value_error_naming_them():
    x, y = pair()
    for kwargs, text in [(dict(metric="procrustez"), "procrustez"), (dict(folds=1), "--folds"),
                         (dict(corr="kendall"), "kendall"), (dict(ci=1.5), "--ci")]:
        with pytest.raises(ValueError) as e:
            repflow.score(x, y, **kwargs)
        assert text in str(e.value), str(e.value)


def test_the_same_errors_as_the_cli_for_a_metric_that_cannot_score(tmp_path):
    x, y = pair(m=3)
    out, want = cli(tmp_path, x, y, "--metric", "cka", "--hsic", "unbiased", "--folds", "2")
    assert out.returncode == 2
    got = repflow.score(x, y, "cka", hsic="unbiased", folds=2)
    assert got["score"] is None and "4" in got["error"]
    assert_same(got, want)


def test_compare_equals_pairwise_scores():
    layers_a = {f"a{i}": pair(seed=i)[0] for i in range(3)}
    layers_b = {f"b{i}": pair(seed=10 + i)[1] for i in range(5)}
    rows = repflow.compare(layers_a, layers_b, metrics=["procrustes", "cka"], progress=False,
                           model_a="A", model_b="B")
    # matched by depth: 3 layers of A against 5 of B -> b0, b2, b4
    assert [(r["layer_a"], r["layer_b"]) for r in rows[::2]] == [("a0", "b0"), ("a1", "b2"), ("a2", "b4")]
    for r in rows:
        want = repflow.score(layers_a[r["layer_a"]], layers_b[r["layer_b"]], r["metric"])
        assert abs(r["score"] - want["score"]) <= 1e-12
        assert r["folds"] == want["fold_scores"] or r["metric"] == "cka"
        assert (r["model_a"], r["model_b"], r["stimuli"]) == ("A", "B", "base")
    everything = repflow.compare(layers_a, layers_b, metrics="soft-matching", pairs="all", progress=False)
    assert len(everything) == 15
    assert {r["depth_b"] for r in everything} == {0.0, 0.25, 0.5, 0.75, 1.0}
    with pytest.raises(ValueError):
        repflow.compare(layers_a, layers_b, pairs="diagonal")


def test_the_gil_is_released_while_scoring():
    x, y = pair(m=4000, nx=300, ny=300)
    ticks, scores, done = [0], [0], threading.Event()

    def work():
        # scores back to back for at least half a second, so that a fast machine still
        # spends most of the time inside the extension
        t0 = time.monotonic()
        while time.monotonic() - t0 < 0.5:
            repflow.score(x, y, "linear")
            scores[0] += 1
        done.set()

    t = threading.Thread(target=work)
    t.start()
    while not done.is_set():
        ticks[0] += 1
        time.sleep(0.001)
    t.join()
    # With the GIL held during each score this loop could tick only between scores, about
    # once per score; released, it ticks every millisecond or so. Counted against the
    # scores, not the clock, so a loaded machine's late wake-ups do not fail it.
    assert ticks[0] > 5 * scores[0] + 20, (ticks[0], scores[0])


def test_run_and_results_read_a_pipeline(tmp_path):
    data = tmp_path / "data"
    for model, seed in [("net_a", 0), ("net_b", 1)]:
        (data / model).mkdir(parents=True)
        for l in range(3):
            np.save(data / model / f"layer{l}.npy", pair(m=40, seed=seed * 10 + l)[0])
    p = tmp_path / "tiny.toml"
    p.write_text(f'name = "tiny"\nresults = "{tmp_path / "out"}"\nmodels = ["net_a", "net_b"]\nlayers = "matched"\n'
                 'metrics = ["procrustes", "cka"]\n\n[source]\ndir = "data"\n')
    first = repflow.run(p, cache=tmp_path / "cache")
    assert first["failed"] == 0 and first["executed"] > 0
    again = repflow.run(p, cache=tmp_path / "cache")
    assert again["executed"] == 0
    assert first["results"] == str(tmp_path / "out" / "scores.csv")
    res = repflow.results(tmp_path / "out")
    assert len(res["scores"]) == 6
    row = [r for r in res["scores"] if r["metric"] == "procrustes" and r["layer_a"] == "layer1"][0]
    want = repflow.score(np.load(data / "net_a" / "layer1.npy"), np.load(data / "net_b" / "layer1.npy"))
    assert abs(row["score"] - want["score"]) <= 1e-12
    with pytest.raises(ValueError):
        repflow.run(tmp_path / "missing.toml")
    with pytest.raises(ValueError):
        repflow.results(tmp_path / "nowhere")


def test_frames_and_progress_bars(capsys, monkeypatch):
    pd = pytest.importorskip("pandas")
    layers_a = {f"a{i}": pair(seed=i)[0] for i in range(2)}
    layers_b = {f"b{i}": pair(seed=5 + i)[1] for i in range(2)}
    rows = repflow.compare(layers_a, layers_b, metrics=["cka"], progress=False)
    frame = repflow.compare(layers_a, layers_b, metrics=["cka"], as_frame=True)  # tqdm's bar
    assert isinstance(frame, pd.DataFrame) and frame.to_dict("records") == rows
    assert "repflow.compare" in capsys.readouterr().err
    monkeypatch.setitem(__import__("sys").modules, "tqdm.auto", None)  # as if tqdm were absent
    repflow.compare(layers_a, layers_b, metrics=["cka"])
    assert "repflow.compare: 2/2" in capsys.readouterr().err


def test_results_as_frames(tmp_path):
    pd = pytest.importorskip("pandas")
    data = tmp_path / "data"
    for model in ("net_a", "net_b"):
        (data / model).mkdir(parents=True)
        for l in range(2):
            np.save(data / model / f"layer{l}.npy", pair(m=40, seed=len(model) + l)[0])
    p = tmp_path / "tiny.toml"
    p.write_text(f'name = "tiny"\nresults = "{tmp_path / "out"}"\nmodels = ["net_a", "net_b"]\n'
                 'layers = "all"\nmetrics = ["cka"]\n\n[source]\ndir = "data"\n')
    assert repflow.run(p, cache=tmp_path / "cache")["failed"] == 0
    res = repflow.results(tmp_path / "out", as_frame=True)
    assert isinstance(res["scores"], pd.DataFrame) and len(res["scores"]) == 4
    assert res["scores"].to_dict("records") == repflow.results(tmp_path / "out")["scores"]
