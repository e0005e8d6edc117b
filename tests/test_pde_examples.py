"""The PDE examples (porous medium, aggregation) run end to end with ``--quick`` settings, in an empty
current directory with their default output paths, and write nowhere else (``writes_only_in_cwd``)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_porous_medium_example(
    writes_only_in_cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out_png = writes_only_in_cwd / "porous_medium.png"  # the default
    monkeypatch.setattr(sys, "argv", ["porous_medium.py", "--quick"])
    runpy.run_path(str(EXAMPLES / "porous_medium.py"), run_name="__main__")
    out = capsys.readouterr().out
    # the seed 000 constants have mass 2: the example says so and uses coefficient M^(m-1) = 2
    assert "mass M = 2.000000" in out and "coefficient=M^(m-1) = 2.000000" in out
    for header in ("L1 dens.", "rel.err", "W1", "MINRES it", "p-value"):
        assert header in out
    for part in ("(a) 1-D Barenblatt", "(b) PWGF", "(c) variational scheme"):
        assert part in out
    assert "icnn" in out and "variational" in out
    assert out_png.stat().st_size > 10_000
    assert list(writes_only_in_cwd.iterdir()) == [out_png]


def test_aggregation_example(
    writes_only_in_cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tmp_path = writes_only_in_cwd
    monkeypatch.setattr(sys, "argv", ["aggregation.py", "--quick"])
    runpy.run_path(str(EXAMPLES / "aggregation.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "1/sqrt(3) = 0.5774" in out
    assert "mean radius +- sd" in out and "forward" in out and "backward" in out
    assert "FB pulses" in out and "FV pulses" in out and "max dens" in out
    for name in ("aggregation_ring.png", "aggregation_diffusion.png"):
        assert (tmp_path / name).stat().st_size > 10_000
    assert len(list(tmp_path.iterdir())) == 2
