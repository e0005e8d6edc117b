"""Aggregation and aggregation-diffusion equations: forward (explicit) steps against JKO steps.

(a) Seed 000 App. B.2, Example 1 (Carrillo et al. 2021, §4.3.1): ``d_t rho = div(rho grad(W * rho))``
    with ``W(x) = |x|^4/4 - |x|^2/2`` in 2-D, ``rho_0 = N(0, 0.25 I)``, step ``a = 0.05``.  The forward
    method is ``scheme=wgfinfer.ForwardBackward(...)`` with the interaction energy only (pure explicit
    steps ``x - a grad(W * P_k)(x)``, 200 steps); the backward method is a JKO step, by default
    ``scheme=wgfinfer.Variational(map="resnet", ...)`` (seed 000 App. C uses a residual MLP in App. B.2),
    ``--backward icnn`` for ``scheme=wgfinfer.ICNN(...)`` (200 steps of 100 iterations either way; the
    ICNN JKO needs several hundred iterations per step to keep up with the explicit steps, and is about
    5 times slower per iteration).  In the full run both methods reach the ring radius; the backward
    ring stays thicker (radius sd 0.074 against 0.019 at step 200, a few particles left inside) and does not
    collapse, unlike the instability after ``k > 50`` that seed 000's Figure 7 reports.  The steady
    state is a uniform ring.  Its radius is ``1/sqrt(3) ~ 0.577``, not the 0.5 stated in the seed's
    Figure 7: on a uniform ring of radius ``R`` the radial velocity ``-d/dr (W * rho)`` is
    ``R (1 - 3 R^2)`` (``E|x - y|^2 = 2R^2`` and ``E|x - y|^2 (x - y) = 3R^2 x`` for ``y`` uniform on
    the ring), which vanishes at ``R^2 = 1/3``; this holds with either convention for the interaction
    energy (the library's ``1/2 iint W`` makes the JKO and forward steps follow the same PDE).
(b) Seed 000 §4.4 (App. C.4, seed 001 App. F.6): ``d_t rho = div(rho grad(W * rho)) + 0.1 Delta rho^3``
    with ``W(x) = -exp(-|x|^2)/pi``, ``rho_0`` uniform on ``[-3, 3]^2`` (a probability measure), step
    ``a = 0.5``, the forward-backward scheme: an explicit step on the interaction with a Monte-Carlo
    convolution over particles of ``P_k``, then a variational JKO step (ICNN map, as in seed 000 App. C)
    on ``0.1 * GeneralizedEntropy(3)``.  The seed uses ``10^4`` particles in the convolution and
    ``J1 = 200`` iterations of batch ``M = 1000`` per step; on one CPU core this script uses a budget:
    2000 particles (pool and convolution), 40 iterations of batch 500, ICNN widths (16, 16), and 320
    steps (``t = 160``: on the grid below the four pulses merge between ``t = 140`` and ``t = 150``).
    For comparison the script also solves the same PDE on a grid (an upwind finite-volume scheme,
    :class:`wgfinfer.problems.finite_volume.FiniteVolumeReference`: 96 x 96 cells on ``[-4, 4]^2``,
    explicit time steps under the velocity CFL and the porous-medium diffusion bounds): its snapshots
    show what the PDE itself does at the same times.

    **Known failure.**  The grid solution forms four pulses near the corners (by ``t ~ 50``), which
    drift inwards and merge into one between ``t = 140`` and ``t = 150``, as seed 000 describes.  The
    forward-backward run forms four pulses too (earlier, by ``t ~ 50``), but they collapse to nearly
    point masses (smoothed peak density ~0.67 against ~0.25 on the grid) and have not merged at
    ``t = 160``: the variational backward step barely diffuses them.  The dual formula for
    ``int rho^3`` uses a uniform reference on the particles' bounding box, and four narrow pulses fill a
    tiny fraction of it: in a pure-diffusion check (``0.1 * GeneralizedEntropy(3)``, ``a = 0.5``, four
    Gaussian pulses of sd 0.08 at ``(+-1.2, +-1.2)``) the ICNN scheme (exact densities) spreads the
    pulses from an rms radius 0.11 to 0.66 in 6 steps, the variational scheme with this script's
    settings only to 0.20, and with the seed's 200 iterations of batch 1000 not at all (0.113), while
    a single pulse spreads at about the right rate.  The ICNN scheme cannot be the backward step here
    (a forward step has no tracked density).

Writes ``aggregation_ring.png`` and ``aggregation_diffusion.png`` into ``--out`` (a folder; default
the current directory).  The figures of ``docs/pde.md`` are the full run's, written into ``docs/``
only when asked for::

    python examples/aggregation.py                 # about 10 minutes on one CPU core
    python examples/aggregation.py --quick         # a smoke run (seconds)
    python examples/aggregation.py --out docs      # regenerate docs/aggregation_*.png
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from torch.distributions import Independent, MultivariateNormal, Uniform

import wgfinfer
from wgfinfer.errors import TrainingDivergedError
from wgfinfer.functionals import GeneralizedEntropy, InteractionEnergy
from wgfinfer.problems.finite_volume import BOX, FiniteVolumeReference

RING_RADIUS = 1.0 / math.sqrt(3.0)


def ring_kernel(z: torch.Tensor) -> torch.Tensor:
    """``W(z) = |z|^4/4 - |z|^2/2``."""
    r2 = z.square().sum(-1)
    return 0.25 * r2.square() - 0.5 * r2


def attractive_gaussian(z: torch.Tensor) -> torch.Tensor:
    """``W(z) = -exp(-|z|^2)/pi``."""
    return -torch.exp(-z.square().sum(-1)) / math.pi


def _settings(quick: bool) -> dict:
    """The run's sizes and its scheme objects (pools of ``ring`` and ``ad`` particles, the
    convolutions over as many reference particles)."""
    if quick:
        ring, ad = 256, 1000
        return {
            "forward_steps": 20,
            "backward_steps": 3,
            "forward": wgfinfer.ForwardBackward(
                backward=wgfinfer.Variational(n_particles=ring), n_reference=ring
            ),
            "icnn": wgfinfer.ICNN(hidden=(8, 8), iters_per_step=20, batch_size=128, n_particles=ring),
            "backward_variational": wgfinfer.Variational(
                map="resnet", hidden=(8, 8), iters_per_step=20, batch_size=128, n_particles=ring
            ),
            "ring_snapshots": (0, 1, 3, 20),
            "ad_steps": 2,
            "ad_snapshots": (0, 1, 2),
            "forward_backward": wgfinfer.ForwardBackward(
                backward=wgfinfer.Variational(
                    map="icnn",
                    hidden=(8, 8),
                    dual_hidden=(8, 8),
                    iters_per_step=10,
                    batch_size=200,
                    n_particles=ad,
                ),
                n_reference=ad,
            ),
            "fv_cells": 48,
            "draws": 1000,
        }
    ring, ad = 1024, 2000
    return {
        "forward_steps": 200,
        "backward_steps": 200,
        "forward": wgfinfer.ForwardBackward(
            backward=wgfinfer.Variational(n_particles=ring), n_reference=ring
        ),
        "icnn": wgfinfer.ICNN(hidden=(32, 32), iters_per_step=100, batch_size=256, n_particles=ring),
        "backward_variational": wgfinfer.Variational(
            map="resnet", hidden=(64, 64), iters_per_step=100, batch_size=256, n_particles=ring
        ),
        "ring_snapshots": (0, 5, 10, 20, 60, 200),
        "ad_steps": 320,
        "ad_snapshots": (0, 20, 50, 100, 150, 200, 250, 280, 300, 320),
        "forward_backward": wgfinfer.ForwardBackward(
            backward=wgfinfer.Variational(
                map="icnn",
                hidden=(16, 16),
                dual_hidden=(16, 16, 16, 16),
                iters_per_step=40,
                batch_size=500,
                n_particles=ad,
            ),
            n_reference=ad,
        ),
        "fv_cells": 96,
        "draws": 1024,
    }


# ----------------------------------------------------------------------------------------------- (a)
def _ring_statistics(flow: wgfinfer.Flow, n: int, seed: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Mean and sd of the radius about the centre of mass after every step, and the draws at every step.

    One set of draws is pushed map by map (``O(K)`` map evaluations, not ``O(K^2)``)."""
    x = flow.sample(n, generator=torch.Generator().manual_seed(seed), step=0)
    stats, snaps = [], {}
    with torch.no_grad():
        for k in range(len(flow.maps) + 1):
            if k:
                x = flow.maps[k - 1].transport(x)
            r = (x - x.mean(0)).norm(dim=-1).double()
            stats.append((float(r.mean()), float(r.std())))
            snaps[k] = x.numpy().copy()
    return np.array(stats), snaps


