"""The PWGF scheme (seed 004): push-forward maps, the matrix-free pullback metric, and the flow itself.

Float64 wherever a tolerance is compared with rounding; every random draw comes from a seeded
``torch.Generator``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from wgfinfer.errors import TrainingDivergedError, WGFWarning
from wgfinfer.flow import sample_distribution
from wgfinfer.functionals import InteractionEnergy, KLDivergence, PotentialEnergy
from wgfinfer.nn.pushforward import AffineMap, PlanarFlow, ResidualPushforward
from wgfinfer.schemes.pwgf import (
    PWGF,
    _solve,
    flatten_tensors,
    metric_vector_product,
    new_pushforward,
    pwgf_step,
    unflatten_vector,
)

F64 = torch.float64


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _normal(loc: list[float], scale: list[float]) -> Distribution:
    return Independent(Normal(torch.tensor(loc, dtype=F64), torch.tensor(scale, dtype=F64)), 1)


def _perturb(module: nn.Module, generator: torch.Generator, scale: float = 0.7) -> None:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))


def _jacobian_log_det(module: nn.Module, x: Tensor) -> Tensor:
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: module(v[None])[0], xi) for xi in x])
    return torch.linalg.slogdet(jac)[1]


def _styblinski_tang(x: Tensor) -> Tensor:
    """Seed 004 eq. 5.1."""
    return 3.0 / 50.0 * (x**4 - 16.0 * x**2 + 5.0 * x).sum(-1)


def _explicit_metric(module: nn.Module, z: Tensor) -> tuple[Tensor, list[Tensor]]:
    """``G = J^T J / N`` from the full ``(N d) x P`` Jacobian of ``theta -> T_theta(z)``."""
    names = [k for k, _ in module.named_parameters()]
    like = [p.detach() for p in module.parameters()]

    def push(flat: Tensor) -> Tensor:
        values = dict(zip(names, unflatten_vector(flat, like), strict=True))
        return torch.func.functional_call(module, values, (z,)).reshape(-1)

    jac = torch.autograd.functional.jacobian(push, flatten_tensors(like))
    return jac.T @ jac / z.shape[0], like


# --------------------------------------------------------------------------------------------------
# maps


def test_maps_start_at_identity() -> None:
    x = torch.randn(7, 3, generator=_gen(0), dtype=F64)
    for module in (
        PlanarFlow(3, 6, generator=_gen(1), dtype=F64),
        AffineMap(3, dtype=F64),
        ResidualPushforward(3, hidden=(8, 8), generator=_gen(1), dtype=F64),
    ):
        y, log_det = module.map_and_log_det(x)
        assert torch.equal(module.transport(x), x)
        assert torch.equal(y, x)
        assert torch.equal(log_det, torch.zeros(7, dtype=F64))


def test_planar_log_det_matches_autograd_jacobian() -> None:
    gen = _gen(2)
    flow = PlanarFlow(3, 5, generator=gen, dtype=F64)
    _perturb(flow, gen)
    x = 1.5 * torch.randn(6, 3, generator=gen, dtype=F64)
    y, log_det = flow.map_and_log_det(x)
    assert torch.allclose(y, flow(x), rtol=0, atol=1e-14)
    # both are exact formulas; the difference is rounding over 5 layers
    assert torch.allclose(log_det, _jacobian_log_det(flow, x), rtol=0, atol=1e-10)


def test_planar_reparameterisation_keeps_layers_invertible() -> None:
    gen = _gen(3)
    flow = PlanarFlow(2, 4, generator=gen, dtype=F64)
    _perturb(flow, gen, scale=3.0)
    with torch.no_grad():
        # raw w.u = -8 would fold the plane; w.u_hat = m(-8) stays above -1 (close to it: ~-0.9994)
        flow.u[1] = -8.0 * flow.w[1] / flow.w[1].square().sum()
    u_hat, s = flow.effective_u()
    assert bool((s > -1).all())
    assert torch.allclose((flow.w * u_hat).sum(-1), s, rtol=0, atol=1e-12)
    assert float(s[1].detach()) < -0.99
    x = 2.0 * torch.randn(200, 2, generator=gen, dtype=F64)
    y, log_det = flow.map_and_log_det(x)
    x_back, log_det_back, converged = flow.inverse_and_log_det(y, tol=1e-12)
    assert bool(converged.all())
    # per layer |alpha error| <= tol * max(1, |w.y|) / (1 + s) ~ 1e-12 * 10 / 6e-4 ~ 2e-8 at worst
    # (the nearly singular layer), propagated through 3 Lipschitz-bounded layers
    assert torch.allclose(x_back, x, rtol=0, atol=1e-6)
    assert torch.allclose(log_det_back, log_det, rtol=0, atol=1e-6)


def test_planar_inverse_round_trip_and_float32() -> None:
    gen = _gen(4)
    flow = PlanarFlow(3, 10, generator=gen, dtype=F64)
    _perturb(flow, gen)
    x = torch.randn(300, 3, generator=gen, dtype=F64)
    y, log_det = flow.map_and_log_det(x)
    x_back, log_det_back, converged = flow.inverse_and_log_det(y)
    assert bool(converged.all())
    assert torch.allclose(x_back, x, rtol=0, atol=1e-8)
    assert torch.allclose(log_det_back, log_det, rtol=0, atol=1e-8)

    flow32 = PlanarFlow(3, 10, generator=_gen(4), dtype=torch.float32)
    flow32.load_state_dict({k: v.float() for k, v in flow.state_dict().items()})
    x_back32, _, converged32 = flow32.inverse_and_log_det(y.float())
    assert bool(converged32.all())
    # default float32 tolerance 1e-5 on each scalar equation, 10 layers
    assert torch.allclose(x_back32.double(), x, rtol=0, atol=1e-3)

    bad = y.clone()
    bad[0, 0] = float("nan")
    assert not bool(flow.inverse_and_log_det(bad)[2][0])


def test_affine_map_log_det_and_inverse() -> None:
    gen = _gen(5)
    affine = AffineMap(3, dtype=F64)
    _perturb(affine, gen)
    x = torch.randn(20, 3, generator=gen, dtype=F64)
    y, log_det = affine.map_and_log_det(x)
    assert torch.allclose(log_det, _jacobian_log_det(affine, x), rtol=0, atol=1e-12)
    x_back, log_det_back, converged = affine.inverse_and_log_det(y)
    assert bool(converged.all())
    assert torch.allclose(x_back, x, rtol=0, atol=1e-10)
    assert torch.allclose(log_det_back, log_det, rtol=0, atol=1e-14)


def test_residual_pushforward_log_det_has_no_inverse() -> None:
    gen = _gen(6)
    net = ResidualPushforward(2, hidden=(6, 6), generator=gen, dtype=F64)
    _perturb(net, gen, scale=0.3)
    x = torch.randn(5, 2, generator=gen, dtype=F64)
    _, log_det = net.map_and_log_det(x)
    assert torch.allclose(log_det, _jacobian_log_det(net, x), rtol=0, atol=1e-12)
    assert not hasattr(net, "inverse_and_log_det")
    assert net.residual[-1].bias is None  # seed 004 §4: no output bias
    with pytest.raises(ValueError, match="activation"):
        ResidualPushforward(2, activation="relu")


# --------------------------------------------------------------------------------------------------
# the metric and the linear solve


@pytest.mark.parametrize("kind", ["planar", "resnet"])
def test_metric_vector_product_matches_explicit_jacobian(kind: str) -> None:
    gen = _gen(7)
    if kind == "planar":
        module: nn.Module = PlanarFlow(2, 2, generator=gen, dtype=F64)
    else:
        module = ResidualPushforward(2, hidden=(3,), generator=gen, dtype=F64)
    _perturb(module, gen, scale=0.5)
    z = torch.randn(9, 2, generator=gen, dtype=F64)
    explicit, like = _explicit_metric(module, z)
    product = metric_vector_product(module, None, z)
    for _ in range(3):
        v = torch.randn(explicit.shape[0], generator=gen, dtype=F64)
        assert torch.allclose(product(v), explicit @ v, rtol=1e-12, atol=1e-13)
    damped = metric_vector_product(module, dict(module.named_parameters()), z, damping=0.25)
    assert torch.allclose(damped(v), explicit @ v + 0.25 * v, rtol=1e-12, atol=1e-13)


def _step_direction(module: nn.Module, new: nn.Module, h: float) -> Tensor:
    before = flatten_tensors([p.detach() for p in module.parameters()])
    after = flatten_tensors([p.detach() for p in new.parameters()])
    return (after - before) / h


def _gradient_on_draws(module: nn.Module, base: Distribution, functional: KLDivergence, z: Tensor) -> Tensor:
    y, log_det = module.map_and_log_det(z)
    energy = functional.estimate(y, base.log_prob(z) - log_det)
    return flatten_tensors(torch.autograd.grad(energy, list(module.parameters())))


@pytest.mark.parametrize("solver", ["minres", "cg"])
def test_solve_is_minimum_norm_on_a_singular_metric(solver: str) -> None:
    """At initialisation the residual network's output layer is zero, so every hidden parameter is a
    null direction of ``G_hat`` (rank 6 of 15): the step must be ``-pinv(G_hat) grad F``."""
    base = _normal([0.3, -0.2], [1.0, 0.8])
    functional = KLDivergence(lambda x: -_styblinski_tang(x))
    net = ResidualPushforward(2, hidden=(3,), generator=_gen(8), dtype=F64)
    config = PWGF(map="resnet", hidden=(3,), n_samples=64, solver=solver, tol=1e-12, max_iter=100)
    h = 0.01
    new, info = pwgf_step(net, base, functional, h, config, _gen(9))
    eta = _step_direction(net, new, h)

    z = sample_distribution(base, 64, _gen(9), torch.device("cpu"))  # the draws the step used
    explicit, _ = _explicit_metric(net, z)
    grad = _gradient_on_draws(net, base, functional, z)
    eigenvalues = torch.linalg.eigvalsh(explicit)
    assert int((eigenvalues > 1e-10 * eigenvalues.max()).sum()) == 6
    expected = -torch.linalg.pinv(explicit, rtol=1e-10, hermitian=True) @ grad
    # relative residual 1e-12 on a rank-6 system of condition ~1e2-1e3: error well below 1e-8
    assert torch.allclose(eta, expected, rtol=0, atol=1e-8 * float(expected.norm()))
    n_hidden = 3 * 2 + 3
    assert float(eta[:n_hidden].abs().max()) == 0.0  # nothing moves along the null space
    assert info.residual < 1e-10

    # the damped system (G + delta I) eta = -grad F instead
    damped_config = PWGF(map="resnet", hidden=(3,), n_samples=64, solver=solver, tol=1e-12, damping=0.1)
    new, _ = pwgf_step(net, base, functional, h, damped_config, _gen(9))
    eye = torch.eye(explicit.shape[0], dtype=F64)
    damped = torch.linalg.solve(explicit + 0.1 * eye, -grad)
    assert torch.allclose(_step_direction(net, new, h), damped, rtol=0, atol=1e-8 * float(damped.norm()))


class _RedundantShift(nn.Module):
    """``T(z) = A z + c1 + c2``: ``(c1, c2) -> (c1 + v, c2 - v)`` is a null direction of ``G_hat``."""

    def __init__(self) -> None:
        super().__init__()
        self.matrix = nn.Parameter(torch.eye(2, dtype=F64))
        self.c1 = nn.Parameter(torch.zeros(2, dtype=F64))
        self.c2 = nn.Parameter(torch.tensor([0.5, -1.0], dtype=F64))

    def forward(self, z: Tensor) -> Tensor:
        return z @ self.matrix.T + self.c1 + self.c2


def test_minimum_norm_splits_redundant_parameters_evenly() -> None:
    base = _normal([0.0, 0.0], [1.0, 1.0])
    functional = PotentialEnergy(lambda x: (x - 2.0).square().sum(-1))
    module = _RedundantShift()
    config = PWGF(map="affine", n_samples=128, tol=1e-12)
    new, _ = pwgf_step(module, base, functional, 0.1, config, _gen(10))
    eta = _step_direction(module, new, 0.1)
    # minimum norm: equal shares of the shift velocity, eta_c1 = eta_c2 (orthogonal to (v, -v))
    assert torch.allclose(eta[4:6], eta[6:8], rtol=0, atol=1e-10)
    assert float(eta[4:6].norm()) > 0.1


# --------------------------------------------------------------------------------------------------
# Ornstein-Uhlenbeck: closed form


class _MomentMatchedNormal(Distribution):
    """Gaussian draws shifted and whitened so that their sample mean and covariance are exact.

    For the affine family and a Gaussian target, ``grad F`` and ``G_hat`` depend on the draws only
    through their first two sample moments (``G_hat eta`` is ``eta M_N`` with ``M_N`` the moment
    matrix of ``(z, 1)``); with exact moments the PWGF step is the Euler step of the exact parameter
    ODE, with no Monte-Carlo error at all.
    """

    arg_constraints: dict = {}

    def __init__(self, loc: Tensor, scale: Tensor) -> None:
        self.loc, self.scale = loc, scale
        self._normal = Independent(Normal(loc, scale), 1)
        super().__init__(event_shape=loc.shape, validate_args=False)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        n = int(torch.Size(sample_shape).numel())
        # the global RNG here is the one sample_distribution forks and seeds from a torch.Generator
        eps = torch.randn(n, self.loc.shape[0], dtype=self.loc.dtype)
        eps = eps - eps.mean(0)
        chol = torch.linalg.cholesky(eps.T @ eps / n)
        eps = torch.linalg.solve_triangular(chol, eps.T, upper=False).T
        return self.loc + self.scale * eps

    def log_prob(self, value: Tensor) -> Tensor:
        return self._normal.log_prob(value)


M0 = np.array([1.0, -1.0])
S0 = np.array([0.5, 2.0])


def _ou_euler_reference(h: float, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Forward Euler on the exact parameter ODE of ``T(z) = A z + c`` for this problem.

    The velocity of the flow ``-grad(V + log rho)`` at ``rho = N(A m0 + c, A S A^T)`` is affine, hence
    in the span of ``dT/dtheta``: ``dA/dt = -A + A^{-T} S^{-1}``, ``dc/dt = -c - A^{-T} S^{-1} m0``.
    """
    matrix, shift = np.eye(2), np.zeros(2)
    precision = np.diag(1.0 / S0**2)
    for _ in range(steps):
        inv_t = np.linalg.inv(matrix).T
        matrix, shift = (
            matrix + h * (-matrix + inv_t @ precision),
            shift + h * (-shift - inv_t @ precision @ M0),
        )
    return matrix, shift


