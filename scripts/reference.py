"""Reference implementations of repflow's metrics, written the way the seed lab's code and
its users write them: numpy, scipy, scikit-learn and POT, one fold and one direction at a
time. repflow's Rust kernels are tested against these numbers (tests/fixtures, written by
make_fixtures.py) and timed against them (bench.py).

Conventions (see README "Metric conventions"): folds are sklearn's KFold; units constant
over all stimuli are dropped first; a correlation with a constant column counts as 0 and
is reported in nan_units; fold scores of asymmetric metrics average both directions.
"""

import numpy as np
import ot
import scipy.linalg
import scipy.spatial.distance
import scipy.stats
from sklearn.decomposition import PCA
from sklearn.linear_model import LinearRegression, RidgeCV
from sklearn.model_selection import KFold

ALPHAS = np.logspace(-8, 8, 17)


def kfold(m, k=5, seed=42):
    """(train, test) index arrays of sklearn's KFold, shuffled with `seed` (None: unshuffled)."""
    if seed is None:
        return list(KFold(k).split(np.zeros(m)))
    return list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(m)))


def drop_dead(x):
    """Columns not constant over all rows, and the indices of those dropped."""
    dead = np.ptp(x, axis=0) == 0
    return x[:, ~dead], np.flatnonzero(dead)


def haar_rotation(n, seed):
    g = np.random.RandomState(seed).standard_normal((n, n))
    q, r = np.linalg.qr(g)
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, -1] = -q[:, -1]
    return q