def part_ring(cfg: dict, seed: int, backward: str = "variational") -> dict:
    interaction = InteractionEnergy(ring_kernel)
    init = MultivariateNormal(torch.zeros(2), 0.25 * torch.eye(2))
    a = 0.05
    print(
        "(a) aggregation, W(x) = |x|^4/4 - |x|^2/2, N(0, 0.25 I) in 2-D, a = 0.05; steady ring radius "
        f"1/sqrt(3) = {RING_RADIUS:.4f} (the seed states 0.5; see the docstring)"
    )
    runs = {}
    if backward == "icnn":
        label, jko = "backward (ICNN JKO)", cfg["icnn"]
    else:
        label, jko = "backward (var. JKO)", cfg["backward_variational"]
    for name, scheme, steps in (
        ("forward", cfg["forward"], cfg["forward_steps"]),
        (label, jko, cfg["backward_steps"]),
    ):
        start = time.perf_counter()
        error = None
        try:
            flow = wgfinfer.simulate(
                interaction,
                init,
                scheme=scheme,
                step_size=a,
                n_steps=steps,
                seed=seed,
            )
        except TrainingDivergedError as exc:  # report, do not hide
            flow, error = exc.flow, str(exc)
        wall = time.perf_counter() - start
        stats, snaps = _ring_statistics(flow, cfg["draws"], seed + 1)
        runs[name] = {"stats": stats, "snaps": snaps, "wall_time": wall, "error": error}
        if error:
            print(f"  {name}: diverged after {len(flow.maps)} steps: {error}")
    print(
        f"{'method':<20} {'wall [s]':>9} " + " ".join(f"{'k=' + str(k):>15}" for k in cfg["ring_snapshots"])
    )
    for name, run in runs.items():
        cells = []
        for k in cfg["ring_snapshots"]:
            if k < len(run["stats"]):
                m, s = run["stats"][k]
                cells.append(f"{m:.3f} +- {s:.3f}")
            else:
                cells.append("-")
        print(f"{name:<20} {run['wall_time']:9.1f} " + " ".join(f"{c:>15}" for c in cells))
    print("(mean radius +- sd about the centre of mass, per step k)")
    return {"runs": runs, "a": a}


