"""Save files and checkpoints know their target, and checkpoint directories are safe (issue 18).

- a save file or checkpoint carries a fingerprint of the target (its log-density at a few stored
  points; a Pyro model's latent site names, order and shapes): loading or resuming with a different
  target raises, ``load(..., check_target=False)`` warns and names the difference;
- a resume (or a ``run``) with fewer ``n_steps`` than completed says what it does;
- a checkpoint directory is locked by the run that uses it; the last two checkpoints are kept and a
  damaged last one falls back to the previous one; stale temporary files are removed;
- loading bounds the memory it allocates by the file's size before validating anything.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import tracemalloc
import warnings
import zipfile
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch

import wgfinfer
from wgfinfer import CheckpointInUseError, SaveFileError
from wgfinfer.io import CHECKPOINT_NAME, CheckpointDirectory, read_save_file
from wgfinfer.io.files import PREVIOUS_CHECKPOINT_NAME, SAMPLER_FORMAT, header, remove_stale_temporaries

ROOT = Path(__file__).resolve().parent.parent


def log_density(x: torch.Tensor) -> torch.Tensor:
    return -0.5 * (x - 1.0).square().sum(-1)


def shifted(x: torch.Tensor) -> torch.Tensor:  # same dimension, another target
    return -0.5 * (x - 1.5).square().sum(-1)


SCHEME = wgfinfer.ICNN(iters_per_step=3, batch_size=16, hidden=(4,), n_particles=64, n_monitor=32)


def tiny(fn=log_density, **kwargs) -> wgfinfer.WGFSampler:
    options = {**dict(dim=2, scheme=SCHEME, n_steps=1, step_size=0.5, seed=3, progress_bar=False), **kwargs}
    return wgfinfer.WGFSampler(fn, **options)


def without_wall_time(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in entry.items() if k != "wall_time"} for entry in history]


# ------------------------------------------------------------------------------------ fingerprints
def test_loading_with_another_log_density_raises_or_warns_with_the_override(tmp_path: Path) -> None:
    sampler = tiny().run()
    sampler.save(tmp_path / "s.pt")
    content = read_save_file(tmp_path / "s.pt", SAMPLER_FORMAT)
    assert content["target"]["probe_points"].shape == (4, 2)
    assert torch.equal(content["target"]["probe_log_density"], log_density(content["target"]["probe_points"]))
    same = wgfinfer.WGFSampler.load(tmp_path / "s.pt", log_density)  # the same function: fine
    assert torch.equal(same.sample(10, seed=1), sampler.sample(10, seed=1))
    mismatch = r"not the one the file .*differs at 4 of 4 stored points.*check_target"
    with pytest.raises(ValueError, match=mismatch):
        wgfinfer.WGFSampler.load(tmp_path / "s.pt", shifted)
    with pytest.warns(UserWarning, match="differs at 4 of 4 stored points.*check_target=False"):
        loaded = wgfinfer.WGFSampler.load(tmp_path / "s.pt", shifted, check_target=False)
    assert torch.equal(loaded.sample(10, seed=1), sampler.sample(10, seed=1))  # the saved flow, as asked
    with pytest.raises(TypeError, match="check_target must be a bool"):
        wgfinfer.WGFSampler.load(tmp_path / "s.pt", log_density, check_target="no")


def test_a_change_in_the_last_bits_is_not_a_different_target(tmp_path: Path) -> None:
    # the same density summed in another order (as another thread count would) is the same target
    def reordered(x: torch.Tensor) -> torch.Tensor:
        return -0.5 * (x - 1.0).square().flip(-1).sum(-1) * (1 + 1e-7)

    tiny().run().save(tmp_path / "s.pt")
    wgfinfer.WGFSampler.load(tmp_path / "s.pt", reordered)


def test_resuming_with_another_target_raises(tmp_path: Path) -> None:
    tiny().run(checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="not the one the checkpoint .*differs at"):
        tiny(shifted, n_steps=2).run(checkpoint_dir=tmp_path, resume=True)
    resumed = tiny(n_steps=2).run(checkpoint_dir=tmp_path, resume=True)
    assert [h["step"] for h in resumed.history] == [1, 2]


def regression(x, y=None):
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(1.0, dtype=x.dtype)))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * w.unsqueeze(-2)).sum(-1), sigma), obs=y)


def regression_swapped(x, y=None):  # the same sites, drawn in the other order
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(1.0, dtype=x.dtype)))
    w = pyro.sample("w", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal((x * w.unsqueeze(-2)).sum(-1), sigma), obs=y)


def pyro_data(shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(30, 2, generator=g, dtype=torch.float64)
    return x, x @ torch.tensor([1.0, -0.5], dtype=torch.float64) + 0.3 + shift


def test_a_pyro_model_with_other_data_or_site_order_is_refused(tmp_path: Path) -> None:
    x, y = pyro_data()
    options = dict(scheme=SCHEME, n_steps=1, init="normal", dtype=torch.float64, seed=0, progress_bar=False)
    sampler = wgfinfer.WGFSampler(model=regression, **options).run(x, y)
    sampler.save(tmp_path / "m.pt")
    wgfinfer.WGFSampler.load(tmp_path / "m.pt", model=regression, model_args=(x, y))
    _, other_y = pyro_data(shift=0.1)  # the same sites and shapes, other data
    with pytest.raises(ValueError, match="pass the same model and data again"):
        wgfinfer.WGFSampler.load(tmp_path / "m.pt", model=regression, model_args=(x, other_y))
    with pytest.raises(ValueError, match=r"order \['sigma', 'w'\].*order \['w', 'sigma'\]"):
        wgfinfer.WGFSampler.load(tmp_path / "m.pt", model=regression_swapped, model_args=(x, y))


# ------------------------------------------------------------------------------------ fewer n_steps
def test_a_resume_with_fewer_steps_than_completed_says_what_it_does(tmp_path: Path) -> None:
    tiny(n_steps=2).run(checkpoint_dir=tmp_path)
    told = r"already holds 2 completed steps, more than n_steps=1: nothing is trained"
    with pytest.warns(UserWarning, match=told):
        resumed = tiny(n_steps=1).run(checkpoint_dir=tmp_path, resume=True)
    assert len(resumed.history) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # as many steps as asked for: silent
        tiny(n_steps=2).run(checkpoint_dir=tmp_path, resume=True)


# ------------------------------------------------------------------------------------ the lock
def test_a_second_run_on_a_locked_directory_gets_a_clear_error(tmp_path: Path) -> None:
    with CheckpointDirectory(tmp_path):  # another run of this process holds it
        with pytest.raises(CheckpointInUseError, match=rf"in use by another run \(pid {os.getpid()} on"):
            tiny().run(checkpoint_dir=tmp_path)
        assert not (tmp_path / CHECKPOINT_NAME).exists()
    tiny().run(checkpoint_dir=tmp_path)  # released: a later run works
    # an exception inside the run releases the lock too
    with pytest.raises(ValueError, match="not the one the checkpoint"):
        tiny(shifted, n_steps=2).run(checkpoint_dir=tmp_path, resume=True)
    tiny(n_steps=2).run(checkpoint_dir=tmp_path, resume=True)


@pytest.mark.skipif(sys.platform == "win32", reason="the child's signal handling below is POSIX")
def test_the_lock_holds_across_processes_and_dies_with_its_holder(tmp_path: Path) -> None:
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from wgfinfer.io import CheckpointDirectory
        with CheckpointDirectory(Path({str(tmp_path)!r})):
            print("locked", flush=True)
            time.sleep(120)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(CheckpointInUseError, match=rf"pid {child.pid} on {socket.gethostname()}"):
            tiny().run(checkpoint_dir=tmp_path)
    finally:
        child.kill()
        child.wait(timeout=30)
    tiny().run(checkpoint_dir=tmp_path)  # the killed holder left no lock behind


# ------------------------------------------------------------------------------------ two checkpoints
def test_the_last_two_checkpoints_are_kept_and_a_damaged_last_one_costs_one_step(tmp_path: Path) -> None:
    tiny(n_steps=3).run(checkpoint_dir=tmp_path)
    last, previous = tmp_path / CHECKPOINT_NAME, tmp_path / PREVIOUS_CHECKPOINT_NAME
    assert len(read_save_file(last, SAMPLER_FORMAT)["history"]) == 3
    assert len(read_save_file(previous, SAMPLER_FORMAT)["history"]) == 2
    last.write_bytes(last.read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match="last checkpoint is damaged.*resuming from the one before it"):
        resumed = tiny(n_steps=3).run(checkpoint_dir=tmp_path, resume=True)
    reference = tiny(n_steps=3).run()
    assert without_wall_time(resumed.history) == without_wall_time(reference.history)
    assert torch.equal(resumed.sample(50, seed=2), reference.sample(50, seed=2))
    # both damaged: a clear error naming both files
    for path in (last, previous):
        path.write_bytes(b"garbage")
    both = r"no readable checkpoint.*checkpoint\.pt.*checkpoint\.previous\.pt"
    with pytest.raises(SaveFileError, match=both):
        tiny(n_steps=4).run(checkpoint_dir=tmp_path, resume=True)


def test_a_crash_between_the_two_renames_resumes_from_the_previous_checkpoint(tmp_path: Path) -> None:
    tiny(n_steps=2).run(checkpoint_dir=tmp_path)
    (tmp_path / CHECKPOINT_NAME).unlink()  # as if killed after moving it to the previous name
    resumed = tiny(n_steps=2).run(checkpoint_dir=tmp_path, resume=True)
    assert [h["step"] for h in resumed.history] == [1, 2]


def test_a_fresh_run_does_not_keep_another_runs_checkpoint_as_its_previous(tmp_path: Path) -> None:
    tiny(n_steps=2).run(checkpoint_dir=tmp_path)
    with pytest.warns(UserWarning, match="already holds a checkpoint"):
        tiny(shifted, n_steps=1).run(checkpoint_dir=tmp_path)
    assert not (tmp_path / PREVIOUS_CHECKPOINT_NAME).exists()
    wgfinfer.WGFSampler.load(tmp_path / CHECKPOINT_NAME, shifted)


# ------------------------------------------------------------------------------------ temporaries
def test_stale_temporary_files_are_removed(tmp_path: Path) -> None:
    ended = [sys.executable, "-c", "import os; print(os.getpid())"]
    dead_pid = int(subprocess.run(ended, capture_output=True, text=True, check=True).stdout)
    host = socket.gethostname()
    stale = tmp_path / f".s.pt.{host}.{dead_pid}.abc123.tmp"
    live = tmp_path / f".s.pt.{host}.{os.getpid()}.def456.tmp"  # a writer still running
    elsewhere = tmp_path / f".s.pt.other-host.{dead_pid}.ghi789.tmp"  # another host's writer
    for path in (stale, live, elsewhere):
        path.write_bytes(b"partial")
    sampler = tiny().run()
    sampler.save(tmp_path / "s.pt")
    assert not stale.exists() and live.exists() and elsewhere.exists()
    assert remove_stale_temporaries(tmp_path / "s.pt") == []
    # in a checkpoint directory the run holds the lock: every temporary file there is stale
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    leftovers = [ckpt / f".{CHECKPOINT_NAME}.{host}.{os.getpid()}.x.tmp", ckpt / f".{CHECKPOINT_NAME}.o.tmp"]
    for path in leftovers:
        path.write_bytes(b"partial")
    tiny().run(checkpoint_dir=ckpt)
    assert not any(path.exists() for path in leftovers)


# ------------------------------------------------------------------------------------ bounded memory
def test_an_expanded_tensor_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    content = {**header(SAMPLER_FORMAT), "big": torch.zeros(1).expand(10**8), "checksum": "x"}
    path = tmp_path / "crafted.pt"
    torch.save(content, path)
    assert path.stat().st_size < 20_000  # a 400 MB tensor in a file of a few kilobytes
    tracemalloc.start()
    try:
        with pytest.raises(SaveFileError, match="expanded or overlapping view"):
            wgfinfer.WGFSampler.load(path, log_density)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 20_000_000


def test_compressed_records_and_non_zip_files_are_refused_unread(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    tiny().run().save(good)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(good) as source, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as out:
        for record in source.infolist():
            out.writestr(record.filename, source.read(record.filename))
    with pytest.raises(SaveFileError, match="is compressed"):
        wgfinfer.WGFSampler.load(deflated, log_density)
    with pytest.raises(SaveFileError, match="not a torch zip archive"):
        (tmp_path / "text.pt").write_text("not a zip")
        wgfinfer.WGFSampler.load(tmp_path / "text.pt", log_density)
