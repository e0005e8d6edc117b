"""Nonlinear filtering: JKO filter (defaults, both MH proposals) and bootstrap particle filters vs the grid.

The seed 002 §4.5 problem (``wgfinfer.problems.filtering.sine_well_problem``) over several seeds
(each seed: a new simulated path and observations, and new filter randomness).  Per method and seed:
SymKL between its density of ``p(X_5 | Y_1:9)`` and the Chang-Cooper grid solution (2000 points on
[-5, 5], dt = 1e-3), computed on the grid; wall and process CPU time, and the wall time over the
10^4-particle filter's on the same seed; error of its ``log p(Y_1:9)`` against the grid's.
``jko-default`` is ``JKOFilter(diffusion)`` with no settings but the seed; ``jko-independent`` and
``jko-latent_rw`` take the ``--jko-*`` options.

The JKO filter's density is exact (inverting the maps, normalised by its own log-evidence
estimate); the particle filters' is a Gaussian KDE (Scott's rule).  Writes the table as
``filtering.md`` into ``--out`` (default: the current directory); into the docs only with
``--docs docs/benchmarks.md docs/filtering.md``.

    python benchmarks/filtering.py --methods jko-default pf-1000 pf-10000 pf-50000 --json f.json
                                                       # the documented run (CPU, about 25 minutes)
    python benchmarks/filtering.py --docs docs/benchmarks.md docs/filtering.md   # ... into the docs
    python benchmarks/filtering.py --seeds 0 --methods pf-1000 jko-independent   # quick look
    python benchmarks/filtering.py --discretisation   # the time-discretisation error per step h

With ``--dims`` it runs the D-dimensional comparison instead (issue 19, point 3), written as
``filtering_nd.md``: the rotated OU model against its Kalman filter and the separable sine-well
model against the product of 1-D grid solutions (``wgfinfer.problems.filtering``), for the JKO filter
and bootstrap filters of 10^3, 10^4 and 10^5 particles:

    python benchmarks/filtering.py --dims 2 5 10 --seeds 0 --jko-iters 100 --jko-batch 256 \
        --jko-width 32 --json nd.json         # the documented D-dimensional run (CPU)
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_output_arguments, load_run, machine, markdown_table, publish, record_row  # noqa: E402

import wgfinfer  # noqa: E402
from wgfinfer.filtering import JKOFilter  # noqa: E402
from wgfinfer.filtering.grid import FactorisedGridFilter, GridFilter1D, symkl_on_grid  # noqa: E402
from wgfinfer.filtering.particle import BootstrapParticleFilter  # noqa: E402
from wgfinfer.problems.filtering import (  # noqa: E402
    OBSERVATION_TIMES,
    T_FINAL,
    rotated_ou_problem,
    separable_sine_well_problem,
    sine_well_problem,
)
from wgfinfer.problems.gaussians import gaussian_symkl, ou_kalman_filter_nd  # noqa: E402

METHODS = ["jko-default", "jko-independent", "jko-latent_rw", "pf-1000", "pf-10000", "pf-50000"]
ND_METHODS = ["jko-default", "jko-independent", "jko-latent_rw", "pf-1000", "pf-10000", "pf-100000"]
MODELS = ["ou", "sine"]
# seed 002 Figure 5a as quoted in issue 5: median log10 SymKL
SEED_REPORTED = {"jko-independent": -1.77, "pf-10000": -1.89, "pf-50000": -2.37}


def run_particle_filter(method: str, problem, seed: int):
    """The bootstrap PF of ``method`` (``"pf-N"``: N particles) on ``problem``."""
    n = int(method.split("-")[1])
    return BootstrapParticleFilter(problem.diffusion, n_particles=n, seed=seed).run(
        problem.observations, problem.t_final
    )


def run_jko_filter(method: str, problem, args: argparse.Namespace, seed: int, stop_on_plateau: bool):
    """The JKO filter of ``method`` on ``problem``: ``"jko-default"`` is ``JKOFilter(diffusion)`` with
    no settings but the seed; ``"jko-<proposal>"`` takes the ``--jko-*`` options."""
    if method == "jko-default":
        return JKOFilter(problem.diffusion, seed=seed).run(problem.observations, problem.t_final)
    scheme = wgfinfer.ICNN(
        iters_per_step=args.jko_iters,
        batch_size=args.jko_batch,
        hidden=(args.jko_width, args.jko_width),
        lr=args.jko_lr,
        # the pool (MH draws per observation): a quarter of the step's batches, at least a draw per chain
        n_particles=max(args.jko_iters * args.jko_batch // 4, args.jko_chains),
        stop_on_plateau=stop_on_plateau,
    )
    return JKOFilter(
        problem.diffusion,
        scheme,
        step_size=args.jko_step,
        proposal=method.split("-", 1)[1],
        dtype=torch.float32 if args.jko_float32 else torch.float64,
        n_chains=args.jko_chains,
        warmup=args.jko_warmup,
        thin=args.jko_thin,
        warmup_continued=args.jko_continued,
        seed=seed,
    ).run(problem.observations, problem.t_final)


def default_description() -> str:
    """``JKOFilter(diffusion)``'s configuration in words (the ``jko-default`` rows)."""
    f = JKOFilter(sine_well_problem(0).diffusion)
    s = f.scheme
    continued = (
        "fresh chains at every observation"
        if f.warmup_continued is None
        else f"{f.warmup_continued} at later observations, continuing the previous draws"
    )
    return (
        f"proposal {f.mcmc.proposal}, h = {f.step_size:g}, {s.iters_per_step} iterations x batch "
        f"{s.batch_size} per step at lr {s.lr:g} (plateau stop {'on' if s.stop_on_plateau else 'off'}), "
        "ICNN width "
        f"{tuple(s.hidden)}, {str(f.dtype).replace('torch.', '')}, {f.mcmc.n_chains} chains, "
        f"{f.mcmc.warmup} warm-up sweeps ({continued}), every {f.mcmc.thin}th state kept, "
        f"pool of {f.n_particles}"
    ).replace("every 2th", "every 2nd")


