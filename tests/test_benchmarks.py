"""Smoke runs of the benchmark scripts (their numbers live in docs/benchmarks.md, never in tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
