"""Reliability, second round (issue 18): what is fixed so far.

- only regular files are opened as save or checkpoint files (a FIFO would block ``open`` forever);
- every loaded network, state tensor and whitening is checked finite;
- ``dtype`` accepts float32/float64 only and ``seed`` the range ``torch.Generator`` accepts, at
  construction;
- a log-density written for one point gets an error saying it is called on an ``(n, d)`` batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import wgfinfer
from wgfinfer import SaveFileError
from wgfinfer.io import content_checksum

ROOT = Path(__file__).resolve().parent.parent


def log_density(x):
    return -0.5 * (x - 1.0).square().sum(-1)


def tiny() -> wgfinfer.WGFSampler:
    scheme = wgfinfer.ICNN(iters_per_step=3, batch_size=16, hidden=(4,), n_particles=64, n_monitor=32)
    return wgfinfer.WGFSampler(log_density, dim=2, scheme=scheme, n_steps=1, progress_bar=False).run()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
@pytest.mark.parametrize("where", ["load", "resume"])
def test_a_fifo_is_not_opened(where, tmp_path):
    # in a subprocess with a timeout: a regression would block in open() forever
    fifo = tmp_path / ("checkpoint.pt" if where == "resume" else "file.pt")
    os.mkfifo(fifo)
    resume = f"run(checkpoint_dir={str(tmp_path)!r}, resume=True)"
    call = (
        f"wgfinfer.WGFSampler.load({str(fifo)!r}, log_density=f)"
        if where == "load"
        else f"wgfinfer.WGFSampler(f, dim=2, progress_bar=False).{resume}"
    )
    code = textwrap.dedent(
        f"""
        import wgfinfer
        f = lambda x: -x.square().sum(-1)
        try:
            {call}
        except wgfinfer.SaveFileError as exc:
            assert "not a regular file" in str(exc), exc
            print("refused")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused" in done.stdout


def _tampered(path: Path, change) -> None:
    content = torch.load(path, weights_only=True)
    content.pop("checksum")
    change(content)
    content["checksum"] = content_checksum(content)
    torch.save(content, path)


def _nan_weight(content):
    state = content["state"]["maps"][0]["state"]
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 0)
    state[name] = torch.full_like(state[name], float("nan"))


def _nan_particles(content):
    content["state"]["particles"][0, 0] = float("inf")


@pytest.mark.parametrize(
    ("change", "match"),
    [(_nan_weight, "non-finite values in"), (_nan_particles, "'particles' has non-finite")],
)
def test_non_finite_tensors_in_a_file_are_refused(change, match, tmp_path):
    path = tmp_path / "s.pt"
    tiny().save(path)
    _tampered(path, change)
    with pytest.raises(SaveFileError, match=match):
        wgfinfer.WGFSampler.load(path, log_density=log_density)


def test_a_non_finite_whitening_is_refused(tmp_path):
    model_free = wgfinfer.WGFSampler(
        log_density,
        dim=2,
        scheme=wgfinfer.ICNN(iters_per_step=3, batch_size=16, hidden=(4,), n_particles=64, n_monitor=32),
        init="laplace",
        n_steps=1,
        progress_bar=False,
    ).run()
    path = tmp_path / "s.pt"
    model_free.save(path)
    _tampered(path, lambda c: c["whitening"]["loc"].fill_(float("nan")))
    with pytest.raises(SaveFileError, match="whitening has non-finite"):
        wgfinfer.WGFSampler.load(path, log_density=log_density)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dtype": torch.float16}, ValueError, "float32 or torch.float64"),
        ({"dtype": torch.bfloat16}, ValueError, "float32 or torch.float64"),
        ({"seed": 2**64}, ValueError, r"seed must be an int in \[-2\*\*63"),
        ({"seed": -(2**63) - 1}, ValueError, "seed must be an int in"),
        ({"seed": 1.0}, TypeError, "seed must be an int"),
    ],
)
def test_dtype_and_seed_are_checked_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        wgfinfer.WGFSampler(log_density, dim=2, **kwargs)


def test_the_extreme_valid_seeds_work():
    for seed in (-(2**63), 2**64 - 1):
        wgfinfer.WGFSampler(log_density, dim=2, seed=seed, progress_bar=False)


def test_simulate_and_the_filter_check_seed_and_dtype():
    from wgfinfer.filtering import JKOFilter, LangevinDiffusion

    init = torch.distributions.Independent(torch.distributions.Normal(torch.zeros(2), torch.ones(2)), 1)
    with pytest.raises(ValueError, match="seed must be an int in"):
        wgfinfer.simulate(wgfinfer.functionals.KLDivergence(log_density), init, seed=2**64)
    initial = torch.distributions.Independent(
        torch.distributions.Normal(torch.zeros(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)), 1
    )
    diffusion = LangevinDiffusion(lambda x: 0.5 * x.square().sum(-1), initial=initial)
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        JKOFilter(diffusion, dtype=torch.float16)


def test_a_log_density_written_for_one_point_is_told_about_batches():
    with pytest.raises(
        TypeError, match=r"called on an \(n, d\) batch of points and must return an \(n,\) tensor"
    ):
        wgfinfer.WGFSampler(lambda x: -0.5 * x @ x, dim=3, progress_bar=False).run()
