"""Cached proposals of the JKO filter (issue 19, point 2): a pool of base draws pushed through each
map once gives the same acceptance ratios as pushing every proposal from its base point, and the
map evaluations per observation do not grow with the number of observations."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Independent, Normal

import wgfinfer
from wgfinfer.filtering import GaussianObservations, JKOFilter, LangevinDiffusion
from wgfinfer.filtering.mcmc import (
    FlowTrajectories,
    ProposalPool,
    metropolis_hastings,
    proposals_needed,
)

CPU = torch.device("cpu")


class Bent(nn.Module):
    """``T(x) = m x + c + b sin(x)``: increasing for ``|b| < m``, so a valid (nonlinear) transport."""

    def __init__(self, m: float, c: float, b: float = 0.0) -> None:
        super().__init__()
        self.m, self.c, self.b = m, c, b

    def transport(self, x: Tensor) -> Tensor:
        return self.m * x + self.c + self.b * torch.sin(x)


def standard_normal(d: int = 1) -> Independent:
    return Independent(Normal(torch.zeros(d, dtype=torch.float64), torch.ones(d, dtype=torch.float64)), 1)


def three_map_paths() -> FlowTrajectories:
    obs = GaussianObservations([1.0, 2.0], torch.tensor([[0.7, -0.2], [1.4, 0.3]]), 0.8)
    maps = [Bent(0.9, 0.1, 0.3), Bent(1.1, -0.2, 0.2), Bent(0.8, 0.3, -0.4)]
    return FlowTrajectories(standard_normal(2), maps, obs, [1, 3])


def test_cached_trajectories_equal_fresh_pushes() -> None:
    paths = three_map_paths()
    pool = ProposalPool.draw(paths, 500, torch.Generator().manual_seed(0), CPU)
    pool.advance(paths, 1, 1)  # after the first interval and its observation
    pool.advance(paths, 3, 2)  # only the two newest maps
    x, log_w = paths.push(pool.z, 3, 2)
    torch.testing.assert_close(pool.x, x, rtol=0, atol=0)
    torch.testing.assert_close(pool.log_weight, log_w, rtol=0, atol=0)


def test_cached_chains_equal_chains_on_freshly_pushed_proposals() -> None:
    """The same proposals, once from the cache carried over an earlier observation, once pushed from
    their base points: identical chains (states, acceptance), so the MH target is unchanged."""
    paths = three_map_paths()
    n_chains, n_keep, warmup, thin = 16, 64, 10, 2
    size = proposals_needed(n_chains, n_keep, warmup, thin)
    cached = ProposalPool.draw(paths, size, torch.Generator().manual_seed(1), CPU)
    metropolis_hastings(
        paths, 1, 1, n_chains, n_keep, warmup, thin, "independent", torch.Generator().manual_seed(2),
        CPU, pool=cached,
    )  # fmt: skip
    fresh = ProposalPool(cached.z.clone(), *paths.push(cached.z.clone(), 3, 2), n_maps=3, n_obs=2)
    outs = [
        metropolis_hastings(
            paths,
            3,
            2,
            n_chains,
            n_keep,
            warmup,
            thin,
            "independent",
            torch.Generator().manual_seed(3),
            CPU,
            pool=pool,
        )  # fmt: skip
        for pool in (cached, fresh)
    ]
    assert outs[0].acceptance_rate == outs[1].acceptance_rate
    assert 0.05 < outs[0].acceptance_rate < 0.95
    for a, b in ((outs[0].x, outs[1].x), (outs[0].z, outs[1].z), (outs[0].log_weight, outs[1].log_weight)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pool_proposals_target_the_conjugate_posterior() -> None:
    """As the uncached test in test_filtering.py: one map N(0,1) -> N(1, 4), y = 3 with unit noise,
    posterior N(2.6, 0.8); 4000 chains keep one state each (tolerance: 4 standard errors)."""
    obs = GaussianObservations([1.0], torch.tensor([3.0]), 1.0)
    paths = FlowTrajectories(standard_normal(), [Bent(2.0, 1.0)], obs, [1])
    n, warmup = 4000, 300
    pool = ProposalPool.draw(paths, proposals_needed(n, n, warmup, 1), torch.Generator().manual_seed(4), CPU)
    out = metropolis_hastings(
        paths, 1, 1, n, n, warmup, 1, "independent", torch.Generator().manual_seed(5), CPU, pool=pool
    )
    x = out.x.squeeze(-1)
    assert abs(float(x.mean()) - 2.6) < 4 * math.sqrt(0.8 / n)
    assert abs(float(x.var()) - 0.8) < 4 * 0.8 * math.sqrt(2 / n)
    torch.testing.assert_close(out.x, 2.0 * out.z + 1.0)


def test_chains_started_from_given_states() -> None:
    """``start``: the chains begin at the given states.  Started at exact posterior draws (the
    conjugate case above: base points ``z ~ N(0.8, 0.2)``), one random-walk sweep with no warm-up
    keeps the posterior N(2.6, 0.8); chains that ignored ``start`` would begin at the prior's
    ``x ~ N(1, 4)`` and stay far from it after one sweep (tolerance: 4 standard errors)."""
    obs = GaussianObservations([1.0], torch.tensor([3.0]), 1.0)
    paths = FlowTrajectories(standard_normal(), [Bent(2.0, 1.0)], obs, [1])
    n = 4000
    noise = torch.randn(n, 1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    z = 0.8 + math.sqrt(0.2) * noise
    x, log_w = paths.push(z, 1, 1)
    out = metropolis_hastings(
        paths, 1, 1, n, n, 0, 1, "latent_rw", torch.Generator().manual_seed(7), CPU, 0.5, start=(x, z, log_w)
    )
    kept = out.x.squeeze(-1)
    assert abs(float(kept.mean()) - 2.6) < 4 * math.sqrt(0.8 / n)
    assert abs(float(kept.var()) - 0.8) < 4 * 0.8 * math.sqrt(2 / n)
    with pytest.raises(ValueError, match="start must hold 8 states"):
        metropolis_hastings(
            paths, 1, 1, 8, 8, 0, 1, "latent_rw", torch.Generator(), CPU, start=(x[:4], z[:4], log_w[:4])
        )


def _filter_by_hand(n_obs: int, pool: ProposalPool | None) -> list[int]:
    """Map evaluations of the MH run at each of ``n_obs`` observations, two new maps per interval."""
    obs = GaussianObservations([0.5 * (k + 1) for k in range(n_obs)], 0.1 * torch.ones(n_obs), 1.0)
    paths = FlowTrajectories(standard_normal(), [], obs, [])
    counts = []
    for k in range(n_obs):
        paths.maps += [Bent(0.95, 0.02, 0.1), Bent(0.97, -0.01, 0.05)]
        paths.obs_after_map.append(len(paths.maps))
        before = paths.map_evaluations
        metropolis_hastings(
            paths, len(paths.maps), k + 1, 8, 32, 5, 1, "independent",
            torch.Generator().manual_seed(k), CPU, pool=pool,
        )  # fmt: skip
        counts.append(paths.map_evaluations - before)
    return counts


def test_map_evaluations_per_observation_do_not_grow() -> None:
    needed = proposals_needed(8, 32, 5, 1)
    pool = ProposalPool.draw(
        FlowTrajectories(standard_normal(), [], None, []), needed, torch.Generator(), CPU
    )
    assert _filter_by_hand(6, pool) == [2 * needed] * 6  # the pool through the two newest maps
    # without a cache observation k pushes every proposal through all 2 k maps
    assert _filter_by_hand(6, None) == [2 * (k + 1) * needed for k in range(6)]


def test_the_filter_records_constant_map_evaluations_per_observation() -> None:
    diffusion = LangevinDiffusion(
        lambda x: 0.5 * x.square().sum(-1),
        1.0,
        Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)),
    )
    times = [0.5, 1.0, 1.5, 2.0]
    obs = GaussianObservations(times, torch.tensor([0.3, -0.1, 0.2, 0.0]), 1.0)
    scheme = wgfinfer.ICNN(iters_per_step=2, batch_size=32, hidden=(4, 4), n_particles=64)
    options = dict(step_size=0.5, n_chains=16, warmup=5, thin=1, proposal="independent", seed=0)
    cached = JKOFilter(diffusion, scheme, **options).run(obs, 2.0)
    needed = proposals_needed(16, 64, 5, 1)
    # one map per interval; from the second observation on the 16 chains continued from the
    # previous draws are carried through that interval's map too (warmup_continued, the default),
    # and need no fresh starting draws (the pool is advanced whole all the same)
    carried = [0, 16, 16, 16]
    assert cached.map_evaluations == {t: needed + c for t, c in zip(times, carried, strict=True)}
    uncached = JKOFilter(diffusion, scheme, cache_proposals=False, **options).run(obs, 2.0)
    expected = {t: (k + 1) * (needed - c) + c for k, (t, c) in enumerate(zip(times, carried, strict=True))}
    assert uncached.map_evaluations == expected
    fresh = JKOFilter(diffusion, scheme, warmup_continued=None, **options).run(obs, 2.0)
    assert fresh.map_evaluations == {t: needed for t in times}  # fresh chains: the pool alone


def test_bad_pool_use() -> None:
    paths = three_map_paths()
    pool = ProposalPool.draw(paths, 10, torch.Generator().manual_seed(0), CPU)
    with pytest.raises(ValueError, match="independence proposals only"):
        metropolis_hastings(paths, 1, 1, 2, 2, 1, 1, "latent_rw", torch.Generator(), CPU, pool=pool)
    with pytest.raises(ValueError, match="fewer than the"):
        metropolis_hastings(paths, 1, 1, 4, 8, 5, 1, "independent", torch.Generator(), CPU, pool=pool)
    pool.advance(paths, 3, 2)
    with pytest.raises(ValueError, match="cannot extend"):
        pool.advance(paths, 1, 1)
    with pytest.raises(ValueError, match="observation 1 was made after 1 maps"):
        paths.obs_after_map[1] = 1
        paths.extend(pool.z, pool.log_weight, 3, 1, 3, 2)
    with pytest.raises(TypeError, match="cache_proposals"):
        JKOFilter(LangevinDiffusion(lambda x: x.sum(-1), 1.0, Normal(0.0, 1.0)), cache_proposals="yes")


def test_trajectories_push_icnn_maps_through_snapshots_taken_again_after_a_change() -> None:
    """ICNN maps are pushed through :class:`FrozenTransport` snapshots; a changed parameter (an
    optimiser step, in place) or a replaced map is seen, never a stale snapshot."""
    gen = torch.Generator().manual_seed(0)
    maps = [wgfinfer.nn.DenseICNN(1, (6, 5), generator=gen, dtype=torch.float64) for _ in range(2)]
    obs = GaussianObservations([1.0], torch.tensor([[0.3]]), 0.5)
    paths = FlowTrajectories(standard_normal(1), maps, obs, [2])
    z = torch.randn(7, 1, dtype=torch.float64, generator=gen)

    def direct() -> Tensor:
        return maps[1].transport(maps[0].transport(z)).detach()

    torch.testing.assert_close(paths.push(z, 2, 1)[0], direct(), rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        maps[0].linear.add_(0.5)
    torch.testing.assert_close(paths.push(z, 2, 1)[0], direct(), rtol=1e-12, atol=1e-12)
    maps[1] = paths.maps[1] = wgfinfer.nn.DenseICNN(1, (4,), generator=gen, dtype=torch.float64)
    torch.testing.assert_close(paths.push(z, 2, 1)[0], direct(), rtol=1e-12, atol=1e-12)
