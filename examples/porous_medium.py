"""The porous medium equation ``d_t rho = Delta rho^m`` against Barenblatt profiles, three ways.

(a) Seed 000 §4.3 (App. C.3): the 1-D Barenblatt profile with the seed's constants ``m = 2``,
    ``t0 = 0.002``, ``C = (3/16)^{1/3}`` and JKO step ``a = 0.001``, run with the ICNN JKO scheme and
    the variational scheme (``map="icnn"``, so both flows have exact densities).  The seed's constants
    give the profile mass ``M = 2``, not 1: ``rho = u / M`` is the probability flow of
    ``GeneralizedEntropy(2, coefficient=M^{m-1} = 2)``, compared with ``BarenblattProfile.log_prob``
    (which is ``log(u / M)``).  Reported: the L1 distance of the densities on a grid, the relative
    error of the second moment and the W1 distance of 20000 flow draws to the exact quantiles.  The
    seed compares with a finite-difference JKO solution to separate the time-discretisation error of
    the JKO scheme (first order in ``a``); here the comparison is with the exact PDE solution, so the
    errors include that discretisation error (the JKO steps use the slower, end-of-step rate of a
    decelerating spread, so the flows' second moments lag slightly behind the exact one).
(b) Seed 004 §5.2: the PWGF scheme (``map="resnet"``, ``Id`` + 3 x 100 tanh MLP) in ``d = 2`` with
    ``m = 2.4``, unit mass, from ``t = 0.1`` to ``t = 0.6`` (profile time ``t0 = 0.1``, simulated time
    0.5).  CPU budget: forward-Euler steps ``h = 1e-3`` (``substeps=50`` per recorded step of 0.05)
    with 4096 draws per Euler step, instead of the seed's ``h = 1e-4`` (5000 steps) with 30000 draws.
(c) Seed 001 §5.4 (App. F.5) in ``d = 3``: ``m = 2``, ``t0 = 0.001``, ``a = 0.0005``, unit mass, the
    variational scheme with an ICNN map; the second moment and a Kolmogorov-Smirnov test of the draws'
    radii against ``BarenblattProfile.radius_cdf`` (1000 draws; the second moments from 20000).  CPU
    budget: 20 JKO steps of 300 iterations instead of the seed's 50 steps of 1000.

Writes a 2 x 3 figure to ``--out`` (default ``porous_medium.png`` in the current directory).

    python examples/porous_medium.py            # about 6 minutes on one CPU core
    python examples/porous_medium.py --quick    # a smoke run (seconds)
    python examples/porous_medium.py --out docs/porous_medium.png   # the figure of docs/pde.md
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

import wgfinfer
from wgfinfer.functionals import GeneralizedEntropy
from wgfinfer.problems.barenblatt import BarenblattProfile


def _settings(quick: bool, steps: int | None) -> dict:
    """The run's sizes and its scheme objects (the JKO pools hold ``n`` particles)."""
    if quick:
        n = 512
        return {
            "steps_1d": steps or 2,
            "icnn": wgfinfer.ICNN(hidden=(8, 8), iters_per_step=20, batch_size=128, n_particles=n),
            "variational": wgfinfer.Variational(
                map="icnn",
                hidden=(8, 8),
                dual_hidden=(8, 8),
                iters_per_step=20,
                batch_size=128,
                n_particles=n,
            ),
            "draws": 2000,
            "grid": 201,
            "pwgf_steps": 2,
            "pwgf": wgfinfer.PWGF(map="resnet", hidden=(16, 16, 16), n_samples=256, substeps=2, max_iter=50),
            "steps_3d": 1,
            "variational_3d": wgfinfer.Variational(
                map="icnn",
                hidden=(8, 8),
                dual_hidden=(8, 8),
                iters_per_step=10,
                batch_size=128,
                n_particles=n,
            ),
        }
    n = 4096
    return {
        "steps_1d": steps or 20,
        "icnn": wgfinfer.ICNN(hidden=(32, 32), iters_per_step=200, batch_size=512, n_particles=n),
        "variational": wgfinfer.Variational(
            map="icnn",
            hidden=(32, 32),
            dual_hidden=(32, 32),
            iters_per_step=300,
            batch_size=512,
            n_particles=n,
        ),
        "draws": 20000,
        "grid": 801,
        "pwgf_steps": 10,
        "pwgf": wgfinfer.PWGF(map="resnet", hidden=(100, 100, 100), n_samples=4096, substeps=50),
        "steps_3d": 20,
        "variational_3d": wgfinfer.Variational(
            map="icnn",
            hidden=(64, 64),
            dual_hidden=(16, 16, 16, 16),
            iters_per_step=300,
            batch_size=1024,
            n_particles=n,
        ),
    }


