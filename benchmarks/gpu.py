"""The GPU run: the CUDA tests, BLR against NumPyro NUTS and the dimension-scaling rows (issue 16).

One command for a machine with one GPU, built to finish within ``--budget`` seconds (450 by default,
under 8 minutes with the start of Python).  It runs these parts in order, each in its own Python
process (the CUDA tests in pytest's) under a time cap, so that a part that fails, runs out of GPU
memory or out of time records that and the other parts still run:

- ``cuda_tests``: ``pytest -m cuda`` on the test files that hold CUDA tests;
- ``blr-breast_cancer-wgfinfer``: ``WGFSampler(model=logistic.model)`` with its defaults (and
  ``time_budget``) on ``--device``, on scikit-learn's breast-cancer data (80/20 split, seed 0): test
  accuracy and log-lik of 4096 draws, the PSIS k-hat, process CPU seconds beside wall seconds, and
  the time of 10^5 more draws with their log-densities;
- ``blr-breast_cancer-numpyro``: NumPyro NUTS (1000 warmup + 1000 draws, one chain) on the same data
  on JAX's GPU where JAX has one, else on JAX's CPU (the row says so), else a row "not available";
- ``blr-covtype-wgfinfer``, ``blr-covtype-numpyro``: the same on covtype-sized data: the real covtype
  (cover type 2 against the rest) where scikit-learn's ``fetch_covtype`` finds it without
  downloading, else a generated stand-in of the same shape, 581,012 x 54
  (``datasets.make_synthetic_logistic``; the row names which);
- ``dimension_scaling``: rows of ``benchmarks/dimension_scaling.py`` (seconds per JKO step of the
  ICNN and variational schemes at D = 2 ... 128, KSD where the steps were run in full), as many as
  fit in the part's cap.

A part's cap is its own share of the budget plus whatever the parts before it left unused.  The rows
(JSON, ``gpu.json``) and the section (``gpu.md``) are rewritten into ``--out`` after every part;
``--docs docs/benchmarks.md`` also replaces the section there.  The device's name, torch and CUDA
versions and JAX's devices are recorded with the rows.

    python benchmarks/gpu.py --device cuda --out $OUT        # the GPU run
    python benchmarks/gpu.py --device cpu --quick --out /tmp/gpu   # the CPU path at tiny sizes
    python benchmarks/gpu.py --from-json gpu.json --docs docs/benchmarks.md   # the docs from the rows

How to get the dependencies onto a machine without a network (wheels of Pyro and ArviZ):
``benchmarks/gpu_wheels.sh`` and docs/benchmarks.md ("GPU").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]  # this checkout's wgfinfer, also where none is installed
from _harness import add_output_arguments, machine, markdown_table, publish, record_row, timed  # noqa: E402

SECTION = "gpu"
COVTYPE_SHAPE = (581_012, 54)
NUM_DRAWS = 4096
EXTRA_DRAWS = 100_000
NUTS_WARMUP, NUTS_DRAWS = 1000, 1000
NUTS_CPU_FALLBACK_COVTYPE = (200, 200)
"""NumPyro NUTS counts on covtype when JAX has no GPU (1000 + 1000 on a CPU would not fit the cap)."""
QUICK_WGF = "--quick: ICNN(5 it, (8,)), 1 step, Laplace start, no checks"
METRIC_CELLS = 60_000_000
"""At most this many (draw, test point) pairs enter the predictive metrics (draws are thinned)."""


@dataclasses.dataclass(frozen=True)
class Part:
    """A part of the run: its name and its share of the budget (seconds)."""

    name: str
    share: float


PARTS = (
    Part("cuda_tests", 40),
    Part("blr-breast_cancer-wgfinfer", 90),
    Part("blr-breast_cancer-numpyro", 40),
    Part("blr-covtype-wgfinfer", 120),
    Part("blr-covtype-numpyro", 60),
    Part("dimension_scaling", 100),
)
DEFAULT_BUDGET = sum(p.share for p in PARTS)
MIN_CAP = 5.0
"""A part is not started with fewer seconds than this left."""


# ------------------------------------------------------------------------------------ helpers
def _sync(device: str) -> Callable[[], object] | None:
    """``torch.cuda.synchronize`` for a CUDA device, else ``None`` (see :func:`_harness.timed`)."""
    import torch

    return torch.cuda.synchronize if device.startswith("cuda") and torch.cuda.is_available() else None


def torch_description(device: str) -> dict[str, Any]:
    """The torch device as recorded with the rows: name, memory, torch and CUDA versions."""
    import torch

    info: dict[str, Any] = {"device": device, "torch": torch.__version__, "cuda": torch.version.cuda}
    if device.startswith("cuda"):
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            info.update(name=torch.cuda.get_device_name(0), memory_gib=round(props.total_memory / 2**30, 1))
        else:
            info["name"] = "none: torch sees no CUDA device"
    else:
        info["name"] = machine("cpu")
    return info


def load_blr(name: str, quick: bool, seed: int) -> tuple[Any, str]:
    """The data set of a BLR part and a phrase saying what it is.

    ``"covtype"`` is the real covtype where scikit-learn has it on disk (``y = 1`` for cover type 2,
    lodgepole pine, the most common), else a generated stand-in of its shape; ``quick`` shrinks the
    stand-in to 1000 rows and breast cancer stays as it is.
    """
    from wgfinfer.problems import datasets

    if name == "breast_cancer":
        return datasets.load_breast_cancer(seed=seed), "scikit-learn's breast-cancer data"
    rows, features = (1000, COVTYPE_SHAPE[1]) if quick else COVTYPE_SHAPE
    if not quick:
        try:
            from sklearn.datasets import fetch_covtype

            bunch = fetch_covtype(download_if_missing=False)
        except OSError:
            bunch = None
        if bunch is not None:
            names = [f"x{i}" for i in range(1, bunch.data.shape[1] + 1)]
            y = (bunch.target == 2).astype(float)
            data = datasets.split_and_standardise(bunch.data, y, "covtype", names, seed=seed)
            return data, "covtype (scikit-learn's copy), cover type 2 against the rest"
    data = datasets.make_synthetic_logistic(n_samples=rows, n_features=features, seed=seed)
    return data, (
        f"generated stand-in of covtype's shape ({rows:,} x {features}; "
        "`datasets.make_synthetic_logistic`): covtype is not installed"
    )


def predictive(w: Any, data: Any, device: str) -> dict[str, Any]:
    """Test accuracy and log-lik of draws ``w`` (thinned to :data:`METRIC_CELLS`), on ``device``."""
    from wgfinfer.problems import logistic

    n_test = data.x_test.shape[0]
    keep = max(1, min(w.shape[0], METRIC_CELLS // n_test))
    w = w[:: math.ceil(w.shape[0] / keep)]
    metrics = logistic.predictive_metrics(w.to(device), data.x_test.to(device), data.y_test.to(device))
    return {**metrics, "metric_draws": int(w.shape[0])}


# -------------------------------------------------------------------------------------- parts
def run_cuda_tests(args: argparse.Namespace, cap: float, save: Callable[[dict], None]) -> None:
    """``pytest -m cuda`` on the test files holding ``@pytest.mark.cuda``; one row per test."""
    files = sorted(
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").glob("test_*.py")
        if "pytest.mark.cuda" in p.read_text()
    )
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-m", "cuda", "-p", "no:cacheprovider", *files]
    with timed() as clock:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=cap, env=_child_env()
        )
    found = re.findall(r"^(PASSED|FAILED|ERROR|XFAIL|XPASS) (\S+)(?: - (.*))?$", done.stdout, re.M)
    found += [
        ("SKIPPED", test, reason)
        for test, reason in re.findall(r"^SKIPPED \[\d+\] (\S+?): (.*)$", done.stdout, re.M)
    ]
    if not found:
        raise RuntimeError(
            f"pytest (rc {done.returncode}) reported no test: {_tail(done.stdout + done.stderr)}"
        )
    for outcome, test, reason in found:
        save({"part": "cuda_tests", "test": test, "outcome": outcome.lower(), "reason": reason or ""})
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    save({"part": "cuda_tests", "test": "(all)", "outcome": summary.strip("= "), "wall_s": clock.wall})


def run_blr_wgfinfer(
    dataset: str, args: argparse.Namespace, cap: float, save: Callable[[dict], None]
) -> None:
    """``WGFSampler(model=logistic.model)`` with its defaults on ``--device``."""
    from posteriors import recorded_warnings

    import wgfinfer
    from wgfinfer.problems import logistic

    device, seed = args.device, args.seed
    with timed() as load_clock:
        data, source = load_blr(dataset, args.quick, seed)
    row: dict[str, Any] = {
        "part": f"blr-{dataset}-wgfinfer",
        "dataset": dataset,
        "data": source,
        "shape": f"{data.x_train.shape[0]} × {data.n_features}",
        "method": "wgfinfer",
        "device": device,
        "load_s": load_clock.wall,
    }
    # training may spend 40% of the cap: the rest is the start, the initial fit, the checks, draws
    # and k-hat (on 2 shared CPU cores breast cancer took 182 s: 18 steps, then 97 s for 10^5 draws)
    options: dict[str, Any] = {"progress_bar": False, "seed": seed, "time_budget": max(cap * 0.4, 1.0)}
    if args.quick:
        tiny = wgfinfer.ICNN(iters_per_step=5, hidden=(8,))
        options.update(scheme=tiny, n_steps=1, init="laplace", check=False)
    sync = _sync(device)
    sampler = wgfinfer.WGFSampler(model=logistic.model, device=device, **options)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    with recorded_warnings() as found, timed(sync) as clock:
        sampler.run(x_train, y_train)
        samples = sampler.get_samples(NUM_DRAWS, seed=seed + 1)
    row.update(
        settings=(QUICK_WGF if args.quick else "WGFSampler defaults")
        + f", time_budget {options['time_budget']:.0f} s, {sampler.dtype}".replace("torch.", ""),
        steps=len(sampler.history),
        stop_reason=sampler.stop_reason,
        wall_s=clock.wall,
        cpu_s=clock.cpu,
        warnings=[w["category"] for w in found],
    )
    row.update(predictive(samples["w"], data, device))
    save(row)  # a row now, in case what follows fails or runs out of time
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # k-hat is in the row either way
        khat_draws = 512 if args.quick else NUM_DRAWS
        row["khat"] = float(sampler.diagnostics(num_samples=khat_draws, seed=seed + 2)["khat"])
    draws = 1000 if args.quick else EXTRA_DRAWS
    with timed(sync) as extra:
        sampler.sample(draws, return_log_prob=True, seed=seed + 3)
    row.update(extra_draws=draws, extra_s=extra.wall, extra_note="measured")
    save(row)


def _jax_device(device: str) -> tuple[Any, str]:
    """JAX's device for NumPyro: its GPU when ``device`` is CUDA and JAX has one, else its CPU, and
    a phrase saying which (and why a CUDA run fell back to the CPU).

    Raises
    ------
    ImportError
        If JAX or NumPyro is not installed.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # leave the GPU to others
    import jax
    import numpyro  # noqa: F401

    if device.startswith("cuda"):
        try:
            gpus = jax.devices("gpu")
        except Exception as exc:  # no GPU backend, or one that fails to start: NumPyro on the CPU
            return jax.devices("cpu")[0], f"JAX's CPU (JAX has no GPU here: {str(exc).splitlines()[0]})"
        return gpus[0], f"JAX's GPU ({gpus[0].device_kind})"
    return jax.devices("cpu")[0], "JAX's CPU"


