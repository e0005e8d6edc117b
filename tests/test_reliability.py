"""Reliability, second round (issue 18); the other cases are in tests/test_checkpoints.py (target
fingerprints, checkpoint locks, two checkpoints, bounded loads), tests/test_filtering_reliability.py
(filtering), tests/test_validation.py (string widths) and tests/test_io.py (rollback mid-step).

- only regular files are opened as save or checkpoint files (a FIFO would block ``open`` forever);
- every loaded network, state tensor and whitening is checked finite;
- ``dtype`` accepts float32/float64 only and ``seed`` the range ``torch.Generator`` accepts, at
  construction;
- a log-density written for one point gets an error saying it is called on an ``(n, d)`` batch;
- a Pyro-model sampler depends on its ``seed`` only, whatever the global RNG state, and leaves
  torch's, Python's and NumPy's global RNGs untouched;
- ``to_inference_data`` warns before building a large ``log_likelihood`` group and computes it in
  chunks of draws.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import wgfinfer
import wgfinfer.outputs
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


# ---------------------------------------------------------------------------- determinism, Pyro models
def regression(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Three latent values (two weights and a positive noise scale) and a data plate."""
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.ones((), dtype=x.dtype)))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * w).sum(-1), sigma), obs=y)


def regression_data() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -1.0], dtype=torch.float64) + 0.3 * torch.randn(
        10, generator=gen, dtype=torch.float64
    )
    return x, y


def tiny_pyro_sampler(seed: int = 3) -> wgfinfer.WGFSampler:
    scheme = wgfinfer.ICNN(iters_per_step=3, batch_size=16, hidden=(4,), n_particles=64, n_monitor=32)
    return wgfinfer.WGFSampler(
        model=regression, scheme=scheme, n_steps=1, dtype=torch.float64, seed=seed, progress_bar=False
    )


def global_rng_states() -> tuple:
    """torch's, Python's and NumPy's global RNG states, comparable with ``==``."""
    np_state = np.random.get_state()  # noqa: NPY002 - the legacy global state is what is checked
    return (
        hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest(),
        random.getstate(),
        (np_state[0], np_state[1].tobytes(), *np_state[2:]),
    )


def pyro_outputs(sampler: wgfinfer.WGFSampler) -> tuple:
    """Everything a run gives that should depend on ``seed`` only."""
    idata = sampler.to_inference_data(num_samples=8, seed=2)
    return (
        [entry["loss"] for entry in sampler.history],
        [entry["kl_minus_log_z"] for entry in sampler.history],
        sampler.sample(16, seed=1).numpy().tobytes(),
        sampler.get_samples(8, seed=1)["sigma"].numpy().tobytes(),
        idata.log_likelihood["y"].values.tobytes(),
    )


def test_a_pyro_sampler_depends_on_its_seed_only():
    x, y = regression_data()
    results = []
    for global_seed in (1, 12345):
        torch.manual_seed(global_seed)
        results.append(pyro_outputs(tiny_pyro_sampler().run(x, y)))
    assert results[0] == results[1]
    torch.manual_seed(1)
    assert pyro_outputs(tiny_pyro_sampler(seed=4).run(x, y))[0] != results[0][0]  # the seed does matter


@pytest.mark.filterwarnings("ignore:Pareto k-hat")  # one tiny step: the flow is far from the target
def test_a_pyro_sampler_leaves_the_global_rngs_untouched(tmp_path):
    x, y = regression_data()
    torch.manual_seed(7)
    random.seed(7)
    np.random.seed(7)  # noqa: NPY002 - the legacy global state is what is checked
    before = global_rng_states()
    sampler = tiny_pyro_sampler().run(x, y)
    sampler.sample(16)
    sampler.sample(16, seed=1)
    sampler.get_samples(8)
    sampler.to_inference_data(num_samples=8)
    sampler.diagnostics(num_samples=64)
    sampler.save(tmp_path / "s.pt")
    loaded = wgfinfer.WGFSampler.load(tmp_path / "s.pt", model=regression, model_args=(x, y))
    loaded.run(x, y)  # a later run() with the model's arguments rebuilds the target
    loaded.get_samples(8, seed=1)
    assert global_rng_states() == before


