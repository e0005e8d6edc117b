"""Time per JKO step against the dimension, ICNN vs variational scheme (seed 001 §5.1, Fig. 2-3).

Target: a Gaussian mixture of 10 equal-weight unit-covariance components whose means are uniform in
``[-l/2, l/2]^D`` (``l`` from seed 001 Table 4); ``rho_0 = N(0, 16 I)``, ``h = 0.1``.  Both schemes
use the same fixed network sizes at every dimension.  Per (scheme, D): median wall time of a JKO
step; where the full number of steps was run, the KSD (RBF kernel, median bandwidth of the target
draws, U-statistic of ``wgfinfer.diagnostics.ksd``) of flow draws and of exact target draws (the
noise floor), and for the ICNN scheme the SymKL from exact densities.  Writes the table
(``dimension_scaling.md``) and a PCA scatter plot of D = 64 draws into ``--out`` (default: the
current directory); into ``docs/benchmarks.md`` and ``docs/`` only with ``--docs docs/benchmarks.md``.

    python benchmarks/dimension_scaling.py                       # the documented run (CPU)
    python benchmarks/dimension_scaling.py --docs docs/benchmarks.md   # ... written into the docs
    python benchmarks/dimension_scaling.py --dims 2 8 --steps 4  # quick look
    python benchmarks/dimension_scaling.py --device cuda --icnn-quality-max-dim 128
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_output_arguments, load_run, machine, markdown_table, publish, record_row  # noqa: E402

import wgfinfer  # noqa: E402
from wgfinfer.diagnostics import ksd, score_from_log_density, symmetric_kl  # noqa: E402
from wgfinfer.problems.gaussians import GaussianMixture  # noqa: E402

# seed 001 Table 4: cube width l of the component means per dimension (64 and 128 as listed there)
CUBE_WIDTH = {2: 5.0, 4: 5.0, 8: 5.0, 15: 3.0, 24: 3.0, 32: 3.0, 64: 2.0, 128: 1.5}


def mixture_for(dim: int) -> GaussianMixture:
    width = CUBE_WIDTH.get(dim, 3.0)
    return GaussianMixture.random(10, dim, width, seed=dim)


def run_one(dim: int, scheme: str, args: argparse.Namespace) -> dict:
    mixture = mixture_for(dim)
    full = scheme == "variational" or dim <= args.icnn_quality_max_dim
    n_steps = args.steps if full else args.timing_steps
    networks = dict(iters_per_step=args.iters, batch_size=args.batch, hidden=(args.width, args.width))
    if scheme == "variational":
        options = wgfinfer.Variational(**networks, dual_hidden=(args.width,) * 3, dual_head=args.dual_head)
    else:
        options = wgfinfer.ICNN(**networks)
    start = time.perf_counter()
    sampler = wgfinfer.WGFSampler(
        mixture.log_prob,
        dim=dim,
        scheme=options,
        init=wgfinfer.Init("normal", scale=4.0),
        step_size=0.1,
        n_steps=n_steps,
        device=args.device,
        progress_bar=False,
        seed=args.seed,
    ).run()
    total = time.perf_counter() - start
    # the first step carries one-off start-up costs; the median of the others is the step time
    step_times = [h["wall_time"] for h in sampler.history][1:] or [sampler.history[0]["wall_time"]]
    row = {
        "dim": dim,
        "scheme": scheme,
        "steps": n_steps,
        "step_time": statistics.median(step_times),
        "total_time": total,
        "final_kl_minus_log_z": sampler.history[-1]["kl_minus_log_z"],
    }
    if not full:
        return row
    n = args.ksd_samples
    x = sampler.sample(n, seed=1).double().cpu()
    exact = mixture.sample(n, torch.Generator().manual_seed(2))
    score = score_from_log_density(mixture.log_prob)
    bandwidth = float(torch.pdist(exact[:2000]).median())
    row["ksd"], row["ksd_se"] = ksd(x, score, bandwidth=bandwidth, return_se=True)
    row["ksd_exact"], _ = ksd(exact, score, bandwidth=bandwidth, return_se=True)
    if scheme == "icnn":
        x_q, log_q = sampler.sample(n, return_log_prob=True, seed=3)
        with torch.no_grad():
            log_q_at_p = sampler.log_prob(exact.to(sampler.dtype)).double().cpu()
        sym, sym_se = symmetric_kl(
            log_q.double().cpu(),
            mixture.log_prob(x_q.double().cpu()),
            mixture.log_prob(exact),
            log_q_at_p,
        )
        row["symkl"], row["symkl_se"] = sym, sym_se
    if dim == args.pca_dim:
        pca_plot(x.numpy(), exact.numpy(), dim, scheme, args.figures)
    return row


def pca_plot(flow_draws, target_draws, dim: int, scheme: str, folder: Path | None) -> None:
    if folder is None:  # --no-write
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2).fit(target_draws)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2), sharex=True, sharey=True)
    panels = ((axes[0], target_draws, "exact target draws"), (axes[1], flow_draws, f"{scheme} flow draws"))
    for ax, draws, title in panels:
        p = pca.transform(draws[:3000])
        ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.4)
        ax.set_title(f"{len(p)} {title}, D = {dim}")
        ax.set_xlabel("PC 1 (of the target)")
    axes[0].set_ylabel("PC 2")
    fig.tight_layout()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"dimension_scaling_pca_{scheme}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def fmt(row: dict, key: str, digits: int = 4) -> str:
    if key not in row:
        return "—"
    value = row[key]
    se = row.get(f"{key}_se")
    return f"{value:.{digits}f} ± {se:.{digits}f}" if se is not None else f"{value:.{digits}f}"


def render(rows: list[dict], meta: dict) -> str:
    header = ["D", "scheme", "s / JKO step", "× D=2", "steps run", "KSD flow", "KSD exact draws", "SymKL"]
    base = {r["scheme"]: r["step_time"] for r in rows if r["dim"] == min(x["dim"] for x in rows)}
    table = [
        [
            r["dim"],
            r["scheme"],
            f"{r['step_time']:.2f}",
            f"{r['step_time'] / base[r['scheme']]:.2f}",
            r["steps"],
            fmt(r, "ksd"),
            fmt(r, "ksd_exact"),
            fmt(r, "symkl", 3),
        ]
        for r in sorted(rows, key=lambda r: (r["scheme"], r["dim"]))
    ]
    lines = [
        "### Dimension scaling: ICNN vs variational scheme (`benchmarks/dimension_scaling.py`)",
        "",
        f"Machine: {meta['machine']}. Command: `{meta['command']}`.",
        "GMM of 10 unit components, means uniform in [-l/2, l/2]^D (l of seed 001 Table 4), "
        f"rho_0 = N(0, 16 I), h = 0.1, {meta['iters']} iterations x batch {meta['batch']} per step; "
        f"both schemes use width {meta['width']} at every D (ICNN (w, w); variational T (w, w), "
        f"h (w, w, w), head {meta['dual_head']}).",
        "KSD: U-statistic with the RBF kernel at the median distance of the target draws, "
        f"{meta['ksd_samples']} draws; 'KSD exact draws' is the same statistic on exact target draws "
        "(its noise floor). SymKL (ICNN scheme only: it needs densities) from exact flow densities.",
        "",
        markdown_table(header, table),
    ]
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8, 32, 64, 128])
    parser.add_argument("--schemes", nargs="+", default=["variational", "icnn"])
    parser.add_argument("--steps", type=int, default=40, help="JKO steps of a full (quality) run")
    parser.add_argument("--timing-steps", type=int, default=2, help="steps of a timing-only run")
    parser.add_argument("--icnn-quality-max-dim", type=int, default=32, help="above it: ICNN timing only")
    parser.add_argument("--iters", type=int, default=200)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--dual-head", default="softplus")
    parser.add_argument("--ksd-samples", type=int, default=5000)
    parser.add_argument("--pca-dim", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--from-json", help="render a saved run instead of running")
    parser.add_argument("--note", default="")
    add_output_arguments(parser, figures=True)
    args = parser.parse_args()
    args.figures = None if args.no_write else (args.docs[0].parent if args.docs else args.out)
    if args.from_json:
        rows, meta = load_run(args.from_json, args.note)
    else:
        meta = {
            "machine": machine(args.device),
            "command": "python benchmarks/dimension_scaling.py " + " ".join(sys.argv[1:]),
            "iters": args.iters,
            "batch": args.batch,
            "width": args.width,
            "dual_head": args.dual_head,
            "ksd_samples": args.ksd_samples,
            "note": args.note,
        }
        rows = []
        for scheme in args.schemes:
            for dim in args.dims:
                row = run_one(dim, scheme, args)
                record_row(rows, row, meta, args.json)
    body = render(rows, meta)
    print(body)
    if not args.no_write:
        publish("dimension_scaling", body, args.out, args.docs)


if __name__ == "__main__":
    main()
