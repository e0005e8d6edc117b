"""Bayesian logistic regression: wgfinfer against Pyro NUTS and Pyro SVGD (seed 001 §5.3, Table 2).

Model ``wgfinfer.problems.logistic.model``: ``alpha ~ Gamma(1, rate 0.01)``,
``w | alpha ~ N(0, alpha^-1 I)``, ``y ~ Bernoulli(sigmoid(x . w))`` with an intercept column, on the
seeded 80/20 splits of ``wgfinfer.problems.datasets``.  For every (data set, method) the script
reports the test accuracy of the posterior-predictive mean, the mean test log predictive density, the
wall time of training / running, the time for 10^5 further draws, the PSIS k-hat (wgfinfer only: it
is the only method with a density) and, for NUTS, the minimum bulk ESS over all coordinates.  All
methods run in the same process on the same machine; seed 001's Table 2 numbers are printed beside
ours.  The table is rewritten after every completed row, so a run that is cut off still leaves a
table: into ``blr.md`` in ``--out`` (default: the current directory), and into the repository's
documentation only with ``--docs docs/benchmarks.md``.

    python benchmarks/blr.py                                   # all five data sets, all methods
    python benchmarks/blr.py --datasets breast_cancer --methods wgfinfer nuts
    python benchmarks/blr.py --methods svgd --svgd-mode multivariate   # SVGD's usual joint kernel
    python benchmarks/blr.py --nuts-warmup 1000 --nuts-draws 4096 waveform=1000 twonorm=1000
    python benchmarks/blr.py --stop-at 15:15 --json /tmp/blr.json   # start no row after 15:15 UTC
    python benchmarks/blr.py --from-json /tmp/blr.json         # rewrite the section from saved rows
    python benchmarks/blr.py --from-json /tmp/blr.json --docs docs/benchmarks.md   # ... in the docs

``--nuts-warmup`` and ``--nuts-draws`` take a default and/or ``dataset=value`` overrides; the warmup
and draws NUTS actually ran are always printed in the table.  A SIGTERM ends the run with the table
written, the interrupted and the remaining rows marked as not run.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import shlex
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_output_arguments, machine, markdown_table, publish  # noqa: E402

import wgfinfer  # noqa: E402
from wgfinfer.problems import datasets, logistic  # noqa: E402

SECTION = "blr"
DATASETS = ("breast_cancer", "pima", "waveform", "twonorm", "ringnorm", "synthetic")
METHODS = ("wgfinfer", "wgfinfer_pwgf", "nuts", "svgd", "wgfinfer_variational")
NUM_DRAWS = 4096
EXTRA_DRAWS = 100_000
KHAT_SEEDS = 8
"""k-hat is also computed on this many independent sets of NUM_DRAWS draws (its spread is reported)."""

# seed 001, Table 2 (p. 8 of the text in ../shared/seeds/001_aef5d5c80d7bd8bf.txt, checked by hand):
# data set -> (accuracy Ours, accuracy JKO-ICNN, log-lik Ours, log-lik JKO-ICNN).  "Ours" is seed 001's
# variational JKO, "JKO-ICNN" is Mokrov et al. (2021, Table 1).  Their "diabetis" is the Rätsch
# benchmark Pima data (768 rows), ours is MASS Pima.tr + Pima.te (532 rows): related, not identical.
SEED_TABLE2 = {
    "waveform": (0.785, 0.78, -0.455, -0.485),
    "twonorm": (0.982, 0.98, -0.056, -0.059),
    "ringnorm": (0.73, 0.74, -0.5, -0.5),
    "pima": (0.786, 0.775, -0.45, -0.45),
}
SEED_RELATED = {"pima": "diabetis†"}

# README performance target (breast cancer, wgfinfer against NUTS)
TARGET_TIME_RATIO = 0.5
TARGET_LOGLIK_GAP = 0.005
TARGET_KHAT = 0.7


def _per_dataset(values: list[str], name: str) -> dict[str, int]:
    """Parse ``["1000", "waveform=500"]`` into ``{"*": 1000, "waveform": 500}``."""
    out: dict[str, int] = {}
    for value in values:
        key, _, number = value.rpartition("=")
        key = key or "*"
        if key != "*" and key not in DATASETS:
            raise SystemExit(f"{name}: unknown data set {key!r}")
        out[key] = int(number)
    return out


def _lookup(table: dict[str, int], dataset: str) -> int:
    return table.get(dataset, table["*"])


SCHEME_SETTINGS = {
    "icnn": logistic.SETTINGS,
    "pwgf": logistic.PWGF_SETTINGS,
    "variational": logistic.VARIATIONAL_SETTINGS,
}


def run_wgfinfer(
    data: datasets.LogisticData, args: argparse.Namespace, scheme: str = "icnn"
) -> dict[str, Any]:
    """Train ``WGFSampler`` with ``logistic.SETTINGS`` (``PWGF_SETTINGS`` for ``scheme="pwgf"``,
    ``VARIATIONAL_SETTINGS`` for ``"variational"``); metrics from 4096 draws, k-hat (where the flow
    has a density), 10^5-draw time."""
    pwgf = scheme == "pwgf"
    settings = dict(SCHEME_SETTINGS[scheme])
    if args.quick:
        tiny = {"n_layers": 2} if pwgf else {"iters_per_step": 10, "hidden": (8,)}
        settings.update(n_steps=1, scheme=dataclasses.replace(settings["scheme"], **tiny))
    options = settings["scheme"]
    has_density = scheme != "variational" or options.map == "icnn"
    device = args.device
    sampler = wgfinfer.WGFSampler(
        model=logistic.model, seed=args.seed, device=device, progress_bar=False, **settings
    )
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    start = time.perf_counter()
    sampler.run(x_train, y_train)
    train = time.perf_counter() - start
    start = time.perf_counter()
    samples = sampler.get_samples(NUM_DRAWS, seed=args.seed + 1)
    draws = time.perf_counter() - start
    metrics = logistic.predictive_metrics(samples["w"].cpu(), data.x_test, data.y_test)
    khat, khats = None, None
    if has_density:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # k-hat is reported in the table either way
            khat = sampler.diagnostics(num_samples=NUM_DRAWS, seed=args.seed + 2)["khat"]
            khats = [
                sampler.diagnostics(num_samples=NUM_DRAWS, seed=args.seed + 100 + k)["khat"]
                for k in range(KHAT_SEEDS)
            ]
    start = time.perf_counter()
    sampler.sample(EXTRA_DRAWS, return_log_prob=has_density, seed=args.seed + 3)
    extra = time.perf_counter() - start
    if scheme == "variational":
        description = (
            f"init={settings['init']}, h={settings['step_size']:g}, "
            f"K={settings['n_steps']}×{options.iters_per_step} it, {options.map} map "
            f"{tuple(options.hidden)}" + ("" if has_density else "; draws only, no log q")
        )
    elif pwgf:
        description = (
            f"init={settings['init']}, {options.map} flow {options.n_layers} layers "
            f"{tuple(options.hidden)}, "
            f"{settings['n_steps']}×{options.substeps} Euler steps of "
            f"{settings['step_size'] / options.substeps:g}"
        )
    else:
        description = (
            f"init={settings.get('init', 'laplace')}, h={settings['step_size']:g}, "
            f"K={settings['n_steps']}×{options.iters_per_step} it, ICNN {options.hidden}"
        )
    return {
        **metrics,
        "seconds": train + draws,
        "train_seconds": train,
        "extra_seconds": extra,
        "extra_note": "measured",
        "khat": khat,
        "khat_range": None if khats is None else [min(khats), max(khats)],
        "ess": None,
        "settings": description,
    }


def run_nuts(data: datasets.LogisticData, args: argparse.Namespace) -> dict[str, Any]:
    """Pyro NUTS with default settings (one chain); the phase split is timed with ``hook_fn``."""
    import arviz as az
    import pyro
    from pyro.infer import MCMC, NUTS

    warmup = _lookup(args.nuts_warmup, data.name)
    draws = _lookup(args.nuts_draws, data.name)
    if args.quick:
        warmup, draws = 20, 20
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    marks: dict[str, float] = {}

    def hook(kernel: Any, params: Any, stage: str, i: int) -> None:
        if stage == "Sample" and "sample_start" not in marks:
            marks["sample_start"] = time.perf_counter()  # after the first draw: close enough

    mcmc = MCMC(
        NUTS(logistic.model),
        warmup_steps=warmup,
        num_samples=draws,
        disable_progbar=True,
        hook_fn=hook,
    )
    x_train, y_train = data.x_train.to(args.device), data.y_train.to(args.device)
    start = time.perf_counter()
    mcmc.run(x_train, y_train)
    end = time.perf_counter()
    samples = mcmc.get_samples()
    metrics = logistic.predictive_metrics(samples["w"].cpu(), data.x_test, data.y_test)
    warm_seconds = marks.get("sample_start", end) - start
    sample_seconds = end - marks.get("sample_start", end)
    per_draw = sample_seconds / max(draws - 1, 1)
    posterior = {k: v.detach().cpu().numpy()[None] for k, v in samples.items()}
    ess = az.ess(az.from_dict(posterior=posterior), method="bulk")
    min_ess = min(float(ess[k].min()) for k in ess.data_vars)
    return {
        **metrics,
        "seconds": end - start,
        "train_seconds": warm_seconds,
        "extra_seconds": per_draw * EXTRA_DRAWS,
        "extra_note": "extrapolated",
        "per_draw": per_draw,
        "per_warmup_iter": warm_seconds / max(warmup, 1),
        "khat": None,
        "ess": min_ess,
        "warmup": warmup,
        "draws": draws,
        "settings": f"{warmup} warmup + {draws} draws, 1 chain",
    }


def run_svgd(data: datasets.LogisticData, args: argparse.Namespace) -> dict[str, Any]:
    """Pyro SVGD with an RBF kernel and Adam; metrics from the final particles.

    ``--svgd-mode univariate`` is Pyro's default (a kernel per coordinate); ``multivariate`` is the
    usual SVGD kernel on the whole parameter vector.
    """
    import pyro
    from pyro.infer import SVGD, RBFSteinKernel
    from pyro.optim import Adam

    steps = 20 if args.quick else args.svgd_steps
    pyro.clear_param_store()
    pyro.set_rng_seed(args.seed)
    svgd = SVGD(
        logistic.model,
        RBFSteinKernel(),
        Adam({"lr": args.svgd_lr}),
        num_particles=args.svgd_particles,
        max_plate_nesting=1,
        mode=args.svgd_mode,
    )
    x_train, y_train = data.x_train.to(args.device), data.y_train.to(args.device)
    start = time.perf_counter()
    for _ in range(steps):
        svgd.step(x_train, y_train)
    seconds = time.perf_counter() - start
    w = svgd.get_named_particles()["w"].detach().reshape(args.svgd_particles, -1).cpu()
    metrics = logistic.predictive_metrics(w, data.x_test, data.y_test)
    return {
        **metrics,
        "seconds": seconds,
        "train_seconds": seconds,
        "extra_seconds": None,
        "extra_note": "n/a (fixed particle set)",
        "khat": None,
        "ess": None,
        "settings": f"{args.svgd_particles} particles, {steps} steps, Adam lr {args.svgd_lr:g}",
        "svgd_mode": args.svgd_mode,
    }


RUNNERS = {
    "wgfinfer": run_wgfinfer,
    "wgfinfer_pwgf": lambda data, args: run_wgfinfer(data, args, scheme="pwgf"),
    "wgfinfer_variational": lambda data, args: run_wgfinfer(data, args, scheme="variational"),
    "nuts": run_nuts,
    "svgd": run_svgd,
}
LABELS = {
    "wgfinfer": "wgfinfer (ICNN JKO)",
    "wgfinfer_pwgf": "wgfinfer (PWGF)",
    "wgfinfer_variational": "wgfinfer (variational JKO)",
    "nuts": "Pyro NUTS",
    "svgd": "Pyro SVGD",
}


def _label(record: dict[str, Any]) -> str:
    label = LABELS.get(record["method"], record["method"])
    return f"{label} ({record['svgd_mode']} kernel)" if record.get("svgd_mode") else label


def _fmt(value: float | None, spec: str, missing: str = "n/a") -> str:
    return (
        missing if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)
    )


def table_rows(results: list[dict[str, Any]]) -> list[list[object]]:
    """One markdown row per (data set, method) result, seed 001's Table 2 in the last four columns."""
    rows = []
    for r in results:
        seed = SEED_TABLE2.get(r["dataset"])
        name = SEED_RELATED.get(r["dataset"], r["dataset"])
        if r.get("skipped"):
            rows.append([r["dataset"], r["shape"], _label(r), r["skipped"], *["—"] * 6])
        else:
            extra = _fmt(r["extra_seconds"], ".1f", r["extra_note"])
            if r["extra_note"] == "extrapolated":
                extra = f"≈{extra} (extrap.)"
            rows.append(
                [
                    r["dataset"],
                    r["shape"],
                    _label(r),
                    r["settings"],
                    f"{r['accuracy']:.4f}",
                    f"{r['log_lik']:.4f}",
                    f"{r['seconds']:.1f}",
                    extra,
                    _fmt(r["khat"], ".2f")
                    + (" ({:.2f}–{:.2f})".format(*r["khat_range"]) if r.get("khat_range") else ""),
                    _fmt(r["ess"], ".0f"),
                ]
            )
        if seed is None:
            rows[-1] += ["—", "—"]
        else:
            rows[-1] += [f"{seed[0]:g} / {seed[1]:g} ({name})", f"{seed[2]:g} / {seed[3]:g}"]
    return rows


