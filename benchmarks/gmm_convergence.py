"""Convergence of the ICNN JKO flow to a stationary Gaussian mixture (seed 002 §4.2, Table 1).

rho_0 = N(0, 16 I); target (1/M) sum_m N(mu_m, I) with mu_m ~ Uniform([-l/2, l/2]^D); h = 0.1.
SymKL(flow, target) is estimated by Monte Carlo on 10^4 draws of each, with the flow's exact log q
(tracked at its own draws, by inversion at the target's draws).  Printed as a table and written as
``gmm-convergence-<device>-h<step>.md`` into ``--out`` (default: the current directory); into
docs/benchmarks.md only with ``--docs docs/benchmarks.md``.

    python benchmarks/gmm_convergence.py                      # the documented run (CPU)
    python benchmarks/gmm_convergence.py --docs docs/benchmarks.md   # ... written into the docs
    python benchmarks/gmm_convergence.py --device cuda --dims 2 4 8 16
    python benchmarks/gmm_convergence.py --preset seed         # Table 1 widths, 1000 iters/step
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_output_arguments, machine, markdown_table, publish  # noqa: E402

import wgfinfer  # noqa: E402
from wgfinfer.diagnostics import symmetric_kl  # noqa: E402
from wgfinfer.problems.gaussians import GaussianMixture  # noqa: E402

# seed 002 Table 1: D -> (M components, cube width l, ICNN width w)
TABLE1 = {
    2: (5, 10, 256),
    4: (6, 10, 384),
    6: (7, 10, 512),
    8: (8, 10, 512),
    10: (9, 10, 512),
    12: (10, 10, 1024),
    13: (10, 10, 512),
    32: (10, 6, 1024),
}
# seed 002 §4.2 / Figure 2 as quoted in issue 2: median log10 SymKL of JKO-ICNN
SEED_LOG10_SYMKL = {2: -1.25, 4: -0.84, 8: -0.39}


def run_one(dim: int, rep: int, args: argparse.Namespace) -> dict[str, float]:
    n_comp, width_l, seed_width = TABLE1[dim]
    mixture = GaussianMixture.random(n_comp, dim, width_l, seed=1000 * dim + rep)
    width = seed_width if args.preset == "seed" else args.width
    iters = 1000 if args.preset == "seed" else args.iters
    batch = 512
    sampler = wgfinfer.WGFSampler(
        mixture.log_prob,
        dim=dim,
        step_size=args.step_size,
        n_steps=args.steps,
        scheme=wgfinfer.ICNN(iters_per_step=iters, batch_size=batch, lr=args.lr, hidden=(width, width)),
        init=torch.distributions.MultivariateNormal(
            torch.zeros(dim, device=args.device), 16 * torch.eye(dim, device=args.device)
        ),
        seed=rep,
        device=args.device,
        progress_bar=False,
    )
    start = time.perf_counter()
    sampler.run()
    train = time.perf_counter() - start
    n = args.mc
    x, log_q = sampler.sample(n, return_log_prob=True, seed=10_000 + rep)
    y = mixture.sample(n, torch.Generator().manual_seed(20_000 + rep)).to(args.device)
    start = time.perf_counter()
    log_q_y = sampler.log_prob(y)
    invert = time.perf_counter() - start
    ok = torch.isfinite(log_q_y)
    value, se = symmetric_kl(log_q, mixture.log_prob(x), mixture.log_prob(y[ok]), log_q_y[ok])
    return {
        "symkl": value,
        "se": se,
        "step_time": train / args.steps,
        "invert": invert,
        "failed_inversions": int((~ok).sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--reps", type=int, default=3, help="random mixtures per dimension")
    parser.add_argument("--preset", choices=["quick", "seed"], default="quick")
    parser.add_argument("--width", type=int, default=64, help="ICNN width (quick preset)")
    parser.add_argument("--iters", type=int, default=200, help="iterations per step (quick preset)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--step-size", type=float, default=0.1)
    parser.add_argument("--lr", type=float, default=5e-3)
    parser.add_argument("--mc", type=int, default=10_000, help="Monte-Carlo draws for SymKL")
    parser.add_argument("--device", default="cpu")
    add_output_arguments(parser)
    args = parser.parse_args()

    rows = []
    for dim in args.dims:
        results = [run_one(dim, rep, args) for rep in range(args.reps)]
        for r in results:
            print(
                f"D={dim} symkl={r['symkl']:.4f}+-{r['se']:.4f} step={r['step_time']:.2f}s "
                f"inversion={r['invert']:.1f}s failed={r['failed_inversions']}",
                flush=True,
            )
        med = statistics.median(r["symkl"] for r in results)
        width = TABLE1[dim][2] if args.preset == "seed" else args.width
        rows.append(
            [
                dim,
                TABLE1[dim][0],
                width,
                args.reps,
                f"{math.log10(max(med, 1e-6)):.2f}",
                ", ".join(f"{r['symkl']:.3f}" for r in results),
                f"{statistics.median(r['step_time'] for r in results):.2f}",
                SEED_LOG10_SYMKL.get(dim, "—"),
            ]
        )
    header = [
        "D",
        "M",
        "width",
        "runs",
        "median log10 SymKL",
        "SymKL per run",
        "s / JKO step",
        "seed 002 (log10 SymKL)",
    ]
    iters = 1000 if args.preset == "seed" else args.iters
    body = (
        f"### Convergence to a stationary Gaussian mixture (`benchmarks/gmm_convergence.py`)\n\n"
        f"Set-up of seed 002 §4.2: rho_0 = N(0, 16 I), h = {args.step_size}, K = {args.steps} JKO "
        f"steps, {iters} iterations per step, batch 512, lr {args.lr}, two hidden layers; SymKL by "
        f"Monte Carlo on {args.mc} draws with exact flow densities.  Machine: {machine(args.device)}, "
        f"device `{args.device}`.\n\n" + markdown_table(header, rows)
    )
    print(body)
    if not args.no_write:
        publish(f"gmm-convergence-{args.device.split(':')[0]}-h{args.step_size:g}", body, args.out, args.docs)


if __name__ == "__main__":
    main()
