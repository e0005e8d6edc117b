"""Nonlinear filtering: JKO filter (both MH proposals) and bootstrap particle filters vs the grid.

The seed 002 §4.5 problem (``wgfinfer.problems.filtering.sine_well_problem``) over several seeds
(each seed: a new simulated path and observations, and new filter randomness).  Per method and seed:
SymKL between its density of ``p(X_5 | Y_1:9)`` and the Chang-Cooper grid solution (2000 points on
[-5, 5], dt = 1e-3), computed on the grid; wall time; error of its ``log p(Y_1:9)`` against the
grid's.  The JKO filter's density is exact (inverting the maps, normalised by its own log-evidence
estimate); the particle filters' is a Gaussian KDE (Scott's rule).  Writes the table as
``filtering.md`` into ``--out`` (default: the current directory); into the docs only with
``--docs docs/benchmarks.md docs/filtering.md``.

    python benchmarks/filtering.py                     # the documented run (CPU)
    python benchmarks/filtering.py --docs docs/benchmarks.md docs/filtering.md   # ... into the docs
    python benchmarks/filtering.py --seeds 0 --methods pf-1000 jko-independent   # quick look
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_output_arguments, load_run, machine, markdown_table, publish, record_row  # noqa: E402

import wgfinfer  # noqa: E402
from wgfinfer.filtering import JKOFilter  # noqa: E402
from wgfinfer.filtering.grid import GridFilter1D, symkl_on_grid  # noqa: E402
from wgfinfer.filtering.particle import BootstrapParticleFilter  # noqa: E402
from wgfinfer.problems.filtering import sine_well_problem  # noqa: E402

METHODS = ["jko-independent", "jko-latent_rw", "pf-1000", "pf-10000", "pf-50000"]
# seed 002 Figure 5a as quoted in issue 5: median log10 SymKL
SEED_REPORTED = {"jko-independent": -1.77, "pf-10000": -1.89, "pf-50000": -2.37}


def run_method(method: str, problem, grid_result, args: argparse.Namespace, seed: int) -> dict:
    grid = grid_result.grid
    start = time.perf_counter()
    row: dict = {"method": method, "seed": seed}
    if method.startswith("pf-"):
        n = int(method.split("-")[1])
        result = BootstrapParticleFilter(problem.diffusion, n_particles=n, seed=seed).run(
            problem.observations, problem.t_final
        )
        density = result.density_on_grid(grid)
        row["log_evidence"] = result.log_evidence
    else:
        proposal = method.split("-", 1)[1]
        scheme = wgfinfer.ICNN(
            iters_per_step=args.jko_iters,
            batch_size=args.jko_batch,
            hidden=(args.jko_width, args.jko_width),
            # the pool (MH draws per observation): a quarter of the step's batches, at least a draw per chain
            n_particles=max(args.jko_iters * args.jko_batch // 4, args.jko_chains),
        )
        result = JKOFilter(
            problem.diffusion,
            scheme,
            step_size=0.1,
            proposal=proposal,
            dtype=torch.float32 if args.jko_float32 else torch.float64,
            n_chains=args.jko_chains,
            warmup=args.jko_warmup,
            seed=seed,
        ).run(problem.observations, problem.t_final)
        points = torch.as_tensor(grid, dtype=torch.float64).unsqueeze(-1)
        density = np.nan_to_num(torch.exp(result.log_prob(points, normalized=True)).numpy())
        row["log_evidence"] = result.log_evidence
        row["acceptance"] = statistics.mean(result.acceptance_rate.values())
    row["time"] = time.perf_counter() - start
    row["symkl"] = symkl_on_grid(grid_result.density(), density, grid)
    row["log_evidence_error"] = row["log_evidence"] - grid_result.log_evidence
    return row


def render(rows: list[dict], meta: dict) -> str:
    header = [
        "method",
        "median log10 SymKL",
        "IQR",
        "seed code's median",
        "median s",
        "median |log Z error|",
        "MH acceptance",
    ]
    table = []
    for method in [m for m in METHODS if any(r["method"] == m for r in rows)]:
        mine = [r for r in rows if r["method"] == method]
        logs = sorted(math.log10(max(r["symkl"], 1e-12)) for r in mine)
        q = np.percentile(logs, [25, 75]) if len(logs) > 1 else [logs[0], logs[0]]
        acc = [r["acceptance"] for r in mine if "acceptance" in r]
        table.append(
            [
                method,
                f"{statistics.median(logs):.2f}",
                f"[{q[0]:.2f}, {q[1]:.2f}]",
                f"{SEED_REPORTED[method]:.2f}" if method in SEED_REPORTED else "—",
                f"{statistics.median(r['time'] for r in mine):.0f}",
                f"{statistics.median(abs(r['log_evidence_error']) for r in mine):.3f}",
                f"{statistics.mean(acc):.2f}" if acc else "—",
            ]
        )
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "### Nonlinear filtering (`benchmarks/filtering.py`)",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`.",
        f"Seed 002 §4.5 problem, seeds {seeds} (path, observations and filters); reference: Chang-Cooper "
        "grid, 2000 points on [-5, 5], dt = 1e-3. JKO filter: h = 0.1 (50 steps), "
        f"{meta['jko_iters']} iterations x batch {meta['jko_batch']} per step, ICNN width "
        f"({meta['jko_width']}, {meta['jko_width']}), {meta['jko_dtype']}, "
        f"{meta['jko_chains']} chains, "
        f"{meta['jko_warmup']} warm-up sweeps, every 2nd state kept; its density by inverting the maps. "
        "Particle filters: Euler-Maruyama dt = 1e-3, systematic resampling, Gaussian KDE.",
        "",
        markdown_table(header, table),
    ]
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    # a CPU budget (about 4 minutes per JKO filter run on one core; --jko-width 32 --jko-iters 100
    # --jko-batch 256 takes one); the seed trains width 256, batch 1024, 700 iterations per step and
    # warms up 1000 sweeps, on a GPU
    parser.add_argument("--jko-iters", type=int, default=300)
    parser.add_argument("--jko-width", type=int, default=64)
    parser.add_argument("--jko-batch", type=int, default=512)
    parser.add_argument("--jko-warmup", type=int, default=200)
    parser.add_argument("--jko-float64", dest="jko_float32", action="store_false")
    parser.add_argument("--jko-chains", type=int, default=256)
    parser.add_argument("--json", help="also write the rows here (after every run)")
    parser.add_argument("--from-json", help="render a saved run instead of running")
    parser.add_argument("--note", default="")
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.from_json:
        rows, meta = load_run(args.from_json, args.note)
    else:
        meta = {
            "machine": machine("cpu"),
            "command": "python benchmarks/filtering.py " + " ".join(sys.argv[1:]),
            "jko_iters": args.jko_iters,
            "jko_width": args.jko_width,
            "jko_warmup": args.jko_warmup,
            "jko_batch": args.jko_batch,
            "jko_dtype": "float32" if args.jko_float32 else "float64",
            "jko_chains": args.jko_chains,
            "note": args.note,
        }
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