HEADER = [
    "data set",
    "n train × d",
    "method",
    "settings",
    "test acc",
    "test log-lik",
    "train/run s",
    "10^5 more draws s",
    f"PSIS k-hat (range over {KHAT_SEEDS} more draw sets)",
    "NUTS min bulk ESS",
    "seed 001 acc (Ours / JKO-ICNN)",
    "seed 001 log-lik (Ours / JKO-ICNN)",
]


def reading(results: list[dict[str, Any]]) -> str:
    """Plain-language check of the README target on breast cancer, plus per-data-set notes."""
    done = {(r["dataset"], r["method"]): r for r in results if not r.get("skipped")}
    lines = []
    nuts = done.get(("breast_cancer", "nuts"))
    for method in ("wgfinfer", "wgfinfer_pwgf"):
        wgf = done.get(("breast_cancer", method))
        if not (wgf and nuts):
            continue
        ratio = wgf["seconds"] / nuts["seconds"]
        gap = abs(wgf["log_lik"] - nuts["log_lik"])
        full = nuts["per_warmup_iter"] * 1000 + nuts["per_draw"] * NUM_DRAWS
        verdict = {True: "holds", False: "does not hold"}
        lines.append(
            f"- README target on breast cancer ({LABELS[method]} against NUTS, same machine, same run):\n"
            f"  - total time ≤ half of NUTS: **{verdict[ratio <= TARGET_TIME_RATIO]}**: wgfinfer "
            f"{wgf['seconds']:.1f} s (train {wgf['train_seconds']:.1f} s + {NUM_DRAWS} draws) against NUTS "
            f"{nuts['seconds']:.1f} s ({nuts['warmup']} warmup + {nuts['draws']} draws), ratio {ratio:.2f}"
            + (
                f"; a full 1000 + {NUM_DRAWS} NUTS run would take ≈{full:.0f} s at the measured "
                f"per-iteration cost (ratio ≈{wgf['seconds'] / full:.2f})"
                if (nuts["warmup"], nuts["draws"]) != (1000, NUM_DRAWS)
                else ""
            )
            + ".\n"
            f"  - test log-lik within {TARGET_LOGLIK_GAP} of NUTS: **{verdict[gap <= TARGET_LOGLIK_GAP]}**: "
            f"{wgf['log_lik']:.4f} against {nuts['log_lik']:.4f} (gap {gap:.4f}).\n"
            f"  - PSIS k-hat < {TARGET_KHAT}: **{verdict[wgf['khat'] < TARGET_KHAT]}**: k-hat "
            f"{wgf['khat']:.2f}"
            + (
                (
                    " (over {} more sets of {} draws: {:.2f}–{:.2f}, all below {}: **{}**)".format(
                        KHAT_SEEDS,
                        NUM_DRAWS,
                        *wgf["khat_range"],
                        TARGET_KHAT,
                        "yes" if wgf["khat_range"][1] < TARGET_KHAT else "no",
                    )
                )
                if wgf.get("khat_range")
                else ""
            )
            + "."
        )
    for name in dict.fromkeys(r["dataset"] for r in results):
        w, p, n, s, v = (done.get((name, m)) for m in METHODS)
        parts = []
        for label, ours in (("wgfinfer", w), ("wgfinfer PWGF", p), ("wgfinfer variational", v)):
            if ours and n:
                parts.append(
                    f"{label} − NUTS: accuracy {ours['accuracy'] - n['accuracy']:+.4f}, "
                    f"log-lik {ours['log_lik'] - n['log_lik']:+.4f}, "
                    f"time ratio {ours['seconds'] / n['seconds']:.2f}"
                )
        if s and n:
            svgd = [r for r in results if (r["dataset"], r["method"]) == (name, "svgd") and "log_lik" in r]
            parts += [
                f"SVGD ({r.get('svgd_mode')}) − NUTS log-lik {r['log_lik'] - n['log_lik']:+.4f}" for r in svgd
            ]
        if w:
            parts.append(f"wgfinfer k-hat {w['khat']:.2f}")
        if p:
            parts.append(f"wgfinfer PWGF k-hat {p['khat']:.2f}")
        if parts:
            lines.append(f"- {name}: " + "; ".join(parts) + ".")
    return "\n".join(lines)


