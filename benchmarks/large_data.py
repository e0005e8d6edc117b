"""Large-data logistic regression: wgfinfer's defaults against NumPyro NUTS, each in a fresh process.

The data: ``datasets.make_synthetic_logistic`` with ``--rows`` training rows (default 100,000) and
``--features`` features (default 20), the suite's hierarchical BLR model (``logistic.model``: a
Gamma(1, 0.01) precision ``alpha``, ``w ~ N(0, alpha^-1 I)``, 22 unconstrained coordinates).

Per method, one fresh Python process (``--worker``), so that imports and JIT compilation are counted:

- ``numpyro``: NumPyro NUTS, one chain, ``--nuts-warmup`` + ``--nuts-draws`` (1000 + 4096), JAX on
  one CPU thread; its draws are the reference (means and sds of ``w`` and ``log alpha``);
- ``wgf``: ``WGFSampler(model=logistic.model)`` with no settings but ``progress_bar=False``, then
  ``get_samples(4096)``; the full data in every evaluation (no ``subsample_size``).

Reported: process CPU seconds of the whole process (imports included) and of the fit alone, wall
seconds, and for wgf the largest |mean error| in reference sds, the sd-ratio range, PSIS k-hat of its
4096 draws, the steps it trained, why it stopped, and the warnings.  Run::

    python benchmarks/large_data.py --json large.json
    python benchmarks/large_data.py --from-json large.json --docs docs/benchmarks.md

The section is written as ``large-data.md`` into ``--out`` (default: the current directory) and into
``docs/benchmarks.md`` only with ``--docs``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _harness import add_output_arguments, machine, markdown_table, publish  # noqa: E402

SECTION = "large-data"
METHODS = ("numpyro", "wgf")
NUM_DRAWS = 4096


def _data(args: argparse.Namespace) -> Any:
    from wgfinfer.problems import datasets

    # the split keeps 80% of the rows for training
    return datasets.make_synthetic_logistic(
        n_samples=int(round(args.rows / 0.8)), n_features=args.features, seed=args.seed
    )


def _coordinates(w: Any, alpha: Any) -> Any:
    import numpy as np

    # np.asarray(..., dtype=...) of a JAX array converts element by element (a minute for 4096 x 21):
    # convert first, then cast
    log_alpha = np.log(np.asarray(alpha).astype(np.float64))
    return np.concatenate([np.asarray(w).astype(np.float64), log_alpha[:, None]], 1)


def worker_numpyro(args: argparse.Namespace) -> dict[str, Any]:
    """NumPyro NUTS on one CPU thread; returns timings and the draws' coordinates."""
    os.environ.setdefault(  # one XLA thread, as for torch
        "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
    import jax
    import numpy as np
    import numpyro
    from numpyro.infer import MCMC, NUTS
    from posteriors import _numpyro_models

    data = _data(args)
    model, _ = _numpyro_models()["blr-breast_cancer"]()  # the suite's NumPyro BLR model, any data
    x, y = np.asarray(data.x_train.numpy()), np.asarray(data.y_train.numpy())
    cpu, wall = time.process_time(), time.perf_counter()
    mcmc = MCMC(NUTS(model), num_warmup=args.nuts_warmup, num_samples=args.nuts_draws, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(args.seed), x, y)
    draws = {name: np.asarray(value) for name, value in mcmc.get_samples().items()}
    fit_cpu, fit_wall = time.process_time() - cpu, time.perf_counter() - wall
    coords = _coordinates(draws["w"], draws["alpha"])
    return {
        "method": "numpyro",
        "settings": f"NumPyro {numpyro.__version__} NUTS (JAX {jax.__version__}, CPU, float32), "
        f"{args.nuts_warmup} warmup + {args.nuts_draws} draws, 1 chain",
        "fit_cpu_s": fit_cpu,
        "fit_wall_s": fit_wall,
        "coords": coords.tolist(),
    }


def worker_wgf(args: argparse.Namespace) -> dict[str, Any]:
    """wgfinfer's defaults on the full data; returns timings, the draws' coordinates and diagnostics."""
    import torch

    from wgfinfer import WGFSampler
    from wgfinfer.importance import importance_diagnostics
    from wgfinfer.problems import logistic

    data = _data(args)
    cpu, wall = time.process_time(), time.perf_counter()
    with warnings.catch_warnings(record=True) as found:
        warnings.simplefilter("always")
        sampler = WGFSampler(model=logistic.model, progress_bar=False, seed=args.seed)
        sampler.run(data.x_train, data.y_train)
        z, log_q = sampler.sample(NUM_DRAWS, return_log_prob=True, seed=args.seed + 1)
        draws = sampler.target.samples(z)
    fit_cpu, fit_wall = time.process_time() - cpu, time.perf_counter() - wall
    with torch.no_grad():
        lp = sampler.target.log_density(z)
    khat = float(importance_diagnostics((lp.double() - log_q.double()).cpu())["khat"])
    return {
        "method": "wgf",
        "settings": f"WGFSampler defaults ({sampler.method}), run() + {NUM_DRAWS} draws",
        "fit_cpu_s": fit_cpu,
        "fit_wall_s": fit_wall,
        "coords": _coordinates(draws["w"].numpy(), draws["alpha"].numpy()).tolist(),
        "khat": khat,
        "steps": len(sampler.history),
        "stop_reason": sampler.stop_reason,
        "warnings": sorted({w.category.__name__ for w in found if issubclass(w.category, Warning)}),
    }


def run_worker(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """``method`` in a fresh process; adds the process's CPU seconds (imports included)."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        method,
        "--rows",
        str(args.rows),
        "--features",
        str(args.features),
        "--seed",
        str(args.seed),
        "--nuts-warmup",
        str(args.nuts_warmup),
        "--nuts-draws",
        str(args.nuts_draws),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    wall = time.perf_counter()
    before = os.times()
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    after = os.times()
    if done.returncode != 0:
        return {"method": method, "error": done.stderr.strip().splitlines()[-1] if done.stderr else "failed"}
    row = json.loads(done.stdout.strip().splitlines()[-1])
    user = after.children_user - before.children_user
    row["process_cpu_s"] = user + (after.children_system - before.children_system)
    row["process_wall_s"] = time.perf_counter() - wall
    return row


def compare(rows: list[dict[str, Any]]) -> None:
    """Moments of the wgf row against the NumPyro draws (in place); drops the draws."""
    import numpy as np

    ref = next((np.asarray(r["coords"]) for r in rows if r["method"] == "numpyro" and "coords" in r), None)
    for row in rows:
        coords = row.pop("coords", None)
        if ref is None or coords is None or row["method"] == "numpyro":
            continue
        coords = np.asarray(coords)
        sd = ref.std(0)
        err = (coords.mean(0) - ref.mean(0)) / sd
        ratio = coords.std(0) / sd
        row.update(
            max_abs_mean_err=float(np.abs(err).max()),
            sd_ratio_min=float(ratio.min()),
            sd_ratio_max=float(ratio.max()),
        )
        row["pass"] = bool(
            row["max_abs_mean_err"] <= 0.1
            and 0.9 <= row["sd_ratio_min"]
            and row["sd_ratio_max"] <= 1.1
            and row.get("khat", 0.0) < 0.7
        )


def render(saved: dict[str, Any]) -> str:
    rows = saved["rows"]
    nuts = next((r for r in rows if r["method"] == "numpyro" and "process_cpu_s" in r), None)

    def cell(value: Any, fmt: str) -> str:
        return "—" if value is None else format(value, fmt)

    table = []
    for r in rows:
        if "error" in r:
            table.append([r["method"], f"failed: {r['error']}"] + ["—"] * 9)
            continue
        ratio = r["process_cpu_s"] / nuts["process_cpu_s"] if nuts else None
        table.append(
            [
                r["method"],
                r["settings"],
                cell(r["process_cpu_s"], ".1f"),
                cell(r["fit_cpu_s"], ".1f"),
                cell(r["process_wall_s"], ".1f"),
                cell(ratio, ".2f"),
                cell(r.get("max_abs_mean_err"), ".3f"),
                "—" if "sd_ratio_min" not in r else f"{r['sd_ratio_min']:.3f}-{r['sd_ratio_max']:.3f}",
                cell(r.get("khat"), ".2f"),
                "—" if "steps" not in r else f"{r['steps']} ({r['stop_reason']})",
                ", ".join(r.get("warnings", [])) or "none",
            ]
        )
    header = [
        "method",
        "settings",
        "process CPU s",
        "fit CPU s",
        "wall s",
        "CPU / NumPyro",
        "max abs mean err (ref sd)",
        "sd ratio",
        "k-hat",
        "steps (stop)",
        "warnings",
    ]
    return "\n".join(
        [
            f"### Large data: {saved['rows_n']:,} x {saved['features']} synthetic BLR "
            "(`benchmarks/large_data.py`)",
            "",
            f"Run {saved['started']} on {saved['machine']}; command `{saved['command']}`. Each method "
            "in a fresh process: process CPU s counts imports and JIT compilation, fit CPU s the fit "
            "alone (NumPyro: `MCMC.run`; wgf: `run()` + 4096 draws). Reference: the NumPyro draws "
            "(means and sds of `w` and `log alpha`); NUTS quality = max abs mean err <= 0.1, sd "
            "ratios in [0.9, 1.1], k-hat < 0.7.",
            "",
            markdown_table(header, table),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000, help="training rows")
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nuts-warmup", type=int, default=1000)
    parser.add_argument("--nuts-draws", type=int, default=NUM_DRAWS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--json", type=Path, default=None, help="also dump the results here")
    parser.add_argument("--from-json", type=Path, default=None, help="run nothing: render a --json file")
    parser.add_argument("--worker", choices=METHODS, default=None, help=argparse.SUPPRESS)
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.rows < 10 or args.features < 1:
        parser.error("--rows must be at least 10 and --features at least 1")
    if args.worker is not None:
        row = worker_numpyro(args) if args.worker == "numpyro" else worker_wgf(args)
        print(json.dumps(row))
        return
    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
    else:
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
        rows = [run_worker(method, args) for method in args.methods]
        compare(rows)
        saved = {
            "rows": rows,
            "rows_n": args.rows,
            "features": args.features,
            "started": started,
            "machine": machine("cpu"),
            "command": "python benchmarks/large_data.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        }
        for row in rows:
            print(json.dumps(row), flush=True)
        if args.json is not None:
            args.json.write_text(json.dumps(saved, indent=1))
    body = render(saved)
    if not args.no_write:
        publish(SECTION, body, args.out, args.docs)
    print(body)


if __name__ == "__main__":
    main()
