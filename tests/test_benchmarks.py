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