def render(results: list[dict[str, Any]], args: argparse.Namespace, commands: list[str], started: str) -> str:
    """The markdown section: set-up, machine, command, table, footnotes and the reading."""
    return (
        "### Bayesian logistic regression: wgfinfer, NUTS, SVGD (`benchmarks/blr.py`)\n\n"
        f"Run started {started}.  Machine: {machine(args.device)}, device `{args.device}`; the two CPU "
        "cores were shared with other jobs during the run, so every time is an upper bound and the "
        "ratios between methods (same machine) are more meaningful than the absolute "
        "numbers.\n\n"
        + ("Command" if len(commands) == 1 else "Commands, in this order")
        + ":\n\n```\n"
        + "\n".join(commands)
        + "\n```\n\n"
        "Model `wgfinfer.problems.logistic.model` (alpha ~ Gamma(1, rate 0.01), w ~ N(0, alpha^-1 I)), "
        f"seeded 80/20 split (`datasets.load(name, seed={args.seed})`).  Test accuracy is that of the "
        "posterior-predictive mean, test log-lik the mean log predictive density "
        "(`logistic.predictive_metrics`).  *train/run s*: wgfinfer = training + 4096 draws; NUTS = "
        "the whole `MCMC.run` (warmup + draws); SVGD = all steps.  *10^5 more draws*: wgfinfer = "
        "measured `sample(100000, return_log_prob=True)`; NUTS = extrapolated, sampling-phase time per "
        "draw × 10^5; SVGD has a fixed particle set.  Metrics: wgfinfer from 4096 flow draws, NUTS "
        "from all its draws, SVGD from its particles.  k-hat: PSIS of the flow's exact density "
        "(`diagnostics(num_samples=4096)`); NUTS and SVGD have no density.  NUTS uses Pyro's defaults "
        "(no JIT, init to uniform, one chain); min bulk ESS via `arviz.ess` over `alpha` and every "
        "coordinate of `w`.\n\n"
        + markdown_table(HEADER, table_rows(results))
        + "\n\nSeed 001 columns: Table 2 of seed 001, *Ours* = their variational JKO, *JKO-ICNN* = "
        "Mokrov et al. (2021); their splits, preprocessing and data sizes differ from ours.  Breast "
        "cancer is not in their table.  † Their *diabetis* is the Rätsch benchmark Pima data (768 "
        "rows); ours is MASS Pima.tr + Pima.te (532 rows): a related, not identical, data set.  Our "
        "waveform, twonorm and ringnorm are regenerated from Breiman's definitions "
        "(`wgfinfer.problems.datasets`), not the Rätsch files.\n\n"
        "Reading:\n\n"
        + (reading(results) or "- (no completed pairs yet)")
        + "".join(f"\n- {note}" for note in args.note)
        + "\n"
    )


