"""Save files, checkpoints and resume (issue 6, points 1-2): bit-identical round trips for every scheme,
a Pyro model and a filter result; clear errors for bad files (and for files of the old format 1); a run
killed with SIGKILL and resumed; KeyboardInterrupt and other exceptions during run()."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from test_pyro import linear_regression, regression_data
from torch.distributions import Independent, Laplace, MultivariateNormal, StudentT

import wgfinfer
from wgfinfer import SaveFileError
from wgfinfer.filtering import FilterResult, GaussianObservations, JKOFilter, LangevinDiffusion
from wgfinfer.io import CHECKPOINT_NAME, SAMPLER_FORMAT, content_checksum, read_save_file


def log_density(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x - 1.0).square().sum(-1)


JKO = dict(iters_per_step=20, batch_size=32, hidden=(8, 8))
SCHEMES = {
    "icnn": wgfinfer.ICNN(**JKO),
    "variational-resnet": wgfinfer.Variational(map="resnet", **JKO),
    "variational-icnn": wgfinfer.Variational(map="icnn", **JKO),
    # no inner optimisation loop: 32 draws per Euler step
    "pwgf-planar": wgfinfer.PWGF(map="planar", n_layers=3, substeps=3, n_samples=32, hidden=(8, 8)),
    "pwgf-coupling": wgfinfer.PWGF(map="coupling", n_layers=2, substeps=3, n_samples=32, hidden=(8, 8)),
    # the state carries the last Euler step's solution (PWGFState.velocity) into the next call
    "pwgf-warm": wgfinfer.PWGF(
        map="coupling",
        n_layers=2,
        substeps=3,
        n_samples=64,  # 32 draws (16 for the metric) made a flow whose KL rose at the third step
        hidden=(8, 8),
        warm_start=True,
        metric_samples=32,
    ),
}
TINY = dict(dim=3, step_size=0.5, n_steps=2, progress_bar=False)


def tiny(scheme: str | wgfinfer.schemes.Scheme = "icnn", fn=log_density, **kwargs) -> wgfinfer.WGFSampler:
    options = {**TINY, "scheme": SCHEMES[scheme] if isinstance(scheme, str) else scheme, "seed": 7, **kwargs}
    return wgfinfer.WGFSampler(fn, **options)


def without_wall_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "wall_time"} for entry in history]


@pytest.fixture
def one_thread():
    """Bit-identity across processes needs the same thread count as the 1-thread child processes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_round_trip_is_bit_identical(scheme: str, tmp_path: Path) -> None:
    sampler = tiny(scheme).run()
    path = tmp_path / "sampler.pt"
    sampler.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["sampler.pt"]  # no temporary file left behind
    loaded = wgfinfer.WGFSampler.load(path, log_density)
    assert torch.equal(loaded.sample(200, seed=3), sampler.sample(200, seed=3))
    assert torch.equal(loaded.sample(50), sampler.sample(50))  # the generator continues identically
    assert loaded.history == sampler.history and loaded.training_time == sampler.training_time
    assert loaded.scheme == sampler.scheme and loaded.options() == sampler.options()
    assert repr(loaded) == repr(sampler)
    # the first step after loading checks its free energy against the last saved step's
    assert sampler.run_state.last_energy is not None
    assert loaded.run_state.last_energy == sampler.run_state.last_energy
    state, loaded_state = sampler.run_state.scheme_state, loaded.run_state.scheme_state
    assert torch.equal(loaded_state.particles, state.particles)
    if sampler.flow.has_density:
        y = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
        assert torch.equal(loaded.log_prob(y), sampler.log_prob(y))
        assert loaded.diagnostics(num_samples=200, seed=1) == sampler.diagnostics(num_samples=200, seed=1)
    idata = loaded.to_inference_data(num_samples=30, seed=2)
    assert idata.posterior["x"].shape == (1, 30, 3)
    # load then run() with a larger n_steps continues training exactly like the original
    sampler.n_steps = loaded.n_steps = 3
    sampler.run()
    loaded.run()
    assert torch.equal(loaded.sample(200, seed=3), sampler.sample(200, seed=3))
    assert without_wall_time(loaded.history) == without_wall_time(sampler.history)


def test_pwgf_file_without_the_velocity_field_loads(tmp_path: Path) -> None:
    """Files written before ``PWGFState.velocity`` existed load with ``velocity=None``."""
    sampler = tiny("pwgf-warm").run()
    assert sampler.run_state.scheme_state.velocity is not None
    path = tmp_path / "sampler.pt"
    sampler.save(path)
    content = torch.load(path, weights_only=True)
    del content["state"]["velocity"], content["checksum"]
    torch.save({**content, "checksum": content_checksum(content)}, path)
    loaded = wgfinfer.WGFSampler.load(path, log_density)
    assert loaded.run_state.scheme_state.velocity is None
    assert torch.equal(loaded.sample(20, seed=3), sampler.sample(20, seed=3))


