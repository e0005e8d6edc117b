"""One JKO step of the sampler's training loop, for each scheme.

The scheme modules fit a map from particles; this module does what the sampler needs around that:
warm starts, pushing the cached particle pool through the new map (once), the per-step monitor of
``KL(rho_k || target) - log Z`` on the full data, the history entry and divergence checks.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from wgfinfer.errors import NonFiniteLogDensityError, NonPositiveHessianError, TrainingDivergedError
from wgfinfer.flow import Flow, sample_distribution
from wgfinfer.functionals import KLDivergence
from wgfinfer.schemes.common import check_explosion
from wgfinfer.schemes.icnn import ICNNSchemeConfig, icnn_jko_step, new_potential
from wgfinfer.schemes.pwgf import PWGFConfig, new_pushforward, pwgf_step
from wgfinfer.schemes.variational import new_dual, new_map, variational_jko_step, variational_kl

if TYPE_CHECKING:
    from wgfinfer.sampler import WGFSampler


RETRY_LR_FACTOR = 0.25


def initial_pool(sampler: WGFSampler) -> None:
    """Draw the particle pool of ``rho_0`` (after the Laplace whitening, if any) and check the target
    on some of its points before any training; a ``KeyboardInterrupt`` leaves the sampler as it was."""
    from wgfinfer import io as wgf_io

    assert sampler.flow is not None and sampler.target is not None
    snapshot = wgf_io.training_snapshot(sampler)
    try:
        if sampler._init in ("laplace", "gaussian") and sampler.flow.whitening is None:
            sampler.flow.whitening = sampler._laplace_whitening()
        n, dim, dtype = sampler.n_particles, sampler.dim, sampler.dtype
        x0 = sample_distribution(sampler.flow.base, n, sampler._generator, sampler.device)
        if x0.shape != (n, dim) or x0.dtype != dtype:
            raise ValueError(
                f"init must draw points of shape (n, {dim}) and dtype {dtype}, "
                f"got {tuple(x0.shape[1:])} and {x0.dtype}"
            )
        sampler.target.validate(sampler._to_target_space(x0[: min(64, n)]))
    except KeyboardInterrupt:
        wgf_io.restore_training_snapshot(sampler, snapshot)
        raise
    sampler._particles = x0
    sampler._particles_log_q = sampler.flow.base.log_prob(x0[: sampler.n_monitor])


def train_steps(sampler: WGFSampler, checkpoint: Path | None) -> None:
    """Run the JKO steps not yet done, with a progress bar, writing ``checkpoint`` after each one.

    A ``KeyboardInterrupt`` drops the step in progress whole (its random draws included): the
    sampler keeps every completed step.
    """
    from wgfinfer import io as wgf_io

    assert sampler.flow is not None
    bar = None
    if sampler.progress_bar:
        from tqdm.auto import tqdm

        bar = tqdm(total=sampler.n_steps, initial=len(sampler.flow), desc="JKO steps", unit="step")
    try:
        for k in range(len(sampler.flow), sampler.n_steps):
            snapshot = wgf_io.training_snapshot(sampler)
            try:
                run_jko_step(sampler, k, bar)
            except KeyboardInterrupt:
                wgf_io.restore_training_snapshot(sampler, snapshot)
                raise
            if checkpoint is not None:
                wgf_io.write_checkpoint(sampler, checkpoint)
    finally:
        if bar is not None:
            bar.close()


def run_jko_step(sampler: WGFSampler, k: int, bar: Any) -> None:
    """Train JKO step ``k`` of ``sampler``, push its particle pool and record the step in history.

    A step that diverges (non-finite loss, map output or gradient; a failed Cholesky; a transport
    distance that explodes; a target that is NaN/inf at the points the step moved to) is retried from
    the same warm start and particle pool with the learning rates multiplied by ``RETRY_LR_FACTOR``
    each time (PWGF: the Euler step, by more substeps), at most ``sampler.max_retries`` times; every
    failed attempt is recorded in the step's ``history`` entry (``retries``).  When the retries are
    exhausted, :class:`TrainingDivergedError` names the step and carries the attempts (``.attempts``);
    the sampler keeps every completed step.
    """
    assert sampler.flow is not None and sampler.target is not None and sampler._particles is not None
    start = time.perf_counter()

    def report(it: int, loss: float) -> None:
        if bar is not None and (it % 50 == 0 or it == getattr(sampler.config, "iters_per_step", 1) - 1):
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

    base_config = sampler.config
    max_retries = sampler.max_retries
    attempts: list[dict[str, Any]] = []
    scale = 1.0
    try:
        while True:
            sampler.config = _scaled(base_config, scale)
            try:
                if isinstance(base_config, ICNNSchemeConfig):
                    record = _icnn_step(sampler, k, report)
                elif isinstance(base_config, PWGFConfig):
                    record = _pwgf_step(sampler, k)
                else:
                    record = _variational_step(sampler, k, report)
                break
            except (TrainingDivergedError, NonFiniteLogDensityError) as exc:
                # the pool's log-densities were finite (checked when it was drawn): NaN/inf at points
                # a step moved particles to is a diverged step, or a target undefined there
                attempts.append({"lr_scale": scale, "error": str(exc)})
                if len(attempts) > max_retries:
                    scales = ", ".join(f"{a['lr_scale']:g}" for a in attempts)
                    hint = (
                        " (the target is NaN/inf where the step moved particles: the step diverged, or "
                        "log_density is not finite on all of R^d; sample constrained parameters on an "
                        "unconstrained scale)"
                        if isinstance(exc, NonFiniteLogDensityError)
                        else ""
                    )
                    error = TrainingDivergedError(
                        f"JKO step {k} diverged {len(attempts)} times (learning rates scaled by "
                        f"{scales}); last error: {exc}{hint}. "
                        f"The sampler keeps its {len(sampler.flow)} completed steps."
                    )
                    error.attempts = attempts
                    raise error from exc
                scale *= RETRY_LR_FACTOR
    finally:
        sampler.config = base_config
    elapsed = time.perf_counter() - start
    sampler.training_time += elapsed
    sampler.history.append(
        {
            "step": k + 1,
            "time": (k + 1) * sampler.step_size,
            **record,
            "wall_time": elapsed,
            "retries": attempts,
        }
    )
    if bar is not None:
        bar.set_postfix(loss=f"{record['loss']:.4g}")
        bar.update(1)


def _scaled(config: Any, scale: float) -> Any:
    if scale == 1.0:
        return config
    if isinstance(config, ICNNSchemeConfig):
        return dataclasses.replace(config, lr=config.lr * scale)
    if isinstance(config, PWGFConfig):
        return dataclasses.replace(config, substeps=config.substeps * round(1.0 / scale))
    return dataclasses.replace(config, lr=config.lr * scale, dual_lr=config.dual_lr * scale)


def _check_explosion(k: int, before: Tensor, after: Tensor) -> None:
    """Raise if the pool moved by far more than its own spread: the map exploded."""
    check_explosion(before, after, f"JKO step {k}")


def _full_data_lp(sampler: WGFSampler, working_points: Tensor) -> Tensor:
    """Log target on the full data (also when training on mini-batches) at working-space points."""
    assert sampler.target is not None
    with torch.no_grad():
        return sampler.target.log_density(sampler._to_target_space(working_points))


def _whitening_correction(flow: Flow) -> float:
    # KL up to log Z is the same in working and target coordinates once log q carries the
    # whitening's log-Jacobian
    return 0.0 if flow.whitening is None else float(flow.whitening.log_abs_det)


def _icnn_step(sampler: WGFSampler, k: int, report: Any) -> dict[str, Any]:
    flow, config = sampler.flow, sampler.config
    assert flow is not None and sampler._particles_log_q is not None
    warm = (
        flow.maps[-1]
        if flow.maps and config.warm_start
        else new_potential(sampler.dim, config, sampler._generator, sampler.dtype, sampler.device)
    )
    psi, info = icnn_jko_step(
        warm,
        sampler._particles,
        sampler._working_log_density,
        sampler.step_size,
        config,
        sampler._generator,
        beta=sampler.beta,
        step_index=k,
        callback=report,
    )
    single = Flow(flow.base, [psi], chunk_size=flow.chunk_size, device=sampler.device)
    m = sampler.n_monitor
    try:
        monitored, log_q = single.push(sampler._particles[:m], sampler._particles_log_q)
        rest, _ = single.push(sampler._particles[m:])
    except NonPositiveHessianError as exc:
        raise TrainingDivergedError(f"JKO step {k}: pushing the particle pool failed: {exc}") from exc
    particles = torch.cat([monitored, rest])
    assert log_q is not None
    if not bool(torch.isfinite(particles).all() and torch.isfinite(log_q).all()):
        raise TrainingDivergedError(f"JKO step {k}: the new map sends particles to non-finite values")
    _check_explosion(k, sampler._particles, particles)
    lp = _full_data_lp(sampler, monitored)
    kl_plus_log_z = float((log_q - sampler.beta * lp).mean()) - _whitening_correction(flow)
    flow.append(psi)
    sampler._particles, sampler._particles_log_q = particles, log_q
    return {
        "loss": info.loss,
        "w2": info.w2,
        "potential": info.potential,
        "log_det": info.log_det,
        "kl_plus_log_z": kl_plus_log_z,
        "iterations": info.iterations,
    }


def _variational_step(sampler: WGFSampler, k: int, report: Any) -> dict[str, Any]:
    flow, config = sampler.flow, sampler.config
    assert flow is not None
    args = (sampler.dim, config, sampler._generator, sampler.dtype, sampler.device)
    warm = flow.maps[-1] if flow.maps else new_map(*args)
    dual = sampler._dual if sampler._dual is not None else new_dual(*args)
    transport, dual, info = variational_jko_step(
        warm,
        dual,
        sampler._particles,
        sampler._working_log_density,
        sampler.step_size,
        config,
        sampler._generator,
        beta=sampler.beta,
        step_index=k,
        callback=report,
    )
    single = Flow(flow.base, [transport], chunk_size=flow.chunk_size, device=sampler.device)
    particles = single.push(sampler._particles)[0]
    if not bool(torch.isfinite(particles).all()):
        raise TrainingDivergedError(f"JKO step {k}: the new map sends particles to non-finite values")
    _check_explosion(k, sampler._particles, particles)
    monitored = particles[: sampler.n_monitor]
    lp = _full_data_lp(sampler, monitored)
    kl, kl_se = variational_kl(dual, info.reference, monitored, lp, sampler._generator, sampler.beta)
    flow.append(transport)
    sampler._particles, sampler._dual = particles, dual
    return {
        "loss": info.loss,
        "w2": info.w2,
        "potential": info.potential,
        "dual_objective": info.dual_objective,
        "kl_plus_log_z": kl - _whitening_correction(flow),
        "kl_plus_log_z_se": kl_se,
        "iterations": info.iterations,
    }


def _pwgf_step(sampler: WGFSampler, k: int) -> dict[str, Any]:
    """``substeps`` Euler steps of PWGF from the current map; the monitor pushes fixed draws of
    ``rho_0`` (the sampler's particles) through the new map with its exact log-det."""
    flow, config = sampler.flow, sampler.config
    assert flow is not None and sampler._particles is not None
    args = (sampler.dim, config, sampler._generator, sampler.dtype, sampler.device)
    current = flow.maps[-1] if flow.maps else new_pushforward(*args)
    functional = KLDivergence(sampler._working_log_density, beta=sampler.beta)
    new_map, info = pwgf_step(
        current, flow.base, functional, sampler.step_size, config, sampler._generator, step_index=k
    )
    x0 = sampler._particles[: sampler.n_monitor]
    with torch.no_grad():
        pushed, log_det = new_map.map_and_log_det(x0)
        log_q = flow.base.log_prob(x0) - log_det
    if not bool(torch.isfinite(pushed).all() and torch.isfinite(log_q).all()):
        raise TrainingDivergedError(f"JKO step {k}: the new map sends particles to non-finite values")
    _check_explosion(k, flow.push(x0, step=len(flow.maps))[0] if flow.maps else x0, pushed)
    lp = _full_data_lp(sampler, pushed)
    kl_plus_log_z = float((log_q - sampler.beta * lp).mean()) - _whitening_correction(flow)
    flow.append(new_map)
    return {
        "loss": info.energy,
        "energy_se": info.energy_se,
        "solver_iterations": info.solver_iterations,
        "residual": info.residual,
        "grad_norm": info.grad_norm,
        "kl_plus_log_z": kl_plus_log_z,
        "iterations": config.substeps,
    }
