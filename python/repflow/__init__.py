"""repflow from Python: cross-validated alignment metrics between neural-network layers.

The same Rust kernels and pipelines as the ``repflow`` command, called on numpy arrays (or
anything with ``__array__``, e.g. CPU torch tensors)::

    import numpy as np, repflow
    x, y = np.load("a.npy"), np.load("b.npy")          # stimuli x units
    repflow.score(x, y, "procrustes")["score"]

Options are ``repflow score``'s flags, so defaults (5 folds, shuffled with seed 42, as
``sklearn.model_selection.KFold(5, shuffle=True, random_state=42)``), ranges and error
messages are the command line's. Bad input raises ``ValueError`` with the CLI's message.
"""

import json
import sys
import time

import numpy as np

from . import _repflow

__version__ = _repflow.__version__
__all__ = ["score", "compare", "run", "results"]


def __getattr__(name):
    """``repflow.torch`` (forward hooks on PyTorch models) is imported on first use, so that
    ``import repflow`` does not need torch."""
    if name == "torch":
        import importlib
        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'repflow' has no attribute '{name}'")


def _array(a, name):
    """A 2-D numpy view of ``a`` without a copy when it already is one (float32/float64,
    C or Fortran order); anything with ``__array__`` is converted."""
    if not isinstance(a, np.ndarray):
        if hasattr(a, "detach"):  # a torch tensor: leave autograd, stay on the same memory
            a = a.detach()
        a = np.asarray(a)
    if a.dtype.kind in "iub":
        raise ValueError(f"`{name}` has dtype {a.dtype}; expected float32 or float64 "
                         "(hint: x.astype(numpy.float64))")
    return a


# keyword -> `repflow score` flag; the defaults are the CLI's, so only given options are passed
_FLAGS = {"folds": "--folds", "seed": "--seed", "corr": "--corr", "test_zscore": "--test-zscore",
          "dim_match": "--dim-match", "hsic": "--hsic", "rsa_compare": "--rsa-compare",
          "rotate_x": "--rotate-x", "null": "--null", "null_seed": "--null-seed",
          "bootstrap": "--bootstrap", "ci": "--ci", "bootstrap_seed": "--bootstrap-seed",
          "rotations": "--rotations", "rotation_seed": "--rotation-seed"}


def _flags(metric=None, *, shuffle=True, alphas=None, **options):
    f = [] if metric is None else ["--metric", str(metric)]
    for k, v in options.items():
        if k not in _FLAGS:
            raise TypeError(f"unknown option `{k}`; expected one of shuffle, alphas, {', '.join(_FLAGS)}")
        if v is not None:
            f += [_FLAGS[k], repr(float(v)) if k == "ci" else str(v)]
    if not shuffle:
        f.append("--no-shuffle")
    if alphas is not None:
        f += ["--alphas", ",".join(repr(float(a)) for a in alphas)]
    return f


def score(x, y, metric="procrustes", **options):
    """Scores X against Y (stimuli x units, same stimuli in the same rows) with one metric, or
    every metric with ``metric="all"`` (a list then).

    Returns the object ``repflow score --json`` prints: ``score``, ``std``, ``fold_scores``,
    ``x_to_y``, ``y_to_x``, widths, dropped units; with ``null=N``, ``bootstrap=B`` or
    ``rotations=R`` also ``null`` (and ``chance_corrected``), ``bootstrap`` and
    ``rotation_null``. Keyword options: ``folds``, ``seed``, ``shuffle``, ``corr``,
    ``test_zscore``, ``alphas``, ``dim_match``, ``hsic``, ``rsa_compare``, ``rotate_x``,
    ``null``, ``null_seed``, ``bootstrap``, ``ci``, ``bootstrap_seed``, ``rotations``,
    ``rotation_seed`` — as the CLI's flags. A metric that cannot be computed has
    ``"score": None`` and its ``"error"``. The GIL is released while it computes.
    """
    text, _code = _repflow.score(_array(x, "X"), _array(y, "Y"), _flags(metric, **options))
    return json.loads(text)


def _progress(total, desc):
    """A tqdm bar when tqdm is installed (notebook-aware), otherwise a line on stderr now and
    then."""
    try:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc)
    except ImportError:
        return _TextProgress(total, desc)


class _TextProgress:
    def __init__(self, total, desc):
        self.total, self.desc, self.n, self.last = total, desc, 0, 0.0

    def update(self, k):
        self.n += k
        now = time.monotonic()
        if now - self.last > 2 or self.n == self.total:
            of = "" if self.total is None else f"/{self.total}"
            print(f"{self.desc}: {self.n}{of}", file=sys.stderr, flush=True)
            self.last = now

    def close(self):
        pass


