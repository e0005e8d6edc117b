"""Cost of a Pyro model written for one particle, against the same model written for batches.

A Pyro user writes ``X @ beta`` and ``a[group]`` (the tutorials' style), which only works for one
particle; :class:`wgfinfer.pyro_target.PyroTarget` then evaluates it for all particles under
:func:`torch.func.vmap` (``batching == "vmap"``) instead of one model run per particle (``"loop"``).
This script times the log-density and its gradient for ``n`` particles, in process CPU seconds
(median of repeats), for the hand-batched model (``"plate"``), the tutorial-style model (``"vmap"``)
and the tutorial-style model forced through the loop, on

- Bayesian logistic regression on the breast-cancer data (31 coefficients, a Gamma prior on their
  precision; :func:`wgfinfer.problems.logistic.model` is the hand-batched version), and
- a varying-intercept regression (20 groups, 1000 rows, simulated).

Results go to ``--out`` (default: the current directory) as ``vectorisation.json`` and
``vectorisation.md``; nothing tracked is written.

    python benchmarks/vectorisation.py --particles 256 1024 --repeats 7
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import machine, markdown_table  # noqa: E402

from wgfinfer.problems import logistic  # noqa: E402
from wgfinfer.problems.datasets import load_breast_cancer  # noqa: E402
from wgfinfer.pyro_target import PyroTarget  # noqa: E402


def logistic_tutorial(x, y=None):
    """The breast-cancer model as a tutorial writes it: ``x @ w`` for one particle."""
    alpha = pyro.sample(
        "alpha", dist.Gamma(torch.tensor(logistic.PRIOR_SHAPE, dtype=x.dtype), logistic.PRIOR_RATE)
    )
    w = pyro.sample("w", dist.Normal(0.0, alpha.rsqrt()).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Bernoulli(logits=x @ w), obs=y)


def intercepts_batched(x, group, n_groups, y=None):
    """Varying intercepts written for a batch of particles: the intercepts in a plate, ``a[..., group]``."""
    mu_a = pyro.sample("mu_a", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 5.0))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(torch.tensor(2.0, dtype=x.dtype)))
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 1.0))
    sigma = pyro.sample("sigma", dist.Exponential(torch.tensor(1.0, dtype=x.dtype)))
    with pyro.plate("groups", n_groups):
        a = pyro.sample("a", dist.Normal(mu_a, sigma_a))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(a[..., group] + b * x, sigma), obs=y)


def intercepts_tutorial(x, group, n_groups, y=None):
    """The same model as a tutorial writes it (``a[group]``, scalar sites)."""
    mu_a = pyro.sample("mu_a", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 5.0))
    sigma_a = pyro.sample("sigma_a", dist.HalfNormal(torch.tensor(2.0, dtype=x.dtype)))
    b = pyro.sample("b", dist.Normal(torch.tensor(0.0, dtype=x.dtype), 1.0))
    sigma = pyro.sample("sigma", dist.Exponential(torch.tensor(1.0, dtype=x.dtype)))
    a = pyro.sample("a", dist.Normal(mu_a, sigma_a).expand([n_groups]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(a[group] + b * x, sigma), obs=y)


def problems(dtype: torch.dtype) -> dict[str, tuple]:
    data = load_breast_cancer(dtype=dtype)
    g = torch.Generator().manual_seed(0)
    n_groups, rows = 20, 1000
    group = torch.arange(rows) % n_groups
    x = torch.randn(rows, generator=g, dtype=dtype)
    a = 1.5 * torch.randn(n_groups, generator=g, dtype=dtype)
    y = a[group] + 0.7 * x + 0.5 * torch.randn(rows, generator=g, dtype=dtype)
    return {
        "blr-breast-cancer": (logistic.model, logistic_tutorial, (data.x_train, data.y_train)),
        "varying-intercepts": (intercepts_batched, intercepts_tutorial, (x, group, n_groups, y)),
    }


def cpu_seconds(fn, repeats: int) -> float:
    """Median process CPU seconds of ``fn()`` over ``repeats`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return statistics.median(times)


def value_and_grad(target: PyroTarget, z: torch.Tensor):
    def run() -> None:
        zz = z.detach().requires_grad_(True)
        target.log_density(zz).sum().backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--particles", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loop-particles", type=int, default=64, help="the loop is timed on this many")
    parser.add_argument("--out", type=Path, default=Path("."))
    args = parser.parse_args()
    dtype = torch.float64
    rows, records = [], []
    for name, (batched_model, tutorial_model, model_args) in problems(dtype).items():
        batched = PyroTarget(batched_model, model_args, dtype=dtype)
        tutorial = PyroTarget(tutorial_model, model_args, dtype=dtype)
        assert batched.batching == "plate", batched.batching
        assert tutorial.batching == "vmap", tutorial.batching
        looped = PyroTarget(tutorial_model, model_args, dtype=dtype)
        looped.batching = "loop"
        g = torch.Generator().manual_seed(1)
        probe = 0.1 * torch.randn(8, batched.dim, generator=g, dtype=dtype)
        torch.testing.assert_close(tutorial.log_density(probe), batched.log_density(probe))
        # the loop's cost is linear in n: timed on fewer particles and scaled
        zl = 0.1 * torch.randn(args.loop_particles, batched.dim, generator=g, dtype=dtype)
        loop_per_particle = (
            cpu_seconds(value_and_grad(looped, zl), max(1, args.repeats // 3)) / args.loop_particles
        )
        for n in args.particles:
            z = 0.1 * torch.randn(n, batched.dim, generator=g, dtype=dtype)
            t_plate = cpu_seconds(value_and_grad(batched, z), args.repeats)
            t_vmap = cpu_seconds(value_and_grad(tutorial, z), args.repeats)
            record = {
                "model": name,
                "dim": batched.dim,
                "particles": n,
                "plate_s": t_plate,
                "vmap_s": t_vmap,
                "loop_s_estimated": loop_per_particle * n,
                "vmap_over_plate": t_vmap / t_plate,
                "loop_over_plate": loop_per_particle * n / t_plate,
            }
            records.append(record)
            print(json.dumps(record), flush=True)
            rows.append(
                [
                    name,
                    batched.dim,
                    n,
                    f"{1000 * t_plate:.1f}",
                    f"{1000 * t_vmap:.1f}",
                    f"{record['vmap_over_plate']:.2f}x",
                    f"{1000 * record['loop_s_estimated']:.0f}",
                    f"{record['loop_over_plate']:.0f}x",
                ]
            )
    header = [
        "model",
        "d",
        "particles",
        "plate (ms CPU)",
        "vmap (ms CPU)",
        "vmap / plate",
        "loop (ms CPU, from per-particle cost)",
        "loop / plate",
    ]
    table = markdown_table(header, rows)
    note = (
        f"log-density + gradient, median process CPU time of {args.repeats} calls, float64, "
        f"{machine('cpu')}; command: python benchmarks/vectorisation.py " + " ".join(sys.argv[1:])
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vectorisation.json").write_text(json.dumps({"rows": records, "note": note}, indent=1))
    (args.out / "vectorisation.md").write_text(table + "\n\n" + note + "\n")
    print(table)
    print(note)


if __name__ == "__main__":
    main()
