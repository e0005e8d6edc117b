"""Nonlinear filtering with the JKO filter, against a bootstrap particle filter and the grid solution.

The set-up of seed 002 §4.5: ``Phi(x) = sin(2 pi x) / pi + x^2 / 4``, ``beta = 1``, ``X_0 ~ N(0, 1)``,
one simulated path observed with unit noise variance at ``t = 0.5, 1.0, ..., 4.5``; the target is the
filtering law ``p(X_5 | Y_1:9)``.  The Chang-Cooper grid solution (2000 points on [-5, 5],
``dt = 1e-3``) is the reference; SymKL to it is computed on the grid.  The JKO filter runs with its
defaults (``JKOFilter(diffusion)``), the configuration of the benchmark that beats the
10^4-particle filter (``docs/filtering.md``: latent random-walk proposals, JKO steps of 0.25, 300
iterations x batch 512 per step at a learning rate of 0.02, ICNN width 32, float32).

A second panel shows a D = 2 case: the same potential in both coordinates, observed per coordinate
(``wgfinfer.problems.filtering.separable_sine_well_problem``), whose exact filter is the product of
two 1-D grid solutions (``FactorisedGridFilter``): its density at ``t = 3`` as contours, with draws of
the JKO filter and of the particle filter.  ``--no-2d`` leaves it out.

Writes the figure to ``--out`` (default ``filtering_example.png`` in the current directory).

    python examples/nonlinear_filtering.py            # about 2 minutes on one CPU core
    python examples/nonlinear_filtering.py --quick    # a smoke run (seconds)
    python examples/nonlinear_filtering.py --out docs/filtering_example.png  # docs/filtering.md figure
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import wgfinfer
from wgfinfer.filtering import JKOFilter
from wgfinfer.filtering.grid import FactorisedGridFilter, GridFilter1D, symkl_on_grid
from wgfinfer.filtering.particle import BootstrapParticleFilter
from wgfinfer.problems.filtering import separable_sine_well_problem, sine_well_problem


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated path and of the filters")
    parser.add_argument("--proposal", default="latent_rw", choices=["independent", "latent_rw"])
    parser.add_argument("--no-2d", dest="two_d", action="store_false", help="leave out the D = 2 panel")
    parser.add_argument("--particles", type=int, default=10_000, help="bootstrap particle filter size")
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    parser.add_argument("--out", type=Path, default=Path("filtering_example.png"), help="PNG file")
    args = parser.parse_args(argv)

    problem = sine_well_problem(args.seed)
    # n_particles: the pool (MH draws per observation), a quarter of iters_per_step * batch_size
    if args.quick:
        jko = dict(
            scheme=wgfinfer.ICNN(iters_per_step=20, batch_size=128, hidden=(8, 8), n_particles=640),
            step_size=0.5,
            n_chains=128,
            warmup=20,
        )
        grid_options, n_particles, pf_dt = dict(n_points=400, dt=1e-2), min(args.particles, 1000), 1e-2
    else:
        # JKOFilter's defaults, the configuration of the 1-D benchmark that beats the 10^4-particle
        # filter (docs/filtering.md): latent_rw, ICNN width 64, 300 iterations x batch 512 per step
        # with the plateau stop off, 200 warm-up sweeps, float32; the seed trains width 256, batch
        # 1024 and 700 iterations per step, with 1000 warm-up sweeps, on a GPU
        jko = {}
        grid_options, n_particles, pf_dt = {}, args.particles, 1e-3
    grid_filter = GridFilter1D(problem.diffusion, **grid_options).run(problem.observations, problem.t_final)
    grid = grid_filter.grid
    reference = grid_filter.density()

    start = time.perf_counter()
    pf = BootstrapParticleFilter(problem.diffusion, n_particles=n_particles, dt=pf_dt, seed=args.seed)
    pf_result = pf.run(problem.observations, problem.t_final)
    pf_density = pf_result.density_on_grid(grid)
    pf_time = time.perf_counter() - start

    result = JKOFilter(problem.diffusion, proposal=args.proposal, seed=args.seed, **jko).run(
        problem.observations, problem.t_final
    )
    points = torch.as_tensor(grid, dtype=torch.float64).unsqueeze(-1)
    jko_density = torch.exp(result.log_prob(points, normalized=True)).double().numpy()
    jko_density = np.nan_to_num(jko_density)

    report = {
        "symkl_jko": symkl_on_grid(reference, jko_density, grid),
        "symkl_pf": symkl_on_grid(reference, pf_density, grid),
        "jko_time": result.wall_time,
        "pf_time": pf_time,
        "jko_log_evidence": result.log_evidence,
        "jko_log_evidence_se": result.log_evidence_se,
        "pf_log_evidence": pf_result.log_evidence,
        "grid_log_evidence": grid_filter.log_evidence,
    }
    print(f"observations: {[round(float(v), 3) for v in problem.observations.values.squeeze(-1)]}")
    print(f"MH acceptance rates ({args.proposal}): {[round(r, 3) for r in result.acceptance_rate.values()]}")
    print(
        f"SymKL to the grid solution: JKO filter {report['symkl_jko']:.4f} ({result.wall_time:.0f} s), "
        f"particle filter with {n_particles} particles {report['symkl_pf']:.4f} ({pf_time:.0f} s)"
    )
    print(
        f"log p(Y_1:9): grid {grid_filter.log_evidence:.4f}, JKO filter {result.log_evidence:.4f} "
        f"+- {result.log_evidence_se:.4f}, particle filter {pf_result.log_evidence:.4f}"
    )

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if args.two_d:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.6), gridspec_kw={"width_ratios": [1.35, 1]})
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
    draws = result.draws[problem.t_final].squeeze(-1).cpu().numpy()
    ax.hist(draws, bins=80, density=True, alpha=0.25, color="C0", label=f"JKO filter draws ({draws.size})")
    ax.plot(grid, reference, "k-", lw=2, label="grid (Chang-Cooper)")
    ax.plot(grid, jko_density, "C0--", lw=1.5, label=f"JKO filter density (SymKL {report['symkl_jko']:.3f})")
    ax.plot(
        grid,
        pf_density,
        "C1:",
        lw=1.5,
        label=f"bootstrap PF {n_particles} + KDE (SymKL {report['symkl_pf']:.3f})",
    )
    ax.set_xlim(-4, 4)
    ax.set_xlabel("x = X_5, the state at t = 5")
    ax.set_ylabel("filtering density p(X_5 | Y_1:9)")
    ax.set_title("Filtering density after 9 observations: JKO filter, particle filter, grid")
    ax.legend(fontsize=8)
    if args.two_d:
        report.update(two_dimensional_panel(ax2, args, jko, grid_options, n_particles, pf_dt))
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return report


def two_dimensional_panel(ax, args, jko: dict, grid_options: dict, n_particles: int, pf_dt: float) -> dict:
    """The D = 2 separable sine-well problem: exact density (contours) and the filters' draws at t = 3."""
    problem = separable_sine_well_problem(2, args.seed)
    exact = FactorisedGridFilter(problem.coordinates, **grid_options).run(
        problem.observations, problem.t_final
    )
    pf = BootstrapParticleFilter(problem.diffusion, n_particles=n_particles, dt=pf_dt, seed=args.seed)
    pf_draws = pf.run(problem.observations, problem.t_final).sample().double().numpy()
    result = JKOFilter(problem.diffusion, proposal=args.proposal, seed=args.seed, **jko).run(
        problem.observations, problem.t_final
    )
    jko_draws = result.draws[problem.t_final].double().numpy()
    g = exact.grid[(exact.grid > -3.5) & (exact.grid < 3.5)]
    mesh = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    density = np.exp(exact.log_prob(mesh)).reshape(g.size, g.size)
    ax.contour(g, g, density.T, levels=8, colors="k", linewidths=1.0)
    n_show = 600
    ax.scatter(*jko_draws[:n_show].T, s=4, color="C0", alpha=0.6, label=f"JKO filter draws ({n_show} shown)")
    ax.scatter(
        *pf_draws[:n_show].T, s=4, color="C1", alpha=0.6, label=f"bootstrap PF {n_particles} ({n_show} shown)"
    )
    mean = exact.mean()
    errors = {
        "jko_2d_mean_error": float(np.max(np.abs(jko_draws.mean(0) - mean) / np.sqrt(exact.variance()))),
        "pf_2d_mean_error": float(np.max(np.abs(pf_draws.mean(0) - mean) / np.sqrt(exact.variance()))),
        "jko_2d_log_evidence_error": result.log_evidence - exact.log_evidence,
    }
    print(
        f"D = 2: max mean error / sd: JKO filter {errors['jko_2d_mean_error']:.3f}, particle filter "
        f"{errors['pf_2d_mean_error']:.3f}; log p(Y_1:5): exact {exact.log_evidence:.4f}, JKO filter "
        f"{result.log_evidence:.4f} +- {result.log_evidence_se:.4f}"
    )
    ax.set_xlim(-3.5, 3.5)
    ax.set_ylim(-3.5, 3.5)
    ax.set_xlabel("x_1")
    ax.set_ylabel("x_2")
    ax.set_title("D = 2, separable: p(X_3 | Y_1:5), exact (contours) and draws", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    return errors


if __name__ == "__main__":
    main()
