"""PDE solvers against exact solutions: error and wall time per unit of simulated time.

Every run is one call of :func:`wgfinfer.simulate`; its wall time (network initialisation, training
and the schemes' own bookkeeping; evaluation excluded) is reported in total and per unit of simulated
time.  Schemes: the JKO schemes ``"icnn"`` and ``"variational"`` (map ``"icnn"`` on the OU problems,
whose flows then have exact densities; ``"resnet"`` on the porous-medium problems) and ``"pwgf"``
(maps ``"affine"``, the exact family for OU, and ``"planar"`` on OU; ``"resnet"`` on the
porous-medium problems).

Problems (ids for ``--problems``; a prefix such as ``ou`` selects every dimension):

* ``ou-2``, ``ou-8``: Fokker-Planck equation of ``dX = -X dt + sqrt(2) dW``, i.e. the flow of
  ``KLDivergence(log N(0, I))``, from ``N(m0, diag(s0^2))`` with ``m0 = (1, -1, 1, ...)`` and
  ``s0 = (0.5, 1.5, 0.5, ...)``, up to ``t = 0.5``: JKO with ``h = 0.1`` (5 steps) and ``h = 0.05``
  (10 steps); PWGF with 5 and 10 recorded steps of 0.1 and 0.05, each of ``substeps`` forward-Euler
  steps.  The exact marginal is ``N(m0 e^{-t}, diag(s0^2 e^{-2t} + 1 - e^{-2t}))``
  (:func:`wgfinfer.problems.gaussians.ou_marginal`).
  Errors: ``SymKL fit`` = SymKL between the Gaussian fitted to 50000 flow draws and the exact
  marginal (the ``exact draws`` row: the same statistic for 50000 exact draws, its noise floor);
  ``KL dens.`` = ``KL(flow || exact)`` by Monte Carlo with the flow's exact log-densities (10000
  draws, ± one standard error); ``SymKL fit vs ref`` = SymKL between the fitted Gaussian and the exact
  solution of the time-discretised scheme (JKO: the exact JKO iterates,
  :func:`wgfinfer.problems.gaussians.ou_jko_gaussian`; PWGF affine: forward Euler on the parameter ODE of
  ``T(z) = A z + c``, ``dA/dt = -A + A^{-T} S0^{-1}``, ``dc/dt = -c - A^{-T} S0^{-1} m0``), i.e. the
  optimisation / Monte-Carlo part of the error; ``SymKL ref vs exact`` = SymKL between that discretised
  solution and the exact marginal, i.e. the time-discretisation part.
* ``barenblatt-1``: seed 000's porous-medium problem ``d_t u = Delta(u^2)`` in 1-D, Barenblatt
  profile with ``t0 = 0.002``, ``C = (3/16)^{1/3}`` (mass 2), so the probability law solves the flow
  of ``GeneralizedEntropy(2, coefficient=2)``; ``h = a = 0.001``, 10 steps (``t = 0.01``), and
  ``h = 0.0005``, 20 steps.
* ``barenblatt-2``: unit-mass Barenblatt profile, ``m = 2``, ``d = 2``, ``t0 = 0.1``; ``h = 0.05``,
  10 steps (``t = 0.5``), and ``h = 0.025``, 20 steps.
  Errors (50000 flow draws at the final time): ``rel. M2 err`` = ``|E||x||^2 / M2(t) - 1|`` with the
  exact ``M2(t)`` (:meth:`~wgfinfer.problems.barenblatt.BarenblattProfile.second_moment`); in 1-D ``W1``
  against the exact quantiles (``mean_i |x_(i) - Q((i - 1/2)/n)|``), in 2-D the Kolmogorov-Smirnov
  statistic of the radii against :meth:`~wgfinfer.problems.barenblatt.BarenblattProfile.radius_cdf`.  The
  ``exact draws`` row gives both statistics for 50000 exact draws (noise floor), the ``rho_0 (no
  motion)`` row for the initial law (the error of not moving at all).

Settings of the full run (the documented one): JKO schemes 200 iterations x batch 256 per step,
networks (32, 32) (variational dual (32, 32, 32)), pool of 4096 particles; PWGF 2048 draws per Euler
step, MINRES tol 3e-4 and at most 100 iterations, 5 Euler substeps per recorded step, planar 16
layers, residual (32, 32).  JKO runs in float32, PWGF in float64 (its Krylov solve).  Every scheme
runs at both step sizes: 32 runs.  Duration on one core of the 2-core AMD EPYC development machine
(measured): 378 s of CPU time in the simulations (JKO runs 9-44 s each, PWGF runs 0.2-9 s) plus
evaluation, i.e. about 7 minutes when the core is free; 12.5 minutes wall when another job shared
the core.  ``--quick``: OU d = 2 and both Barenblatt problems, 2 steps, 10 iterations, 5000
evaluation draws, one step size (about 20 s including start-up; a smoke test, not a measurement).

    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/pde.py --json /tmp/pde.json  # the documented run
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/pde.py --quick --no-write     # smoke test
    python benchmarks/pde.py --problems barenblatt-1 --schemes pwgf --no-write
    python benchmarks/pde.py --from-json /tmp/pde.json --note "..."               # re-render a run
    python benchmarks/pde.py --from-json /tmp/pde.json --docs docs/benchmarks.md  # ... into the docs

The table goes to ``pde.md`` in ``--out`` (default: the current directory), into the docs only with
``--docs``; ``--json`` saves the rows (rewritten after every row).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import stats
from torch.distributions import Independent, MultivariateNormal, Normal

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_output_arguments, load_run, machine, markdown_table, publish, record_row  # noqa: E402

import wgfinfer  # noqa: E402
from wgfinfer.errors import TrainingDivergedError  # noqa: E402
from wgfinfer.functionals import GeneralizedEntropy, KLDivergence  # noqa: E402
from wgfinfer.problems.barenblatt import BarenblattProfile  # noqa: E402
from wgfinfer.problems.gaussians import gaussian_symkl, ou_jko_gaussian, ou_marginal  # noqa: E402

PROBLEMS = ("ou-2", "ou-8", "barenblatt-1", "barenblatt-2")
SCHEMES = ("icnn", "variational", "pwgf")


@dataclass
class Settings:
    """Sizes of one benchmark run (``FULL`` is the documented run, ``QUICK`` a smoke test)."""

    problems: tuple[str, ...]
    ou_step_size: float = 0.1
    ou_steps: int = 5
    barenblatt_steps: int = 10
    refinements: tuple[int, ...] = (1, 2)
    """Each run is repeated with the step divided by ``r`` and ``r`` times the steps (same final time)."""
    iters: int = 200
    batch: int = 256
    width: int = 32
    n_particles: int = 4096
    pwgf_samples: int = 2048
    pwgf_max_iter: int = 100
    ou_substeps: int = 5
    barenblatt_substeps: int = 5
    planar_layers: int = 16
    eval_draws: int = 50000
    density_draws: int = 10000


FULL = Settings(problems=PROBLEMS)
QUICK = Settings(
    problems=("ou-2", "barenblatt-1", "barenblatt-2"),
    ou_step_size=0.25,
    ou_steps=2,
    barenblatt_steps=2,
    refinements=(1,),
    iters=10,
    batch=128,
    width=16,
    n_particles=1024,
    pwgf_samples=256,
    pwgf_max_iter=30,
    ou_substeps=2,
    barenblatt_substeps=1,
    planar_layers=4,
    eval_draws=5000,
    density_draws=1000,
)


# ---------------------------------------------------------------------------------------------- OU


def ou_start(dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``m0 = (1, -1, 1, ...)`` and ``s0 = (0.5, 1.5, 0.5, ...)``."""
    m0 = np.array([1.0 if i % 2 == 0 else -1.0 for i in range(dim)])
    s0 = np.array([0.5 if i % 2 == 0 else 1.5 for i in range(dim)])
    return m0, s0


