"""Cost of the JKO filter's Metropolis-Hastings runs per observation (issue 19, point 2).

Runs ``JKOFilter`` on the seed 002 §4.5 sine-well problem (9 observations) with a small training
budget and times every Metropolis-Hastings run at an observation time (the training time per
interval does not depend on the number of observations).  Prints one JSON line per observation:
its index, the seconds of its MH run and, where the filter records them, the map evaluations
(points x maps) it spent.  Writes nothing unless ``--json FILE`` is given.

    python benchmarks/filtering_cost.py                          # cached proposals (default)
    python benchmarks/filtering_cost.py --no-cache               # every proposal through every map
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import wgfinfer
import wgfinfer.filtering.jko_filter as jko_filter
from wgfinfer.filtering import JKOFilter
from wgfinfer.problems.filtering import sine_well_problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--proposal", default="independent", choices=["independent", "latent_rw"])
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--chains", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20, help="ICNN iterations per JKO step")
    parser.add_argument("--no-cache", action="store_true", help="JKOFilter(cache_proposals=False)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    timings: list[float] = []
    original = jko_filter.metropolis_hastings

    def timed(*a, **k):
        start = time.perf_counter()
        out = original(*a, **k)
        timings.append(time.perf_counter() - start)
        return out

    jko_filter.metropolis_hastings = timed
    problem = sine_well_problem(args.seed)
    scheme = wgfinfer.ICNN(iters_per_step=args.iters, batch_size=256, hidden=(32, 32), n_particles=6400)
    options = dict(
        step_size=0.1, warmup=args.warmup, n_chains=args.chains, proposal=args.proposal,
        dtype=torch.float32, seed=args.seed,
    )  # fmt: skip
    try:
        options["cache_proposals"] = not args.no_cache
        filt = JKOFilter(problem.diffusion, scheme, **options)
    except TypeError:  # a version without the option: every proposal is pushed through every map
        if not args.no_cache:
            raise
        del options["cache_proposals"]
        filt = JKOFilter(problem.diffusion, scheme, **options)
    result = filt.run(problem.observations, problem.t_final)
    evaluations = getattr(result, "map_evaluations", {})
    rows = []
    for k, (t, seconds) in enumerate(zip(problem.observations.times.tolist(), timings, strict=False)):
        row = {"observation": k, "time": t, "mh_seconds": round(seconds, 3)}
        if t in evaluations:
            row["map_evaluations"] = evaluations[t]
        rows.append(row)
        print(json.dumps(row), flush=True)
    total = {"mh_seconds_total": round(sum(timings), 2), "wall_time": round(result.wall_time, 1)}
    print(json.dumps(total))
    if args.json:
        args.json.write_text(
            json.dumps({"rows": rows, **total, "args": vars(args) | {"json": str(args.json)}})
        )


if __name__ == "__main__":
    main()