def run_description(args: argparse.Namespace, **extra) -> dict:
    """The machine, the command and the ``--jko-*`` options of a run (the rows' ``meta``)."""
    return {
        "machine": machine("cpu"),
        "command": "python benchmarks/filtering.py " + " ".join(sys.argv[1:]),
        "jko_iters": args.jko_iters,
        "jko_width": args.jko_width,
        "jko_warmup": args.jko_warmup,
        "jko_batch": args.jko_batch,
        "jko_dtype": "float32" if args.jko_float32 else "float64",
        "jko_chains": args.jko_chains,
        "jko_thin": args.jko_thin,
        "jko_step": args.jko_step,
        "jko_lr": args.jko_lr,
        "jko_continued": args.jko_continued,
        "jko_stop_on_plateau": args.jko_plateau,
        "default": default_description(),
        **extra,
        "note": args.note,
    }


def run_method(method: str, problem, grid_result, args: argparse.Namespace, seed: int) -> dict:
    grid = grid_result.grid
    start, cpu_start = time.perf_counter(), time.process_time()
    row: dict = {"method": method, "seed": seed}
    if method.startswith("pf-"):
        result = run_particle_filter(method, problem, seed)
        density = result.density_on_grid(grid)
        row["log_evidence"] = result.log_evidence
    else:
        # every step runs its iterations unless --jko-plateau: with the plateau stop the example's
        # run stopped early, SymKL 0.051 instead of 0.0087
        result = run_jko_filter(method, problem, args, seed, stop_on_plateau=args.jko_plateau)
        points = torch.as_tensor(grid, dtype=torch.float64).unsqueeze(-1)
        density = np.nan_to_num(torch.exp(result.log_prob(points, normalized=True)).numpy())
        row["log_evidence"] = result.log_evidence
        row["acceptance"] = statistics.mean(result.acceptance_rate.values())
    row["time"] = time.perf_counter() - start
    row["cpu_time"] = time.process_time() - cpu_start
    row["symkl"] = symkl_on_grid(grid_result.density(), density, grid)
    row["log_evidence_error"] = row["log_evidence"] - grid_result.log_evidence
    return row