def compare(layers_a, layers_b, metrics=("procrustes",), pairs="matched", *, model_a="a",
            model_b="b", as_frame=False, progress=True, batch=64, **options):
    """Scores every layer pair of two models under each metric.

    ``layers_a`` / ``layers_b``: dicts of layer name -> matrix (stimuli x units), in forward
    order. ``pairs="matched"`` pairs each layer of A with the layer of B nearest in normalised
    depth, ``"all"`` every layer with every layer (the pipelines' rules). Each layer is
    prepared once and shared by all its pairs; pairs are scored in parallel, the GIL
    released. Returns the score table's rows (``model_a``, ``model_b``, ``layer_a``,
    ``layer_b``, ``depth_a``, ``depth_b``, ``metric``, ``corr``, ``score``, ``std``,
    ``folds``, ``n_units_a``, ``n_units_b``, ``nan_units``, ``stimuli``; a failed score has
    ``error``), as dicts or, with ``as_frame=True``, a pandas DataFrame. Options as for
    :func:`score` (statistics are :func:`score`'s alone).
    """
    if pairs not in ("matched", "all"):
        raise ValueError(f'`pairs` is `{pairs}`; expected "matched" or "all"')
    if isinstance(metrics, str):
        metrics = [metrics]
    for k in ("null", "bootstrap", "rotations", "rotate_x"):
        if options.get(k) is not None:
            raise ValueError(f"compare() takes no `{k}`; use score() on the pair")
    flags = _flags(None, **options)
    names_a, names_b = list(layers_a), list(layers_b)
    if not names_a or not names_b:
        raise ValueError("compare() needs at least one layer in each model")
    prepared_a = _repflow.prepare([(f"{model_a}/{n}", _array(layers_a[n], n)) for n in names_a], flags)
    prepared_b = _repflow.prepare([(f"{model_b}/{n}", _array(layers_b[n], n)) for n in names_b], flags)
    index, depth_a, depth_b = _repflow.layer_pairs(len(names_a), len(names_b), pairs == "all")
    work = []
    for i, j in index:
        for m in metrics:
            label = dict(model_a=model_a, model_b=model_b, layer_a=names_a[i], layer_b=names_b[j],
                         depth_a=depth_a[i], depth_b=depth_b[j], metric=m)
            work.append((prepared_a[i], prepared_b[j], m, json.dumps(label)))
    bar = _progress(len(work), "repflow.compare") if progress else None
    rows = []
    try:
        for start in range(0, len(work), batch):
            chunk = work[start:start + batch]
            rows += [json.loads(r) for r in _repflow.score_pairs(chunk, flags)]
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    if as_frame:
        import pandas as pd
        return pd.DataFrame(rows)
    return rows


def run(pipeline, cache=None, *, jobs=None, force=()):
    """Runs a pipeline TOML in this process (as ``repflow run``, local executor): computes
    what the store lacks, reuses the rest, writes the results folder. Returns the run's
    summary (``executed``, ``cached``, ``failed``, ``blocked``, ``seconds``, ``results``,
    ``failures``). ``cache``: the store's folder (default: ``$REPFLOW_CACHE``, else
    ``.repflow``)."""
    flags = [str(pipeline), "--json"]
    if cache is not None:
        flags += ["--cache", str(cache)]
    if jobs is not None:
        flags += ["--jobs", str(jobs)]
    for f in force:
        flags += ["--force", f]
    _code, summary = _repflow.run(flags)
    return json.loads(summary)


def results(directory, as_frame=False):
    """Reads a results folder: ``{"scores": rows of scores.json, "models": rows of
    models.csv, "claims": claims.json}`` (each empty when the pipeline wrote none); with
    ``as_frame=True`` scores and models are pandas DataFrames."""
    import csv
    import pathlib
    d = pathlib.Path(directory)
    if not (d / "scores.json").is_file():
        raise ValueError(f"`{d}` holds no scores.json (hint: run the pipeline first: repflow.run(...))")
    out = {"scores": json.loads((d / "scores.json").read_text())}
    models = d / "models.csv"
    out["models"] = list(csv.DictReader(models.open())) if models.is_file() else []
    claims = d / "claims.json"
    out["claims"] = json.loads(claims.read_text()) if claims.is_file() else []
    if as_frame:
        import pandas as pd
        out["scores"] = pd.DataFrame(out["scores"])
        out["models"] = pd.DataFrame(out["models"])
    return out
