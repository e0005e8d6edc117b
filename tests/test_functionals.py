"""Free energies: composition, Monte-Carlo estimates and dual formulas against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from wgfinfer.functionals import (
    Entropy,
    FreeEnergy,
    GeneralizedEntropy,
    InteractionEnergy,
    KLDivergence,
    PotentialEnergy,
)


def quadratic(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x.square().sum(-1)


def half_square(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * z.square().sum(-1)


def test_composition_and_scaling() -> None:
    f = PotentialEnergy(quadratic) + 0.1 * GeneralizedEntropy(3) + InteractionEnergy(half_square)
    assert isinstance(f, FreeEnergy)
    assert [type(t).__name__ for t in f.terms()] == [
        "PotentialEnergy",
        "GeneralizedEntropy",
        "InteractionEnergy",
    ]
    assert f.terms()[1].coefficient == pytest.approx(0.1) and f.terms()[1].m == 3
    g = 2 * f
    assert [t.coefficient for t in g.terms()] == pytest.approx([2.0, 0.2, 2.0])
    assert sum([PotentialEnergy(quadratic), Entropy()]).terms()[1] == Entropy()
    assert Entropy(beta=4.0).coefficient == 0.25 and (2 * Entropy(beta=4.0)).coefficient == 0.5
    kl = KLDivergence(lambda x: -quadratic(x), beta=2.0)
    assert [type(t).__name__ for t in kl.terms()] == ["PotentialEnergy", "Entropy"]
    assert kl.terms()[1].coefficient == 0.5
    assert f.supported_schemes() == {"icnn", "variational", "forward_backward", "pwgf"}
    assert f.interactions() == (f.terms()[2],) and f.internal_energies() == (f.terms()[1],)


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: GeneralizedEntropy(1.0), ValueError, "m must be"),
        (lambda: GeneralizedEntropy("2"), TypeError, "m must be a real"),
        (lambda: PotentialEnergy(3.0), TypeError, "potential must be a callable"),
        (lambda: InteractionEnergy(half_square, coefficient=-1.0), ValueError, "coefficient"),
        (lambda: InteractionEnergy(half_square, chunk_size=0), ValueError, "chunk_size"),
        (lambda: Entropy(beta=float("inf")), ValueError, "beta"),
        (lambda: 0.0 * Entropy(), ValueError, "factor"),
        (lambda: FreeEnergy([]), ValueError, "at least one term"),
        (lambda: FreeEnergy([quadratic]), TypeError, "terms must be"),
        (lambda: KLDivergence(None), TypeError, "log_density"),
        (lambda: Entropy().check_scheme("euler"), ValueError, "scheme must be one of"),
    ],
)
def test_bad_input(build, error, match) -> None:
    with pytest.raises(error, match=match):
        build()


def test_estimate_needs_densities_for_internal_energies() -> None:
    y = torch.randn(10, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="GeneralizedEntropy needs the log-density"):
        (PotentialEnergy(quadratic) + GeneralizedEntropy(2)).estimate(y)


def test_interaction_u_statistic_and_velocity_are_exact_for_a_quadratic_kernel() -> None:
    # sum_{i != j} |x_i - x_j|^2 / (n (n - 1)) = 2 tr(S) with S the unbiased covariance, so the
    # U-statistic of 1/2 E[|X - Y|^2 / 2] is tr(S) / 2 exactly; grad W(z) = z gives x - mean(y)
    g = torch.Generator().manual_seed(1)
    y = torch.randn(300, 3, generator=g, dtype=torch.float64) * torch.tensor(
        [0.5, 1.0, 2.0], dtype=torch.float64
    )
    term = InteractionEnergy(half_square, coefficient=3.0, chunk_size=64)
    trace = torch.cov(y.T).trace()
    torch.testing.assert_close(term.estimate(y), 3.0 * trace / 2)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64) + 10.0  # not among the particles
    torch.testing.assert_close(term.velocity(x, y), 3.0 * (x - y.mean(0)))
    # a particle's own position is left out of its convolution (W may be singular at 0)
    own = term.velocity(y[:2], y)
    others = torch.stack([y[0] - torch.cat([y[1:]]).mean(0), y[1] - torch.cat([y[:1], y[2:]]).mean(0)])
    torch.testing.assert_close(own, 3.0 * others)


def test_potential_velocity_is_its_gradient() -> None:
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(PotentialEnergy(quadratic, coefficient=0.5).velocity(x, x), 0.5 * x)


@pytest.mark.parametrize("m", [2.0, 3.0])
def test_internal_energy_estimates_match_gaussian_closed_forms(m: float) -> None:
    # N(0, s^2) in 1-D: int rho log rho = -log(2 pi e s^2) / 2, int rho^m = (2 pi s^2)^{(1-m)/2} / sqrt(m)
    s, n = 0.7, 200_000
    dist = torch.distributions.Normal(
        torch.tensor(0.0, dtype=torch.float64), torch.tensor(s, dtype=torch.float64)
    )
    y = dist.sample((n,)).unsqueeze(-1)
    log_rho = dist.log_prob(y.squeeze(-1))
    for term, exact in [
        (Entropy(beta=2.0), -0.5 * math.log(2 * math.pi * math.e * s**2) / 2.0),
        (GeneralizedEntropy(m), (2 * math.pi * s**2) ** ((1 - m) / 2) / math.sqrt(m) / (m - 1)),
    ]:
        values = term.integrand(log_rho)
        se = float(values.std()) / math.sqrt(n)
        assert abs(float(term.estimate(y, log_rho)) - exact) < 5 * se, (term, exact)


def _triangle_density(x: np.ndarray) -> np.ndarray:
    return np.clip(1.0 - np.abs(x), 0.0, None)  # on [-1, 1]


@pytest.mark.parametrize("m", [2.0, 2.5])
def test_generalized_entropy_dual_formula_attains_its_value_at_the_optimal_h(m: float) -> None:
    # Omega^{1-m} (E_P[m/(m-1) h^{m-1}] - E_Q[h^m]) with Q uniform on [-1.5, 1.5] (volume 3):
    # the optimum h = Omega * rho gives int rho^m / (m - 1); any other h gives less
    term = GeneralizedEntropy(m, coefficient=2.0)
    volume = 3.0

    def value(log_h_of) -> float:
        def a(x: float) -> float:
            lh = torch.tensor([log_h_of(x)], dtype=torch.float64)
            return float(term.dual_a(lh, torch.tensor([-math.log(volume)]), volume)[0]) * _triangle_density(x)

        def b(x: float) -> float:
            lh = torch.tensor([log_h_of(x)], dtype=torch.float64)
            return float(term.dual_b(lh, volume)[0]) / volume

        return integrate.quad(a, -1, 1, points=[0])[0] - integrate.quad(b, -1.5, 1.5, points=[-1, 0, 1])[0]

    def optimal(x: float) -> float:
        return math.log(max(volume * _triangle_density(x), 1e-300))

    exact = 2.0 * integrate.quad(lambda x: _triangle_density(x) ** m, -1, 1)[0] / (m - 1)
    assert value(optimal) + term.dual_constant() == pytest.approx(exact, rel=1e-7)
    assert value(lambda x: optimal(x) + 0.3 * math.sin(3 * x)) < exact - 1e-4


def test_entropy_dual_formula_attains_its_value_at_the_optimal_h() -> None:
    # beta^{-1}(1 + sup_h E_P[log h + log mu] - E_mu[h]) with P = N(0.5, 0.8^2), mu = N(0, 1):
    # the optimum h = P / mu gives beta^{-1} int P log P
    term = Entropy(beta=2.0)
    p = torch.distributions.Normal(0.5, 0.8)
    mu = torch.distributions.Normal(0.0, 1.0)

    def value(shift: float) -> float:
        def log_h(x: torch.Tensor) -> torch.Tensor:
            return p.log_prob(x) - mu.log_prob(x) + shift * torch.tanh(x)

        def a(x: float) -> float:
            t = torch.tensor([x], dtype=torch.float64)
            return float(term.dual_a(log_h(t), mu.log_prob(t), 1.0)[0] * p.log_prob(t).exp()[0])

        def b(x: float) -> float:
            t = torch.tensor([x], dtype=torch.float64)
            return float(term.dual_b(log_h(t), 1.0)[0] * mu.log_prob(t).exp()[0])

        return integrate.quad(a, -12, 12)[0] - integrate.quad(b, -12, 12)[0] + term.dual_constant()

    exact = -0.5 * math.log(2 * math.pi * math.e * 0.8**2) / 2.0
    assert value(0.0) == pytest.approx(exact, rel=1e-6)
    assert value(0.4) < exact - 1e-4


def test_closed_form_kernel_gradient_gives_the_autograd_velocity() -> None:
    def ring(z: torch.Tensor) -> torch.Tensor:
        r2 = z.square().sum(-1)
        return r2.square() / 4 - r2 / 2

    def ring_gradient(z: torch.Tensor) -> torch.Tensor:
        return (z.square().sum(-1, keepdim=True) - 1.0) * z

    g = torch.Generator().manual_seed(4)
    y = torch.randn(200, 2, generator=g, dtype=torch.float64)
    x = torch.cat([y[:5], torch.randn(5, 2, generator=g, dtype=torch.float64)])
    closed = InteractionEnergy(ring, gradient=ring_gradient, chunk_size=3).velocity(x, y)
    torch.testing.assert_close(closed, InteractionEnergy(ring).velocity(x, y))
    with pytest.raises(TypeError, match="gradient must be a callable"):
        InteractionEnergy(ring, gradient=1.0)