def corr(a, b, spearman=False):
    """Correlation of two vectors, or None when either is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    if spearman:
        return scipy.stats.spearmanr(a, b).statistic
    return scipy.stats.pearsonr(a, b).statistic


def colcorr(pred, actual, spearman=False):
    """Mean over columns of the column-wise correlation (undefined counts as 0), and the
    number undefined."""
    rs = [corr(pred[:, j], actual[:, j], spearman) for j in range(actual.shape[1])]
    undefined = sum(r is None for r in rs)
    return float(np.mean([0.0 if r is None else r for r in rs])), undefined


def _summary(xy, yx, nan_units, **extra):
    folds = [(a + b) / 2 for a, b in zip(xy, yx)]
    out = dict(score=float(np.mean(folds)), std=float(np.std(folds)), fold_scores=folds,
               x_to_y=xy, y_to_x=yx, nan_units=nan_units)
    out.update(extra)
    return out


def _zscore(train, test, own=False):
    def stats(a):
        mu, sd = a.mean(0), a.std(0)
        sd[np.ptp(a, axis=0) == 0] = 1.0
        return mu, sd
    mu, sd = stats(train)
    mte, sdte = stats(test) if own else (mu, sd)
    return (train - mu) / sd, (test - mte) / sdte


def linear(x, y, folds, alphas=ALPHAS, spearman=False, own_zscore=False):
    """Ridge (RidgeCV, one alpha for all targets by efficient LOO) X->Y and Y->X."""
    def direction(src, tgt, tr, te):
        ztr, zte = _zscore(src[tr], src[te], own_zscore)
        if len(alphas) == 1 and alphas[0] == 0:
            model = LinearRegression().fit(ztr, tgt[tr])
            alpha = 0.0
        else:
            model = RidgeCV(alphas=alphas).fit(ztr, tgt[tr])
            alpha = float(model.alpha_)
        s, u = colcorr(model.predict(zte), tgt[te], spearman)
        return s, u, alpha

    xy, yx, nan, axy, ayx = [], [], 0, [], []
    for tr, te in folds:
        a = direction(x, y, tr, te)
        b = direction(y, x, tr, te)
        xy.append(a[0]); yx.append(b[0]); nan += a[1] + b[1]
        axy.append(a[2]); ayx.append(b[2])
    return _summary(xy, yx, nan, alpha_x_to_y=axy, alpha_y_to_x=ayx)


def _pad(a, n):
    return np.hstack([a, np.zeros((a.shape[0], n - a.shape[1]))])


def procrustes(x, y, folds, spearman=False, dim_match="zeropad"):
    """Orthogonal Procrustes X->Y and Y->X (scipy), netrep's angular distance."""
    nx, ny = x.shape[1], y.shape[1]
    xy, yx, ang, nan = [], [], [], 0
    for tr, te in folds:
        mx, my = x[tr].mean(0), y[tr].mean(0)
        xtr, xte, ytr, yte = x[tr] - mx, x[te] - mx, y[tr] - my, y[te] - my
        if dim_match == "pca" and nx != ny:
            if nx > ny:
                pca = PCA(ny).fit(x[tr])
                xr_tr, xr_te = pca.transform(x[tr]), pca.transform(x[te])
                r, _ = scipy.linalg.orthogonal_procrustes(xr_tr, ytr)
                r2, _ = scipy.linalg.orthogonal_procrustes(ytr, xr_tr)
                pred_y = xr_te @ r
                pred_x = pca.inverse_transform(yte @ r2)
                mapped, target = pred_y, yte
            else:
                pca = PCA(nx).fit(y[tr])
                yr_tr, yr_te = pca.transform(y[tr]), pca.transform(y[te])
                r, _ = scipy.linalg.orthogonal_procrustes(xtr, yr_tr)
                r2, _ = scipy.linalg.orthogonal_procrustes(yr_tr, xtr)
                pred_y = pca.inverse_transform(xte @ r)
                pred_x = yr_te @ r2
                mapped, target = xte @ r, yr_te
            a = np.linalg.norm(mapped) if nx > ny else np.linalg.norm(xte)
            ang.append(float(np.arccos(np.clip(np.sum(mapped * target) / (a * np.linalg.norm(target)), -1, 1))))
        else:
            n = max(nx, ny)
            xtr_p, xte_p, ytr_p, yte_p = _pad(xtr, n), _pad(xte, n), _pad(ytr, n), _pad(yte, n)
            r, _ = scipy.linalg.orthogonal_procrustes(xtr_p, ytr_p)
            r2, _ = scipy.linalg.orthogonal_procrustes(ytr_p, xtr_p)
            pred_y = (xte_p @ r)[:, :ny]
            pred_x = (yte_p @ r2)[:, :nx]
            # netrep LinearMetric(alpha=1, score_method="angular") on the test fold
            u, _, vt = np.linalg.svd(xtr_p.T @ ytr_p)
            a, b = xte_p @ u, yte_p @ vt.T
            cos = np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b))
            ang.append(float(np.arccos(np.clip(cos, -1, 1))))
        s1, u1 = colcorr(pred_y, y[te], spearman)
        s2, u2 = colcorr(pred_x, x[te], spearman)
        xy.append(s1); yx.append(s2); nan += u1 + u2
    return _summary(xy, yx, nan, angular_distance=ang)