_SUBPROCESS = """
import hashlib, random, sys
import numpy as np, torch
sys.path.insert(0, {tests!r})
from test_reliability import global_rng_states, pyro_outputs, regression_data, tiny_pyro_sampler

torch.manual_seed(int(sys.argv[1]))
random.seed(int(sys.argv[1]))
np.random.seed(int(sys.argv[1]))
before = global_rng_states()
x, y = regression_data()
outputs = pyro_outputs(tiny_pyro_sampler().run(x, y))
print("untouched" if global_rng_states() == before else "changed")
print(hashlib.sha256(repr(outputs).encode()).hexdigest())
"""


def test_a_pyro_sampler_depends_on_its_seed_only_in_fresh_processes():
    code = _SUBPROCESS.format(tests=str(ROOT / "tests"))
    reports, digests = set(), set()
    for global_seed in ("1", "999"):
        done = subprocess.run(
            [sys.executable, "-c", code, global_seed], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr
        report, digest = done.stdout.split()[-2:]
        reports.add(report)
        digests.add(digest)
    assert len(digests) == 1, "the draws and history depend on the global seed"
    assert reports == {"untouched"}


# ---------------------------------------------------------------------------- memory of log_likelihood
@pytest.fixture(scope="module")
def pyro_sampler() -> wgfinfer.WGFSampler:
    return tiny_pyro_sampler().run(*regression_data())


def test_a_large_log_likelihood_group_is_warned_about(pyro_sampler, monkeypatch):
    # 2 chains x 8 draws x 10 observations x 8 bytes = 1280 bytes, plus one chunk of the same size
    assert wgfinfer.outputs.log_likelihood_size(pyro_sampler.target, 16) == (1280, 1280)
    monkeypatch.setattr(wgfinfer.outputs, "LOG_LIKELIHOOD_WARN_BYTES", 2000)
    with pytest.warns(
        UserWarning, match=r"about 0.00 GiB .*16 draws x 10 observations.*log_likelihood=False"
    ):
        pyro_sampler.to_inference_data(num_samples=8, num_chains=2, seed=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pyro_sampler.to_inference_data(num_samples=8, num_chains=2, seed=0, log_likelihood=False)
        pyro_sampler.to_inference_data(num_samples=4, num_chains=1, seed=0)  # 640 bytes
        monkeypatch.undo()
        pyro_sampler.to_inference_data(num_samples=1000, num_chains=4, seed=0)  # the 1 GiB default
    assert not [w for w in caught if "log_likelihood group" in str(w.message)]


def test_the_warning_points_at_the_callers_line(pyro_sampler, monkeypatch):
    monkeypatch.setattr(wgfinfer.outputs, "LOG_LIKELIHOOD_WARN_BYTES", 0)
    with pytest.warns(UserWarning, match="log_likelihood group") as record:
        pyro_sampler.to_inference_data(num_samples=2, seed=0)
    assert record[0].filename == __file__


@pytest.mark.parametrize("chunk_draws", [1, 3, 7])
def test_the_chunked_log_likelihood_equals_one_model_run(pyro_sampler, monkeypatch, chunk_draws):
    whole = pyro_sampler.to_inference_data(num_samples=8, num_chains=2, seed=5)  # 16 draws, one chunk
    monkeypatch.setattr(wgfinfer.outputs, "LOG_LIKELIHOOD_CHUNK_VALUES", 10 * chunk_draws)
    chunked = pyro_sampler.to_inference_data(num_samples=8, num_chains=2, seed=5)
    assert chunked.log_likelihood["y"].dims == ("chain", "draw", "data")
    np.testing.assert_array_equal(chunked.log_likelihood["y"].values, whole.log_likelihood["y"].values)
    # and both equal the target's own pointwise log-likelihood of the same draws, in one run
    z, _ = pyro_sampler.sample(16, seed=5, return_log_prob=True)  # the draws to_inference_data makes
    direct = pyro_sampler.target.pointwise_log_likelihood(z).get("y").double().numpy().reshape(2, 8, 10)
    np.testing.assert_array_equal(whole.log_likelihood["y"].values, direct)
