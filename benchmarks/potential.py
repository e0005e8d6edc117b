"""Cost of a Pyro model's log joint: eager Pyro against the traced recording (``jit_compile``).

:class:`wgfinfer.pyro_target.PyroTarget` evaluates a model's log joint for ``n`` particles either by
running the model through Pyro's effect handlers (``jit_compile=False``: *eager*) or by replaying a
:func:`torch.jit.trace` recording of that evaluation (*traced*, timed with ``jit_compile=True``,
:mod:`wgfinfer.traced_potential`; the default ``jit_compile=None`` replays it except for gradients
of large batches, the *default path* column).  This script times both, per evaluation of the value
and its gradient with respect to the particles (what the training and the start fit ask for) and of
the value alone (``--value-particles``: what the outputs ask for), in process CPU seconds and wall
seconds (medians of rounds that alternate the two paths), on suite models of
:mod:`wgfinfer.problems.suite` and on the tutorial-style varying-intercept model of
``benchmarks/vectorisation.py`` (evaluated under ``torch.func.vmap``).  Each point is a fresh
input (a fixed draw around Pyro's initial point), as in training.  The one-time cost of tracing and
verifying a shape is reported beside it.

``--compile`` also times ``torch.compile`` of the eager log joint (Pyro's validation off, one input
shape) at ``--compile-particles`` particles: its compile time (the first call) and its cost per call.

``--chunks`` instead times the default path's log joint (``jit_compile=None``) against the number
of particles it evaluates at once (``PyroTarget`` splits a batch into chunks of at most
``--chunk-elements`` particles x observed values; the library's choice is
:data:`wgfinfer.pyro_target.LOG_JOINT_CHUNK_ELEMENTS`) on logistic regressions of 455, 5920 and
100,000 rows (section ``potential_chunks``).

``--end-to-end NAME...`` instead times whole default runs (``WGFSampler(model=...)``, ``run()`` and
4096 draws with their log-densities, as ``benchmarks/posteriors.py`` times them) with
``jit_compile=False`` and the default in alternation (section ``potential_end_to_end``).

Results go to ``--out`` (default: the current directory) as ``potential.json`` and
``potential.md`` (``potential_end_to_end.*``); nothing tracked is written unless ``--docs`` names a
file.

    OMP_NUM_THREADS=1 python benchmarks/potential.py --docs docs/benchmarks.md
    OMP_NUM_THREADS=1 python benchmarks/potential.py --problems nes1996-nes --particles 256 --compile
    OMP_NUM_THREADS=1 python benchmarks/potential.py --end-to-end nes1996-nes --docs docs/benchmarks.md
    OMP_NUM_THREADS=1 python benchmarks/potential.py --chunks --docs docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import add_output_arguments, machine, markdown_table, publish  # noqa: E402
from vectorisation import intercepts_tutorial  # noqa: E402
from vectorisation import problems as vectorisation_problems  # noqa: E402

from wgfinfer.problems import suite  # noqa: E402
from wgfinfer.pyro_target import LOG_JOINT_CHUNK_ELEMENTS, PyroTarget, particles_per_chunk  # noqa: E402
from wgfinfer.traced_potential import AUTO_GRADIENT_ELEMENTS  # noqa: E402

PROBLEMS = (
    "eight_schools-noncentered",
    "kidiq-kidscore_interaction",
    "nes1996-nes",
    "blr-breast_cancer",
    "hmm_example-hmm_example",
    "diamonds-diamonds",
    "varying-intercepts-vmap",
)
PARTICLES = (1, 256, 1024, 4096)
VALUE_PARTICLES = (4096,)
TUTORIAL = "varying-intercepts-vmap"
CHUNK_PROBLEMS = {
    "blr-breast_cancer": (4096, 4096),
    "blr-twonorm": (4096, 4096),
    "blr-synthetic-100000": (1024, 256),
}
"""The ``--chunks`` problems with their particles per evaluation: (value, value + gradient)."""
CHUNK_ELEMENTS = (2**23, 2**21, 2**20, 2**19)


def build(name: str, jit_compile: bool) -> PyroTarget:
    """The float64 target of a suite problem (or of the tutorial-style model) with ``jit_compile``."""
    if name == TUTORIAL:
        args = vectorisation_problems(torch.float64)["varying-intercepts"][2]
        return PyroTarget(intercepts_tutorial, args, dtype=torch.float64, jit_compile=jit_compile)
    problem = suite.get(name)
    if problem.model is None:
        raise SystemExit(f"{name} is a log-density problem, not a Pyro model")
    args = () if problem.model_args is None else problem.model_args(None)
    return PyroTarget(problem.model, args, dtype=torch.float64, jit_compile=jit_compile)


def inputs(target: PyroTarget, n: int, count: int) -> list[torch.Tensor]:
    """``count`` fixed ``(n, d)`` draws at 0.1 around Pyro's initial point."""
    gen = torch.Generator().manual_seed(n)
    return [
        target.initial_point + 0.1 * torch.randn(n, target.dim, generator=gen, dtype=torch.float64)
        for _ in range(count)
    ]