def plot_ring(out: Path, ring: dict, snapshots: tuple[int, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = ring["runs"]
    ncol = len(snapshots)
    fig = plt.figure(figsize=(2.6 * ncol, 8.2))
    grid = fig.add_gridspec(3, ncol, height_ratios=(1, 1, 1.1))
    theta = np.linspace(0, 2 * np.pi, 300)
    for row, (name, run) in enumerate(runs.items()):
        last = len(run["stats"]) - 1
        for col, k in enumerate(snapshots):
            ax = fig.add_subplot(grid[row, col])
            k = min(k, last)  # a shorter run shows its last step in the remaining columns
            x = run["snaps"][k]
            ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, color=f"C{row}")
            ax.plot(RING_RADIUS * np.cos(theta), RING_RADIUS * np.sin(theta), "k--", lw=0.7)
            ax.set_xlim(-1.5, 1.5)
            ax.set_ylim(-1.5, 1.5)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name.split()[0]}, k = {k}", fontsize=9)
    ax = fig.add_subplot(grid[2, :])
    for row, (name, run) in enumerate(runs.items()):
        k = np.arange(len(run["stats"]))
        m, s = run["stats"][:, 0], run["stats"][:, 1]
        ax.plot(k, m, f"C{row}-", label=f"{name} ({run['wall_time']:.1f} s)")
        ax.fill_between(k, m - s, m + s, color=f"C{row}", alpha=0.2)
    ax.axhline(RING_RADIUS, color="k", ls="--", lw=1, label="1/sqrt(3) (steady ring)")
    ax.axhline(0.5, color="gray", ls=":", lw=1, label="0.5 (seed 000 Fig. 7 caption)")
    ax.set_xlabel(f"step k (a = {ring['a']:g})")
    ax.set_ylabel("radius about the centre\nof mass, mean +- sd")
    ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(
        "Aggregation, W = |x|^4/4 - |x|^2/2 (seed 000 App. B.2, Example 1); "
        "dashed: the steady ring, radius 1/sqrt(3)"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- (b)
SMOOTHING = 0.25
"""Standard deviation (in x units) of the Gaussian filter applied before looking for pulses."""
PULSE_LEVEL = 3.0 / 36.0
"""A pulse is a local maximum of the smoothed density above 3 times the initial uniform density."""


def _smooth(density: np.ndarray, cell: float) -> np.ndarray:
    return ndimage.gaussian_filter(density, SMOOTHING / cell, mode="constant")


def _pulses(density: np.ndarray, cell: float) -> tuple[int, float]:
    """Number of pulses (local maxima of the smoothed density above :data:`PULSE_LEVEL` and above 20%
    of its maximum; a flat top's adjacent equal maxima count once) and the smoothed maximum."""
    smooth = _smooth(density, cell)
    top = float(smooth.max())
    window = max(3, int(round(0.5 / cell)) | 1)
    maxima = (smooth == ndimage.maximum_filter(smooth, size=window)) & (smooth > max(PULSE_LEVEL, 0.2 * top))
    return int(ndimage.label(maxima)[1]), top


def _histogram(x: np.ndarray, bins: int) -> np.ndarray:
    h, _, _ = np.histogram2d(x[:, 0], x[:, 1], bins=bins, range=[[-BOX, BOX], [-BOX, BOX]], density=True)
    return h


def part_aggregation_diffusion(cfg: dict, seed: int) -> dict:
    functional = InteractionEnergy(attractive_gaussian) + 0.1 * GeneralizedEntropy(3.0)
    init = Independent(Uniform(-3.0 * torch.ones(2), 3.0 * torch.ones(2)), 1)
    a, steps = 0.5, cfg["ad_steps"]
    scheme = cfg["forward_backward"]
    options = scheme.backward
    print(
        "\n(b) aggregation-diffusion, W = -exp(-|x|^2)/pi, 0.1 Delta rho^3, uniform on [-3, 3]^2, a = 0.5, "
        f"forward-backward with variational backward steps (map {options.map!r}, "
        f"{options.iters_per_step} iterations of batch {options.batch_size}), "
        f"{options.n_particles} particles, {scheme.n_reference} reference particles in the convolution, "
        f"{steps} steps"
    )
    start = time.perf_counter()
    error = None
    try:
        flow = wgfinfer.simulate(
            functional,
            init,
            scheme=scheme,
            step_size=a,
            n_steps=steps,
            seed=seed,
        )
    except TrainingDivergedError as exc:
        flow, error = exc.flow, str(exc)
        print(f"  diverged after {len(flow.maps)} steps: {error}")
    wall = time.perf_counter() - start
    snapshots = [k for k in cfg["ad_snapshots"] if k <= len(flow.maps)]
    bins = 64
    x = flow.sample(cfg["draws"], generator=torch.Generator().manual_seed(seed + 1), step=0)
    reference = FiniteVolumeReference(cfg["fv_cells"])
    fv_start = time.perf_counter()
    rows, hists, fv = [], {}, {}
    with torch.no_grad():
        for k in range(len(flow.maps) + 1):
            if k:
                x = flow.maps[k - 1].transport(x)
            if k not in snapshots:
                continue
            xs = x.numpy()
            h = _histogram(xs, bins)
            reference.advance(k * a)
            hists[k], fv[k] = xs.copy(), reference.rho.copy()
            r = np.linalg.norm(xs - xs.mean(0), axis=-1)
            pulses, top = _pulses(h, 2 * BOX / bins)
            fv_pulses, fv_top = _pulses(reference.rho, reference.dx)
            rows.append(
                {
                    "step": k,
                    "t": k * a,
                    "peaks": pulses,
                    "peak_density": top,
                    "mean_radius": float(r.mean()),
                    "fv_peaks": fv_pulses,
                    "fv_peak_density": fv_top,
                    "fv_mean_radius": float(
                        np.sum(np.hypot(reference.x, reference.y) * reference.rho) * reference.dx**2
                    ),
                }
            )
    fv_wall = time.perf_counter() - fv_start
    print(f"forward-backward wall time {wall:.1f} s; finite-volume reference {fv_wall:.1f} s")
    print(
        f"{'step':>4} {'t':>6} | {'FB pulses':>8} {'FB max dens':>11} {'FB E|x|':>8} | "
        f"{'FV pulses':>8} {'FV max dens':>11} {'FV E|x|':>8}"
    )
    for r in rows:
        print(
            f"{r['step']:4d} {r['t']:6.1f} | {r['peaks']:8d} {r['peak_density']:11.4f} "
            f"{r['mean_radius']:8.4f} | {r['fv_peaks']:8d} {r['fv_peak_density']:11.4f} "
            f"{r['fv_mean_radius']:8.4f}"
        )
    print(
        f"(pulses: local maxima of the density smoothed with a Gaussian of sd {SMOOTHING} (64 x 64 histogram "
        "of the draws for FB, the grid density for FV) above 3 x the initial density 1/36 and above 20% of "
        "the maximum; max dens: the smoothed density's maximum; E|x|: mean distance to the centre of mass "
        "(FB) / to the origin (FV))"
    )
    last = rows[-1]
    if last["peaks"] != last["fv_peaks"]:
        print(
            f"WARNING: at t = {last['t']:g} the forward-backward flow has {last['peaks']} pulse(s) (smoothed "
            f"max density {last['peak_density']:.3f}) but the grid solution {last['fv_peaks']} "
            f"({last['fv_peak_density']:.3f}): the variational backward step under-diffuses narrow pulses "
            "(see the module docstring)"
        )
    return {"rows": rows, "hists": hists, "fv": fv, "wall_time": wall, "error": error, "a": a}


def plot_aggregation_diffusion(out: Path, ad: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(ad["hists"])
    fig, axes = plt.subplots(
        2, len(steps), figsize=(2.4 * len(steps), 6.0), squeeze=False, layout="constrained"
    )
    extent = (-BOX, BOX, -BOX, BOX)
    bins = 64  # as in the printed table
    for col, k in enumerate(steps):
        # the smoothed densities whose maxima the table prints, on one colour scale per column
        draws = _smooth(_histogram(ad["hists"][k], bins), 2 * BOX / bins)
        grid = _smooth(ad["fv"][k], 2 * BOX / ad["fv"][k].shape[0])
        top = max(draws.max(), grid.max())
        for row, (image, label) in enumerate(((draws, "forward-backward"), (grid, "finite volume"))):
            ax = axes[row, col]
            ax.imshow(image.T, origin="lower", extent=extent, cmap="viridis", vmin=0.0, vmax=top)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{label}\nk = {k}, t = {k * ad['a']:g}, max {image.max():.4f}", fontsize=8)
    fig.suptitle(
        "Aggregation-diffusion, W = -exp(-|x|^2)/pi, 0.1 Delta rho^3 (seed 000 §4.4)\n"
        f"top: forward-backward draws; bottom: grid solution; on [-{BOX:g}, {BOX:g}]^2\n"
        f"densities smoothed (sd {SMOOTHING}) as in the printed table; one colour scale per column",
        fontsize=9,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--backward",
        default="variational",
        choices=["variational", "icnn"],
        help="JKO scheme of the ring's backward method (variational: residual map, as in seed 000 App. C)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    parser.add_argument(
        "--out", type=Path, default=Path("."), help="folder of the two PNG files (default: current directory)"
    )
    args = parser.parse_args(argv)
    cfg = _settings(args.quick)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ring = part_ring(cfg, args.seed, args.backward)
    plot_ring(args.out / "aggregation_ring.png", ring, cfg["ring_snapshots"])
    ad = part_aggregation_diffusion(cfg, args.seed)
    plot_aggregation_diffusion(args.out / "aggregation_diffusion.png", ad)
    total = time.perf_counter() - start
    ring_png, ad_png = args.out / "aggregation_ring.png", args.out / "aggregation_diffusion.png"
    print(f"\ntotal {total:.0f} s; wrote {ring_png}, {ad_png}")
    return {"ring": ring, "aggregation_diffusion": ad, "total_time": total}


if __name__ == "__main__":
    main()