def _corr_matrix(a, b, spearman):
    if spearman:
        a = scipy.stats.rankdata(a, axis=0)
        b = scipy.stats.rankdata(b, axis=0)
    ac, bc = a - a.mean(0), b - b.mean(0)
    na, nb = np.linalg.norm(ac, axis=0), np.linalg.norm(bc, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (ac.T @ bc) / np.outer(na, nb)
    r[np.ptp(a, axis=0) == 0, :] = 0.0
    r[:, np.ptp(b, axis=0) == 0] = 0.0
    return r


def permutation(x, y, folds, spearman=False):
    """Hungarian matching (scipy) on train correlations; mean test correlation of matches."""
    scores, nan = [], 0
    for tr, te in folds:
        rows, cols = scipy.optimize.linear_sum_assignment(_corr_matrix(x[tr], y[tr], spearman), maximize=True)
        xte, yte = x[te], y[te]
        rs = [corr(xte[:, i], yte[:, j], spearman) for i, j in zip(rows, cols)]
        nan += sum(r is None for r in rs)
        scores.append(float(np.mean([0.0 if r is None else r for r in rs])))
    return dict(score=float(np.mean(scores)), std=float(np.std(scores)), fold_scores=scores, nan_units=nan)


def soft_matching(x, y, folds, spearman=False):
    """Exact OT (POT's network simplex) on 1 - train correlations; transport-weighted test r."""
    nx, ny = x.shape[1], y.shape[1]
    scores, nan = [], 0
    for tr, te in folds:
        cost = 1.0 - _corr_matrix(x[tr], y[tr], spearman)
        plan = ot.emd(np.full(nx, 1.0 / nx), np.full(ny, 1.0 / ny), cost, numItermax=10_000_000)
        s = 0.0
        xte, yte = x[te], y[te]
        for i, j in zip(*np.nonzero(plan > 0)):
            r = corr(xte[:, i], yte[:, j], spearman)
            if r is None:
                nan += 1
            else:
                s += plan[i, j] * r
        scores.append(float(s))
    return dict(score=float(np.mean(scores)), std=float(np.std(scores)), fold_scores=scores, nan_units=nan)


def cka(x, y, unbiased=False):
    """Linear CKA from explicit m x m Gram matrices."""
    x, y = x - x.mean(0), y - y.mean(0)
    k, l = x @ x.T, y @ y.T
    m = k.shape[0]
    if not unbiased:
        h = np.eye(m) - 1.0 / m
        hsic = lambda a, b: np.trace(a @ h @ b @ h)
    else:
        def hsic(a, b):
            a, b = a.copy(), b.copy()
            np.fill_diagonal(a, 0)
            np.fill_diagonal(b, 0)
            one = np.ones(m)
            return (np.trace(a @ b) + (one @ a @ one) * (one @ b @ one) / ((m - 1) * (m - 2))
                    - 2.0 / (m - 2) * (one @ a @ b @ one)) / (m * (m - 3))
    return dict(score=float(hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))), nan_units=0)


def rsa(x, y, compare="spearman"):
    """Correlation between the upper triangles of correlation-distance RDMs (scipy pdist)."""
    # A stimulus whose pattern is constant over units has no correlation: distance 1.
    dx = np.nan_to_num(scipy.spatial.distance.pdist(x, "correlation"), nan=1.0)
    dy = np.nan_to_num(scipy.spatial.distance.pdist(y, "correlation"), nan=1.0)
    f = scipy.stats.spearmanr if compare == "spearman" else scipy.stats.pearsonr
    return dict(score=float(f(dx, dy).statistic), nan_units=0)


# ---- Inference (repflow score --null / --bootstrap / --rotations) ----

def null_draws(score, x, y, folds, n, seed):
    """The stimulus-permutation null: RandomState(seed), then one permutation(m) per draw;
    Y's rows permuted relative to X's, folds unchanged, the whole score recomputed."""
    rs = np.random.RandomState(seed)
    return [score(x, y[rs.permutation(len(y))], folds)["score"] for _ in range(n)]


def bootstrap_draws(score, x, y, folds, b, seed, cross_validated=True):
    """Stimulus bootstrap: RandomState(seed), then per draw and fold randint(0, len(test),
    len(test)) into that fold's test rows. A cross-validated metric fits each fold on its own
    train rows and is evaluated on the resampled test rows (the draw: the mean of those fold
    scores); CKA is the score of the resampled stimuli."""
    rs = np.random.RandomState(seed)
    out = []
    for _ in range(b):
        picks = [te[rs.randint(0, len(te), len(te))] for _, te in folds]
        if not cross_validated:
            idx = np.concatenate(picks)
            out.append(score(x[idx], y[idx], None)["score"])
            continue
        fold_scores = []
        for (tr, _), pick in zip(folds, picks):
            idx = np.concatenate([tr, pick])
            split = [(np.arange(len(tr)), np.arange(len(tr), len(idx)))]
            fold_scores.append(score(x[idx], y[idx], split)["score"])
        out.append(float(np.mean(fold_scores)))
    return out


def rotation_draws(score, x, y, folds, r, seed):
    """The rotation null: X rotated by haar_rotation(n, seed + k), k = 0..r, scored against Y."""
    return [score(x @ haar_rotation(x.shape[1], seed + k), y, folds)["score"] for k in range(r)]


# ---- Summaries of many scores (the report's claims and error bars) ----