def evaluation(target: PyroTarget, grad: bool) -> Callable[[torch.Tensor], None]:
    """One evaluation at ``z``: the value (``grad=False``, under ``no_grad``) or value and gradient."""

    def run(z: torch.Tensor) -> None:
        if grad:
            x = z.detach().requires_grad_(True)
            torch.autograd.grad(target.log_density(x).sum(), x)
        else:
            with torch.no_grad():
                target.log_density(z)

    return run


def clocked(fn: Callable[[], Any]) -> tuple[float, float]:
    """Process CPU and wall seconds of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    return time.process_time() - cpu, time.perf_counter() - wall


def time_paths(
    paths: dict[str, Callable[[torch.Tensor], None]], points: list[torch.Tensor], rounds: int, budget: float
) -> dict[str, tuple[float, float]]:
    """Median CPU and wall seconds per evaluation of each path, over ``rounds`` rounds that alternate
    the paths; a round evaluates as many of ``points`` as fit in ``budget`` CPU seconds (one at least)."""
    first = next(iter(paths.values()))
    one, _ = clocked(lambda: first(points[0]))
    per_round = max(1, min(len(points), int(budget / max(one, 1e-6))))
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in paths}
    for r in range(rounds):
        for name, fn in paths.items():
            chosen = [points[(r * per_round + i) % len(points)] for i in range(per_round)]
            cpu, wall = clocked(lambda fn=fn, chosen=chosen: [fn(z) for z in chosen])
            samples[name].append((cpu / per_round, wall / per_round))
    medians = {}
    for name, s in samples.items():
        medians[name] = (statistics.median(c for c, _ in s), statistics.median(w for _, w in s))
    return medians


def measure(name: str, n: int, grad: bool, rounds: int, budget: float) -> dict[str, Any]:
    """One row: eager and traced cost per evaluation of ``n`` particles (and the tracing's cost)."""
    eager, traced = build(name, jit_compile=False), build(name, jit_compile=True)
    points = inputs(eager, n, 8)
    run_eager, run_traced = evaluation(eager, grad), evaluation(traced, grad)
    # calls 1-3 of a shape: eager, eager + trace, eager + verification; then the recording is replayed
    setup = [clocked(lambda z=z: run_traced(z))[0] for z in points[:3]]
    eager_once = statistics.median(clocked(lambda z=z: run_eager(z))[0] for z in points[:3])
    times = time_paths({"eager": run_eager, "traced": run_traced}, points, rounds, budget)
    (eager_cpu, eager_wall), (traced_cpu, traced_wall) = times["eager"], times["traced"]
    row = {
        "problem": name,
        "dim": eager.dim,
        "batching": eager.batching,
        "n": n,
        "gradient": grad,
        "eager_cpu_s": eager_cpu,
        "eager_wall_s": eager_wall,
        "traced_cpu_s": traced_cpu,
        "traced_wall_s": traced_wall,
        "eager_evals_per_cpu_s": 1.0 / eager_cpu,
        "traced_evals_per_cpu_s": 1.0 / traced_cpu,
        "speedup_cpu": eager_cpu / traced_cpu,
        "tracing_cpu_s": max(0.0, setup[1] + setup[2] - 2 * eager_once),
        "traced": bool(traced._potential.traced_keys),
        "jit_reason": traced.jit_reason,
        # the path of the default jit_compile=None (the recording is timed with jit_compile=True)
        "default_path": (
            "traced"
            if traced._potential.traced_keys
            and (not grad or n * traced._potential.observed_size <= AUTO_GRADIENT_ELEMENTS)
            else "eager"
        ),
    }
    print(json.dumps(row), flush=True)
    return row


def measure_compile(name: str, n: int, rounds: int, budget: float) -> dict[str, Any]:
    """``torch.compile`` of the eager log joint (validation off) at ``n`` particles, value and gradient."""
    target = build(name, jit_compile=False)
    points = inputs(target, n, 8)

    def log_joint(z: torch.Tensor) -> torch.Tensor:
        with pyro.validation_enabled(False):
            return target._eager_batched_log_joint(z)

    compiled = torch.compile(log_joint, dynamic=False)

    def run(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], None]:
        def one(z: torch.Tensor) -> None:
            x = z.detach().requires_grad_(True)
            torch.autograd.grad(fn(x).sum(), x)

        return one

    compile_cpu, compile_wall = clocked(lambda: run(compiled)(points[0]))
    paths = {"eager": run(target._batched_log_joint), "compiled": run(compiled)}
    times = time_paths(paths, points, rounds, budget)
    row = {
        "problem": name,
        "n": n,
        "compile_cpu_s": compile_cpu,
        "compile_wall_s": compile_wall,
        "eager_cpu_s": times["eager"][0],
        "compiled_cpu_s": times["compiled"][0],
        "compiled_wall_s": times["compiled"][1],
        "break_even_evaluations": (
            compile_wall / (times["eager"][0] - times["compiled"][0])
            if times["eager"][0] > times["compiled"][0]
            else None
        ),
    }
    print(json.dumps(row), flush=True)
    return row