def _gaussian_of(matrix: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Mean and covariance entries ``(m1, m2, C11, C12, C22)`` of ``N(A m0 + c, A S A^T)``."""
    cov = matrix @ np.diag(S0**2) @ matrix.T
    return np.array([*(matrix @ M0 + shift), cov[0, 0], cov[0, 1], cov[1, 1]])


def _ou_exact(t: float) -> np.ndarray:
    mean = M0 * math.exp(-t)
    var = S0**2 * math.exp(-2 * t) + 1.0 - math.exp(-2 * t)
    return np.array([mean[0], mean[1], var[0], 0.0, var[1]])


def _run_affine(base: Distribution, h: float, steps: int, config: PWGF, seed: int) -> np.ndarray:
    functional = KLDivergence(lambda x: -0.5 * x.square().sum(-1))
    gen = _gen(seed)
    module: nn.Module = new_pushforward(2, config, gen, dtype=F64)
    for k in range(steps):
        module, _ = pwgf_step(module, base, functional, h, config, gen, step_index=k)
    return _gaussian_of(module.matrix.detach().numpy(), module.shift.detach().numpy())


@pytest.mark.parametrize("solver", ["minres", "cg"])
def test_ou_closed_form_first_order_in_time(solver: str) -> None:
    base = _MomentMatchedNormal(torch.tensor(M0), torch.tensor(S0))
    errors = []
    for h in (0.1, 0.05):
        steps = round(1.0 / h)
        config = PWGF(map="affine", n_samples=256, solver=solver, tol=1e-12, substeps=2)
        got = _run_affine(base, 2 * h, steps // 2, config, seed=11)  # substeps=2: Euler steps of h
        # no Monte-Carlo error (exact moments): the scheme is Euler on the parameter ODE, to rounding
        assert np.allclose(got, _gaussian_of(*_ou_euler_reference(h, steps)), rtol=0, atol=1e-10)
        errors.append(np.abs(got - _ou_exact(1.0)).max())
    # forward Euler: error = C h + O(h^2), so halving h halves it up to O(h) relative terms (~5%)
    assert 1.9 < errors[0] / errors[1] < 2.1
    assert errors[1] < 0.05


def test_ou_iid_draws_unbiased_around_the_euler_solution() -> None:
    """With iid draws, each step's direction has an O(N^{-1/2}) error (the inverse of the sampled
    moment matrix) of mean O(1/N): runs over seeds average to the deterministic Euler solution."""
    base = _normal(list(M0), list(S0))
    h, steps, seeds = 0.1, 10, 6
    config = PWGF(map="affine", n_samples=4096)
    runs = np.stack([_run_affine(base, h, steps, config, seed) for seed in range(seeds)])
    reference = _gaussian_of(*_ou_euler_reference(h, steps))
    standard_error = runs.std(0, ddof=1) / math.sqrt(seeds)
    # 5 standard errors of a 6-run mean (Student t, 5 dof): two-sided p ~ 0.004 per entry
    assert np.all(np.abs(runs.mean(0) - reference) < 5 * standard_error + 1e-12)
    # and the spread is Monte-Carlo sized: well below the O(h) Euler error of this run (~0.06)
    assert float(runs.std(0, ddof=1).max()) < 0.03
    assert np.abs(reference - _ou_exact(1.0)).max() < 0.07


# --------------------------------------------------------------------------------------------------
# Styblinski-Tang Fokker-Planck (seed 004 §5.1)


def _styblinski_tang_log_normaliser(dim: int) -> float:
    one, _ = integrate.quad(lambda x: math.exp(-3.0 / 50.0 * (x**4 - 16.0 * x**2 + 5.0 * x)), -10, 10)
    return dim * math.log(one)


def test_styblinski_tang_kl_decreases() -> None:
    dim, h, steps = 2, 0.02, 30
    base = _normal([0.0] * dim, [1.0] * dim)
    functional = KLDivergence(lambda x: -_styblinski_tang(x))
    log_z = _styblinski_tang_log_normaliser(dim)
    config = PWGF(map="planar", n_layers=8, n_samples=2048)
    gen = _gen(12)
    flow: nn.Module = new_pushforward(dim, config, gen, dtype=F64)
    # common draws for every evaluation: the differences between checkpoints are paired
    z = sample_distribution(base, 8192, _gen(13), torch.device("cpu"))
    log_base = base.log_prob(z)

    def kl_terms(module: nn.Module) -> Tensor:
        with torch.no_grad():
            y, log_det = module.map_and_log_det(z)
            return _styblinski_tang(y) + log_base - log_det + log_z

    checkpoints = [kl_terms(flow)]
    for k in range(steps):
        flow, info = pwgf_step(flow, base, functional, h, config, gen, step_index=k)
        assert info.residual < 0.1 and info.solver_iterations > 0 and info.energy_se is not None
        if (k + 1) % 10 == 0:
            checkpoints.append(kl_terms(flow))
    kls = [float(c.mean()) for c in checkpoints]
    for before, after in zip(checkpoints[:-1], checkpoints[1:], strict=True):
        diff = after - before
        # each 10-step block decreases the KL, up to 4 paired standard errors
        assert float(diff.mean()) < 4 * float(diff.std()) / math.sqrt(diff.numel())
    total = checkpoints[-1] - checkpoints[0]
    assert float(total.mean()) < -10 * float(total.std()) / math.sqrt(total.numel())
    # a KL divergence is non-negative: a sign error in the log-determinant would break this
    final_se = float(checkpoints[-1].std()) / math.sqrt(z.shape[0])
    assert kls[-1] > -4 * final_se
    assert kls[-1] < 0.6 * kls[0]


# --------------------------------------------------------------------------------------------------
# step bookkeeping and errors


def test_step_info_copy_substeps_and_reproducibility() -> None:
    base = _normal([0.0, 0.0], [1.0, 1.0])
    functional = KLDivergence(lambda x: -_styblinski_tang(x))
    config = PWGF(map="planar", n_layers=3, n_samples=256, substeps=2)
    flow = PlanarFlow(2, 3, generator=_gen(14), dtype=F64)
    original = {k: v.clone() for k, v in flow.state_dict().items()}
    new, info = pwgf_step(flow, base, functional, 0.05, config, _gen(15))
    assert all(torch.equal(v, original[k]) for k, v in flow.state_dict().items())  # input untouched

    # two calls of one substep each replay the same draws and the same Euler steps
    single = PWGF(map="planar", n_layers=3, n_samples=256)
    gen = _gen(15)
    first, info1 = pwgf_step(flow, base, functional, 0.025, single, gen)
    second, info2 = pwgf_step(first, base, functional, 0.025, single, gen)
    for a, b in zip(new.parameters(), second.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-14)
    assert info.energy == info1.energy
    assert info.solver_iterations == info1.solver_iterations + info2.solver_iterations

    # the reported energy is the functional's own estimate on the step's draws
    z = sample_distribution(base, 256, _gen(15), torch.device("cpu"))
    y, log_det = flow.map_and_log_det(z)
    assert info.energy == pytest.approx(float(functional.estimate(y, base.log_prob(z) - log_det)), abs=1e-12)

    interaction = InteractionEnergy(lambda d: d.square().sum(-1))
    _, info_interaction = pwgf_step(flow, base, interaction, 0.01, single, _gen(16))
    assert info_interaction.energy_se is None and math.isfinite(info_interaction.energy)


def test_frozen_input_map_still_advances() -> None:
    flow = PlanarFlow(2, 2, generator=_gen(17), dtype=F64)
    for p in flow.parameters():
        p.requires_grad_(False)
    base = _normal([0.0, 0.0], [1.0, 1.0])
    config = PWGF(map="planar", n_layers=2, n_samples=128)
    new, _ = pwgf_step(flow, base, PotentialEnergy(lambda x: (x - 1).square().sum(-1)), 0.1, config, _gen(0))
    assert not torch.equal(new.u, flow.u)


def test_non_finite_energy_raises_training_diverged() -> None:
    flow = AffineMap(2, dtype=F64)
    base = _normal([0.0, 0.0], [1.0, 1.0])
    broken = PotentialEnergy(lambda x: torch.log(x[:, 0]))  # NaN for x_0 < 0
    with pytest.raises(TrainingDivergedError, match="PWGF step 7"):
        pwgf_step(flow, base, broken, 0.1, PWGF(map="affine", n_samples=64), _gen(0), step_index=7)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"map": "icnn"}, ValueError, "map"),
        ({"solver": "gmres"}, ValueError, "solver"),
        ({"n_layers": 0}, ValueError, "n_layers"),
        ({"n_layers": True}, TypeError, "n_layers"),
        ({"hidden": ()}, ValueError, "hidden"),
        ({"hidden": (10, 0)}, ValueError, "hidden"),
        ({"hidden": "100"}, TypeError, "hidden"),
        ({"n_samples": 1}, ValueError, "n_samples"),
        ({"n_samples": 10.0}, TypeError, "n_samples"),
        ({"tol": 0.0}, ValueError, "tol"),
        ({"tol": 1.0}, ValueError, "tol"),
        ({"tol": float("nan")}, ValueError, "tol"),
        ({"max_iter": 0}, ValueError, "max_iter"),
        ({"damping": -1e-3}, ValueError, "damping"),
        ({"damping": "0"}, TypeError, "damping"),
        ({"substeps": 0}, ValueError, "substeps"),
        ({"warm_start": 1}, TypeError, "warm_start"),
        ({"metric_samples": 0}, ValueError, "metric_samples"),
        ({"metric_samples": 4097}, ValueError, "metric_samples must be <= n_samples"),
        ({"metric_samples": 512.0}, TypeError, "metric_samples"),
        ({"preconditioner": "ilu"}, ValueError, "preconditioner"),
    ],
)
def test_config_rejects_bad_options(options: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        PWGF(**options)


def test_config_accepts_list_hidden_and_builds_every_map() -> None:
    assert PWGF(hidden=[4, 4]).hidden == (4, 4)  # type: ignore[arg-type]
    for kind, cls in (("planar", PlanarFlow), ("affine", AffineMap), ("resnet", ResidualPushforward)):
        module = new_pushforward(3, PWGF(map=kind, n_layers=2, hidden=(4,)), _gen(0))
        assert isinstance(module, cls)
        assert next(module.parameters()).dtype == torch.float32


def test_step_rejects_bad_inputs() -> None:
    flow = AffineMap(2, dtype=F64)
    base = _normal([0.0, 0.0], [1.0, 1.0])
    kl = KLDivergence(lambda x: -0.5 * x.square().sum(-1))
    config = PWGF(map="affine", n_samples=16)
    for bad in (-0.1, 0.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="step_size"):
            pwgf_step(flow, base, kl, bad, config, _gen(0))
    with pytest.raises(TypeError, match="step_size"):
        pwgf_step(flow, base, kl, "0.1", config, _gen(0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config"):
        pwgf_step(flow, base, kl, 0.1, {"map": "affine"}, _gen(0))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="generator"):
        pwgf_step(flow, base, kl, 0.1, config, 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="functional"):
        pwgf_step(flow, base, lambda x: x, 0.1, config, _gen(0))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="map_and_log_det"):
        pwgf_step(_RedundantShift(), base, kl, 0.1, config, _gen(0))
    with pytest.raises(ValueError, match="points of shape"):
        flow.transport(torch.zeros(3, 4, dtype=F64))
    with pytest.raises(ValueError, match="dim"):
        PlanarFlow(0)
    with pytest.raises(ValueError, match="max_iter"):
        PlanarFlow(2, 2).inverse_and_log_det(torch.zeros(1, 2), max_iter=0)


# --------------------------------------------------------------------------------------------------
# solve options: warm starts, a metric on fewer draws, the Jacobi preconditioner, the history


def _affine_system(n: int = 64, seed: int = 30) -> tuple[nn.Module, Distribution, KLDivergence, Tensor]:
    """A perturbed affine map (6 parameters, ``G_hat`` nonsingular) and a KL functional."""
    gen = _gen(seed + 100)
    module = AffineMap(2, dtype=F64)
    _perturb(module, gen, scale=0.3)
    base = _normal([0.0, 0.0], [1.0, 1.0])
    functional = KLDivergence(lambda x: -_styblinski_tang(x))
    # the draws of a pwgf_step called with _gen(seed)
    return module, base, functional, sample_distribution(base, n, _gen(seed), torch.device("cpu"))


def test_solve_from_a_start_keeps_its_null_component_only() -> None:
    """From ``x0`` in ``range(G_hat)`` the solve still finds the minimum-norm solution; a start with a
    null-space component ``v`` ends at that solution plus ``v`` (which moves no draw: ``J v = 0``)."""
    module = _RedundantShift()
    z = torch.randn(32, 2, generator=_gen(31), dtype=F64)
    explicit, _ = _explicit_metric(module, z)
    rhs = explicit @ torch.randn(8, generator=_gen(32), dtype=F64)  # consistent right-hand side
    pinv = torch.linalg.pinv(explicit, rtol=1e-10, hermitian=True)
    expected = pinv @ rhs
    config = PWGF(map="affine", tol=1e-12, max_iter=50)
    product = metric_vector_product(module, None, z)
    in_range = explicit @ torch.randn(8, generator=_gen(33), dtype=F64)
    null = torch.tensor([0, 0, 0, 0, 1.0, -0.5, -1.0, 0.5], dtype=F64)  # (c1, c2) -> (c1 + v, c2 - v)
    assert float((explicit @ null).norm()) < 1e-12
    # condition number of G_hat on its range ~10: the error is a few times the tolerance
    atol = 1e-9 * float(expected.norm())
    eta, _, residual = _solve(product, rhs, config, x0=in_range)
    assert residual < 1e-10
    assert torch.allclose(eta, expected, rtol=0, atol=atol)
    eta, _, _ = _solve(product, rhs, config, x0=in_range + null)
    assert torch.allclose(eta, expected + null, rtol=0, atol=atol)
    # the exact solution as the start: nothing left to do
    _, iterations, _ = _solve(product, rhs, config, x0=expected)
    assert iterations <= 1


@pytest.mark.parametrize("solver", ["minres", "cg"])
def test_jacobi_preconditioned_solve_is_the_minimum_norm_solution(solver: str) -> None:
    """Preconditioned iterates lie in ``M range(G_hat)``: with ``M`` diagonal and equal on parameters with
    equal Jacobian columns (c1 and c2 here) that is still ``range(G_hat)``, so the pseudo-inverse
    solution; on a nonsingular metric, the unique solution."""
    config = PWGF(map="affine", solver=solver, n_samples=64, tol=1e-12, max_iter=100, preconditioner="jacobi")
    module = _RedundantShift()
    z = torch.randn(32, 2, generator=_gen(34), dtype=F64)
    explicit, _ = _explicit_metric(module, z)
    rhs = explicit @ torch.randn(8, generator=_gen(35), dtype=F64)
    product = metric_vector_product(module, None, z)
    diagonal = product.diagonal(4, _gen(36))
    assert torch.equal(diagonal[4:6], diagonal[6:8])  # identical columns, identical estimates
    eta, _, residual = _solve(product, rhs, config, diagonal=diagonal)
    expected = torch.linalg.pinv(explicit, rtol=1e-10, hermitian=True) @ rhs
    assert residual < 1e-10
    assert torch.allclose(eta, expected, rtol=0, atol=1e-9 * float(expected.norm()))

    module, base, functional, z = _affine_system()
    new, info = pwgf_step(module, base, functional, 0.01, config, _gen(30))
    explicit, _ = _explicit_metric(module, z)
    grad = _gradient_on_draws(module, base, functional, z)
    expected = torch.linalg.solve(explicit, -grad)
    # condition number of G_hat ~1e1: error below 1e-10 relative
    assert info.residual < 1e-11 and info.solves_above_tol == 0
    assert torch.allclose(
        _step_direction(module, new, 0.01), expected, rtol=0, atol=1e-9 * float(expected.norm())
    )


def test_diagonal_estimate_is_unbiased() -> None:
    """Hutchinson: each entry's estimate from ``K`` Rademacher probes has standard deviation at most
    ``sqrt(2 / K)`` times the entry (``Var (w^T a)^2 <= 2 |a|^4``); 4000 probes, five of those."""
    module = PlanarFlow(2, 2, generator=_gen(37), dtype=F64)
    _perturb(module, _gen(38), scale=0.5)
    z = torch.randn(6, 2, generator=_gen(39), dtype=F64)
    explicit, _ = _explicit_metric(module, z)
    probes = 4000
    estimate = metric_vector_product(module, None, z, damping=0.1).diagonal(probes, _gen(40))
    exact = torch.diagonal(explicit) + 0.1
    assert torch.allclose(estimate, exact, rtol=5 * math.sqrt(2 / probes), atol=0)


def test_metric_on_fewer_draws_solves_with_their_metric_and_every_gradient() -> None:
    module, base, functional, z = _affine_system(n=64)
    config = PWGF(map="affine", n_samples=64, metric_samples=16, tol=1e-12, max_iter=100)
    new, info = pwgf_step(module, base, functional, 0.01, config, _gen(30))
    explicit, _ = _explicit_metric(module, z[:16])
    grad = _gradient_on_draws(module, base, functional, z)  # all 64 draws
    expected = torch.linalg.solve(explicit, -grad)
    assert info.residual < 1e-11
    assert torch.allclose(
        _step_direction(module, new, 0.01), expected, rtol=0, atol=1e-9 * float(expected.norm())
    )


def test_single_precision_metric_gives_the_double_precision_step_to_its_rounding() -> None:
    """``metric_dtype="float32"`` on a float64 map: the metric products are float32 (relative rounding
    about 1e-7), so the step direction agrees with the float64 solve to about that relative accuracy
    times the system's condition, and the new map, its gradient and its parameters stay float64."""
    module, base, functional, z = _affine_system(n=64)
    explicit, _ = _explicit_metric(module, z)
    condition = float(torch.linalg.cond(explicit))
    single = PWGF(map="affine", n_samples=64, tol=1e-6, max_iter=100, metric_dtype="float32")
    double = dataclasses.replace(single, tol=1e-12)
    new_single, info = pwgf_step(module, base, functional, 0.01, single, _gen(30))
    new_double, _ = pwgf_step(module, base, functional, 0.01, double, _gen(30))
    assert all(p.dtype == F64 for p in new_single.parameters())
    exact = _step_direction(module, new_double, 0.01)
    error = float((_step_direction(module, new_single, 0.01) - exact).norm() / exact.norm())
    # the solve's tolerance and float32's rounding (10 units of 6e-8), amplified by the condition number
    assert error < condition * (single.tol + 10 * torch.finfo(torch.float32).eps), (error, condition)
    assert error > 1e-10  # the products really ran in float32 (a float64 solve agrees to about 1e-14)
    assert info.residual < 1e-5