def test_laplace_whitened_pyro_model_round_trip(tmp_path: Path) -> None:
    x, y = regression_data()
    options = dict(n_steps=2, scheme=wgfinfer.ICNN(**JKO), dtype=torch.float64)
    sampler = wgfinfer.WGFSampler(model=linear_regression, progress_bar=False, seed=0, **options)
    sampler.run(x, y, checkpoint_dir=tmp_path / "ckpt")  # not forwarded to the model
    assert sampler.flow.whitening is not None
    sampler.save(tmp_path / "pyro.pt")
    for path in (tmp_path / "pyro.pt", tmp_path / "ckpt" / CHECKPOINT_NAME):
        loaded = wgfinfer.WGFSampler.load(path, model=linear_regression, model_args=(x, y))
        assert torch.equal(loaded.flow.whitening.scale_tril, sampler.flow.whitening.scale_tril)
        assert torch.equal(loaded.sample(100, seed=4), sampler.sample(100, seed=4))
        z = sampler.sample(10, seed=5)
        assert torch.equal(loaded.log_prob(z), sampler.log_prob(z))
        samples = loaded.get_samples(20, seed=6)
        assert torch.equal(samples["w"], sampler.get_samples(20, seed=6)["w"])
        assert loaded.history == sampler.history
    with pytest.raises(ValueError, match="latent sites"):
        x4 = torch.cat([x, x[:, :1]], dim=1)
        wgfinfer.WGFSampler.load(tmp_path / "pyro.pt", model=linear_regression, model_args=(x4, y))
    with pytest.raises(ValueError, match="Pyro model"):
        wgfinfer.WGFSampler.load(tmp_path / "pyro.pt", log_density)


def test_normal_init_distribution_round_trip(tmp_path: Path) -> None:
    init = MultivariateNormal(torch.zeros(3), scale_tril=torch.eye(3) * 1.5)
    sampler = tiny(init=init, n_steps=1).run()
    sampler.save(tmp_path / "mvn.pt")
    loaded = wgfinfer.WGFSampler.load(tmp_path / "mvn.pt", log_density)
    assert isinstance(loaded.flow.base, MultivariateNormal)
    assert torch.equal(loaded.sample(100, seed=1), sampler.sample(100, seed=1))


def test_student_t_starts_are_saved_and_loaded(tmp_path: Path) -> None:
    # a given Independent(StudentT), and the whitened kinds' default start (Student-t coordinates)
    for init in (Independent(StudentT(5.0, torch.zeros(3), torch.ones(3)), 1), wgfinfer.Init("laplace")):
        sampler = tiny(init=init, n_steps=1).run()
        assert isinstance(sampler.flow.base.base_dist, StudentT)
        sampler.save(tmp_path / "t.pt")
        loaded = wgfinfer.WGFSampler.load(tmp_path / "t.pt", log_density)
        assert torch.equal(loaded.sample(100, seed=1), sampler.sample(100, seed=1))
        assert loaded.attrs()["init_base"] == sampler.attrs()["init_base"]


def test_unsavable_init_distribution(tmp_path: Path) -> None:
    init = Independent(Laplace(torch.zeros(3), torch.ones(3)), 1)
    sampler = tiny(init=init, n_steps=1).run()
    with pytest.raises(TypeError, match=r"Independent\(Laplace\).*diag_normal.*mvn.*init="):
        sampler.save(tmp_path / "t.pt")
    assert not (tmp_path / "t.pt").exists()
    sampler.save(tmp_path / "t.pt", save_init=False)
    with pytest.raises(ValueError, match="saved without rho_0"):
        wgfinfer.WGFSampler.load(tmp_path / "t.pt", log_density)
    loaded = wgfinfer.WGFSampler.load(tmp_path / "t.pt", log_density, init=init)
    assert torch.equal(loaded.sample(100, seed=1), sampler.sample(100, seed=1))


# ------------------------------------------------------------------------------------------ bad files
@pytest.fixture(scope="module")
def saved_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("saved") / "good.pt"
    tiny(n_steps=1).run().save(path)
    return path.read_bytes()


def _load(path: Path, good: bytes) -> dict:
    source = path.with_name("source.pt")
    source.write_bytes(good)
    return torch.load(source, weights_only=True)