def pair_mean(values):
    """Mean over seed pairs [(a, b, v)] and its delete-one-network jackknife standard error
    (None with fewer than three networks or two pairs)."""
    values = [v for v in values if np.isfinite(v[2])]
    nets = sorted({n for a, b, _ in values for n in (a, b)})
    mean = float(np.mean([v for _, _, v in values]))
    if len(nets) < 3 or len(values) < 2:
        return mean, None
    loo = [np.mean([v for a, b, v in values if k not in (a, b)])
           for k in nets if any(k not in (a, b) for a, b, _ in values)]
    k = len(loo)
    return mean, float(np.sqrt((k - 1) / k * np.sum((np.array(loo) - np.mean(loo)) ** 2)))


def correlation_test(x, y, n_random, seed):
    """Pearson r with its one-sided permutation p-value: scipy's exact pairings test up to
    8 values, otherwise RandomState(seed).permutation(n) drawn n_random times,
    p = (1 + #{r_perm >= r - 100 eps |r|}) / (1 + n_random)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    r = scipy.stats.pearsonr(x, y)[0]
    if len(x) <= 8:
        # one sample: scipy permutes its order against the fixed y (n! pairings)
        res = scipy.stats.permutation_test(
            (x,), lambda a: scipy.stats.pearsonr(a, y)[0], permutation_type="pairings",
            alternative="greater", n_resamples=np.inf)
        return float(r), float(res.pvalue)
    rs = np.random.RandomState(seed)
    null = np.array([scipy.stats.pearsonr(x, y[rs.permutation(len(y))])[0] for _ in range(n_random)])
    gamma = abs(100 * np.finfo(float).eps * r)
    return float(r), float((1 + np.sum(null >= r - gamma)) / (1 + n_random))


def shift_procrustes(a, b, folds, spearman=False):
    """The spatial-shift search, by brute force: a (n x ca x h x w) and b (n x cb x h x w)
    full maps, every position of every stimulus a sample; in each fold every circular shift
    of b (np.roll) is tried, the one whose centred train cross-covariance has the largest
    nuclear norm is kept, and Procrustes (above, on samples) scores the held-out stimuli at
    it and at no shift. Channels constant over all stimuli and positions are dropped first."""
    def live(m):
        return m[:, np.ptp(m, axis=(0, 2, 3)) > 0]
    a, b = live(np.asarray(a, dtype=float)), live(np.asarray(b, dtype=float))
    h, w = a.shape[2], a.shape[3]

    def samples(m, rows):
        return m[rows].transpose(0, 2, 3, 1).reshape(len(rows) * h * w, m.shape[1])

    xy, yx, ang, nan, shifts, unshifted = [], [], [], 0, [], []
    for tr, te in folds:
        best = None
        for dy in range(h):
            for dx in range(w):
                bs = np.roll(b, (-dy, -dx), axis=(2, 3))
                xtr, ytr = samples(a, tr), samples(bs, tr)
                c = (xtr - xtr.mean(0)).T @ (ytr - ytr.mean(0))
                nuclear = np.linalg.svd(c, compute_uv=False).sum()
                if best is None or nuclear > best[0]:
                    best = (nuclear, dy, dx)
        one_fold = [(np.arange(len(tr) * h * w), np.arange(len(tr) * h * w, (len(tr) + len(te)) * h * w))]
        results = []
        for dy, dx in [best[1:], (0, 0)]:
            bs = np.roll(b, (-dy, -dx), axis=(2, 3))
            x = np.vstack([samples(a, tr), samples(a, te)])
            y = np.vstack([samples(bs, tr), samples(bs, te)])
            results.append(procrustes(x, y, one_fold, spearman))
        r, r0 = results
        xy.append(r["x_to_y"][0]); yx.append(r["y_to_x"][0]); ang.append(r["angular_distance"][0])
        nan += r["nan_units"]
        unshifted.append(r0["fold_scores"][0])
        dy, dx = best[1:]
        shifts.append([dy - h if 2 * dy > h else dy, dx - w if 2 * dx > w else dx])
    return _summary(xy, yx, nan, angular_distance=ang, shifts=shifts, unshifted=unshifted)
