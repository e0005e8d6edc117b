"""Smoke runs of the benchmark scripts (their numbers live in docs/benchmarks.md, never in tests)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_same_draws_quick_writes_one_row_per_sampler_scheme(tmp_path):
    out = tmp_path / "rows.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "same_draws.py"), "--quick", "--out", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(out.read_text())
    assert sorted(rows) == ["sampler icnn", "sampler pwgf coupling", "sampler variational"]
    for row in rows.values():
        assert len(row["draws"]) == 16 and set(row["draws"]) <= set("0123456789abcdef")
    assert "scheme objects" in done.stdout
    assert list(tmp_path.iterdir()) == [out]  # writes nothing but --out


def test_vectorisation_benchmark_writes_its_table_into_out_only(tmp_path):
    script = ROOT / "benchmarks" / "vectorisation.py"
    args = ["--particles", "8", "--repeats", "1", "--loop-particles", "2", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "vectorisation.json").read_text())
    assert [row["model"] for row in saved["rows"]] == ["blr-breast-cancer", "varying-intercepts"]
    assert all(row["vmap_s"] > 0 and row["plate_s"] > 0 for row in saved["rows"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vectorisation.json", "vectorisation.md"]


def test_icnn_blocks_benchmark_writes_its_table_into_out_only(tmp_path):
    script = ROOT / "benchmarks" / "icnn_blocks.py"
    args = ["--dims", "2", "--points", "64", "--blocks", "16", "64", "--repeats", "1", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "icnn_blocks.json").read_text())
    assert [(r["order"], r["block"]) for r in saved["rows"]] == [(1, 16), (1, 64), (2, 16), (2, 64)]
    assert all(r["cpu_ms_per_1000"] > 0 for r in saved["rows"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["icnn_blocks.json", "icnn_blocks.md"]


def test_pwgf_solves_benchmark_quick_records_each_variant_into_out_only(tmp_path):
    script = ROOT / "benchmarks" / "pwgf_solves.py"
    args = ["--quick", "--variants", "default", "capped:solver=cg,max_iter=2", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads((tmp_path / "pwgf_solves.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["default", "capped"]
    for row in rows:
        assert row["euler_steps"] == 2 and len(row["per_step"]) == 2 and row["step_cpu_s"] > 0
        assert row["diverged"] is None and math.isfinite(row["khat"])
    assert rows[1]["iterations_max"] <= 2 and rows[1]["scheme"]["solver"] == "cg"
    assert rows[1]["above_tol"] == sum(s["residual"] > 3e-4 for s in rows[1]["per_step"])
    section = (tmp_path / "pwgf_solves.md").read_text()
    assert section.startswith("### PWGF metric solves (`benchmarks/pwgf_solves.py`)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pwgf_solves.json", "pwgf_solves.md"]


def test_potential_benchmark_writes_its_table_into_out_only(tmp_path):
    script = ROOT / "benchmarks" / "potential.py"
    args = ["--problems", "eight_schools-noncentered", "varying-intercepts-vmap", "--particles", "2"]
    args += ["--value-particles", "3", "--rounds", "1", "--budget", "0.001", "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "potential.json").read_text())
    rows = [(r["problem"], r["n"], r["gradient"], r["traced"]) for r in saved["rows"]]
    assert rows == [
        ("eight_schools-noncentered", 2, True, True),
        ("eight_schools-noncentered", 3, False, True),
        ("varying-intercepts-vmap", 2, True, False),  # vmap models are evaluated eagerly
        ("varying-intercepts-vmap", 3, False, False),
    ]
    assert all(r["eager_cpu_s"] > 0 and r["traced_cpu_s"] > 0 for r in saved["rows"])
    assert "torch.jit.trace failed" in saved["rows"][2]["jit_reason"]
    section = (tmp_path / "potential.md").read_text()
    assert section.startswith("### Pyro log joint: eager against traced")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["potential.json", "potential.md"]


def test_benchmark_sections_go_to_out_and_into_docs_only_with_docs(writes_only_in_cwd):
    """The default writes ``blr.md`` into the current directory; ``--docs FILE`` replaces the section in
    FILE (the repository's docs/benchmarks.md is never written by default)."""
    tmp_path = writes_only_in_cwd
    saved = ROOT / "benchmarks" / "results" / "blr_2026-11-25_waveform.json"
    command = [sys.executable, str(ROOT / "benchmarks" / "blr.py"), "--from-json", str(saved)]
    command += ["--datasets", "waveform", "--methods", "wgfinfer", "wgfinfer_pwgf"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["blr.md"]
    section = (tmp_path / "blr.md").read_text()
    assert "waveform" in section and "<!--" not in section

    docs = tmp_path / "notes.md"
    docs.write_text("# Notes\n\n<!-- blr:start -->\nold table\n<!-- blr:end -->\n\nkept\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [*command, "--docs", str(docs), "--out", str(out)], cwd=tmp_path, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    text = docs.read_text()
    assert "old table" not in text and section.strip() in text and text.endswith("kept\n")
    assert [p.name for p in out.iterdir()] == ["blr.md"]

    empty = tmp_path / "empty"
    empty.mkdir()
    done = subprocess.run([*command, "--no-write"], cwd=empty, capture_output=True, text=True)
    assert done.returncode == 0 and "waveform" in done.stdout and list(empty.iterdir()) == []


def test_posterior_suite_quick_rows_reference_cache_and_section(writes_only_in_cwd):
    """``benchmarks/posteriors.py --quick`` (tiny flow and NUTS, meaningless numbers) on an exact and a
    NUTS-referenced problem: the JSON rows carry every metric, the eight-schools reference is cached
    and reused by the other parameterisation, and only --out and --json are written."""
    import importlib.util

    tmp_path = writes_only_in_cwd
    script = [sys.executable, str(ROOT / "benchmarks" / "posteriors.py"), "--quick", "--out", "out"]
    problems = ["mixture-0.7-0.3-4d", "eight_schools-noncentered"]
    command = [*script, "--problems", *problems, "--methods", "wgf", "nuts", "--json", "rows.json"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "rows.json").read_text())
    rows, meta = saved["rows"], saved["meta"]
    assert [(r["problem"], r["method"]) for r in rows] == [(p, m) for p in problems for m in ("wgf", "nuts")]
    for row in rows:
        assert "error" not in row, row.get("error")
        for key in ("dim", "max_abs_mean_err", "sd_ratio_min", "sd_ratio_max", "cpu_s", "wall_s"):
            assert isinstance(row[key], (int, float)) and math.isfinite(row[key]), key
        assert isinstance(row["warnings"], list) and isinstance(row["pass"], bool)
        assert row["cpu_s"] > 0 and row["ess"] > 0 and len(row["sd_ratio"]) == row["dim"]
    wgf, nuts = rows[0], rows[1]
    assert math.isfinite(wgf["khat"]) and wgf["ess_kind"] == "importance" and nuts["khat"] is None
    assert {"max_ks", "mode_weight", "mode_weight_err"} <= set(wgf) and "divergences" in nuts
    assert rows[2]["dim"] == 10 and "noncentered, 1 chain x" in rows[2]["reference_source"]
    assert meta["scheme"] is None and meta["torch_threads"] >= 1 and "torch" in meta["versions"]
    cache = tmp_path / "out" / "reference_cache" / "eight_schools-quick.json"
    assert json.loads(cache.read_text())["reference"]["names"][:2] == ["mu", "tau"]
    section = (tmp_path / "out" / "posteriors-default.md").read_text()
    # the wgf cell names the steps trained and why the flow stopped (--quick: one step)
    assert "| mixture-0.7-0.3-4d | 4 | wgf, 1 step (n_steps) |" in section and "<!--" not in section

    # the centred parameterisation reads the same cached reference; NumPyro where it is installed
    command = [*script, "--problems", "eight_schools-centered", "--methods", "wgf", "numpyro"]
    command += ["--scheme", "pwgf", "--json", "rows2.json"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "reference from" in done.stdout
    saved = json.loads((tmp_path / "rows2.json").read_text())
    methods = [r["method"] for r in saved["rows"]]
    if importlib.util.find_spec("numpyro") is None:
        assert methods == ["wgf"] and "no NumPyro rows" in saved["meta"]["notes"][0]
    else:
        assert methods == ["wgf", "numpyro"] and "error" not in saved["rows"][1]
    assert saved["rows"][0]["settings"] == "pwgf (--quick)" and saved["meta"]["scheme"] == "pwgf"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "posteriors-default.md",
        "posteriors-pwgf.md",
        "reference_cache",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "rows.json", "rows2.json"]


def _numpyro_reference_command() -> list[str]:
    script = [sys.executable, str(ROOT / "benchmarks" / "posteriors.py"), "--quick", "--out", "out"]
    return [*script, "--methods", "wgf", "--reference-sampler", "numpyro"]


def test_posterior_suite_refuses_numpyro_references_it_cannot_make(writes_only_in_cwd):
    """``--reference-sampler numpyro`` on a problem without a NumPyro model is refused by name."""
    command = [*_numpyro_reference_command(), "--problems", "eight_schools-noncentered"]
    done = subprocess.run(command, cwd=writes_only_in_cwd, capture_output=True, text=True)
    assert done.returncode != 0 and "eight_schools-noncentered: no NumPyro reference" in done.stderr


@pytest.mark.slow
def test_posterior_suite_caches_numpyro_references_under_their_own_key(writes_only_in_cwd):
    """A NumPyro reference is cached apart from the Pyro one, and its source names NumPyro."""
    pytest.importorskip("numpyro")
    tmp_path = writes_only_in_cwd
    command = [*_numpyro_reference_command(), "--problems", "blr-pima", "--json", "rows.json"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cache = json.loads((tmp_path / "out" / "reference_cache" / "blr-pima-numpyro-quick.json").read_text())
    reference = cache["reference"]
    assert reference["names"][:2] == ["alpha", "w[1]"] and "NumPyro NUTS" in reference["source"]


GPU_SCRIPT = [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--device", "cpu", "--quick"]


def test_gpu_script_cpu_path_writes_rows_and_section(writes_only_in_cwd):
    """``benchmarks/gpu.py --device cpu --quick`` (tiny sizes) on one part of each kind: the CUDA tests
    (skipped without a GPU), a wgfinfer BLR row and the dimension-scaling rows come out as JSON and as
    the section ``gpu``, written into --out only; ``--from-json --docs`` replaces the section in a
    markdown file."""
    import torch

    tmp_path = writes_only_in_cwd
    parts = ["cuda_tests", "blr-breast_cancer-wgfinfer", "dimension_scaling"]
    done = subprocess.run(
        [*GPU_SCRIPT, "--parts", *parts, "--out", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu.json", "gpu.md"]
    saved = json.loads((tmp_path / "out" / "gpu.json").read_text())
    assert [(s["part"], s["status"]) for s in saved["statuses"]] == [(p, "ok") for p in parts]
    assert saved["meta"]["torch_device"]["device"] == "cpu" and saved["meta"]["quick"] is True
    rows = saved["rows"]
    tests = [r for r in rows if r["part"] == "cuda_tests" and r["test"] != "(all)"]
    assert {"tests/test_sampler.py", "tests/test_ksd.py"} <= {r["test"].split(":")[0] for r in tests}
    if not torch.cuda.is_available():
        assert {r["outcome"] for r in tests} == {"skipped"}
    (blr,) = [r for r in rows if r["part"] == "blr-breast_cancer-wgfinfer"]
    for key in ("accuracy", "log_lik", "wall_s", "cpu_s", "khat", "extra_s"):
        assert isinstance(blr[key], float) and math.isfinite(blr[key]), key
    assert blr["shape"] == "455 × 31" and blr["accuracy"] > 0.8
    dims = [r for r in rows if r["part"] == "dimension_scaling"]
    assert [(r["dim"], r["scheme"]) for r in dims] == [
        (2, "variational"),
        (2, "icnn"),
        (4, "variational"),
        (4, "icnn"),
    ]
    assert all(r["step_time"] > 0 and math.isfinite(r["ksd"]) for r in dims)
    section = (tmp_path / "out" / "gpu.md").read_text()
    assert section.startswith("### GPU run (`benchmarks/gpu.py`)") and "<!--" not in section
    assert "Device `cpu`" in section and "| breast_cancer | 455 × 31 | wgfinfer (cpu) |" in section
    assert "| 4 | icnn |" in section and "`--quick`" in section

    docs = tmp_path / "notes.md"
    docs.write_text("# Notes\n\n<!-- gpu:start -->\nto be measured\n<!-- gpu:end -->\n\nkept\n")
    command = [*GPU_SCRIPT, "--from-json", "out/gpu.json", "--docs", str(docs), "--out", "again"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    text = docs.read_text()
    assert "to be measured" not in text and section.strip() in text and text.endswith("kept\n")


def test_gpu_script_records_parts_out_of_time_and_budget(writes_only_in_cwd):
    """A part that outruns its cap is recorded as timed out and the run goes on; a part with no budget
    left is recorded as not run; the section is written all the same."""
    tmp_path = writes_only_in_cwd
    command = [*GPU_SCRIPT, "--parts", "blr-breast_cancer-wgfinfer", "dimension_scaling"]
    command += ["--budget", "1", "--min-cap", "0.5", "--out", "out"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "out" / "gpu.json").read_text())
    statuses = [s["status"] for s in saved["statuses"]]
    assert statuses[0].startswith("timed out after") and statuses[1] == "not run: budget spent"
    assert saved["rows"] == []
    section = (tmp_path / "out" / "gpu.md").read_text()
    assert "| dimension_scaling | not run: budget spent |" in section


def test_gpu_script_caps_pass_unused_time_on():
    """A part's cap is its share plus what earlier parts left: the remaining time less later shares."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu

    parts = (gpu.Part("a", 10), gpu.Part("b", 20), gpu.Part("c", 30))
    assert gpu.caps(parts, 60, 0) == 10 and gpu.caps(parts, 55, 1) == 25 and gpu.caps(parts, 31, 2) == 31
    assert gpu.caps(parts, 40, 0) == 10 and gpu.caps(parts, 5, 1) == 5  # never more than is left


def test_gpu_script_renders_rows_that_are_missing_or_not_available():
    """The section renders a failed part, a NumPyro row without NumPyro, a NumPyro row on a GPU and a
    dimension-scaling row the cap left out."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import gpu

    meta = {
        "started": "2026-12-01 23:00 UTC",
        "elapsed_s": 400.0,
        "budget_s": 450.0,
        "torch_device": {
            "device": "cuda",
            "name": "NVIDIA H200",
            "memory_gib": 139.8,
            "torch": "2.11.0+cu130",
        },
        "host": "16 cores",
        "command": "python benchmarks/gpu.py",
        "seed": 0,
    }
    meta["torch_device"]["cuda"] = "13.0"
    statuses = [
        {"part": "cuda_tests", "cap_s": 60, "status": "failed (exit 1)", "seconds": 3.0, "error": "boom"},
        {"part": "dimension_scaling", "cap_s": 100, "status": "ok", "seconds": 99.0},
    ]
    numpyro = {"part": "blr-covtype-numpyro", "dataset": "covtype", "method": "numpyro", "data": "stand-in"}
    numpyro.update(shape="464810 × 55", device="jax:gpu", settings="NumPyro NUTS", accuracy=0.9, log_lik=-0.2)
    numpyro.update(
        wall_s=30.0, cpu_s=31.0, extra_s=100.0, extra_note="extrapolated", ess=400.0, divergences=0
    )
    rows = [
        {
            "part": "blr-breast_cancer-numpyro",
            "dataset": "breast_cancer",
            "method": "numpyro",
            "not_available": "not available: no jax",
        },
        numpyro,
        {
            "part": "dimension_scaling",
            "dim": 2,
            "scheme": "icnn",
            "steps": 10,
            "step_time": 0.5,
            "iters": 200,
        },
        {"part": "dimension_scaling", "dim": 128, "scheme": "icnn", "not_run": "cap"},
    ]
    section = gpu.render(rows, statuses, meta)
    assert "**NVIDIA H200**, 139.8 GiB; torch 2.11.0+cu130, CUDA 13.0" in section
    assert "| cuda_tests | failed (exit 1) | 3 | 60 | boom |" in section
    assert "| breast_cancer | — | numpyro | not available: no jax |" in section
    assert "| covtype | 464810 × 55 | numpyro (jax:gpu) |" in section and "≈100.00 (extrap.)" in section
    assert "| 128 | icnn | not run: the part's cap |" in section


def test_large_data_benchmark_runs_each_method_in_its_own_process_into_out_only(tmp_path):
    """Small data, few NUTS iterations: the rows, the comparison with NumPyro's draws where NumPyro is
    installed, and nothing written outside ``--out``."""
    try:
        import numpyro  # noqa: F401

        methods = ["numpyro", "wgf"]
    except ImportError:
        methods = ["wgf"]
    script = ROOT / "benchmarks" / "large_data.py"
    args = ["--rows", "400", "--features", "3", "--nuts-warmup", "50", "--nuts-draws", "200"]
    args += ["--methods", *methods, "--json", str(tmp_path / "large.json"), "--out", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "large.json").read_text())
    rows = {row["method"]: row for row in saved["rows"]}
    assert sorted(rows) == sorted(methods)
    wgf = rows["wgf"]
    assert wgf["process_cpu_s"] >= wgf["fit_cpu_s"] > 0 and wgf["stop_reason"] is not None
    if "numpyro" in rows:
        assert "coords" not in rows["numpyro"] and wgf["max_abs_mean_err"] >= 0 and "pass" in wgf
    assert sorted(p.name for p in tmp_path.iterdir()) == ["large-data.md", "large.json"]