def standard_normal_log_density(x: torch.Tensor) -> torch.Tensor:
    """Unnormalised ``log N(0, I)``: the OU potential is ``|x|^2 / 2``."""
    return -0.5 * x.square().sum(-1)


def gaussian_fit(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    x = x.detach().double().cpu().numpy()
    return x.mean(0), np.atleast_2d(np.cov(x, rowvar=False))


def ou_euler_reference(
    m0: np.ndarray, s0: np.ndarray, euler_step: float, n_euler: int
) -> tuple[np.ndarray, np.ndarray]:
    """Forward Euler on the parameter ODE of ``T(z) = A z + c`` pushing ``N(m0, diag(s0^2))``.

    ``N(A m0 + c, A S0 A^T)`` moves with the velocity ``-y - grad log rho(y)
    = -y + (A S0 A^T)^{-1} (y - A m0 - c)``, affine in ``y``; matching it with ``dA z + dc`` at
    ``y = A z + c`` gives ``dA = -A + A^{-T} S0^{-1}`` and ``dc = -c - A^{-T} S0^{-1} m0``.  PWGF
    with the affine map is this Euler scheme up to the Monte-Carlo error of its draws.
    """
    dim = len(m0)
    a, c = np.eye(dim), np.zeros(dim)
    precision = np.diag(1.0 / s0**2)
    for _ in range(n_euler):
        pull = np.linalg.inv(a).T @ precision
        a, c = a + euler_step * (pull - a), c + euler_step * (-c - pull @ m0)
    cov = a @ np.diag(s0**2) @ a.T
    return a @ m0 + c, 0.5 * (cov + cov.T)


def run_ou(dim: int, scheme: str, pwgf_map: str | None, refine: int, s: Settings, seed: int) -> dict:
    m0, s0 = ou_start(dim)
    h, steps = s.ou_step_size / refine, s.ou_steps * refine
    t_final = s.ou_step_size * s.ou_steps
    exact_mean, exact_cov = ou_marginal(np.eye(dim), np.zeros(dim), m0, np.diag(s0**2), t_final)
    functional = KLDivergence(standard_normal_log_density)
    options: wgfinfer.ICNN | wgfinfer.Variational | wgfinfer.PWGF
    if scheme == "pwgf":
        dtype = torch.float64
        options = wgfinfer.PWGF(
            map=pwgf_map,
            n_samples=s.pwgf_samples,
            max_iter=s.pwgf_max_iter,
            substeps=s.ou_substeps,
            n_layers=s.planar_layers,
        )
        map_name = pwgf_map
    else:
        dtype = torch.float32
        jko = dict(
            iters_per_step=s.iters, batch_size=s.batch, hidden=(s.width, s.width), n_particles=s.n_particles
        )
        map_name = "icnn"
        if scheme == "variational":
            options = wgfinfer.Variational(map="icnn", dual_hidden=(s.width,) * 3, **jko)
        else:
            options = wgfinfer.ICNN(**jko)
    init = Independent(Normal(torch.tensor(m0, dtype=dtype), torch.tensor(s0, dtype=dtype)), 1)
    row = base_row(f"ou-{dim}", scheme, map_name, dim, h, steps, t_final)
    flow = simulate(row, functional, init, options, h, steps, seed)
    if flow is None:
        return row
    gen = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        x = flow.sample(s.eval_draws, generator=gen)
    fit_mean, fit_cov = gaussian_fit(x)
    row["symkl_fit"] = gaussian_symkl(fit_mean, fit_cov, exact_mean, exact_cov)
    reference = None
    if scheme in ("icnn", "variational"):
        reference = ou_jko_gaussian(np.eye(dim), np.zeros(dim), m0, np.diag(s0**2), h, steps)
    elif pwgf_map == "affine":
        reference = ou_euler_reference(m0, s0, h / s.ou_substeps, steps * s.ou_substeps)
    if reference is not None:
        row["symkl_vs_ref"] = gaussian_symkl(fit_mean, fit_cov, *reference)
        row["symkl_ref_exact"] = gaussian_symkl(*reference, exact_mean, exact_cov)
    if flow.has_density:
        exact = MultivariateNormal(torch.tensor(exact_mean), torch.tensor(exact_cov))
        xq, log_q = flow.sample(s.density_draws, generator=gen, return_log_prob=True)
        diff = (log_q.detach().double() - exact.log_prob(xq.detach().double())).numpy()
        row["kl_density"] = float(diff.mean())
        row["kl_density_se"] = float(diff.std(ddof=1) / math.sqrt(diff.size))
    return row


def ou_floor(dim: int, s: Settings, seed: int) -> dict:
    """The SymKL of a Gaussian fitted to exact draws (the fit's noise floor)."""
    m0, s0 = ou_start(dim)
    t_final = s.ou_step_size * s.ou_steps
    mean, cov = ou_marginal(np.eye(dim), np.zeros(dim), m0, np.diag(s0**2), t_final)
    gen = torch.Generator().manual_seed(seed + 2000)
    chol = torch.linalg.cholesky(torch.tensor(cov))
    x = torch.tensor(mean) + torch.randn(s.eval_draws, dim, generator=gen, dtype=torch.float64) @ chol.T
    row = base_row(f"ou-{dim}", "exact draws", "—", dim, None, None, t_final)
    row["symkl_fit"] = gaussian_symkl(*gaussian_fit(x), mean, cov)
    return row


# ------------------------------------------------------------------------------------- Barenblatt


def barenblatt_problem(dim: int) -> tuple[BarenblattProfile, float]:
    """The profile and the step size of ``barenblatt-<dim>``."""
    if dim == 1:
        return BarenblattProfile(dim=1, m=2, t0=0.002, C=(3 / 16) ** (1 / 3)), 0.001
    return BarenblattProfile(dim=dim, m=2, t0=0.1), 0.05


def barenblatt_errors(x: torch.Tensor, profile: BarenblattProfile, t: float) -> dict:
    x = x.detach().double().cpu().numpy()
    centred = x - np.asarray(profile.center)
    exact_m2 = profile.second_moment(t)
    out = {"rel_m2_err": abs(float((centred**2).sum(1).mean()) / exact_m2 - 1.0)}
    if profile.dim == 1:
        n = x.shape[0]
        q = profile.quantile_1d((np.arange(n) + 0.5) / n, t)
        out["w1"] = float(np.abs(np.sort(x[:, 0]) - q).mean())
    else:
        radii = np.linalg.norm(centred, axis=1)
        out["ks"] = float(stats.kstest(radii, lambda r: profile.radius_cdf(r, t)).statistic)
    return out


def run_barenblatt(dim: int, scheme: str, refine: int, s: Settings, seed: int) -> dict:
    profile, base_step = barenblatt_problem(dim)
    h, steps = base_step / refine, s.barenblatt_steps * refine
    t_final = base_step * s.barenblatt_steps
    functional = GeneralizedEntropy(2, coefficient=profile.probability_coefficient)
    options: wgfinfer.ICNN | wgfinfer.Variational | wgfinfer.PWGF
    if scheme == "pwgf":
        dtype = torch.float64
        options = wgfinfer.PWGF(
            map="resnet",
            hidden=(s.width, s.width),
            n_samples=s.pwgf_samples,
            max_iter=s.pwgf_max_iter,
            substeps=s.barenblatt_substeps,
        )
        map_name = "resnet"
    else:
        dtype = torch.float32
        jko = dict(
            iters_per_step=s.iters, batch_size=s.batch, hidden=(s.width, s.width), n_particles=s.n_particles
        )
        map_name = "icnn"
        if scheme == "variational":
            options = wgfinfer.Variational(map="resnet", dual_hidden=(s.width,) * 3, **jko)
            map_name = "resnet"
        else:
            options = wgfinfer.ICNN(**jko)
    init = profile.distribution(0.0, dtype=dtype)
    row = base_row(f"barenblatt-{dim}", scheme, map_name, dim, h, steps, t_final)
    flow = simulate(row, functional, init, options, h, steps, seed)
    if flow is None:
        return row
    with torch.no_grad():
        x = flow.sample(s.eval_draws, generator=torch.Generator().manual_seed(seed + 1000))
    row.update(barenblatt_errors(x, profile, t_final))
    return row


def barenblatt_reference_rows(dim: int, s: Settings, seed: int) -> list[dict]:
    """Exact draws at the final time (noise floor) and the initial law (no motion) vs the final law."""
    profile, h = barenblatt_problem(dim)
    t_final = h * s.barenblatt_steps
    gen = torch.Generator().manual_seed(seed + 2000)
    rows = []
    for label, t in (("exact draws", t_final), ("rho_0 (no motion)", 0.0)):
        x = profile.sample(s.eval_draws, t, gen, dtype=torch.float64)
        row = base_row(f"barenblatt-{dim}", label, "—", dim, None, None, t_final)
        row.update(barenblatt_errors(x, profile, t_final))
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------ common


def base_row(
    problem: str, scheme: str, map_name: str | None, dim: int, h: float | None, steps: int | None, t: float
) -> dict:
    return {"problem": problem, "scheme": scheme, "map": map_name, "d": dim, "h": h, "steps": steps, "t": t}


def simulate(row: dict, functional, init, scheme, h: float, steps: int, seed: int):
    """Run :func:`wgfinfer.simulate` with the scheme object ``scheme`` and record its wall time;
    ``None`` (and the error) if it diverges."""
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        flow = wgfinfer.simulate(functional, init, scheme=scheme, step_size=h, n_steps=steps, seed=seed)
    except TrainingDivergedError as exc:
        row["wall_s"] = time.perf_counter() - start
        row["diverged"] = str(exc)
        return None
    row["wall_s"] = time.perf_counter() - start
    row["cpu_s"] = time.process_time() - cpu_start
    row["s_per_unit_time"] = row["wall_s"] / (h * steps)
    row["step_wall_s"] = [float(r["wall_time"]) for r in flow.history]
    if scheme.name == "pwgf":
        row["solver_iterations"] = [int(r["solver_iterations"]) for r in flow.history]
        row["residual"] = [float(r["residual"]) for r in flow.history]
    return flow


def jobs(problems: list[str], schemes: list[str]) -> list[tuple[str, str, str | None]]:
    """(problem, scheme, PWGF map) triples, in the order they run."""
    out = []
    for problem in problems:
        for scheme in schemes:
            if scheme == "pwgf" and problem.startswith("ou"):
                out += [(problem, scheme, "affine"), (problem, scheme, "planar")]
            else:
                out.append((problem, scheme, None))
    return out


def select(requested: list[str] | None, default: tuple[str, ...]) -> list[str]:
    """The problems named (ids or prefixes) on the command line, else ``default``."""
    if not requested:
        return list(default)
    available = PROBLEMS

    def matches(p: str, r: str) -> bool:
        return p == r or p.startswith(r + "-")

    chosen = [p for p in available if any(matches(p, r) for r in requested)]
    unknown = [r for r in requested if not any(matches(p, r) for p in available)]
    if unknown:
        raise SystemExit(
            f"unknown problem(s) {unknown}; choose from {available} or a prefix (ou, barenblatt)"
        )
    return chosen


# ----------------------------------------------------------------------------------------- output


def num(value: object, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if value == 0.0 or 1e-3 <= abs(value) < 1e4:
            return f"{value:.{digits}f}"
        return f"{value:.2e}"
    return str(value)


def metric(row: dict, key: str) -> str:
    if "diverged" in row:
        return "diverged"
    if key not in row:
        return "—"
    se = row.get(f"{key}_se")
    return f"{num(row[key])} ± {num(se)}" if se is not None else num(row[key])


def common_cells(row: dict) -> list[str]:
    step = "—" if row["h"] is None else f"{row['h']:g}"
    return [row["problem"], row["scheme"], row["map"] or "—", str(row["d"]), step, num(row["steps"])]


def timing_cells(row: dict) -> list[str]:
    return [num(row.get("wall_s"), 1), num(row.get("cpu_s"), 1), num(row.get("s_per_unit_time"), 0)]


def render(rows: list[dict], meta: dict) -> str:
    head = ["problem", "scheme", "map", "d", "step", "steps"]
    timing = ["wall s", "CPU s", "s / unit time"]
    ou = [r for r in rows if r["problem"].startswith("ou")]
    bb = [r for r in rows if r["problem"].startswith("barenblatt")]
    lines = [
        "## PDE solvers (benchmarks/pde.py)",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`.",
        f"Settings: {meta['settings']}. Wall time = the `wgfinfer.simulate` call (evaluation excluded), "
        "CPU s = the process's CPU time over that call (less sensitive to other jobs on the machine); "
        "s / unit time = wall time / simulated time. Definitions of every column: the script's docstring.",
    ]
    if ou:
        table = [
            common_cells(r)
            + [metric(r, k) for k in ("symkl_fit", "kl_density", "symkl_vs_ref", "symkl_ref_exact")]
            + timing_cells(r)
            for r in ou
        ]
        lines += [
            "",
            "Ornstein-Uhlenbeck, dX = -X dt + sqrt(2) dW from N(m0, diag(s0^2)) to "
            f"t = {num(ou[0]['t'], 2)}. SymKL fit: Gaussian fitted to {meta['eval_draws']} flow draws vs "
            "the exact marginal; KL dens.: KL(flow || exact) from the flow's exact log-densities "
            f"({meta['density_draws']} draws); "
            "ref: exact solution of the time-discretised scheme (JKO iterates; Euler on the affine "
            "parameters for PWGF affine).",
            "",
            markdown_table(
                head + ["SymKL fit", "KL dens.", "SymKL fit vs ref", "SymKL ref vs exact"] + timing, table
            ),
        ]
    if bb:
        table = [
            common_cells(r)
            + [num(r["t"], 3)]
            + [metric(r, k) for k in ("rel_m2_err", "w1", "ks")]
            + timing_cells(r)
            for r in bb
        ]
        lines += [
            "",
            "Porous medium d_t rho = M^{m-1} Delta(rho^2) from a Barenblatt profile; errors of "
            f"{meta['eval_draws']} flow draws at the final time t against the exact Barenblatt law.",
            "",
            markdown_table(head + ["t", "rel. M2 err", "W1 (1-D)", "KS radii (2-D)"] + timing, table),
        ]
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings (< 1 min): a smoke test")
    parser.add_argument("--problems", nargs="+", help=f"subset of {PROBLEMS} or a prefix (ou, barenblatt)")
    parser.add_argument("--schemes", nargs="+", choices=SCHEMES, default=list(SCHEMES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="JSON file of the rows (rewritten after every row)")
    parser.add_argument("--from-json", help="render a saved run instead of running")
    parser.add_argument("--note", default="")
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.from_json:
        rows, meta = load_run(args.from_json, args.note)
    else:
        settings = QUICK if args.quick else FULL
        problems = select(args.problems, settings.problems)
        meta = {
            "machine": machine("cpu"),
            "command": "python benchmarks/pde.py " + " ".join(sys.argv[1:]),
            "settings": describe(settings),
            "eval_draws": settings.eval_draws,
            "density_draws": settings.density_draws,
            "note": args.note,
        }
        rows: list[dict] = []
        warm_up()
        start = time.perf_counter()
        for problem in problems:
            dim = int(problem.rsplit("-", 1)[1])
            if problem.startswith("ou"):
                record_row(rows, ou_floor(dim, settings, args.seed), meta, args.json)
            else:
                for row in barenblatt_reference_rows(dim, settings, args.seed):
                    record_row(rows, row, meta, args.json)
            for _, scheme, pwgf_map in jobs([problem], args.schemes):
                for refine in settings.refinements:
                    if problem.startswith("ou"):
                        row = run_ou(dim, scheme, pwgf_map, refine, settings, args.seed)
                    else:
                        row = run_barenblatt(dim, scheme, refine, settings, args.seed)
                    record_row(rows, row, meta, args.json)
        print(f"total {time.perf_counter() - start:.1f} s", flush=True)
    body = render(rows, meta)
    print(body)
    if not args.no_write:
        publish("pde", body, args.out, args.docs)


def warm_up() -> None:
    """Pay one-off process costs before any timing (the first ``torch.optim.Adam`` imports
    ``torch._dynamo``, about 4 s on the development machine; first calls of the Krylov solver): one
    tiny run of every scheme."""
    functional = KLDivergence(standard_normal_log_density)
    init = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)
    for scheme in (
        wgfinfer.ICNN(iters_per_step=2, hidden=(4, 4), n_particles=64),
        wgfinfer.Variational(iters_per_step=2, hidden=(4, 4), dual_hidden=(4,), n_particles=64),
        wgfinfer.PWGF(map="planar", n_layers=2, n_samples=16, max_iter=5),
    ):
        wgfinfer.simulate(functional, init, scheme, 0.1, 1)


def describe(s: Settings) -> str:
    steps = ", ".join(f"h/{r}" if r > 1 else "h" for r in s.refinements)
    return (
        f"step sizes {steps}; JKO {s.iters} iterations x batch {s.batch} per step, "
        f"networks ({s.width}, {s.width}), "
        f"pool {s.n_particles}, float32; PWGF {s.pwgf_samples} draws per Euler step, MINRES tol 3e-4 "
        f"max {s.pwgf_max_iter} it, {s.ou_substeps} (OU) / {s.barenblatt_substeps} (Barenblatt) Euler "
        f"substeps per step, planar {s.planar_layers} layers, resnet ({s.width}, {s.width}), float64"
    )


if __name__ == "__main__":
    main()