def test_metric_dtype_is_checked() -> None:
    with pytest.raises(ValueError, match="metric_dtype"):
        PWGF(metric_dtype="float16")
    with pytest.raises(ValueError, match="metric_dtype"):
        PWGF(metric_dtype=torch.float32)  # type: ignore[arg-type]


def test_warm_start_carries_the_velocity_between_steps_and_changes_nothing_converged() -> None:
    """On a nonsingular metric solved to 1e-12 the start does not change the step; ``step`` keeps the
    last Euler step's solution in the state and hands it to the next call."""
    from wgfinfer.schemes.pwgf import init, step

    module, base, functional, _ = _affine_system()
    cold = PWGF(map="affine", n_samples=64, tol=1e-12, max_iter=100, substeps=2)
    warm = PWGF(map="affine", n_samples=64, tol=1e-12, max_iter=100, substeps=2, warm_start=True)
    new_cold, info_cold = pwgf_step(module, base, functional, 0.02, cold, _gen(41))
    new_warm, info_warm = pwgf_step(module, base, functional, 0.02, warm, _gen(41))
    for a, b in zip(new_cold.parameters(), new_warm.parameters(), strict=True):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)
    assert info_warm.velocity is not None and info_warm.solver_iterations <= info_cold.solver_iterations
    # from the previous solution the next solve starts closer: fewer iterations
    _, again = pwgf_step(new_warm, base, functional, 0.02, warm, _gen(42), velocity=info_warm.velocity)
    _, again_cold = pwgf_step(new_warm, base, functional, 0.02, cold, _gen(42))
    assert again.solver_iterations <= again_cold.solver_iterations

    state = init(warm, base, _gen(43), functional=functional)
    state = dataclasses.replace(state, maps=(module,))
    assert state.velocity is None
    state, _ = step(state, functional, 0.02, _gen(41), scheme=warm)
    assert state.velocity is not None and torch.allclose(
        state.velocity, info_warm.velocity, rtol=0, atol=1e-12
    )
    cold_state, _ = step(dataclasses.replace(state, velocity=None), functional, 0.02, _gen(41), scheme=cold)
    assert cold_state.velocity is None