class Stopped(Exception):
    """Raised by the SIGTERM handler so that an interrupted run still writes its table."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Stopped


def _fill_missing(results: list[dict[str, Any]], args: argparse.Namespace, reason: str) -> None:
    """Append a ``skipped`` record for every requested (data set, method) that has no record yet."""
    seen = {(r["dataset"], r["method"]) for r in results}
    seen |= {(r["dataset"], m) for r in results if r["method"] == "all" for m in METHODS}
    for name in args.datasets:
        for method in args.methods:
            if (name, method) not in seen:
                results.append({"dataset": name, "method": method, "shape": "—", "skipped": reason})


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS[:5]), choices=DATASETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nuts-warmup", nargs="+", default=["1000"], help="N and/or dataset=N")
    parser.add_argument("--nuts-draws", nargs="+", default=[str(NUM_DRAWS)], help="N and/or dataset=N")
    parser.add_argument("--svgd-particles", type=int, default=100)
    parser.add_argument("--svgd-steps", type=int, default=1000)
    parser.add_argument("--svgd-lr", type=float, default=0.1)
    parser.add_argument("--svgd-mode", choices=["univariate", "multivariate"], default="univariate")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--stop-at", default=None, help="HH:MM UTC: start no new row after this time")
    parser.add_argument("--json", type=Path, default=None, help="also dump the results here")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        default=None,
        help="run nothing: rewrite the section from a --json file of an earlier (possibly cut-off) run, "
        "marking the requested rows it lacks as not run",
    )
    parser.add_argument("--note", action="append", default=[], help="extra line for the reading")
    add_output_arguments(parser)
    parser.add_argument("--quick", action="store_true", help=argparse.SUPPRESS)  # smoke test
    parser.add_argument("--command", default=None, help=argparse.SUPPRESS)  # for --from-json
    parser.add_argument("--started", default=None, help=argparse.SUPPRESS)  # for --from-json
    args = parser.parse_args()
    args.nuts_warmup = {"*": 1000, **_per_dataset(args.nuts_warmup, "--nuts-warmup")}
    args.nuts_draws = {"*": NUM_DRAWS, **_per_dataset(args.nuts_draws, "--nuts-draws")}
    command = "python benchmarks/blr.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    now = dt.datetime.now(dt.UTC)
    started = now.strftime("%Y-%m-%d %H:%M UTC")

    if args.from_json:
        commands, starts, results = [], [], []
        for path in args.from_json:
            saved = json.loads(path.read_text())
            if isinstance(saved, list):  # bare list of records: command and start time given by hand
                saved = {"command": args.command, "started": args.started, "results": saved}
            for record in saved["results"]:
                if record["method"] == "svgd" and "log_lik" in record:
                    record.setdefault("svgd_mode", "univariate")  # before --svgd-mode: Pyro's default
            commands.append(saved["command"] or "(not recorded)")
            starts.append(saved["started"] or "?")
            results += saved["results"]
        _fill_missing(results, args, "cut off at the deadline (interrupted or not started)")
        order = {m: i for i, m in enumerate(("all", *METHODS))}
        results.sort(key=lambda r: (DATASETS.index(r["dataset"]), order[r["method"]]))
        body = render(results, args, commands, " and ".join(starts))
        if not args.no_write:
            publish(SECTION, body, args.out, args.docs)
        print(body)
        return

    stop_at = None
    if args.stop_at:
        hour, minute = (int(p) for p in args.stop_at.split(":"))
        stop_at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    torch.manual_seed(args.seed)
    signal.signal(signal.SIGTERM, _on_sigterm)

    results: list[dict[str, Any]] = []

    def publish_rows() -> None:
        body = render(results, args, [command], started)
        if not args.no_write:
            publish(SECTION, body, args.out, args.docs)
        if args.json is not None:
            saved = {"command": command, "started": started, "results": results}
            args.json.write_text(json.dumps(saved, indent=2, default=str))

    try:
        for name in args.datasets:
            try:
                data = datasets.load(name, seed=args.seed)
            except ImportError as exc:
                print(f"{name}: skipped ({exc})", flush=True)
                results.append({"dataset": name, "method": "all", "shape": "—", "skipped": f"skipped: {exc}"})
                publish_rows()
                continue
            shape = f"{data.x_train.shape[0]} × {data.n_features}"
            for method in args.methods:
                record: dict[str, Any] = {"dataset": name, "method": method, "shape": shape}
                if stop_at is not None and dt.datetime.now(dt.UTC) >= stop_at:
                    record["skipped"] = f"not run: past --stop-at {args.stop_at} UTC"
                else:
                    try:
                        record.update(RUNNERS[method](data, args))
                    except Stopped:
                        record["skipped"] = "interrupted (SIGTERM) at the deadline"
                        results.append(record)
                        raise
                results.append(record)
                print(json.dumps(record, default=str), flush=True)
                publish_rows()
    except Stopped:
        _fill_missing(results, args, "not run: stopped (SIGTERM) at the deadline")
        publish_rows()
    print(render(results, args, [command], started))


if __name__ == "__main__":
    main()
