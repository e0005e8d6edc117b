"""Examples and the demo run end to end with tiny settings (numpyro-style smoke tests), each in an
empty current directory with its default output paths: they write there and nowhere else in the
checkout (``writes_only_in_cwd``, tests/conftest.py)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from arviz_compat import loo_elpd

from wgfinfer.cli import main as cli_main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_ornstein_uhlenbeck_example(
    writes_only_in_cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["ornstein_uhlenbeck.py", "--dim", "2", "--steps", "2", "--iters", "20", "--draws", "200"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / "ornstein_uhlenbeck.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "SymKL" in out and len(out.strip().splitlines()) == 4
    assert list(writes_only_in_cwd.iterdir()) == []  # it writes no file


def test_demo_writes_plot_and_report(writes_only_in_cwd: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["demo", "--steps", "2", "--iters", "10", "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    assert "KL(flow || target)" in out and "exact draws of the target" in out
    assert (writes_only_in_cwd / "wgfinfer-demo" / "demo.png").stat().st_size > 10_000


def test_demo_writes_into_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "elsewhere"
    assert cli_main(["demo", "--out", str(out), "--steps", "1", "--iters", "5", "--no-progress"]) == 0
    assert [p.name for p in out.iterdir()] == ["demo.png"]


def test_logistic_regression_example_saves_netcdf_plot_and_report(
    writes_only_in_cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import arviz as az

    from wgfinfer.problems import datasets

    argv = ["bayesian_logistic_regression.py", "--quick", "--num-samples", "256"]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(EXAMPLES / "bayesian_logistic_regression.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "test accuracy" in out and "PSIS k-hat" in out and "log evidence" in out
    results = writes_only_in_cwd / "results"  # the README's path, relative to the current directory
    assert sorted(p.name for p in results.iterdir()) == [
        "blr_breast_cancer.json",
        "blr_breast_cancer.nc",
        "blr_breast_cancer.png",
    ]
    idata = az.from_netcdf(str(results / "blr_breast_cancer.nc"))
    assert idata.posterior["w"].shape == (4, 64, 31)
    # every weight is named: the intercept and the data set's features, as in the forest plot
    names = datasets.load("breast_cancer", seed=0).feature_names
    assert list(idata.posterior["feature"].values) == names and names[:2] == ["intercept", "mean radius"]
    assert {"lp", "log_q", "log_weight", "diverging"} <= set(idata.sample_stats.data_vars)
    assert np.isfinite(loo_elpd(idata))  # on ArviZ 1.x without its certain labels (arviz_compat)
    n_train = idata.observed_data["y"].shape[0]
    assert idata.posterior_predictive["y"].shape == (4, 64, n_train)
    assert set(np.unique(idata.posterior_predictive["y"].values)) <= {0.0, 1.0}
    assert (results / "blr_breast_cancer.png").stat().st_size > 10_000


def test_nonlinear_filtering_example(
    writes_only_in_cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["nonlinear_filtering.py", "--quick"])
    runpy.run_path(str(EXAMPLES / "nonlinear_filtering.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "SymKL to the grid solution" in out and "MH acceptance rates" in out
    assert [p.name for p in writes_only_in_cwd.iterdir()] == ["filtering_example.png"]
    assert (writes_only_in_cwd / "filtering_example.png").stat().st_size > 10_000


def test_pwgf_fokker_planck_example(
    writes_only_in_cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = writes_only_in_cwd / "figures" / "st.png"  # --out: any path, its folder created
    monkeypatch.setattr(sys, "argv", ["fokker_planck_pwgf.py", "--quick", "--out", str(out_png)])
    runpy.run_path(str(EXAMPLES / "fokker_planck_pwgf.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "KL(rho_t || rho_inf)" in out and "MINRES iterations" in out
    # the KL column decreases from the first to the last printed time
    rows = [
        line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and len(line.split()) == 3
    ]
    assert float(rows[-1][1]) < float(rows[0][1])
    assert out_png.stat().st_size > 10_000