def run_blr_numpyro(dataset: str, args: argparse.Namespace, cap: float, save: Callable[[dict], None]) -> None:
    """NumPyro NUTS, one chain, on JAX's GPU (or CPU, labelled); warmup and draws timed apart."""
    import numpy as np

    row: dict[str, Any] = {"part": f"blr-{dataset}-numpyro", "dataset": dataset, "method": "numpyro"}
    try:
        jax_device, where = _jax_device(args.device)
    except ImportError as exc:
        save({**row, "not_available": f"not available: {exc}"})
        return
    import jax
    import numpyro
    import torch
    from numpyro.diagnostics import effective_sample_size
    from numpyro.infer import MCMC, NUTS
    from posteriors import _numpyro_models, recorded_warnings

    with timed() as load_clock:
        data, source = load_blr(dataset, args.quick, args.seed)
    on_gpu = jax_device.platform == "gpu"
    if args.quick:
        warmup, draws = 10, 10
    elif dataset == "covtype" and not on_gpu:
        warmup, draws = NUTS_CPU_FALLBACK_COVTYPE
    else:
        warmup, draws = NUTS_WARMUP, NUTS_DRAWS
    row.update(
        data=source,
        shape=f"{data.x_train.shape[0]} × {data.n_features}",
        device=f"jax:{jax_device.platform}",
        jax_device=str(jax_device),
        where=where,
        load_s=load_clock.wall,
        settings=f"NumPyro {numpyro.__version__} NUTS (JAX {jax.__version__}, float32), "
        f"{warmup} warmup + {draws} draws, 1 chain, on {where}",
        warmup=warmup,
        draws=draws,
    )
    model, _ = _numpyro_models()["blr-breast_cancer"]()  # the suite's NumPyro BLR model, any data
    with jax.default_device(jax_device):
        x, y = (jax.device_put(np.asarray(t.numpy()), jax_device) for t in (data.x_train, data.y_train))
        mcmc = MCMC(NUTS(model), num_warmup=warmup, num_samples=draws, progress_bar=False)
        with recorded_warnings() as found, timed() as warm:
            mcmc.warmup(jax.random.PRNGKey(args.seed), x, y, collect_warmup=False)
            jax.block_until_ready(mcmc.post_warmup_state)
        with recorded_warnings() as found_too, timed() as sample:
            mcmc.run(mcmc.post_warmup_state.rng_key, x, y, extra_fields=("diverging",))
            draws_jax = mcmc.get_samples()
            samples = {k: np.asarray(v) for k, v in draws_jax.items()}
    w = torch.as_tensor(samples["w"], dtype=torch.float64)
    coords = np.concatenate([samples["w"], np.log(samples["alpha"])[:, None]], axis=1)
    per_draw = sample.wall / draws
    row.update(
        samples_on=str(next(iter(draws_jax["w"].devices()))),
        wall_s=warm.wall + sample.wall,
        cpu_s=warm.cpu + sample.cpu,
        warmup_s=warm.wall,
        sample_s=sample.wall,
        extra_draws=EXTRA_DRAWS,
        extra_s=per_draw * EXTRA_DRAWS,
        extra_note="extrapolated",
        ess=float(effective_sample_size(coords[None]).min()),
        divergences=int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum()),
        warnings=[w_["category"] for w_ in found + found_too],
    )
    row.update(predictive(w, data, "cpu"))
    save(row)


