"""Affine coupling flows (``map="coupling"`` of the PWGF scheme): exact densities and inverse, the
pullback metric, and a PWGF run to a target whose exact transport lies in the family."""

from __future__ import annotations

import math

import pytest
import torch

# the map helpers of the PWGF tests (tests/ is on sys.path under pytest's default import mode)
from test_pwgf import _explicit_metric, _gen, _jacobian_log_det, _perturb
from torch import Tensor, nn
from torch.distributions import Independent, Normal

import wgfinfer
from wgfinfer.functionals import KLDivergence
from wgfinfer.nn.coupling import AffineCouplingFlow
from wgfinfer.schemes.pwgf import PWGF, metric_vector_product, new_pushforward, pwgf_step

F64 = torch.float64


@pytest.mark.parametrize("dim", [2, 5])
def test_starts_at_identity(dim: int) -> None:
    flow = AffineCouplingFlow(dim, 3, (8,), generator=_gen(0), dtype=F64)
    x = torch.randn(6, dim, generator=_gen(1), dtype=F64)
    y, log_det = flow.map_and_log_det(x)
    assert torch.equal(y, x)
    assert torch.equal(log_det, torch.zeros(6, dtype=F64))
    x_back, log_det_back, converged = flow.inverse_and_log_det(x)
    assert torch.equal(x_back, x) and torch.equal(log_det_back, log_det) and bool(converged.all())


@pytest.mark.parametrize("dim", [2, 5])
def test_log_det_and_inverse_are_exact(dim: int) -> None:
    gen = _gen(2)
    flow = AffineCouplingFlow(dim, 4, (8, 8), generator=gen, dtype=F64)
    _perturb(flow, gen, 0.5)
    x = 1.5 * torch.randn(7, dim, generator=gen, dtype=F64)
    y, log_det = flow.map_and_log_det(x)
    assert torch.allclose(y, flow.transport(x), rtol=0, atol=0)
    assert not torch.allclose(y, x, atol=1e-3)  # the perturbation moved the points
    # both exact: the difference is rounding
    assert torch.allclose(log_det, _jacobian_log_det(flow, x), rtol=0, atol=1e-11)
    x_back, log_det_back, converged = flow.inverse_and_log_det(y)
    assert torch.allclose(x_back, x, rtol=0, atol=1e-12)
    assert torch.allclose(log_det_back, log_det, rtol=0, atol=1e-12)
    assert bool(converged.all())


def test_layers_alternate_the_halves_and_every_coordinate_moves() -> None:
    flow = AffineCouplingFlow(6, 4, (4,), generator=_gen(3))
    for j in (0, 2):
        first, second = flow.permutations[j], flow.permutations[j + 1]
        # the second layer of a pair transforms exactly what the first conditioned on
        assert set(second[3:].tolist()) == set(first[:3].tolist())
    gen = _gen(4)
    _perturb(flow, gen, 0.5)
    x = torch.randn(5, 6, generator=gen)
    assert bool(((flow(x) - x).abs() > 1e-6).all())


def test_each_layer_is_the_documented_affine_coupling() -> None:
    # layer j conditions on the coordinates permutations[j][:k] and moves the others by
    # x_b * exp(s(x_a)) + t(x_a): composed one layer at a time in the coordinates' own order, the
    # layers give the flow's map and log-determinant exactly (the flow keeps its points in each
    # layer's order instead, which must change nothing)
    gen = _gen(7)
    flow = AffineCouplingFlow(7, 5, (6,), generator=gen, dtype=F64)
    _perturb(flow, gen, 0.5)
    x = torch.randn(9, 7, generator=gen, dtype=F64)
    y, log_det = x.clone(), torch.zeros(9, dtype=F64)
    for j in range(flow.n_layers):
        perm, k = flow.permutations[j], flow._split(j)
        s, t = flow._scale_shift(j, y[:, perm[:k]])
        y[:, perm[k:]] = y[:, perm[k:]] * torch.exp(s) + t
        log_det = log_det + s.sum(-1)
    got, got_log_det = flow.map_and_log_det(x)
    # equal up to rounding (a slice and a gathered copy can take different matmul kernels)
    assert torch.allclose(got, y, rtol=0, atol=1e-12)
    assert torch.allclose(got_log_det, log_det, rtol=0, atol=1e-12)
    back, back_log_det, _ = flow.inverse_and_log_det(y)
    assert torch.allclose(back, x, rtol=0, atol=1e-12)
    assert torch.allclose(back_log_det, log_det, rtol=0, atol=1e-12)