def end_to_end(name: str, repeats: int, seed: int = 0) -> list[dict[str, Any]]:
    """``WGFSampler(model=...)`` with its defaults (``progress_bar=False``), ``run()`` and 4096 draws
    with their log-densities (the timed block of ``benchmarks/posteriors.py``), with
    ``jit_compile=False`` and the default ``None`` in alternation, ``repeats`` times each."""
    import wgfinfer

    problem = suite.get(name)
    args = () if problem.model_args is None else problem.model_args(None)
    rows = []
    for r in range(repeats):
        # the order alternates: the first run of a process pays for imports and warm caches
        for jit_compile in (False, None) if r % 2 == 0 else (None, False):
            sampler = wgfinfer.WGFSampler(
                model=problem.model, progress_bar=False, seed=seed, jit_compile=jit_compile
            )

            drawn: list[torch.Tensor] = []

            def run(sampler: Any = sampler, drawn: list[torch.Tensor] = drawn) -> None:
                sampler.run(*args)
                drawn.extend(sampler.sample(4096, return_log_prob=True, seed=seed + 1))

            cpu, wall = clocked(run)
            z, log_q = drawn
            potential = sampler.target._potential
            row = {
                "problem": name,
                "repeat": r,
                "jit_compile": jit_compile,
                "cpu_s": cpu,
                "wall_s": wall,
                "n_steps": len(sampler.flow),
                "draws_sha1": hashlib.sha1(z.numpy().tobytes() + log_q.numpy().tobytes()).hexdigest(),
                "traced_shapes": [list(key[0]) + [key[3]] for key in potential.traced_keys],
                "jit_reason": sampler.target.jit_reason,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def chunk_target(name: str) -> PyroTarget:
    """The float64 default-path target of a ``--chunks`` problem."""
    from wgfinfer.problems import datasets, logistic

    if name == "blr-synthetic-100000":  # the training rows of benchmarks/large_data.py
        data = datasets.make_synthetic_logistic(n_samples=125_000, n_features=20, dtype=torch.float64)
        return PyroTarget(logistic.model, (data.x_train, data.y_train), dtype=torch.float64)
    return build(name, jit_compile=None)


def measure_chunks(name: str, elements: list[int], rounds: int, budget: float) -> list[dict[str, Any]]:
    """Rows of one ``--chunks`` problem: CPU and wall seconds per evaluation at each chunk size."""
    target = chunk_target(name)
    observed = target._potential.observed_size
    rows = []
    for grad, n in zip((False, True), CHUNK_PROBLEMS[name], strict=True):
        points = inputs(target, n, 4)
        paths = {}
        evaluate = evaluation(target, grad)
        for size in elements:

            def run(z: torch.Tensor, size: int = size, evaluate: Callable = evaluate) -> None:
                target._chunk = particles_per_chunk(observed, size)
                evaluate(z)

            for z in points[:3]:  # the chunk shapes' calls 1-3: eager, tracing, verification
                run(z)
            paths[size] = run
        times = time_paths(paths, points, rounds, budget)
        for size, (cpu, wall) in times.items():
            row = {
                "problem": name,
                "observed": observed,
                "n": n,
                "gradient": grad,
                "chunk_elements": size,
                "chunk_particles": particles_per_chunk(observed, size),
                "cpu_s": cpu,
                "wall_s": wall,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def render_chunks(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The markdown section ``potential_chunks``."""
    body = []
    for r in rows:
        base = next(
            b["cpu_s"]
            for b in rows
            if (b["problem"], b["gradient"]) == (r["problem"], r["gradient"])
            and b["chunk_elements"] == LOG_JOINT_CHUNK_ELEMENTS
        )
        body.append(
            [
                r["problem"],
                r["observed"],
                r["n"],
                "value + gradient" if r["gradient"] else "value",
                f"2^{r['chunk_elements'].bit_length() - 1}"
                + (" (library)" if r["chunk_elements"] == LOG_JOINT_CHUNK_ELEMENTS else ""),
                r["chunk_particles"],
                _ms(r["cpu_s"]),
                _ms(r["wall_s"]),
                f"{r['cpu_s'] / base:.2f}",
            ]
        )
    header = [
        "problem", "rows", "particles", "evaluates", "chunk (particles x rows)", "particles per chunk",
        "CPU ms", "wall ms", "CPU / library's",
    ]  # fmt: skip
    return (
        "### Pyro log joint by chunk size (`benchmarks/potential.py --chunks`)\n\n"
        f"Run {meta['date']}.  Machine: {meta['machine']}; torch {meta['torch']}, Pyro {meta['pyro']}.\n\n"
        f"Command:\n\n```\n{meta['command']}\n```\n\n"
        "The logistic-regression model of `wgfinfer.problems.logistic` through `PyroTarget` with its "
        "defaults (float64, the traced recording replayed once verified), its batch split into chunks "
        "of at most the given particles x observed values; median CPU and wall milliseconds per "
        "evaluation over rounds that alternate the chunk sizes.  The synthetic rows are those of "
        "`benchmarks/large_data.py` (100,000 x 20).\n\n" + markdown_table(header, body)
    )


def save_section(name: str, saved: dict[str, Any], body: str, args: argparse.Namespace) -> None:
    """Print section ``name`` and, unless ``--no-write``, write ``OUT/<name>.json`` and publish it."""
    print(body)
    if not args.no_write:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"{name}.json").write_text(json.dumps(saved, indent=1) + "\n")
        publish(name, body, args.out, args.docs)


def render_end_to_end(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The markdown section ``potential_end_to_end``."""
    body = []
    for name in dict.fromkeys(r["problem"] for r in rows):
        for jit_compile in (False, None):
            mine = [r for r in rows if r["problem"] == name and r["jit_compile"] is jit_compile]
            body.append(
                [
                    name,
                    f"`jit_compile={jit_compile}`",
                    ", ".join(f"{r['cpu_s']:.1f}" for r in mine),
                    f"{statistics.median(r['cpu_s'] for r in mine):.1f}",
                    ", ".join(f"{r['wall_s']:.1f}" for r in mine),
                    mine[-1]["n_steps"],
                    len(mine[-1]["traced_shapes"]),
                ]
            )
    header = ["problem", "log joint", "CPU s (each run)", "median CPU s", "wall s", "steps", "traced shapes"]
    same = {
        name: len({r["draws_sha1"] for r in rows if r["problem"] == name}) == 1
        for name in dict.fromkeys(r["problem"] for r in rows)
    }
    return (
        "### Pyro log joint, end to end (`benchmarks/potential.py --end-to-end`)\n\n"
        f"Run {meta['date']}.  Machine: {meta['machine']}; torch {meta['torch']}, Pyro {meta['pyro']}.\n\n"
        f"Command:\n\n```\n{meta['command']}\n```\n\n"
        "`WGFSampler(model=...)` with its defaults (`progress_bar=False`, seed 0): `run()` and 4096 "
        "draws with their log-densities, process CPU and wall seconds, eager Pyro "
        "(`jit_compile=False`) and the default (`None`) in alternation (the order switches every "
        "repeat).  Draws and log-densities bit for bit the same in every run: "
        + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in same.items())
        + ".\n\n"
        + markdown_table(header, body)
    )


def _ms(seconds: float) -> str:
    return f"{1000 * seconds:.3g}"


def _row_cells(r: dict[str, Any]) -> list[object]:
    """The table cells of one row (a row whose recording was not used says why, once)."""
    what = "value + gradient" if r["gradient"] else "value"
    cells: list[object] = [r["problem"], r["dim"], r["batching"], r["n"], what, _ms(r["eager_cpu_s"])]
    if not r["traced"]:
        reason = f"eager: {r['jit_reason']}"
        return cells + [
            reason,
            "—",
            f"{r['eager_evals_per_cpu_s']:.3g}",
            "—",
            _ms(r["eager_wall_s"]),
            "—",
            "—",
        ]
    return cells + [
        _ms(r["traced_cpu_s"]),
        f"{r['speedup_cpu']:.2f}x",
        f"{r['eager_evals_per_cpu_s']:.3g}",
        f"{r['traced_evals_per_cpu_s']:.3g}",
        _ms(r["eager_wall_s"]),
        _ms(r["traced_wall_s"]),
        f"{r['tracing_cpu_s']:.3f}",
        r["default_path"],
    ]


def _break_even(c: dict[str, Any]) -> str:
    return "never (slower)" if c["break_even_evaluations"] is None else f"{c['break_even_evaluations']:.0f}"


def render(rows: list[dict[str, Any]], compiled: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    """The markdown section ``potential``."""
    header = [
        "problem", "d", "batching", "n", "evaluates", "eager CPU ms", "traced CPU ms", "speed-up (CPU)",
        "eager evals / CPU s", "traced evals / CPU s", "eager wall ms", "traced wall ms",
        "tracing + check CPU s", "default path",
    ]  # fmt: skip
    body = [_row_cells(r) for r in rows]
    text = (
        "### Pyro log joint: eager against traced (`benchmarks/potential.py`)\n\n"
        f"Run {meta['date']}.  Machine: {meta['machine']}; torch {meta['torch']}, Pyro {meta['pyro']}.\n\n"
        f"Command:\n\n```\n{meta['command']}\n```\n\n"
        "Cost of one evaluation of `PyroTarget.log_density` for `n` particles (float64), the value and "
        "its gradient with respect to the particles (training, start fit) or the value alone under "
        "`no_grad` (outputs): *eager* runs the model through Pyro (`jit_compile=False`), *traced* "
        "replays the `torch.jit.trace` recording of the shape (`jit_compile=True`; "
        "`wgfinfer/traced_potential.py`); *default path* is what the default `jit_compile=None` "
        f"does: traced, except with a gradient beyond {AUTO_GRADIENT_ELEMENTS} particles x observed "
        "values.  Medians over rounds that alternate the two paths, each at "
        "fresh inputs; *tracing + check* is the one-time CPU cost of recording a shape and checking "
        "the recording against Pyro on the shape's second and third calls, beyond their eager cost.  "
        "The machine is shared: wall times include waiting for a core, CPU times do not.\n\n"
        + markdown_table(header, body)
    )
    if compiled:
        text += (
            "\n\n`torch.compile` (inductor, `dynamic=False`) of the eager log joint with Pyro's "
            "validation off, value and gradient; *compile* is the first call (its CPU seconds count this "
            "process only, inductor also compiles in worker processes; inductor's on-disk cache is "
            "kept between runs, so a shape compiled by an earlier run compiles faster):\n\n"
            + markdown_table(
                [
                    "problem",
                    "n",
                    "compile CPU s",
                    "compile wall s",
                    "eager CPU ms",
                    "compiled CPU ms",
                    "evaluations to repay the compile (wall)",
                ],  # fmt: skip
                [
                    [
                        c["problem"],
                        c["n"],
                        f"{c['compile_cpu_s']:.1f}",
                        f"{c['compile_wall_s']:.1f}",
                        _ms(c["eager_cpu_s"]),
                        _ms(c["compiled_cpu_s"]),
                        _break_even(c),
                    ]
                    for c in compiled
                ],  # fmt: skip
            )
        )
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), metavar="NAME")
    parser.add_argument("--particles", type=int, nargs="+", default=list(PARTICLES), metavar="N")
    parser.add_argument("--value-particles", type=int, nargs="*", default=list(VALUE_PARTICLES), metavar="N")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per path (median)")
    parser.add_argument("--budget", type=float, default=0.3, help="CPU seconds of one path in one round")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--compile-particles", type=int, default=256, metavar="N")
    parser.add_argument(
        "--end-to-end",
        nargs="+",
        default=None,
        metavar="NAME",
        help="instead: time default WGFSampler runs of these suite models, eager against the default",
    )
    parser.add_argument("--end-to-end-repeats", type=int, default=2, metavar="K")
    parser.add_argument(
        "--chunks", action="store_true", help="instead: time logistic regressions' log joint by chunk size"
    )
    parser.add_argument(
        "--chunk-elements", type=int, nargs="+", default=list(CHUNK_ELEMENTS), metavar="N",
        help="particles x observed values per chunk (--chunks)",
    )  # fmt: skip
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    given = argv if argv is not None else sys.argv[1:]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine("cpu"),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "command": " ".join(["python benchmarks/potential.py", *given]),
    }
    if args.chunks:
        elements = sorted(set(args.chunk_elements) | {LOG_JOINT_CHUNK_ELEMENTS}, reverse=True)
        rows = [
            row for name in CHUNK_PROBLEMS for row in measure_chunks(name, elements, args.rounds, args.budget)
        ]
        save_section("potential_chunks", {"rows": rows, "meta": meta}, render_chunks(rows, meta), args)
        return 0
    if args.end_to_end:
        rows = [row for name in args.end_to_end for row in end_to_end(name, args.end_to_end_repeats)]
        saved = {"rows": rows, "meta": meta}
        save_section("potential_end_to_end", saved, render_end_to_end(rows, meta), args)
        return 0
    rows = []
    for name in args.problems:
        for n in args.particles:
            rows.append(measure(name, n, True, args.rounds, args.budget))
        for n in args.value_particles:
            rows.append(measure(name, n, False, args.rounds, args.budget))
    compiled = (
        [
            measure_compile(name, args.compile_particles, args.rounds, args.budget)
            for name in args.problems
            if name != TUTORIAL
        ]
        if args.compile
        else []
    )
    saved = {"rows": rows, "compile": compiled, "meta": meta}
    save_section("potential", saved, render(rows, compiled, meta), args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