def run_dimension_scaling(args: argparse.Namespace, cap: float, save: Callable[[dict], None]) -> None:
    """Rows of ``benchmarks/dimension_scaling.py``, D by D (both schemes at a D before the next D);
    no row starts that the last row's time says would not end within the cap."""
    import dimension_scaling

    if args.quick:
        dims, sizes = [2, 4], dict(steps=2, timing_steps=1, iters=5, batch=32, width=8, ksd_samples=200)
    else:
        dims, sizes = (
            [2, 8, 32, 64, 128],
            dict(steps=10, timing_steps=2, iters=200, batch=256, width=64, ksd_samples=2000),
        )
    options = argparse.Namespace(
        **sizes,
        icnn_quality_max_dim=32,
        dual_head="softplus",
        pca_dim=-1,  # no figure
        figures=None,
        device=args.device,
        seed=args.seed,
    )
    started, last = time.perf_counter(), 0.0
    for dim in dims:
        for scheme in ("variational", "icnn"):
            elapsed = time.perf_counter() - started
            if elapsed + 1.5 * last > cap - 10:
                save({"part": "dimension_scaling", "dim": dim, "scheme": scheme, "not_run": "cap"})
                continue
            with timed() as clock:
                row = dimension_scaling.run_one(dim, scheme, options)
            last = clock.wall
            save({"part": "dimension_scaling", **row, "row_s": clock.wall, **sizes})