def _write_other_version(path: Path, good: bytes) -> None:
    content = _load(path, good)
    content["format_version"] = 999
    torch.save(content, path)


def _rewritten(change):
    """A valid file changed by ``change(content)``, with its checksum recomputed: only the change is
    wrong with it."""

    def write(path: Path, good: bytes) -> None:
        content = _load(path, good)
        del content["checksum"]
        change(content)
        torch.save({**content, "checksum": content_checksum(content)}, path)

    return write


def _old_layout(content: dict) -> None:  # the entries of format 1 under a version-2 header
    content["config"] = content.pop("options")
    del content["scheme"], content["state"]


def _wrong_pool(content: dict) -> None:
    content["state"]["particles"] = content["state"]["particles"][:10]


def _unknown_scheme(content: dict) -> None:
    content["scheme"]["name"] = "nuts"


def _unknown_scheme_option(content: dict) -> None:
    content["scheme"]["map"] = "resnet"  # an option of another scheme


def _flip_bytes(path: Path, good: bytes) -> None:
    damaged = bytearray(good)
    for offset in range(len(good) // 3, 2 * len(good) // 3, 997):  # inside the tensors' records
        damaged[offset] ^= 0xFF
    path.write_bytes(bytes(damaged))


BAD_FILES = {
    "random-bytes": (lambda p, good: p.write_bytes(os.urandom(4096)), "not a readable"),
    "truncated": (lambda p, good: p.write_bytes(good[: len(good) // 2]), "not a readable"),
    "truncated-tail": (lambda p, good: p.write_bytes(good[:-100]), "not a readable"),
    "flipped-bytes": (_flip_bytes, "corrupted|not a readable"),
    "empty": (lambda p, good: p.write_bytes(b""), "not a readable"),
    "other-dict": (lambda p, good: torch.save({"weights": torch.ones(3)}, p), "not a wgfinfer save file"),
    "other-format": (lambda p, good: torch.save({"format": "something"}, p), "holds format 'something'"),
    "version-999": (_write_other_version, "format version 999"),
    "old-layout": (_rewritten(_old_layout), "entry 'options' is missing"),
    "wrong-pool": (_rewritten(_wrong_pool), r"particle pool of shape \(10, 3\)"),
    "unknown-scheme": (_rewritten(_unknown_scheme), "unknown scheme 'nuts'"),
    "unknown-scheme-option": (_rewritten(_unknown_scheme_option), r"icnn options \['map'\]"),
    "nan-last-energy": (_rewritten(lambda c: c.update(last_energy=[float("nan"), 0.1])), "last_energy"),
    "pickled-object": (
        lambda p, good: torch.save({"format": SAMPLER_FORMAT, "x": Path(".")}, p),
        "weights_only",
    ),
}


@pytest.mark.parametrize("kind", list(BAD_FILES))
def test_bad_files_raise_save_file_error(kind: str, tmp_path: Path, saved_bytes: bytes) -> None:
    write, match = BAD_FILES[kind]
    path = tmp_path / f"bad-{kind}.pt"
    write(path, saved_bytes)
    with pytest.raises(SaveFileError, match=match) as info:
        wgfinfer.WGFSampler.load(path, log_density)
    assert f"bad-{kind}.pt" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_format_version_1_is_the_old_format(tmp_path: Path, saved_bytes: bytes) -> None:
    path = tmp_path / "v1.pt"
    _rewritten(lambda content: content.update(format_version=1))(path, saved_bytes)
    read = torch.load(path, weights_only=True)
    assert read["format_version"] == 1 and read.pop("checksum") == content_checksum(read)  # else valid
    with pytest.raises(SaveFileError, match="v1.pt.*old format") as info:
        wgfinfer.WGFSampler.load(path, log_density)
    assert "format version 2" in str(info.value)
    with pytest.raises(SaveFileError, match="old format"):  # also when resuming from it
        tiny(n_steps=1).run(checkpoint_dir=_as_checkpoint(path), resume=True)


def _as_checkpoint(path: Path) -> Path:
    directory = path.parent / "ckpt-v1"
    directory.mkdir()
    (directory / CHECKPOINT_NAME).write_bytes(path.read_bytes())
    return directory


def test_missing_file_and_wrong_loader(tmp_path: Path, saved_bytes: bytes) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pt"):
        wgfinfer.WGFSampler.load(tmp_path / "nowhere.pt", log_density)
    path = tmp_path / "sampler.pt"
    path.write_bytes(saved_bytes)
    diffusion, observations = ou_problem()
    with pytest.raises(SaveFileError, match="sampler.pt.*wgfinfer-sampler"):
        FilterResult.load(path, diffusion, observations)


# ------------------------------------------------------------------------------------------ checkpoints
def test_resume_with_another_configuration_raises(tmp_path: Path) -> None:
    tiny(n_steps=1).run(checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match=r"step_size: checkpoint 0.5, sampler 0.25"):
        tiny(step_size=0.25).run(checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="dim: checkpoint 3, sampler 4"):
        tiny(dim=4).run(checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="name: checkpoint 'icnn', sampler 'variational'"):
        tiny("variational-resnet").run(checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="lr: checkpoint 0.005, sampler 0.001"):
        tiny(wgfinfer.ICNN(**JKO, lr=1e-3)).run(checkpoint_dir=tmp_path, resume=True)
    with pytest.raises(ValueError, match="needs checkpoint_dir"):
        tiny().run(resume=True)
    # a larger n_steps is allowed: the run continues from step 1
    resumed = tiny(n_steps=2).run(checkpoint_dir=tmp_path, resume=True)
    assert [h["step"] for h in resumed.history] == [1, 2]
    # no checkpoint: resume=True starts fresh
    fresh = tiny(n_steps=1).run(checkpoint_dir=tmp_path / "empty", resume=True)
    assert len(fresh.history) == 1


def test_keyboard_interrupt_keeps_the_completed_steps(tmp_path: Path) -> None:
    calls = {"n": 0, "limit": 30}  # validation, then 20 training calls + 1 monitor per step: 30 is in step 2

    def interrupting(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == calls["limit"]:
            raise KeyboardInterrupt
        return log_density(x)

    sampler = tiny(fn=interrupting, n_steps=3)
    with pytest.raises(KeyboardInterrupt):
        sampler.run(checkpoint_dir=tmp_path)
    assert len(sampler.flow) == 1 and [h["step"] for h in sampler.history] == [1]
    assert sampler.sample(10, seed=0).shape == (10, 3)
    assert torch.isfinite(sampler.log_prob(sampler.sample(10, seed=0))).all()
    assert len(read_save_file(tmp_path / CHECKPOINT_NAME, SAMPLER_FORMAT)["history"]) == 1
    sampler.run()  # continues exactly as an uninterrupted run
    reference = tiny(n_steps=3).run()
    assert torch.equal(sampler.sample(100, seed=1), reference.sample(100, seed=1))
    assert without_wall_time(sampler.history) == without_wall_time(reference.history)


@pytest.mark.parametrize("scheme", ["icnn", "variational-resnet"])
def test_an_exception_in_the_target_mid_step_keeps_the_last_completed_step(
    scheme: str, tmp_path: Path
) -> None:
    """Any exception (not only Ctrl-C) in the user's log-density during a step drops the step whole:
    the sampler stays exactly at its last completed step, generator states included."""
    calls = {"n": 0, "limit": 30}  # validation, then 20 training calls (+ 1 monitor) per step: in step 2

    def failing(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == calls["limit"]:
            raise RuntimeError("the user's target failed (injected)")
        return log_density(x)

    sampler = tiny(scheme, fn=failing, n_steps=3)
    with pytest.raises(RuntimeError, match="injected"):
        sampler.run(checkpoint_dir=tmp_path)
    # where the interrupted run stood after its first step; without the checks that a finished run()
    # adds to its last history entry (the interrupted run never finished)
    one_step = tiny(scheme, n_steps=1, check=False).run()
    assert len(sampler.flow) == 1 and sampler.run_state.step == 1
    assert [h["step"] for h in sampler.history] == [1]
    assert without_wall_time(sampler.history) == without_wall_time(one_step.history)
    assert all(
        torch.equal(a.get_state(), b.get_state())
        for a, b in zip(sampler.generators, one_step.generators, strict=True)
    )
    state, expected = sampler.run_state.scheme_state, one_step.run_state.scheme_state
    assert torch.equal(state.particles, expected.particles)
    assert len(read_save_file(tmp_path / CHECKPOINT_NAME, SAMPLER_FORMAT)["history"]) == 1
    sampler.run()  # continues exactly as an uninterrupted run
    reference = tiny(scheme, n_steps=3).run()
    assert torch.equal(sampler.sample(100, seed=1), reference.sample(100, seed=1))
    assert torch.equal(sampler.run_state.scheme_state.particles, reference.run_state.scheme_state.particles)
    assert without_wall_time(sampler.history) == without_wall_time(reference.history)


KILL_SCHEME = dict(iters_per_step=10, batch_size=32, hidden=(4, 4))
KILL_CONFIG = dict(dim=2, step_size=0.5, n_steps=8, progress_bar=False, seed=3)
KILL_SCRIPT = textwrap.dedent(
    """
    import sys, time
    import torch
    import wgfinfer

    torch.set_num_threads(1)

    def log_density(x):
        time.sleep(0.03)  # about 0.35 s per JKO step of 10 iterations
        return -0.5 * (x - 1.0).square().sum(-1)

    scheme = wgfinfer.ICNN(**{scheme!r})
    wgfinfer.WGFSampler(log_density, scheme=scheme, **{config!r}).run(checkpoint_dir=sys.argv[1])
    """
).format(scheme=KILL_SCHEME, config=KILL_CONFIG)


def kill_sampler() -> wgfinfer.WGFSampler:
    """The sampler of ``KILL_SCRIPT``, in this process."""
    return wgfinfer.WGFSampler(log_density, scheme=wgfinfer.ICNN(**KILL_SCHEME), **KILL_CONFIG)


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path, one_thread) -> None:
    checkpoint = tmp_path / CHECKPOINT_NAME
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(tmp_path)], env=env)
    try:
        deadline = time.monotonic() + 120
        reads = 0
        while True:
            assert child.poll() is None, "the training process ended before it was killed"
            assert time.monotonic() < deadline, "no checkpoint with 3 steps after 120 s"
            if checkpoint.exists():
                done = len(read_save_file(checkpoint, SAMPLER_FORMAT)["history"])  # never half-written
                reads += 1
                if done >= 3:
                    break
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    killed_at = len(read_save_file(checkpoint, SAMPLER_FORMAT)["history"])
    assert 3 <= killed_at < KILL_CONFIG["n_steps"], "the kill should land in the middle of the run"
    assert reads >= 1

    resumed = kill_sampler().run(checkpoint_dir=tmp_path, resume=True)
    # the resumed process trained only the steps after the checkpoint: at most the step in progress
    # at the kill was redone, and every step appears exactly once
    assert len(resumed.flow) == KILL_CONFIG["n_steps"]
    assert [h["step"] for h in resumed.history] == list(range(1, KILL_CONFIG["n_steps"] + 1))
    assert not list(tmp_path.glob(".*.tmp")), "stale temporary files are cleaned up on resume"
    final = read_save_file(checkpoint, SAMPLER_FORMAT)
    assert len(final["history"]) == KILL_CONFIG["n_steps"]

    reference = kill_sampler().run()
    assert len(reference.flow) == len(resumed.flow)
    assert torch.equal(resumed.sample(200, seed=11), reference.sample(200, seed=11))
    assert without_wall_time(resumed.history) == without_wall_time(reference.history)


# ------------------------------------------------------------------------------------------ filter results
def ou_problem() -> tuple[LangevinDiffusion, GaussianObservations]:
    initial = torch.distributions.Normal(
        torch.tensor(0.5, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    )
    diffusion = LangevinDiffusion(lambda x: 0.75 * x.square().sum(-1), 2.0, initial)
    return diffusion, GaussianObservations([0.5, 1.0], torch.tensor([0.8, -0.2]), 0.7)


def test_filter_result_round_trip(tmp_path: Path) -> None:
    diffusion, observations = ou_problem()
    scheme = wgfinfer.ICNN(iters_per_step=10, batch_size=32, hidden=(4, 4), n_particles=256)
    result = JKOFilter(diffusion, scheme, step_size=0.5, n_chains=16, warmup=5, thin=1, seed=0).run(
        observations, 1.5
    )
    result.save(tmp_path / "filter.pt")
    loaded = FilterResult.load(tmp_path / "filter.pt", diffusion, observations)
    for t in result.times:
        assert torch.equal(loaded.sample(32, time=t, seed=2), result.sample(32, time=t, seed=2))
        assert torch.equal(loaded.draws[t], result.draws[t])
    grid = torch.linspace(-2, 2, 9, dtype=torch.float64).unsqueeze(-1)
    assert torch.equal(loaded.log_prob(grid), result.log_prob(grid))
    assert loaded.history == result.history and loaded.acceptance_rate == result.acceptance_rate
    assert loaded.log_evidence == result.log_evidence and loaded.mcmc == result.mcmc
    other = GaussianObservations([0.5, 1.0], torch.tensor([0.8, 0.2]), 0.7)
    with pytest.raises(ValueError, match="observations differ"):
        FilterResult.load(tmp_path / "filter.pt", diffusion, other)
    with pytest.raises(SaveFileError, match="filter.pt.*wgfinfer-filter-result"):
        wgfinfer.WGFSampler.load(tmp_path / "filter.pt", log_density)