def test_scale_is_bounded_and_float32_round_trips() -> None:
    gen = _gen(5)
    flow = AffineCouplingFlow(3, 1, (4,), scale_bound=0.5, generator=gen)
    with torch.no_grad():
        flow.conditioners[0][-1].bias.fill_(1e6)  # a huge raw log-scale and shift
    x = torch.randn(4, 3, generator=gen)
    _, log_det = flow.map_and_log_det(x)
    # one layer moves 3 - 1 = 2 coordinates by at most e^0.5 each
    assert torch.allclose(log_det, torch.full((4,), 2 * 0.5), rtol=1e-6)
    flow = AffineCouplingFlow(3, 4, (4,), generator=_gen(6))
    _perturb(flow, gen, 0.3)
    y = flow(x)
    assert torch.allclose(flow.inverse_and_log_det(y)[0], x, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dim": 1}, "dim"),
        ({"dim": 2.0}, "dim"),
        ({"dim": 3, "n_layers": 0}, "n_layers"),
        ({"dim": 3, "hidden": ()}, "hidden"),
        ({"dim": 3, "hidden": (4, 0)}, "hidden"),
        ({"dim": 3, "scale_bound": float("nan")}, "scale_bound"),
        ({"dim": 3, "scale_bound": 0.0}, "scale_bound"),
    ],
)
def test_rejects_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AffineCouplingFlow(**kwargs)
    with pytest.raises(ValueError, match="shape"):
        AffineCouplingFlow(3)(torch.zeros(4, 2))


def test_metric_vector_product_matches_explicit_jacobian() -> None:
    gen = _gen(7)
    module = AffineCouplingFlow(3, 2, (3,), generator=gen, dtype=F64)
    _perturb(module, gen, 0.5)
    z = torch.randn(9, 3, generator=gen, dtype=F64)
    explicit, _ = _explicit_metric(module, z)
    product = metric_vector_product(module, None, z)
    for _ in range(3):
        v = torch.randn(explicit.shape[0], generator=gen, dtype=F64)
        assert torch.allclose(product(v), explicit @ v, rtol=1e-12, atol=1e-13)


def test_config_defaults_per_map() -> None:
    assert PWGF(map="coupling").n_layers == 4
    assert PWGF(map="planar").n_layers == 40
    assert PWGF(map="coupling", n_layers=6).n_layers == 6
    module = new_pushforward(4, PWGF(map="coupling", hidden=(5,)), _gen(0), dtype=F64)
    assert isinstance(module, AffineCouplingFlow)
    assert (module.n_layers, module.hidden) == (4, (5,))
    sampler = wgfinfer.WGFSampler(lambda x: -0.5 * x.square().sum(-1), dim=2, scheme=PWGF(map="coupling"))
    assert sampler.scheme.n_layers == 4
    with pytest.raises(ValueError, match="map='coupling' needs dim >= 2"):
        wgfinfer.WGFSampler(lambda x: -0.5 * x.square().sum(-1), dim=1, scheme=PWGF(map="coupling"))
    with pytest.raises(TypeError, match="n_layers"):
        wgfinfer.ICNN(n_layers=3)  # an option of the PWGF scheme only


# a conditional Gaussian whose transport from N(0, I) is one coupling layer with a tanh conditioner:
# a ~ N(0, 1), b | a ~ N(tanh(a), exp(tanh(a))^2)
def _conditional_log_density(x: Tensor) -> Tensor:
    a, b = x[:, 0], x[:, 1]
    log_sd = torch.tanh(a)
    normal = -0.5 * math.log(2 * math.pi)
    return normal - 0.5 * a.square() + normal - log_sd - 0.5 * ((b - torch.tanh(a)) / log_sd.exp()).square()


def test_pwgf_reaches_a_target_inside_the_family() -> None:
    """KL(rho_theta || p) with exact densities on both sides (p is normalised): the flow of
    coupling maps drives it from about 1 to the Monte-Carlo noise floor."""
    base = Independent(Normal(torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64)), 1)
    functional = KLDivergence(_conditional_log_density)
    # Euler steps of 0.1 (forward Euler; steps of 0.25 overshoot on this target)
    config = PWGF(map="coupling", n_layers=2, hidden=(8,), n_samples=1024, substeps=2)
    gen = _gen(8)
    module: nn.Module = new_pushforward(2, config, gen, dtype=F64)

    def kl(m: nn.Module, n: int = 20000) -> tuple[float, float]:
        z = torch.randn(n, 2, generator=_gen(99), dtype=F64)
        with torch.no_grad():
            y, log_det = m.map_and_log_det(z)
            gap = base.log_prob(z) - log_det - _conditional_log_density(y)
        return float(gap.mean()), float(gap.std() / math.sqrt(n))

    start, start_se = kl(module)
    for k in range(50):
        module, _ = pwgf_step(module, base, functional, 0.2, config, gen, step_index=k)
    end, end_se = kl(module)
    # KL(N(0, I) || p) = E_a[tanh a + (1 + tanh^2 a) e^{-2 tanh a} / 2 - 1/2], about 1.03
    assert start > 0.9 + 5 * start_se
    # a KL is >= 0, so the estimate's floor is -5 SE; 10 time units bring it to about 0.004
    assert -5 * end_se < end < 0.01 + 5 * end_se