def render(rows: list[dict], meta: dict) -> str:
    header = [
        "method",
        "median log10 SymKL",
        "IQR",
        "paths below pf-10000's SymKL",
        "seed code's median",
        "median s",
        "median CPU s",
        "median wall / pf-10000's",
        "median CPU / pf-10000's",
        "median |log Z error|",
        "MH acceptance",
    ]
    pf = {r["seed"]: r for r in rows if r["method"] == "pf-10000"}
    table = []
    for method in [m for m in METHODS if any(r["method"] == m for r in rows)]:
        mine = [r for r in rows if r["method"] == method]
        logs = sorted(math.log10(max(r["symkl"], 1e-12)) for r in mine)
        q = np.percentile(logs, [25, 75]) if len(logs) > 1 else [logs[0], logs[0]]
        acc = [r["acceptance"] for r in mine if "acceptance" in r]
        cpu = [r["cpu_time"] for r in mine if "cpu_time" in r]
        paired = [r for r in mine if r["seed"] in pf]
        below = sum(r["symkl"] < pf[r["seed"]]["symkl"] for r in paired)
        ratio = [r["time"] / pf[r["seed"]]["time"] for r in mine if r["seed"] in pf]
        cpu_ratio = [
            r["cpu_time"] / pf[r["seed"]]["cpu_time"]
            for r in mine
            if "cpu_time" in r and "cpu_time" in pf.get(r["seed"], {})
        ]
        table.append(
            [
                method,
                f"{statistics.median(logs):.2f}",
                f"[{q[0]:.2f}, {q[1]:.2f}]",
                f"{below} of {len(paired)}" if paired and method != "pf-10000" else "—",
                f"{SEED_REPORTED[method]:.2f}" if method in SEED_REPORTED else "—",
                f"{statistics.median(r['time'] for r in mine):.0f}",
                f"{statistics.median(cpu):.0f}" if cpu else "—",
                f"{statistics.median(ratio):.1f}" if ratio else "—",
                f"{statistics.median(cpu_ratio):.1f}" if cpu_ratio else "—",
                f"{statistics.median(abs(r['log_evidence_error']) for r in mine):.3f}",
                f"{statistics.mean(acc):.2f}" if acc else "—",
            ]
        )
    seeds = sorted({r["seed"] for r in rows})
    methods = {r["method"] for r in rows}
    jko = []
    if "jko-default" in methods:
        jko.append(
            "`jko-default` is `JKOFilter(diffusion, seed=seed)` with no other settings: "
            f"{meta.get('default', 'the defaults of its commit')}."
        )
    if methods & {"jko-independent", "jko-latent_rw"}:
        plateau = "plateau stop on" if meta.get("jko_stop_on_plateau") else "every iteration"
        jko.append(
            f"`jko-<proposal>`: h = {meta.get('jko_step', 0.1):g}, {meta['jko_iters']} iterations x batch "
            f"{meta['jko_batch']} per step at lr {meta.get('jko_lr', 5e-3):g} ({plateau}), ICNN width "
            f"({meta['jko_width']}, {meta['jko_width']}), "
            f"{meta['jko_dtype']}, {meta['jko_chains']} chains, {meta['jko_warmup']} warm-up sweeps, "
            + {1: "every state", 2: "every 2nd state"}.get(
                meta.get("jko_thin", 2), f"every {meta.get('jko_thin')}-th state"
            )
            + " kept."
        )
    if jko:
        jko.append("The JKO filter's density by inverting the maps.")
    lines = [
        "### Nonlinear filtering (`benchmarks/filtering.py`)",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`.",
        f"Seed 002 §4.5 problem, seeds {seeds} (path, observations and filters); reference: Chang-Cooper "
        "grid, 2000 points on [-5, 5], dt = 1e-3. "
        + " ".join(jko)
        + " Particle filters: Euler-Maruyama dt = 1e-3, systematic resampling, Gaussian KDE. Times are "
        "wall-clock and process CPU seconds of each run; the ratios are to the 10^4-particle filter's on "
        "the same seed in the same process.",
        "",
        markdown_table(header, table),
    ]
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------ D dimensions
class GaussianTruth:
    """The filtering law at ``t_final`` of the rotated OU model: a Gaussian from a Kalman filter."""

    def __init__(self, kalman: dict) -> None:
        self.mean = np.asarray(kalman["final_mean"])
        self.cov = np.asarray(kalman["final_covariance"])
        self.var = np.diag(self.cov)
        self.log_evidence = float(kalman["log_evidence"])
        self.grid = np.linspace(-7.0, 7.0, 561)

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        from scipy.stats import multivariate_normal

        return multivariate_normal(self.mean, self.cov).logpdf(x)

    def sample(self, n: int, seed: int) -> np.ndarray:
        return np.random.default_rng(seed).multivariate_normal(self.mean, self.cov, size=n)

    def marginal(self, i: int) -> np.ndarray:
        v = self.var[i]
        return np.exp(-((self.grid - self.mean[i]) ** 2) / (2 * v)) / math.sqrt(2 * math.pi * v)


class GridTruth:
    """The filtering law at ``t_final`` of the separable model: the product of 1-D grid solutions."""

    def __init__(self, result) -> None:
        self.result = result
        self.mean, self.var = result.mean(), result.variance()
        self.log_evidence = result.log_evidence
        self.grid = result.grid[::4]

    def log_prob(self, x: np.ndarray) -> np.ndarray:
        return self.result.log_prob(x)

    def sample(self, n: int, seed: int) -> np.ndarray:
        return self.result.sample(n, seed=seed)

    def marginal(self, i: int) -> np.ndarray:
        return self.result.density(i)[::4]


def nd_problem(model: str, dim: int, seed: int):
    """The problem, its truth and (OU only) the truth of the JKO-discretised process."""
    if model == "ou":
        problem = rotated_ou_problem(dim, seed)
        p, obs = problem.parameters, problem.observations
        args = (p["a"], p["b"], p["beta"], p["mean0"], p["cov0"], obs.times.numpy(), obs.values.numpy())
        exact = ou_kalman_filter_nd(*args, p["noise_std"], problem.t_final)
        jko = ou_kalman_filter_nd(*args, p["noise_std"], problem.t_final, step_size=0.1)
        return problem, GaussianTruth(exact), GaussianTruth(jko)
    problem = separable_sine_well_problem(dim, seed)
    grid = FactorisedGridFilter(problem.coordinates).run(problem.observations, problem.t_final)
    return problem, GridTruth(grid), None


def kl_with_exact_densities(truth, log_q, n: int, seed: int) -> tuple[float, float, int]:
    """``KL(truth || q)`` from ``n`` exact draws of the truth and ``q``'s unnormalised log-density.

    ``KL = E_p[log p - log q_u] + log Z_q`` with ``Z_q = E_p[q_u / p]`` estimated on the same draws
    (importance sampling with the truth as proposal, reliable where ``q`` is close to ``p``): the
    filter's own evidence estimate would carry the bias of its importance weights, which degenerate
    in several dimensions (and gave negative "KL" values).  Returns the estimate, a bootstrap
    standard error (200 resamples) and the number of draws where ``log q`` was not finite (dropped).
    """
    x = truth.sample(n, seed)
    diff = truth.log_prob(x) - log_q(x)
    ok = np.isfinite(diff)
    d = diff[ok]

    def estimate(v: np.ndarray) -> float:
        top = float(np.max(-v))
        return float(v.mean() + top + math.log(np.mean(np.exp(-v - top))))

    rng = np.random.default_rng(seed)
    boot = [estimate(d[rng.integers(0, d.size, d.size)]) for _ in range(200)]
    return estimate(d), float(np.std(boot, ddof=1)), int((~ok).sum())


def draw_metrics(x: np.ndarray, truth) -> dict:
    """Moment errors and the summed SymKL of the 1-D marginals (Gaussian KDE of at most 20000 draws)."""
    from scipy.stats import gaussian_kde

    mean, var = x.mean(0), x.var(0, ddof=1)
    symkl = 0.0
    for i in range(x.shape[1]):
        kde = gaussian_kde(x[:20000, i])(truth.grid)
        symkl += symkl_on_grid(truth.marginal(i), np.maximum(kde, 0.0), truth.grid)
    return {
        "mean_error": float(np.max(np.abs(mean - truth.mean) / np.sqrt(truth.var))),
        "variance_error": float(np.max(np.abs(var / truth.var - 1))),
        "marginal_symkl": symkl,
    }


def run_nd_method(
    method: str, model: str, problem, truth, jko_truth, args: argparse.Namespace, seed: int
) -> dict:
    row: dict = {"model": model, "dim": problem.diffusion.dim, "method": method, "seed": seed}
    start = time.perf_counter()
    if method.startswith("pf-"):
        result = run_particle_filter(method, problem, seed)
        row["time"] = time.perf_counter() - start
        x = result.sample().double().numpy()
    else:
        result = run_jko_filter(method, problem, args, seed, stop_on_plateau=not args.jko_full_steps)
        row["time"] = time.perf_counter() - start
        x = result.draws[problem.t_final].double().numpy()
        row["acceptance"] = statistics.mean(result.acceptance_rate.values())
        row["acceptance_last"] = list(result.acceptance_rate.values())[-1]

        def log_q(points: np.ndarray) -> np.ndarray:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out = result.log_prob(torch.as_tensor(points))
            return out.double().numpy()

        row["kl"], row["kl_se"], row["kl_dropped"] = kl_with_exact_densities(
            truth, log_q, args.kl_draws, seed
        )
        if jko_truth is not None:
            row["kl_jko_truth"], row["kl_jko_truth_se"], _ = kl_with_exact_densities(
                jko_truth, log_q, args.kl_draws, seed
            )
    row["log_evidence"] = result.log_evidence
    row["log_evidence_error"] = result.log_evidence - truth.log_evidence
    row.update(draw_metrics(x, truth))
    return row


def render_nd(rows: list[dict], meta: dict) -> str:
    header = [
        "model",
        "D",
        "method",
        "sum of marginal SymKL",
        "max mean error / sd",
        "max variance error",
        "KL(truth‖JKO), exact densities",
        "log Z error",
        "s",
        "MH acceptance (last obs.)",
    ]
    table = []
    for model in MODELS:
        for dim in sorted({r["dim"] for r in rows}):
            for method in ND_METHODS:
                mine = [r for r in rows if (r["model"], r["dim"], r["method"]) == (model, dim, method)]
                if not mine:
                    continue
                med = lambda key, rs=mine: statistics.median(r[key] for r in rs)  # noqa: E731
                kl = "—"
                if "kl" in mine[0]:
                    kl = f"{med('kl'):.3f} ± {med('kl_se'):.3f}"
                    if "kl_jko_truth" in mine[0]:
                        kl += f" ({med('kl_jko_truth'):.3f} to the JKO-discretised truth)"
                acc = (
                    f"{med('acceptance'):.2f} ({med('acceptance_last'):.3f})"
                    if "acceptance" in mine[0]
                    else "—"
                )
                table.append(
                    [
                        model, str(dim), method, f"{med('marginal_symkl'):.3f}", f"{med('mean_error'):.3f}",
                        f"{med('variance_error'):.3f}", kl, f"{med('log_evidence_error'):+.3f}",
                        f"{med('time'):.0f}", acc,
                    ]
                )  # fmt: skip
    seeds = sorted({r["seed"] for r in rows})
    plateau = (
        f"{meta['jko_iters']} iterations"
        if meta.get("jko_full_steps")
        else f"at most {meta['jko_iters']} iterations (the ICNN's plateau stop on, its default)"
    )
    lines = [
        "### Filtering in D dimensions (`benchmarks/filtering.py --dims`)",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`.",
        f"Seeds {seeds}. Observations at t = 0.5, 1.0, ..., 2.5 with unit isotropic noise, target "
        "p(X_3 | Y_1:5). Models: `ou` is the rotated OU process (A = Q diag(0.5 ... 2) Q^T), truth its "
        "Kalman filter; `sine` is the sine-well potential in every coordinate, truth the product of "
        "1-D Chang-Cooper grid solutions (2000 points on [-5, 5], dt = 1e-3). `jko-default` is "
        f"`JKOFilter(diffusion, seed=seed)`: {default_description()}. The other JKO rows: h = 0.1 "
        f"(30 steps), {plateau} x batch {meta['jko_batch']} per step, ICNN width "
        f"({meta['jko_width']}, {meta['jko_width']}), {meta['jko_dtype']}, {meta['jko_chains']} chains, "
        f"{meta['jko_warmup']} warm-up sweeps, cached independence proposals; its draws at t = 3 are "
        "its particles (pool of "
        f"{max(meta['jko_iters'] * meta['jko_batch'] // 4, meta['jko_chains'])}). Particle filters: "
        "Euler-Maruyama dt = 1e-3, systematic resampling. Errors are of the draws at t = 3 against "
        "the truth: marginal SymKL by a Gaussian KDE of each coordinate (at most 20000 draws), summed "
        "over coordinates; the mean error in units of the true sd and the variance ratio, worst "
        f"coordinate; KL of the JKO filter's density (inverting its maps) by {meta['kl_draws']} exact "
        "draws of the truth, its normaliser estimated by importance sampling from the truth (bootstrap "
        "standard error). log Z error: estimate minus truth.",
        "",
        markdown_table(header, table),
    ]
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines)


