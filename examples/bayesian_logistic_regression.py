"""Bayesian logistic regression with wgfinfer, as a drop-in for ``MCMC(NUTS(model))``.

The seeds' benchmark model (``wgfinfer.problems.logistic``): ``alpha ~ Gamma(1, rate 0.01)``,
``w | alpha ~ N(0, alpha^-1 I)``, ``y ~ Bernoulli(sigmoid(x . w))``, intercept column included,
features standardised with training statistics, random 80/20 split.  The script trains the flow,
reports test accuracy / mean test log predictive density from ``--num-samples`` draws, the PSIS
k-hat and the log-evidence estimate, saves the ArviZ data (with the posterior predictive of the
training labels, for ``az.plot_ppc`` / ``az.plot_ppc_dist``) to NetCDF and a forest plot; the same
calls run on ArviZ 0.x and >= 1.0 (docs/arviz.md).

With no ``--method`` the sampler runs with its defaults, as a Pyro user would call it
(``WGFSampler(model=logistic.model)``: the PWGF scheme with six affine coupling layers from the
Laplace start, stopping by itself; on breast cancer at NUTS quality in about 30 s of CPU, see
``docs/benchmarks.md``).  ``--method pwgf`` runs the hand-tuned ``logistic.PWGF_SETTINGS`` (a Gaussian
fit start and a fixed 15 steps of 0.6), ``--method icnn`` the ICNN JKO scheme with
``logistic.SETTINGS`` (k-hat about 1 on breast cancer).

    python examples/bayesian_logistic_regression.py                      # breast cancer
    python examples/bayesian_logistic_regression.py --dataset twonorm
    python examples/bayesian_logistic_regression.py --dataset synthetic --subsample-size 2000
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import wgfinfer
from wgfinfer.problems import datasets, logistic


def run(
    dataset: str = "breast_cancer",
    out: Path = Path("results"),
    num_samples: int = 4096,
    seed: int = 0,
    device: str = "cpu",
    subsample_size: int | None = None,
    settings: dict[str, Any] | None = None,
    progress_bar: bool = True,
) -> dict[str, Any]:
    """Sample the posterior of one data set; print, save and return the report."""
    data = datasets.load(dataset, seed=seed)
    sampler = wgfinfer.WGFSampler(
        model=logistic.model,
        seed=seed,
        device=device,
        subsample_size=subsample_size,
        progress_bar=progress_bar,
        **(settings or {}),
    )
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    start = time.perf_counter()
    sampler.run(x_train, y_train)  # same call as MCMC(NUTS(model)).run(x, y)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    samples = sampler.get_samples(num_samples, seed=seed + 1)
    draw_seconds = time.perf_counter() - start
    metrics = logistic.predictive_metrics(samples["w"].cpu(), data.x_test, data.y_test)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k-hat is reported below either way
        diagnostics = sampler.diagnostics(num_samples=num_samples, seed=seed + 2)
    report = {
        "dataset": dataset,
        "num_samples": num_samples,
        "n_train": int(data.x_train.shape[0]),
        "dim": int(sampler.dim),
        "train_seconds": train_seconds,
        "draw_seconds": draw_seconds,
        "test_accuracy": metrics["accuracy"],
        "test_log_lik": metrics["log_lik"],
        "khat": diagnostics["khat"],
        "ess_is_fraction": diagnostics["ess_is_fraction"],
        "log_evidence": diagnostics["log_evidence"],
        "log_evidence_se": diagnostics["log_evidence_se"],
    }
    out.mkdir(parents=True, exist_ok=True)
    # the pointwise log-likelihood and the posterior predictive hold draws x rows values each: leave
    # them out for large data sets. num_samples is per chain, as in MCMC(num_samples, num_chains)
    small = data.x_train.shape[0] * num_samples <= 50_000_000
    idata = sampler.to_inference_data(
        num_samples=num_samples // 4,
        num_chains=4,
        seed=seed + 3,
        log_likelihood=small,
        posterior_predictive=small,
    )
    _name_weights(idata, data.feature_names)
    idata.to_netcdf(str(out / f"blr_{dataset}.nc"))
    (out / f"blr_{dataset}.json").write_text(json.dumps(report, indent=2))
    _plot(idata, out / f"blr_{dataset}.png", dataset, report)
    _print(report, out)
    return report


def _name_weights(idata: Any, feature_names: list[str]) -> None:
    """Label the coordinates of ``w`` in the posterior by the data set's column names (``"intercept"``
    first), so that the summary, the saved file and the plot name every weight."""
    posterior = idata.posterior
    dim = posterior["w"].dims[-1]
    if hasattr(posterior, "to_dataset"):  # ArviZ >= 1.0: a node of an xarray DataTree
        named = posterior.to_dataset().rename({dim: "feature"}).assign_coords(feature=feature_names)
        idata["posterior"] = named
    else:  # ArviZ 0.x: an xarray Dataset of InferenceData
        idata.posterior = posterior.rename({dim: "feature"}).assign_coords(feature=feature_names)


def _plot(idata: Any, path: Path, dataset: str, report: dict[str, Any]) -> None:
    """A forest plot of the weights drawn with matplotlib from the posterior group's array.

    ``az.plot_forest`` returns matplotlib axes on ArviZ 0.x and a ``PlotCollection`` on ArviZ >= 1.0
    (arviz-plots), so the plot is drawn here by hand, alike on both.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = np.asarray(idata.posterior["w"].values)  # (chain, draw, feature)
    w = w.reshape(-1, w.shape[-1])  # the chains combined
    names = [str(v) for v in idata.posterior["feature"].values]
    low, q1, median, q3, high = np.quantile(w, [0.03, 0.25, 0.5, 0.75, 0.97], axis=0)
    rows = np.arange(w.shape[1])[::-1]  # the intercept on top
    fig, ax = plt.subplots(figsize=(7, 1.5 + 0.25 * w.shape[1]))
    ax.hlines(rows, low, high, color="C0", lw=1.0)
    ax.hlines(rows, q1, q3, color="C0", lw=3.0)
    ax.plot(median, rows, "o", color="C0", ms=4)
    ax.axvline(0.0, color="0.6", lw=0.8, zorder=0)
    ax.set_yticks(rows, names, fontsize=8)
    ax.set_title(
        f"{dataset}: posterior of the logistic-regression weights w (wgfinfer)\n"
        f"printed report: test accuracy {report['test_accuracy']:.3f}, PSIS k-hat {report['khat']:.2f}",
        fontsize=9,
    )
    ax.set_xlabel(
        "w: change in log-odds per training-set sd of the feature (intercept: log-odds at the means)\n"
        f"point: median; thick: interquartile range; thin: central 94% interval; {w.shape[0]} draws",
        fontsize=9,
    )
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def _print(report: dict[str, Any], out: Path) -> None:
    print(
        f"Bayesian logistic regression on {report['dataset']} ({report['n_train']} training rows, "
        f"{report['dim']} dimensions)"
    )
    print(
        f"  training: {report['train_seconds']:.1f} s;  {report['num_samples']} draws: "
        f"{report['draw_seconds']:.2f} s"
    )
    print(f"  test accuracy {report['test_accuracy']:.4f},  test log-lik {report['test_log_lik']:.4f}")
    verdict = "reliable" if report["khat"] <= 0.7 else "unreliable: use get_samples(correct='imh')"
    print(
        f"  PSIS k-hat {report['khat']:.2f} ({verdict}),  importance ESS "
        f"{100 * report['ess_is_fraction']:.1f}%"
    )
    print(f"  log evidence {report['log_evidence']:.2f} +- {report['log_evidence_se']:.2f}")
    print(f"  saved {out / ('blr_' + report['dataset'] + '.nc')} and .png, .json")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="breast_cancer", choices=sorted(datasets.DATASETS))
    parser.add_argument("--out", type=Path, default=Path("results"))
    parser.add_argument("--num-samples", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--subsample-size", type=int, default=None)
    parser.add_argument(
        "--method", default="default", choices=["default", "pwgf", "icnn"],
        help="default: WGFSampler's own defaults; pwgf / icnn: logistic.PWGF_SETTINGS / SETTINGS",
    )  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="tiny settings (smoke test)")
    args = parser.parse_args(argv)
    chosen = {"default": {}, "pwgf": logistic.PWGF_SETTINGS, "icnn": logistic.SETTINGS}[args.method]
    settings = dict(chosen)
    if args.quick:
        scheme = settings.get("scheme", wgfinfer.sampler.DEFAULT_SCHEME)
        tiny = {"n_layers": 2} if args.method != "icnn" else {"iters_per_step": 10, "hidden": (8,)}
        settings.update(n_steps=1, scheme=dataclasses.replace(scheme, **tiny))
    run(
        args.dataset,
        args.out,
        args.num_samples,
        args.seed,
        args.device,
        args.subsample_size,
        settings,
        progress_bar=not args.quick,
    )


if __name__ == "__main__":
    main()