def _integrate(values: np.ndarray, grid: np.ndarray) -> float:
    """Trapezoidal rule (``np.trapezoid`` needs numpy 2)."""
    return float(np.sum(0.5 * (values[1:] + values[:-1]) * np.diff(grid)))


def _density_on_grid(flow: wgfinfer.Flow, grid: np.ndarray, dtype: torch.dtype) -> tuple[np.ndarray, int]:
    """``exp(flow.log_prob)`` on a 1-D grid, and the number of points where inversion failed (set to 0)."""
    points = torch.as_tensor(grid, dtype=dtype).unsqueeze(-1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        log_q = flow.log_prob(points).double().numpy()
    failed = int(np.isnan(log_q).sum())
    return np.nan_to_num(np.exp(log_q), nan=0.0, posinf=0.0), failed


def _second_moments(flow: wgfinfer.Flow, n: int, seed: int) -> list[float]:
    """``E ||x||^2`` after every step (step 0 included), pushing one set of draws map by map."""
    x = flow.sample(n, generator=torch.Generator().manual_seed(seed), step=0)
    out = [float(x.square().sum(-1).mean())]
    with torch.no_grad():
        for psi in flow.maps:
            x = psi.transport(x)
            out.append(float(x.square().sum(-1).mean()))
    return out


def part_1d(cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Seed 000 §4.3: ICNN and variational JKO flows against the 1-D Barenblatt profile."""
    profile = BarenblattProfile(1, 2.0, t0=0.002, C=(3.0 / 16.0) ** (1.0 / 3.0))
    a, steps = 0.001, cfg["steps_1d"]
    t_end = steps * a
    functional = GeneralizedEntropy(2.0, coefficient=profile.probability_coefficient)
    print(
        f"(a) 1-D Barenblatt, seed 000 constants: mass M = {profile.mass:.6f}, so the probability flow is "
        f"GeneralizedEntropy(2, coefficient=M^(m-1) = {profile.probability_coefficient:.6f}); "
        f"a = {a}, {steps} steps (t = 0 -> {t_end:g}), support radius {profile.support_radius(0):.4f} -> "
        f"{profile.support_radius(t_end):.4f}"
    )
    dtype = torch.float32
    init = profile.distribution(0.0, dtype=dtype)
    radius = profile.support_radius(t_end)
    grid = np.linspace(-1.3 * radius, 1.3 * radius, cfg["grid"])
    exact = np.exp(profile.log_prob(torch.as_tensor(grid).unsqueeze(-1), t_end).numpy())
    quantiles = profile.quantile_1d((np.arange(cfg["draws"]) + 0.5) / cfg["draws"], t_end)
    exact_m2 = profile.second_moment(t_end)
    rows, curves = [], {"grid": grid, "exact": exact, "profile": profile, "t_end": t_end, "a": a}
    for scheme in ("icnn", "variational"):
        start = time.perf_counter()
        flow = wgfinfer.simulate(functional, init, scheme=cfg[scheme], step_size=a, n_steps=steps, seed=seed)
        wall = time.perf_counter() - start
        density, failed = _density_on_grid(flow, grid, dtype)
        draws = flow.sample(cfg["draws"], generator=torch.Generator().manual_seed(seed + 1))
        draws = draws.squeeze(-1).double().numpy()
        m2 = float(np.mean(draws**2))
        rows.append(
            {
                "scheme": scheme,
                "wall_time": wall,
                "l1": float(_integrate(np.abs(density - exact), grid)),
                "mass_on_grid": float(_integrate(density, grid)),
                "m2": m2,
                "m2_rel_error": m2 / exact_m2 - 1.0,
                "w1": float(stats.wasserstein_distance(draws, quantiles)),
                "inversion_failures": failed,
            }
        )
        curves[scheme] = density
        curves["m2_draws"] = min(cfg["draws"], 8192)
        curves[scheme + "_m2"] = _second_moments(flow, curves["m2_draws"], seed + 2)
    header = ("scheme", "wall [s]", "L1 dens.", "E x^2", "exact", "rel.err", "W1")
    print(f"{header[0]:<12} " + " ".join(f"{h:>9}" for h in header[1:]))
    for r in rows:
        print(
            f"{r['scheme']:<12} {r['wall_time']:9.1f} {r['l1']:9.4f} {r['m2']:9.5f} {exact_m2:9.5f} "
            f"{r['m2_rel_error']:+9.2%} {r['w1']:9.5f}"
        )
    for r in rows:
        if r["inversion_failures"]:
            print(f"  {r['scheme']}: flow.log_prob inversion failed at {r['inversion_failures']} grid points")
    return rows, curves


def part_pwgf(cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Seed 004 §5.2: PWGF with a residual network in 2-D, m = 2.4, t = 0.1 -> 0.6."""
    profile = BarenblattProfile(2, 2.4, t0=0.1)
    steps = cfg["pwgf_steps"]
    dt = 0.5 / steps
    options = cfg["pwgf"]
    h = dt / options.substeps
    print(
        f"\n(b) PWGF, d = 2, m = 2.4, unit mass (C = {profile.C:.5f}), absolute time 0.1 -> 0.6 "
        f"({steps} recorded steps of {dt:g}, Euler h = {h:g}, {options.n_samples} draws per Euler step)"
    )
    init = profile.distribution(0.0, dtype=torch.float32)
    start = time.perf_counter()
    flow = wgfinfer.simulate(
        GeneralizedEntropy(2.4), init, scheme=options, step_size=dt, n_steps=steps, seed=seed
    )
    wall = time.perf_counter() - start
    rows = []
    n = cfg["draws"]
    for k in range(steps + 1):
        t = k * dt
        x = flow.sample(n, generator=torch.Generator().manual_seed(seed + k), step=k).double()
        r = x.norm(dim=-1)
        m2, exact = float(r.square().mean()), profile.second_moment(t)
        rows.append(
            {
                "t": 0.1 + t,
                "m2": m2,
                "exact": exact,
                "rel_error": m2 / exact - 1.0,
                "max_r_over_R": float(r.max()) / profile.support_radius(t),
                "outside": float((r > profile.support_radius(t)).double().mean()),
                "solver_iterations": flow.history[k - 1]["solver_iterations"] if k else 0,
            }
        )
    print(f"wall time {wall:.1f} s")
    header = ("t", "E|x|^2", "exact", "rel.err", "max|x|/R", "outside", "MINRES it")
    print(f"{header[0]:>5} " + " ".join(f"{h:>9}" for h in header[1:]))
    for r in rows:
        print(
            f"{r['t']:5.2f} {r['m2']:9.5f} {r['exact']:9.5f} {r['rel_error']:+9.2%} {r['max_r_over_R']:9.4f} "
            f"{r['outside']:9.2%} {r['solver_iterations']:9d}"
        )
    final = flow.sample(min(n, 5000), generator=torch.Generator().manual_seed(seed + 100)).numpy()
    return rows, {"profile": profile, "final": final, "t_end": 0.5, "wall_time": wall}


def part_3d(cfg: dict, seed: int) -> tuple[list[dict], dict]:
    """Seed 001 §5.4: the variational scheme (ICNN map) in 3-D, m = 2, t0 = 0.001, a = 0.0005."""
    profile = BarenblattProfile(3, 2.0, t0=0.001)
    a, steps = 0.0005, cfg["steps_3d"]
    print(
        f"\n(c) variational scheme (map='icnn'), d = 3, m = 2, t0 = 0.001, unit mass, a = {a}, "
        f"{steps} steps; KS test of 1000 draws' radii against radius_cdf"
    )
    start = time.perf_counter()
    flow = wgfinfer.simulate(
        GeneralizedEntropy(2.0),
        profile.distribution(0.0, dtype=torch.float32),
        scheme=cfg["variational_3d"],
        step_size=a,
        n_steps=steps,
        seed=seed,
    )
    wall = time.perf_counter() - start
    rows = []
    x = flow.sample(1000, generator=torch.Generator().manual_seed(seed + 3), step=0)
    big = flow.sample(cfg["draws"], generator=torch.Generator().manual_seed(seed + 4), step=0)
    for k in range(steps + 1):
        if k:
            with torch.no_grad():
                x = flow.maps[k - 1].transport(x)
                big = flow.maps[k - 1].transport(big)
        t = k * a
        radii = x.double().norm(dim=-1).numpy()
        ks = stats.kstest(radii, lambda r, t=t: profile.radius_cdf(r, t))
        m2 = float(big.double().square().sum(-1).mean())
        rows.append(
            {
                "t": t,
                "m2": m2,
                "exact": profile.second_moment(t),
                "rel_error": m2 / profile.second_moment(t) - 1.0,
                "ks": float(ks.statistic),
                "p_value": float(ks.pvalue),
            }
        )
    print(f"wall time {wall:.1f} s")
    print(f"{'step':>4} {'t':>7} {'E|x|^2':>9} {'exact':>9} {'rel.err':>8} {'KS':>7} {'p-value':>8}")
    for k, r in enumerate(rows):
        print(
            f"{k:4d} {r['t']:7.4f} {r['m2']:9.5f} {r['exact']:9.5f} {r['rel_error']:+8.2%} "
            f"{r['ks']:7.4f} {r['p_value']:8.3f}"
        )
    final_radii = x.double().norm(dim=-1).numpy()
    return rows, {"profile": profile, "radii": final_radii, "t_end": steps * a, "wall_time": wall}


def plot(
    out: Path,
    curves_1d: dict,
    rows_pwgf: list[dict],
    pwgf: dict,
    rows_3d: list[dict],
    c3: dict,
    pwgf_hidden: tuple[int, ...],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    # (a) densities
    ax = axes[0, 0]
    grid, profile, t_end = curves_1d["grid"], curves_1d["profile"], curves_1d["t_end"]
    initial = np.exp(profile.log_prob(torch.as_tensor(grid).unsqueeze(-1), 0.0).numpy())
    ax.plot(grid, initial, "k--", lw=1, label="exact, t = 0")
    ax.plot(grid, curves_1d["exact"], "k-", lw=2, label=f"exact, t = {t_end:g}")
    ax.plot(grid, curves_1d["icnn"], "C0-", lw=1.3, label="ICNN JKO")
    ax.plot(grid, curves_1d["variational"], "C1-", lw=1.3, label="variational JKO (ICNN map)")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title(f"(a) 1-D Barenblatt (seed 000 §4.3), a = {curves_1d['a']:g}")
    ax.legend(fontsize=8)
    # (a) second moments
    ax = axes[1, 0]
    k = np.arange(len(curves_1d["icnn_m2"]))
    times = k * curves_1d["a"]
    fine = np.linspace(0, times[-1], 200)
    ax.plot(fine, [profile.second_moment(t) for t in fine], "k-", lw=2, label="exact")
    per_step = f"{curves_1d['m2_draws']} fresh draws per step"
    ax.plot(times, curves_1d["icnn_m2"], "C0o-", ms=3, label=f"ICNN JKO ({per_step})")
    ax.plot(times, curves_1d["variational_m2"], "C1s-", ms=3, label=f"variational JKO ({per_step})")
    ax.set_xlabel("t (since the start)")
    ax.set_ylabel("E x^2")
    ax.set_title("(a) second moment")
    ax.locator_params(axis="x", nbins=5)
    ax.legend(fontsize=8)
    # (b) scatter with the support circle
    ax = axes[0, 1]
    p2 = pwgf["profile"]
    pts = pwgf["final"]
    t_start, t_stop = p2.t0, p2.t0 + pwgf["t_end"]  # absolute (profile) times
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.4, color="C0", label=f"PWGF draws, t = {t_stop:g}")
    theta = np.linspace(0, 2 * np.pi, 400)
    for t, style in ((0.0, "k--"), (pwgf["t_end"], "k-")):
        radius = p2.support_radius(t)
        label = f"exact support, t = {p2.t0 + t:g}"
        ax.plot(radius * np.cos(theta), radius * np.sin(theta), style, lw=1.2, label=label)
    ax.set_aspect("equal")
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    same = len(set(pwgf_hidden)) == 1
    widths = f"{len(pwgf_hidden)}x{pwgf_hidden[0]}" if same else "x".join(str(w) for w in pwgf_hidden)
    ax.set_title(f"(b) PWGF (ResNet {widths} tanh), d = 2, m = 2.4")
    ax.legend(fontsize=7, loc="upper right")
    # (b) second moment over time
    ax = axes[1, 1]
    t_abs = np.array([r["t"] for r in rows_pwgf])
    fine = np.linspace(0.0, pwgf["t_end"], 200)
    ax.plot(t_start + fine, [p2.second_moment(t) for t in fine], "k-", lw=2, label="exact")
    ax.plot(t_abs, [r["m2"] for r in rows_pwgf], "C0o", ms=4, label="PWGF")
    ax.set_xlabel(f"t (absolute, from {t_start:g})")
    ax.set_ylabel("E |x|^2")
    ax.set_title(f"(b) second moment (PWGF run: {pwgf['wall_time']:.1f} s)")
    ax.legend(fontsize=8)
    # (c) radius CDF
    ax = axes[0, 2]
    p3 = c3["profile"]
    radii = np.sort(c3["radii"])
    r_grid = np.linspace(0, 1.1 * p3.support_radius(c3["t_end"]), 300)
    ax.plot(r_grid, p3.radius_cdf(r_grid, c3["t_end"]), "k-", lw=2, label=f"exact, t = {c3['t_end']:g}")
    ax.plot(r_grid, p3.radius_cdf(r_grid, 0.0), "k--", lw=1, label="exact, t = 0")
    ax.step(radii, (np.arange(radii.size) + 1) / radii.size, "C1-", where="post", label="variational draws")
    ax.set_xlabel("|x|")
    ax.set_ylabel("CDF of the radius |x|")
    ax.set_title(f"(c) d = 3 radius CDF (KS p = {rows_3d[-1]['p_value']:.3f})")
    ax.legend(fontsize=8)
    # (c) second moment
    ax = axes[1, 2]
    t3 = np.array([r["t"] for r in rows_3d])
    fine = np.linspace(0, t3[-1], 200)
    ax.plot(fine, [p3.second_moment(t) for t in fine], "k-", lw=2, label="exact")
    ax.plot(t3, [r["m2"] for r in rows_3d], "C1s", ms=4, label="variational JKO")
    ax.set_xlabel("t (since the start)")
    ax.set_ylabel("E |x|^2")
    ax.set_title(f"(c) d = 3, second moment (run: {c3['wall_time']:.1f} s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="JKO steps K of part (a) (default 20)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    parser.add_argument("--out", type=Path, default=Path("porous_medium.png"), help="PNG file")
    args = parser.parse_args(argv)
    cfg = _settings(args.quick, args.steps)
    start = time.perf_counter()
    rows_1d, curves_1d = part_1d(cfg, args.seed)
    rows_pwgf, pwgf = part_pwgf(cfg, args.seed)
    rows_3d, c3 = part_3d(cfg, args.seed)
    plot(args.out, curves_1d, rows_pwgf, pwgf, rows_3d, c3, cfg["pwgf"].hidden)
    total = time.perf_counter() - start
    print(f"\ntotal {total:.0f} s; wrote {args.out}")
    assert all(math.isfinite(r["m2"]) for r in rows_1d + rows_pwgf + rows_3d)
    return {"1d": rows_1d, "pwgf": rows_pwgf, "3d": rows_3d, "total_time": total}


if __name__ == "__main__":
    main()