def test_history_fields_count_solves_above_tol_and_warn_only_when_badly_off(monkeypatch) -> None:
    from wgfinfer.schemes import pwgf as pwgf_module

    flow = PlanarFlow(2, 3, generator=_gen(44), dtype=F64)
    _perturb(flow, _gen(45), scale=0.5)
    base = _normal([0.0, 0.0], [1.0, 1.0])
    functional = KLDivergence(lambda x: -_styblinski_tang(x))
    capped = PWGF(map="planar", n_layers=3, n_samples=128, solver="cg", tol=1e-10, max_iter=1, substeps=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # below BADLY_OFF_RESIDUAL: recorded, not warned
        monkeypatch.setattr(pwgf_module, "BADLY_OFF_RESIDUAL", 1e6)
        _, info = pwgf_step(flow, base, functional, 0.01, capped, _gen(46))
    assert info.solves_above_tol == 3
    assert info.residual_max >= info.residual > capped.tol
    monkeypatch.setattr(pwgf_module, "BADLY_OFF_RESIDUAL", info.residual_max / 2)
    with pytest.warns(WGFWarning, match="relative residual"):
        pwgf_step(flow, base, functional, 0.01, capped, _gen(46))
    converged = dataclasses.replace(capped, max_iter=200, tol=1e-8)
    _, info = pwgf_step(flow, base, functional, 0.01, converged, _gen(46))
    assert info.solves_above_tol == 0 and info.residual_max <= 1e-8
