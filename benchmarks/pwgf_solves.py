"""Cost and accuracy of the PWGF scheme's metric solves ``G_hat eta = -grad F`` (issue 16, point 1).

Breast-cancer Bayesian logistic regression with ``wgfinfer.problems.logistic.PWGF_SETTINGS`` (six
affine coupling layers, 15 steps of 0.6 in 30 Euler steps, float64, ``init="gaussian"``), once per
variant of the :class:`~wgfinfer.PWGF` options.  Per Euler step it records the Krylov iterations,
the final relative residual ``|G_hat eta + grad F| / |grad F|`` and the process CPU and wall seconds
of the solve (metric set-up included) and of the whole Euler step; at the end, the process CPU
seconds of ``run()``, the free-energy monitor (``kl_minus_log_z`` of the last history entry: lower
is a lower KL) and the PSIS k-hat of four sets of 4096 fresh draws.

A variant is ``LABEL`` or ``LABEL:KEY=VALUE,KEY=VALUE`` with ``KEY`` a ``PWGF`` option
(``warm_start``, ``metric_samples``, ``preconditioner``, ``damping``, ``max_iter``, ``tol``, ...;
``metric_samples=null`` puts all draws into the metric, as before ``PWGF_SETTINGS`` used 2048); the
table names each row by its options that differ from today's ``PWGF_SETTINGS``;
the special key ``product=func`` times the metric products with ``torch.func`` (``jvp`` then
``vjp``) instead of the double-backward products of
:func:`wgfinfer.schemes.pwgf.metric_vector_product`.

Results go to ``--out`` (default: the current directory) as ``pwgf_solves.json`` and
``pwgf_solves.md``; nothing tracked is written unless ``--docs`` names a file.

    OMP_NUM_THREADS=1 python benchmarks/pwgf_solves.py --variants default all-draws:metric_samples=null
    OMP_NUM_THREADS=1 python benchmarks/pwgf_solves.py --variants warm:warm_start=true \\
        subset:metric_samples=1024 jacobi:preconditioner=jacobi --out /tmp/pwgf
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_output_arguments, machine, markdown_table, publish, timed  # noqa: E402

import wgfinfer  # noqa: E402
from wgfinfer.errors import TrainingDivergedError, WGFWarning  # noqa: E402
from wgfinfer.problems import datasets, logistic  # noqa: E402
from wgfinfer.schemes import pwgf  # noqa: E402

NAME = "pwgf_solves"
KHAT_DRAWS = 4096
KHAT_SETS = 4
"""k-hat is reported for this many sets of ``KHAT_DRAWS`` fresh draws (it scatters by about 0.15)."""


def parse_variant(spec: str) -> tuple[str, dict[str, Any], str]:
    """``LABEL[:KEY=VALUE,...]`` as ``(label, PWGF options, product)``; values are read as JSON
    where they parse (``true``, ``1024``, ``1e-3``), as strings otherwise."""
    label, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    product = "double-backward"
    for item in filter(None, rest.split(",")):
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"variant {spec!r}: expected KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        if key == "product":
            if value not in ("double-backward", "func"):
                raise SystemExit(f"variant {spec!r}: product must be double-backward or func")
            product = value
        else:
            options[key] = value
    return label, options, product


def func_metric_vector_product(
    module: torch.nn.Module, params: dict[str, torch.Tensor] | None, z: torch.Tensor, damping: float = 0.0
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v -> G_hat v`` by ``torch.func.jvp`` then ``torch.func.vjp`` (for timing only)."""
    if params is None:
        params = dict(module.named_parameters())
    names = list(params)
    primals = tuple(params[k].detach() for k in names)
    z = z.detach()

    def push(*values: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(module, dict(zip(names, values, strict=True)), (z,))

    _, pullback = torch.func.vjp(push, *primals)

    def product(v: torch.Tensor) -> torch.Tensor:
        tangents = pwgf.unflatten_vector(v.to(primals[0]), primals)
        _, jv = torch.func.jvp(push, primals, tangents)
        out = pwgf.flatten_tensors(pullback(jv / z.shape[0]))
        return out + damping * v if damping else out

    return product


class Recorder:
    """Wraps the scheme's solve and Euler step to time them (restored by :meth:`close`)."""

    def __init__(self, product: str) -> None:
        self.solves: list[dict[str, float]] = []
        self.steps: list[dict[str, float]] = []
        self._saved = (pwgf._solve, pwgf.pwgf_step, pwgf.metric_vector_product, pwgf.MetricProduct.diagonal)
        solve, step, metric, diagonal = self._saved
        self.diagonal_cpu: list[float] = []

        def timed_diagonal(*args: Any, **kwargs: Any) -> Any:
            with timed() as clock:
                out = diagonal(*args, **kwargs)
            self.diagonal_cpu.append(clock.cpu)
            return out

        def timed_solve(*args: Any, **kwargs: Any) -> Any:
            with timed() as clock:
                eta, its, residual = solve(*args, **kwargs)
            self.solves.append(
                {"iterations": its, "residual": residual, "cpu": clock.cpu, "wall": clock.wall}
            )
            return eta, its, residual

        def timed_metric(*args: Any, **kwargs: Any) -> Any:
            with timed() as clock:
                out = (func_metric_vector_product if product == "func" else metric)(*args, **kwargs)
            self.metric_setup.append(clock.cpu)
            return out

        def timed_step(*args: Any, **kwargs: Any) -> Any:
            config = args[4] if len(args) > 4 else kwargs["config"]
            with timed() as clock:
                out = step(*args, **kwargs)
            self.steps.append({"cpu": clock.cpu / config.substeps, "wall": clock.wall / config.substeps})
            return out

        self.metric_setup: list[float] = []
        pwgf._solve, pwgf.pwgf_step, pwgf.metric_vector_product = timed_solve, timed_step, timed_metric
        pwgf.MetricProduct.diagonal = timed_diagonal

    def close(self) -> None:
        pwgf._solve, pwgf.pwgf_step, pwgf.metric_vector_product, pwgf.MetricProduct.diagonal = self._saved


QUICK = {"n_layers": 2, "n_samples": 256, "metric_samples": 128, "n_monitor": 256}
"""``--quick``: a smoke run (one recorded step of a small flow on few draws, from the Laplace start,
whose fit takes a fraction of the Gaussian start's)."""


def run_variant(
    label: str, options: dict[str, Any], product: str, seed: int, quick: bool = False
) -> dict[str, Any]:
    """Train one variant and measure it (see the module docstring)."""
    settings = dict(logistic.PWGF_SETTINGS)
    khat_draws = KHAT_DRAWS
    if quick:
        settings["n_steps"], settings["init"], khat_draws = 1, "laplace", 256
        options = {**QUICK, **options}
    settings["scheme"] = dataclasses.replace(settings["scheme"], **options)
    data = datasets.load_breast_cancer(dtype=torch.float64)
    sampler = wgfinfer.WGFSampler(
        model=logistic.model, seed=seed, progress_bar=False, check=False, **settings
    )
    recorder = Recorder(product)
    error = None
    try:
        with timed() as run_clock, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", WGFWarning)
            sampler.run(data.x_train, data.y_train)
    except TrainingDivergedError as exc:
        error = str(exc).split(";")[0]
    finally:
        recorder.close()
    khats = [float("nan")]
    if error is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            khats = [
                float(sampler.diagnostics(num_samples=khat_draws, seed=seed + 2 + k)["khat"])
                for k in range(KHAT_SETS)
            ]
    last = sampler.history[-1] if sampler.history else {}
    scheme = settings["scheme"]
    iterations = [s["iterations"] for s in recorder.solves]
    residuals = [s["residual"] for s in recorder.solves]
    setup = recorder.metric_setup
    return {
        "variant": label,
        "seed": seed,
        "options": options,
        "product": product,
        "scheme": scheme.options(),
        "euler_steps": len(recorder.solves),
        "steps_done": len(sampler.history),
        "step_cpu_s": statistics.mean(s["cpu"] for s in recorder.steps),
        "step_wall_s": statistics.mean(s["wall"] for s in recorder.steps),
        "solve_cpu_s": statistics.mean(s["cpu"] for s in recorder.solves)
        + (sum(setup) + sum(recorder.diagonal_cpu)) / len(recorder.solves),
        "solve_wall_s": statistics.mean(s["wall"] for s in recorder.solves),
        "iterations_median": statistics.median(iterations),
        "iterations_max": max(iterations),
        "residual_median": statistics.median(residuals),
        "residual_max": max(residuals),
        "above_tol": sum(r > scheme.tol for r in residuals),
        "per_step": [
            {**s, "step_cpu": t["cpu"]}
            for s, t in zip(recorder.solves, _repeat(recorder.steps, scheme.substeps), strict=False)
        ],
        "run_cpu_s": run_clock.cpu,
        "run_wall_s": run_clock.wall,
        "kl_minus_log_z": last.get("kl_minus_log_z"),
        "kl_minus_log_z_se": last.get("kl_minus_log_z_se"),
        "kl": last.get("kl"),
        "khat": khats[0],
        "khats": khats,
        "diverged": error,
        "solve_warnings": sum("metric solve" in str(w.message) for w in caught),
    }


def _repeat(items: list[Any], times: int) -> list[Any]:
    return [item for item in items for _ in range(times)]


def render(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The markdown section."""
    header = [
        "variant",
        "CPU s / Euler step (solve)",
        "iterations (median / max)",
        "residual (median / max)",
        "solves above tol",
        "run() CPU s",
        "KL - log Z",
        f"k-hat (median, range of {KHAT_SETS})",
    ]
    table = []
    seeds = sorted({r.get("seed", meta["seed"]) for r in rows})
    for r in rows:
        seed = f", seed {r.get('seed', meta['seed'])}" if len(seeds) > 1 else ""
        table.append(
            [
                f"{r['variant']} (`{_spec(r)}`){seed}",
                f"{r['step_cpu_s']:.2f} ({r['solve_cpu_s']:.2f})",
                f"{r['iterations_median']:g} / {r['iterations_max']}",
                f"{r['residual_median']:.2g} / {r['residual_max']:.2g}",
                f"{r['above_tol']} of {r['euler_steps']}",
                f"{r['run_cpu_s']:.1f}",
                _free_energy(r),
                f"diverged in step {r['steps_done'] + 1}" if r.get("diverged") else _khats(r),
            ]
        )
    lines = [
        "### PWGF metric solves (`benchmarks/pwgf_solves.py`)",
        "",
        "Breast-cancer BLR with `logistic.PWGF_SETTINGS` (6 coupling layers (32,), 15 × 2 Euler steps of "
        "0.3, float64, init gaussian), one run per variant, training seed "
        f"{', '.join(map(str, seeds))}.  Per Euler step: process CPU seconds of the step and of its "
        "metric solve "
        "(set-up, Jacobi diagonal where used, Krylov iterations), the solver's iterations and final "
        "relative residual "
        "`|G eta + grad F| / |grad F|`; `run()` CPU seconds, the last step's free-energy monitor "
        f"(`kl_minus_log_z` ± its standard error, lower = lower KL) and PSIS k-hat of {KHAT_SETS} sets "
        f"of {KHAT_DRAWS} fresh draws.  A diverged variant shows the steps it completed.",
        "",
        markdown_table(header, table),
        "",
        f"Machine: {meta['machine']}, one process on a core shared with other work.  "
        f"Commands: `{meta['command']}`.",
    ]
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines)


def _free_energy(row: dict[str, Any]) -> str:
    if row["kl_minus_log_z"] is None:
        return "n/a"
    se = row.get("kl_minus_log_z_se")
    return f"{row['kl_minus_log_z']:.3f}" + ("" if se is None else f" ± {se:.3f}")


def _khats(row: dict[str, Any]) -> str:
    khats = row.get("khats", [row["khat"]])
    if len(khats) == 1:
        return f"{khats[0]:.2f}"
    return f"{statistics.median(khats):.2f} ({min(khats):.2f}-{max(khats):.2f})"


def _spec(row: dict[str, Any]) -> str:
    """The row's ``PWGF`` options that differ from today's ``PWGF_SETTINGS`` (``defaults`` if none)."""
    current = logistic.PWGF_SETTINGS["scheme"].options()
    parts = [f"{k}={v}" for k, v in row["scheme"].items() if current.get(k) != v]
    if row["product"] != "double-backward":
        parts.append(f"product={row['product']}")
    return ", ".join(parts) or "defaults"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", nargs="+", default=["default"], metavar="LABEL[:KEY=VALUE,...]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a smoke run: one step of a small flow")
    parser.add_argument(
        "--from-json", type=Path, nargs="+", default=None, help="render saved rows, run nothing"
    )
    parser.add_argument("--note", default="", help="a paragraph under the table")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    command = "OMP_NUM_THREADS=1 python benchmarks/pwgf_solves.py " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    meta = {"machine": machine("cpu"), "command": command, "seed": args.seed, "note": args.note}
    rows: list[dict[str, Any]] = []
    if args.from_json:
        commands = []
        for path in args.from_json:
            saved = json.loads(path.read_text())
            rows += [{"seed": saved["meta"]["seed"], **row} for row in saved["rows"]]
            commands.append(saved["meta"]["command"])
            meta["machine"] = saved["meta"]["machine"]
        meta["command"] = "`; `".join(commands)
    else:
        for spec in args.variants:
            label, options, product = parse_variant(spec)
            start = time.perf_counter()
            row = run_variant(label, options, product, args.seed, quick=args.quick)
            summary = {k: v for k, v in row.items() if k not in ("per_step", "scheme")}
            print(json.dumps(summary), f"({time.perf_counter() - start:.0f} s)", flush=True)
            rows.append(row)
            if not args.no_write:
                args.out.mkdir(parents=True, exist_ok=True)
                (args.out / f"{NAME}.json").write_text(json.dumps({"rows": rows, "meta": meta}, indent=1))
    body = render(rows, meta)
    print(body)
    if not args.no_write:
        for path in publish(NAME, body, args.out, args.docs):
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