def run_part(name: str, args: argparse.Namespace, cap: float, save: Callable[[dict], None]) -> None:
    """Run the part ``name`` (in this process) under the cap ``cap`` (seconds)."""
    if name == "cuda_tests":
        run_cuda_tests(args, cap, save)
    elif name == "dimension_scaling":
        run_dimension_scaling(args, cap, save)
    else:
        _, dataset, method = name.split("-")
        runner = run_blr_wgfinfer if method == "wgfinfer" else run_blr_numpyro
        runner(dataset, args, cap, save)


# ------------------------------------------------------------------------------ orchestration
def _child_env() -> dict[str, str]:
    """The environment of a part's process: this checkout first on ``PYTHONPATH``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _tail(text: str, lines: int = 3) -> str:
    return " / ".join(line.strip() for line in text.strip().splitlines()[-lines:])


def caps(parts: tuple[Part, ...], remaining: float, index: int) -> float:
    """The cap of ``parts[index]`` with ``remaining`` seconds left: its share plus what the parts
    before it left unused, i.e. ``remaining`` less the shares of the parts after it."""
    later = sum(p.share for p in parts[index + 1 :])
    return min(remaining, max(parts[index].share, remaining - later))


def _part_process(name: str, args: argparse.Namespace, cap: float, scratch: Path, rows: list) -> dict:
    """Run the part ``name`` in a process of its own under the cap; append the rows it saved (also
    those of a process that failed or timed out) and return its status."""
    path = scratch / f"{name}.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--part-json", str(path)]
    command += ["--part-cap", f"{cap:.1f}", "--device", args.device, "--seed", str(args.seed)]
    command += ["--quick"] if args.quick else []
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=cap, env=_child_env())
    finally:
        if path.exists():
            rows += json.loads(path.read_text())["rows"]
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr[-4000:])
    if done.returncode == 0:
        return {"status": "ok"}
    return {"status": f"failed (exit {done.returncode})", "error": _tail(done.stderr)}


def run_parts(args: argparse.Namespace, meta: dict, store: Callable[[list, list], None]) -> tuple[list, list]:
    """Each part in its own process (the CUDA tests in pytest's); returns ``(rows, statuses)``, stored
    after every part."""
    rows: list[dict] = []
    statuses: list[dict] = []
    selected = tuple(p for p in PARTS if p.name in args.parts)
    scale = args.budget / DEFAULT_BUDGET
    selected = tuple(dataclasses.replace(p, share=p.share * scale) for p in selected)
    deadline = time.perf_counter() + args.budget
    with tempfile.TemporaryDirectory(prefix="wgfinfer-gpu-") as scratch:
        for index, part in enumerate(selected):
            cap = caps(selected, deadline - time.perf_counter(), index)
            status: dict[str, Any] = {"part": part.name, "cap_s": round(cap, 1)}
            if cap < args.min_cap:
                statuses.append({**status, "status": "not run: budget spent"})
                store(rows, statuses)
                continue
            print(f"[gpu] {part.name}: cap {cap:.0f} s", flush=True)
            start = time.perf_counter()
            try:
                if part.name == "cuda_tests":  # pytest is a process of its own already
                    run_cuda_tests(args, cap, rows.append)
                    status["status"] = "ok"
                else:
                    status.update(_part_process(part.name, args, cap, Path(scratch), rows))
            except subprocess.TimeoutExpired as exc:
                err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
                status.update(status=f"timed out after {cap:.0f} s", error=_tail(err))
            except Exception as exc:  # recorded, and the other parts run
                status.update(status="failed", error=f"{type(exc).__name__}: {_tail(str(exc))}")
            status["seconds"] = round(time.perf_counter() - start, 1)
            statuses.append(status)
            store(rows, statuses)
    return rows, statuses


# ---------------------------------------------------------------------------------- rendering
def _f(value: Any, spec: str, missing: str = "—") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def render(rows: list[dict], statuses: list[dict], meta: dict) -> str:
    """The markdown section ``gpu``."""
    dev = meta["torch_device"]
    lines = [
        "### GPU run (`benchmarks/gpu.py`)",
        "",
        f"Run started {meta['started']}, {meta['elapsed_s']:.0f} s of a {meta['budget_s']:.0f} s budget.  "
        f"Device `{dev['device']}`: **{dev['name']}**"
        + (f", {dev['memory_gib']} GiB" if dev.get("memory_gib") else "")
        + f"; torch {dev['torch']}, CUDA {dev['cuda'] or 'none (CPU build)'}.  "
        + (f"Host: {meta['host']}.  " if dev["device"] != "cpu" else "")
        + f"Command: `{meta['command']}`.",
    ]
    if meta.get("quick"):
        lines += ["", "**`--quick`: tiny sizes that check the script's path; the numbers mean nothing.**"]
    lines += [
        "",
        markdown_table(
            ["part", "status", "s", "cap s", "error"],
            [
                [
                    s["part"],
                    s["status"],
                    _f(s.get("seconds"), ".0f"),
                    _f(s["cap_s"], ".0f"),
                    s.get("error", ""),
                ]
                for s in statuses
            ],
        ),
    ]
    tests = [r for r in rows if r["part"] == "cuda_tests"]
    if tests:
        lines += ["", "CUDA tests (`pytest -m cuda`):", ""]
        lines.append(
            markdown_table(
                ["test", "outcome"],
                [
                    [f"`{r['test']}`", r["outcome"] + (f" ({r['reason']})" if r.get("reason") else "")]
                    for r in tests
                ],
            )
        )
    blr = [r for r in rows if r["part"].startswith("blr-")]
    if blr:
        sources = dict.fromkeys(f"{r['dataset']}: {r['data']}" for r in blr if r.get("data"))
        lines += [
            "",
            "Bayesian logistic regression (`wgfinfer.problems.logistic.model`, 80/20 split, seed "
            f"{meta['seed']}); data: " + "; ".join(sources) + ".  *wall s / CPU s*: wgfinfer `run()` + "
            f"{NUM_DRAWS} draws, NumPyro warmup (with its compilation) + draws; *10^5 more draws*: "
            "wgfinfer measured with log q, NumPyro extrapolated from its sampling phase (whose second "
            "compilation it includes).  Test metrics of the posterior-predictive mean on the draws "
            "(thinned on covtype).",
            "",
        ]
        header = ["data", "n train × d", "method", "settings", "test acc", "test log-lik", "wall s", "CPU s"]
        header += ["10^5 more draws s", "PSIS k-hat", "min bulk ESS", "divergences", "warnings"]
        table = []
        for r in blr:
            if r.get("not_available"):
                table.append([r["dataset"], "—", r["method"], r["not_available"], *["—"] * 9])
                continue
            extra = _f(r.get("extra_s"), ".2f")
            if r.get("extra_note") == "extrapolated" and extra != "—":
                extra = f"≈{extra} (extrap.)"
            table.append(
                [
                    r["dataset"],
                    r["shape"],
                    f"{r['method']} ({r['device']})",
                    r["settings"],
                    _f(r.get("accuracy"), ".4f"),
                    _f(r.get("log_lik"), ".4f"),
                    _f(r.get("wall_s"), ".1f"),
                    _f(r.get("cpu_s"), ".1f"),
                    extra,
                    _f(r.get("khat"), ".2f"),
                    _f(r.get("ess"), ".0f"),
                    _f(r.get("divergences"), "d"),
                    ", ".join(dict.fromkeys(r.get("warnings") or [])) or "none",
                ]
            )
        lines.append(markdown_table(header, table))
    dims = [r for r in rows if r["part"] == "dimension_scaling"]
    if dims:
        from dimension_scaling import fmt

        done = [r for r in dims if "step_time" in r]
        base = {r["scheme"]: r["step_time"] for r in done if r["dim"] == min(x["dim"] for x in done)}
        first = done[0] if done else {}
        lines += [
            "",
            "Dimension scaling (`benchmarks/dimension_scaling.py`'s rows: GMM of 10 unit components, "
            f"h = 0.1, {first.get('iters', '?')} iterations x batch {first.get('batch', '?')} per step, "
            f"width {first.get('width', '?')}; {first.get('steps', '?')} steps where KSD is given, else "
            f"{first.get('timing_steps', '?')} timing steps; KSD on {first.get('ksd_samples', '?')} draws):",
            "",
        ]
        table = []
        for r in dims:
            if "step_time" not in r:
                table.append([r["dim"], r["scheme"], "not run: the part's cap", *["—"] * 5])
                continue
            table.append(
                [
                    r["dim"],
                    r["scheme"],
                    f"{r['step_time']:.3f}",
                    f"{r['step_time'] / base[r['scheme']]:.2f}" if r["scheme"] in base else "—",
                    r["steps"],
                    fmt(r, "ksd"),
                    fmt(r, "ksd_exact"),
                    fmt(r, "symkl", 3),
                ]
            )
        header = ["D", "scheme", "s / JKO step", "× smallest D", "steps run", "KSD flow", "KSD exact draws"]
        lines.append(markdown_table([*header, "SymKL"], table))
    if meta.get("note"):
        lines += ["", meta["note"]]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda", help="torch device of wgfinfer (default: cuda)")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="seconds for all parts")
    parser.add_argument(
        "--parts", nargs="+", default=[p.name for p in PARTS], choices=[p.name for p in PARTS]
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the CPU path in seconds")
    parser.add_argument("--from-json", type=Path, default=None, help="render a saved gpu.json instead")
    parser.add_argument("--note", default="", help="a line under the section's tables")
    add_output_arguments(parser)
    parser.add_argument("--min-cap", type=float, default=MIN_CAP, help=argparse.SUPPRESS)  # tests
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)  # a part's own process
    parser.add_argument("--part-json", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--part-cap", type=float, default=60.0, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.part is not None:
        rows: list[dict] = []

        def save(row: dict) -> None:
            """Save ``row`` (again, if it is the last row saved and has grown since) to --part-json."""
            if rows and rows[-1] is row:
                rows.pop()
            record_row(rows, row, {}, args.part_json)

        run_part(args.part, args, args.part_cap, save)
        return

    if args.from_json is not None:
        saved = json.loads(args.from_json.read_text())
        rows, statuses, meta = saved["rows"], saved["statuses"], saved["meta"]
        if args.note:
            meta["note"] = args.note
    else:
        meta = {
            "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python benchmarks/gpu.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "torch_device": torch_description(args.device),
            "host": machine("cpu"),
            "budget_s": args.budget,
            "seed": args.seed,
            "quick": args.quick,
            "note": args.note,
            "elapsed_s": 0.0,
        }
        start = time.perf_counter()

        def store(rows: list, statuses: list) -> None:
            meta["elapsed_s"] = time.perf_counter() - start
            if not args.no_write:
                args.out.mkdir(parents=True, exist_ok=True)
                saved = {"rows": rows, "statuses": statuses, "meta": meta}
                (args.out / "gpu.json").write_text(json.dumps(saved, indent=1, default=str))
                publish(SECTION, render(rows, statuses, meta), args.out)

        rows, statuses = run_parts(args, meta, store)
    body = render(rows, statuses, meta)
    print(body)
    if not args.no_write:
        publish(SECTION, body, args.out, args.docs)


if __name__ == "__main__":
    main()
