"""Progress bars (issue 17, point 7): a bar for every phase that can take long (start fit, steps,
large chunked draws), none for small calls, and none at all with ``progress_bar=False``.

tqdm writes its bars to stderr; ``capfd`` also sees what is written to the file descriptors.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import wgfinfer
from wgfinfer import bars, outputs
from wgfinfer.laplace import AffineWhitening, fit_gaussian, laplace_whitening

START_BARS = ("start: mode search", "start: Hessian", "start: Gaussian fit")
LARGE = 8192 + 100  # more than one chunk of Flow.chunk_size


def log_density(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - 1.0) / torch.tensor([1.0, 0.5], dtype=x.dtype)).square().sum(-1)


def gaussian_sampler(progress_bar: bool, init: str = "gaussian") -> wgfinfer.WGFSampler:
    """A 2-D Gaussian target; ``init="gaussian"`` runs all three phases of the start fit (about a
    second of it is the Gaussian fit's 1000 Adam iterations), ``"laplace"`` the first two."""
    return wgfinfer.WGFSampler(
        log_density,
        dim=2,
        init=init,
        scheme=wgfinfer.ICNN(iters_per_step=5, batch_size=64, hidden=(8,)),
        n_steps=2,
        progress_bar=progress_bar,
        seed=0,
    )


def regression(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    w = pyro.sample("w", dist.Normal(torch.zeros(x.shape[1], dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        mu = pyro.deterministic("mu", (x * w).sum(-1))
        return pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


@pytest.fixture(scope="module")
def pyro_sampler() -> wgfinfer.WGFSampler:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(20, 2, generator=gen, dtype=torch.float64)
    noise = torch.randn(20, generator=gen, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -0.5], dtype=torch.float64) + noise
    return wgfinfer.WGFSampler(
        model=regression,
        scheme=wgfinfer.ICNN(iters_per_step=5, batch_size=64, hidden=(8,)),
        n_steps=1,
        dtype=torch.float64,
        progress_bar=False,
        seed=0,
    ).run(x, y)


@pytest.fixture
def small_chunks(pyro_sampler: wgfinfer.WGFSampler, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 16 draws for the Pyro target's log joint and site values and for the
    log-likelihood group, so that 64 draws take several chunks."""
    monkeypatch.setattr(pyro_sampler.target, "_chunk", 16)
    monkeypatch.setattr(outputs, "LOG_LIKELIHOOD_CHUNK_VALUES", 16 * 20)


@pytest.fixture
def every_chunk_loop_has_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunked computation of one chunk gets a bar too (when asked for one): small calls then go
    through every bar there is."""
    monkeypatch.setattr(bars, "MIN_CHUNKS_FOR_BAR", 1)


@pytest.mark.usefixtures("every_chunk_loop_has_a_bar")
def test_progress_bar_false_prints_nothing_in_any_phase(capfd: pytest.CaptureFixture[str]) -> None:
    sampler = gaussian_sampler(progress_bar=False, init="laplace").run()
    sampler.sample(200, return_log_prob=True)
    sampler.diagnostics(num_samples=200)
    sampler.get_samples(200, correct="psis")
    sampler.to_inference_data(num_samples=200)
    sampler.log_prob(torch.zeros(200, 2))
    out, err = capfd.readouterr()
    assert err == "" and out == ""
    sampler.progress_bar = True  # the same calls do show bars when asked for
    sampler.diagnostics(num_samples=200)
    sampler.log_prob(torch.zeros(200, 2))
    err = capfd.readouterr().err
    assert "flow: draws" in err and "flow: inverse" in err


def test_start_fit_and_steps_have_bars_and_small_calls_print_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    sampler = gaussian_sampler(progress_bar=True).run()
    err = capfd.readouterr().err
    for label in (*START_BARS, "JKO steps"):
        assert label in err, label
    assert "/1000" in err  # the Gaussian fit's bar counts its Adam iterations
    sampler.sample(100, return_log_prob=True)
    sampler.diagnostics(num_samples=500)
    sampler.to_inference_data(num_samples=100)
    assert capfd.readouterr().err == ""  # one chunk each: no bar


def test_a_large_draw_shows_a_bar(capfd: pytest.CaptureFixture[str]) -> None:
    sampler = gaussian_sampler(progress_bar=False, init="laplace").run()
    sampler.progress_bar = True
    sampler.sample(LARGE)
    assert "flow: draws" in capfd.readouterr().err
    sampler.diagnostics(num_samples=LARGE)
    assert "flow: draws" in capfd.readouterr().err
    sampler.log_prob(torch.zeros(LARGE, 2))
    assert "flow: inverse" in capfd.readouterr().err


@pytest.mark.usefixtures("small_chunks")
def test_pyro_outputs_in_chunks_show_bars(
    pyro_sampler: wgfinfer.WGFSampler, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pyro_sampler, "progress_bar", True)
    capfd.readouterr()
    pyro_sampler.to_inference_data(num_samples=64, posterior_predictive=True)
    err = capfd.readouterr().err
    for label in ("pyro: log joint", "pyro: log_likelihood", "pyro: sites"):
        assert label in err, label
    pyro_sampler.summary(num_samples=64)
    assert "pyro: log joint" in capfd.readouterr().err


@pytest.mark.usefixtures("small_chunks")
def test_pyro_outputs_in_chunks_are_quiet_without_progress_bar(
    pyro_sampler: wgfinfer.WGFSampler, capfd: pytest.CaptureFixture[str]
) -> None:
    assert not pyro_sampler.progress_bar
    capfd.readouterr()
    pyro_sampler.to_inference_data(num_samples=64, posterior_predictive=True)
    pyro_sampler.diagnostics(num_samples=64)
    pyro_sampler.get_samples(64, correct="imh")
    assert capfd.readouterr().err == ""


def test_the_start_functions_are_quiet_by_default(capfd: pytest.CaptureFixture[str]) -> None:
    x0 = torch.zeros(2, dtype=torch.float64)
    white = laplace_whitening(log_density, x0)
    fit_gaussian(log_density, white, torch.Generator().manual_seed(0), n_iter=20)
    assert capfd.readouterr().err == ""
    white = laplace_whitening(log_density, x0, progress_bar=True)
    unit = AffineWhitening(x0, torch.eye(2, dtype=torch.float64))
    fit_gaussian(log_density, unit, torch.Generator().manual_seed(0), n_iter=20, progress_bar=True)
    err = capfd.readouterr().err
    for label in START_BARS:
        assert label in err, label


def test_chunk_bar_needs_more_than_one_chunk() -> None:
    assert isinstance(bars.chunk_bar(True, 100, 100, "x"), bars.NoBar)
    assert isinstance(bars.chunk_bar(False, 1000, 10, "x"), bars.NoBar)
    with bars.chunk_bar(True, 101, 100, "x") as bar:
        assert not isinstance(bar, bars.NoBar)
