"""Do two versions of wgfinfer train the same flows?  Small fixed runs of every entry point, hashed.

Run it once with each version on the path and compare the printed hashes, e.g. against the last
release before the scheme objects (wgfinfer 0.1 with flat keyword arguments)::

    git worktree add /tmp/wgf-old 57a4c8d
    PYTHONPATH=/tmp/wgf-old python benchmarks/same_draws.py --out old.json
    python benchmarks/same_draws.py --out new.json

The script speaks both APIs (flat keyword arguments before the scheme objects, scheme objects
after), so the same settings run in both.  Equal hashes of the draws mean the two versions consumed
the same random numbers and computed the same maps, bit for bit (CPU, float64).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
from torch.distributions import Independent, Normal

import wgfinfer
from wgfinfer.functionals import GeneralizedEntropy, InteractionEnergy, KLDivergence

NEW_API = hasattr(wgfinfer, "ICNN")
SCALES = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)


def log_density(x: torch.Tensor) -> torch.Tensor:
    """A 3-D Gaussian with unequal scales."""
    return -0.5 * ((x - 1.0) / SCALES.to(x.dtype)).square().sum(-1)


def _hash(x: torch.Tensor) -> str:
    return hashlib.sha256(x.detach().cpu().numpy().tobytes()).hexdigest()[:16]


def sampler_rows() -> dict[str, dict]:
    runs = {
        "sampler icnn": ("icnn", {"iters_per_step": 30, "batch_size": 64, "hidden": (16,)}),
        "sampler variational": ("variational", {"iters_per_step": 30, "batch_size": 64, "hidden": (16,)}),
        "sampler pwgf coupling": (
            "pwgf",
            {"map": "coupling", "n_layers": 2, "hidden": (8,), "substeps": 4, "samples": 512},
        ),
    }
    rows = {}
    for name, (method, opts) in runs.items():
        opts = dict(opts)
        common = {"dim": 3, "n_steps": 3, "step_size": 0.5, "dtype": torch.float64, "progress_bar": False}
        if NEW_API:
            if method == "pwgf":
                opts["n_samples"] = opts.pop("samples")
                opts["n_monitor"] = 512
            scheme = {"icnn": wgfinfer.ICNN, "variational": wgfinfer.Variational, "pwgf": wgfinfer.PWGF}[
                method
            ]
            sampler = wgfinfer.WGFSampler(log_density, scheme=scheme(**opts), **common)
        else:
            if method == "pwgf":
                opts["batch_size"] = opts.pop("samples")
                opts["n_monitor"] = 512
            sampler = wgfinfer.WGFSampler(log_density, method=method, **common, **opts)
        sampler.run()
        x = sampler.sample(200, seed=1)
        last = sampler.history[-1]
        kl = last["kl_minus_log_z"] if "kl_minus_log_z" in last else last["kl_plus_log_z"]  # older versions
        rows[name] = {"draws": _hash(x), "kl_minus_log_z": kl, "loss": last["loss"]}
    return rows


def simulate_rows() -> dict[str, dict]:
    init = Independent(Normal(torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)), 1)
    target = lambda x: -0.5 * (x - 1.0).square().sum(-1)  # noqa: E731
    net = {"iters_per_step": 20, "batch_size": 64, "hidden": (16,)}
    cases = {
        "simulate icnn KL": (KLDivergence(target), "icnn", net),
        "simulate variational porous medium": (
            GeneralizedEntropy(2),
            "variational",
            {**net, "dual_hidden": (16,)},
        ),
        "simulate forward-backward": (
            InteractionEnergy(lambda z: 0.5 * z.square().sum(-1)) + KLDivergence(target),
            "forward_backward",
            {**net, "dual_hidden": (16,)},
        ),
        "simulate pwgf KL": (KLDivergence(target), "pwgf", {"n_samples": 256, "n_layers": 3}),
    }
    rows = {}
    for name, (functional, scheme, opts) in cases.items():
        if NEW_API:
            if scheme == "pwgf":
                options = wgfinfer.PWGF(**opts)
            elif scheme == "forward_backward":
                options = wgfinfer.ForwardBackward(backward=wgfinfer.Variational(n_particles=4096, **opts))
            else:  # the old simulate's pool of 4096 particles
                options = {"icnn": wgfinfer.ICNN, "variational": wgfinfer.Variational}[scheme](
                    n_particles=4096, **opts
                )
            flow = wgfinfer.simulate(functional, init, scheme=options, step_size=0.1, n_steps=2)
        else:
            flow = wgfinfer.simulate(functional, init, scheme=scheme, step_size=0.1, n_steps=2, **opts)
        x = flow.sample(200, generator=torch.Generator().manual_seed(1))
        rows[name] = {"draws": _hash(x)}
    return rows


def filter_rows() -> dict[str, dict]:
    from wgfinfer.filtering import JKOFilter

    try:
        from wgfinfer.problems.filtering import sine_well_problem
    except ImportError:  # before wgfinfer.problems
        from wgfinfer.filtering.problems import sine_well_problem  # type: ignore[no-redef]
    problem = sine_well_problem(0)
    net = {"iters_per_step": 10, "batch_size": 64, "hidden": (8,)}
    # proposal and dtype pinned to the defaults before 2026-12-01 (now latent_rw, float32), so that
    # the hashes compare across that change and with every version since the filter's first
    mcmc = {"step_size": 0.5, "n_chains": 32, "warmup": 20, "proposal": "independent", "dtype": torch.float64}
    if NEW_API:
        flt = JKOFilter(problem.diffusion, scheme=wgfinfer.ICNN(n_particles=256, **net), **mcmc)
    else:
        flt = JKOFilter(problem.diffusion, n_particles=256, **mcmc, **net)
    result = flt.run(problem.observations, problem.t_final)
    x = result.draws[max(result.draws)]
    return {"JKOFilter": {"draws": _hash(x), "log_evidence": result.log_evidence}}


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    parser.add_argument("--quick", action="store_true", help="the sampler rows only (smoke test)")
    args = parser.parse_args(argv)
    rows = sampler_rows()
    if not args.quick:
        rows |= simulate_rows() | filter_rows()
    print(f"wgfinfer {wgfinfer.__version__} ({'scheme objects' if NEW_API else 'flat options'})")
    for name, row in rows.items():
        print(f"  {name:38s} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