def main_nd(args: argparse.Namespace) -> None:
    if args.from_json:
        rows, meta = load_run(args.from_json, args.note)
    else:
        meta = run_description(args, kl_draws=args.kl_draws, jko_full_steps=args.jko_full_steps)
        rows = []
        methods = [m for m in args.methods or ND_METHODS if m in ND_METHODS] or ND_METHODS
        for seed in args.seeds:
            for model in args.models:
                for dim in args.dims:
                    problem, truth, jko_truth = nd_problem(model, dim, seed)
                    for method in methods:
                        row = run_nd_method(method, model, problem, truth, jko_truth, args, seed)
                        record_row(rows, row, meta, args.json)
    body = render_nd(rows, meta)
    print(body)
    if not args.no_write:
        publish("filtering_nd", body, args.out, args.docs)


DISCRETISATION_STEPS = (0.5, 0.25, 0.1, 0.05)


def main_discretisation(seeds: list[int]) -> None:
    """The time-discretisation error alone, per step ``h``, on the benchmark's observation times.

    The 1-D OU filter (``Phi = x^2 / 2``, ``beta = 1``, ``X_0 ~ N(0, 1)``, unit observation noise,
    observations drawn from ``N(0, 1)`` by ``seed``) of exact JKO steps against the continuous-time
    Kalman filter, at ``t = 5``; and the sine-well grid filter with implicit Euler steps of ``h``
    against the benchmark's ``dt = 1e-3`` (a first-order scheme like JKO, in L2 instead of W2).
    Prints SymKL per seed and ``h``; seconds on a CPU.
    """
    times = np.asarray(OBSERVATION_TIMES)
    print("| reference | seed | " + " | ".join(f"h = {h:g}" for h in DISCRETISATION_STEPS) + " |")
    print("|---|---|" + "---|" * len(DISCRETISATION_STEPS))
    one = np.eye(1)
    for seed in seeds:
        values = np.random.default_rng(seed).normal(size=(len(times), 1))
        args = (one, np.zeros(1), 1.0, np.zeros(1), one, times, values, 1.0, T_FINAL)
        exact = ou_kalman_filter_nd(*args)
        cells = []
        for h in DISCRETISATION_STEPS:
            jko = ou_kalman_filter_nd(*args, step_size=h)
            cells.append(
                gaussian_symkl(
                    exact["final_mean"], exact["final_covariance"], jko["final_mean"], jko["final_covariance"]
                )
            )
        print(f"| OU, exact JKO steps vs Kalman | {seed} | " + " | ".join(f"{c:.5f}" for c in cells) + " |")
    for seed in seeds:
        problem = sine_well_problem(seed)
        fine = GridFilter1D(problem.diffusion).run(problem.observations, problem.t_final)
        cells = []
        for h in DISCRETISATION_STEPS:
            coarse = GridFilter1D(problem.diffusion, dt=h).run(problem.observations, problem.t_final)
            cells.append(symkl_on_grid(fine.density(), coarse.density(), fine.grid))
        print(f"| sine well, grid dt = h vs 1e-3 | {seed} | " + " | ".join(f"{c:.5f}" for c in cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=None, choices=sorted(set(METHODS + ND_METHODS)))
    parser.add_argument("--dims", type=int, nargs="+", help="run the D-dimensional comparison (e.g. 2 5 10)")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument(
        "--jko-full-steps", action="store_true", help="--dims: every JKO step runs all its iterations"
    )
    parser.add_argument("--kl-draws", type=int, default=1000, help="exact draws for the JKO filter's KL")
    # a CPU budget (about 4 minutes per JKO filter run on one core; --jko-width 32 --jko-iters 100
    # --jko-batch 256 takes one); the seed trains width 256, batch 1024, 700 iterations per step and
    # warms up 1000 sweeps, on a GPU
    parser.add_argument("--jko-iters", type=int, default=300)
    parser.add_argument("--jko-width", type=int, default=64)
    parser.add_argument("--jko-batch", type=int, default=512)
    parser.add_argument("--jko-warmup", type=int, default=200)
    parser.add_argument("--jko-float64", dest="jko_float32", action="store_false")
    parser.add_argument("--jko-chains", type=int, default=256)
    parser.add_argument("--jko-thin", type=int, default=2, help="keep every n-th MH state (JKOFilter's thin)")
    parser.add_argument("--jko-step", type=float, default=0.1, help="JKO step h")
    parser.add_argument("--jko-lr", type=float, default=5e-3, help="ICNN learning rate (ICNN()'s own)")
    parser.add_argument(
        "--jko-continued",
        type=int,
        default=None,
        help="warm-up sweeps of chains continued from the previous observation (default: fresh chains)",
    )
    parser.add_argument(
        "--jko-plateau", action="store_true", help="1-D: the ICNN's plateau stop on (else every iteration)"
    )
    parser.add_argument(
        "--discretisation", action="store_true", help="print the time-discretisation error per step h"
    )
    parser.add_argument("--json", help="also write the rows here (after every run)")
    parser.add_argument("--from-json", help="render a saved run instead of running")
    parser.add_argument("--note", default="")
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.discretisation:
        main_discretisation(args.seeds)
        return
    if args.dims:
        main_nd(args)
        return
    args.methods = [m for m in args.methods or METHODS if m in METHODS] or METHODS
    if args.from_json:
        rows, meta = load_run(args.from_json, args.note)
    else:
        meta = run_description(args)
        rows = []
        for seed in args.seeds:
            problem = sine_well_problem(seed)
            grid_result = GridFilter1D(problem.diffusion).run(problem.observations, problem.t_final)
            for method in args.methods:
                row = run_method(method, problem, grid_result, args, seed)
                record_row(rows, row, meta, args.json)
    body = render(rows, meta)
    print(body)
    if not args.no_write:
        publish("filtering", body, args.out, args.docs)


if __name__ == "__main__":
    main()
