"""Property tests of the input-convex network: derivatives, convexity, PSD Hessians, invertibility."""

from __future__ import annotations

import pytest
import torch

from wgfinfer.errors import NonPositiveHessianError
from wgfinfer.nn.icnn import DenseICNN, log_det_spd

F64 = torch.float64


def make_net(dim: int = 3, hidden=(16, 12, 8), rank: int = 2, seed: int = 0) -> DenseICNN:
    # output_scale=1 makes the network part dominate, so the tests exercise it, not the quadratic
    return DenseICNN(
        dim, hidden, rank=rank, output_scale=1.0, generator=torch.Generator().manual_seed(seed), dtype=F64
    )


@pytest.mark.parametrize("dim", [1, 2, 3])  # 1 and 2: the broadcast-product Hessians (SMALL_DIM)
@pytest.mark.parametrize("rank", [0, 2])
def test_closed_form_derivatives_match_autograd(rank: int, dim: int) -> None:
    net = make_net(dim=dim, rank=rank)
    x = torch.randn(6, dim, dtype=F64, generator=torch.Generator().manual_seed(1)) * 3
    d = net.derivatives(x)
    for i in range(x.shape[0]):
        xi = x[i].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(net(xi.unsqueeze(0)).sum(), xi)
        hess = torch.autograd.functional.hessian(lambda z: net(z.unsqueeze(0)).sum(), x[i])
        torch.testing.assert_close(d.gradient[i], grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(d.hessian[i], hess, rtol=1e-12, atol=1e-12)


def test_convex_along_random_segments() -> None:
    net = make_net()
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(200, 3, dtype=F64, generator=gen) * 4
    b = torch.randn(200, 3, dtype=F64, generator=gen) * 4
    ts = torch.linspace(0, 1, 11, dtype=F64)
    for t in ts:
        mid = net((1 - t) * a + t * b)
        chord = (1 - t) * net(a) + t * net(b)
        assert bool((mid <= chord + 1e-10).all())


def test_hessians_are_positive_definite_with_strong_convexity_floor() -> None:
    net = make_net()
    x = torch.randn(500, 3, dtype=F64, generator=torch.Generator().manual_seed(3)) * 5
    eig = torch.linalg.eigvalsh(net.hessian(x))
    assert bool((eig >= net.strong_convexity * (1 - 1e-9)).all())


def test_gradient_map_is_invertible() -> None:
    net = make_net()
    x = torch.randn(300, 3, dtype=F64, generator=torch.Generator().manual_seed(4)) * 3
    y = net.gradient(x)
    x_back, converged = net.inverse(y)
    assert bool(converged.all())
    torch.testing.assert_close(x_back, x, rtol=0, atol=1e-8)


def test_gradient_map_is_monotone() -> None:
    # <grad psi(a) - grad psi(b), a - b> >= s ||a - b||^2 for an s-strongly convex psi
    net = make_net()
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(400, 3, dtype=F64, generator=gen), torch.randn(400, 3, dtype=F64, generator=gen)
    inner = ((net.gradient(a) - net.gradient(b)) * (a - b)).sum(-1)
    assert bool((inner >= net.strong_convexity * (a - b).square().sum(-1) * (1 - 1e-9)).all())


def test_default_initialisation_is_close_to_identity() -> None:
    net = DenseICNN(4, generator=torch.Generator().manual_seed(0), dtype=F64)
    x = torch.randn(1000, 4, dtype=F64, generator=torch.Generator().manual_seed(6)) * 3
    with torch.no_grad():
        moved = (net.gradient(x) - x).norm(dim=-1) / x.norm(dim=-1)
    assert float(moved.max()) < 0.05


def test_nonnegative_weights_come_from_reparameterisation() -> None:
    net = make_net()
    with torch.no_grad():
        for raw in net.raw_hidden_weights:
            raw.fill_(-50.0)  # any raw value gives a convex network
        net.raw_output_weights.fill_(-3.0)
    hessians = net.hessian(torch.randn(50, 3, dtype=F64))
    assert bool((torch.linalg.eigvalsh(hessians) > 0).all())


def test_log_det_spd_raises_instead_of_nan() -> None:
    good = torch.eye(3, dtype=F64).expand(2, 3, 3) * 2
    torch.testing.assert_close(
        log_det_spd(good), torch.full((2,), 3 * torch.log(torch.tensor(2.0, dtype=F64)).item(), dtype=F64)
    )
    bad = torch.stack([torch.eye(3, dtype=F64), -torch.eye(3, dtype=F64)])
    with pytest.raises(NonPositiveHessianError, match="1 of 2"):
        log_det_spd(bad)


def test_log_det_of_one_by_one_matrices_is_their_log_with_its_gradient() -> None:
    entries = torch.tensor([0.5, 2.0, 7.0], dtype=F64, requires_grad=True)
    log_det = log_det_spd(entries.reshape(3, 1, 1))
    torch.testing.assert_close(log_det, entries.detach().log())
    (grad,) = torch.autograd.grad(log_det.sum(), entries)
    torch.testing.assert_close(grad, 1.0 / entries.detach())
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(NonPositiveHessianError, match="1 of 2"):
            log_det_spd(torch.tensor([1.0, bad], dtype=F64).reshape(2, 1, 1))


def test_invalid_construction_arguments() -> None:
    with pytest.raises(ValueError, match="dim"):
        DenseICNN(0)
    with pytest.raises(ValueError, match="hidden"):
        DenseICNN(2, hidden=())
    with pytest.raises(ValueError, match="strong_convexity"):
        DenseICNN(2, strong_convexity=0.0)
    with pytest.raises(ValueError, match="shape"):
        DenseICNN(2)(torch.zeros(3, 5))


def test_reverse_mode_gradient_equals_forward_mode_and_autograd() -> None:
    """order=1 takes a cheaper reverse accumulation; it must give the same map."""
    net = DenseICNN(
        5, hidden=(7, 6, 4), rank=2, dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(2), dtype=p.dtype))
    x = torch.randn(9, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3), requires_grad=True)
    reverse = net.derivatives(x, order=1)
    forward = net.derivatives(x, order=2)
    (autograd,) = torch.autograd.grad(reverse.value.sum(), x)
    torch.testing.assert_close(reverse.gradient, forward.gradient, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(reverse.gradient, autograd, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(("dim", "hidden", "rank"), [(1, (8, 6), 1), (3, (7, 6, 4), 2), (2, (5,), 0)])
def test_frozen_transport_equals_transport_and_is_a_snapshot(dim: int, hidden, rank: int) -> None:
    net = DenseICNN(dim, hidden=hidden, rank=rank, dtype=F64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(5), dtype=p.dtype))
    x = torch.randn(11, dim, dtype=F64, generator=torch.Generator().manual_seed(6)) * 2
    frozen = net.frozen_transport()
    before = net.transport(x).detach()
    torch.testing.assert_close(frozen(x), before, rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        net.linear.add_(1.0)  # the snapshot keeps the weights it was made with
    torch.testing.assert_close(frozen(x), before, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(net.frozen_transport()(x), net.transport(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="shape"):
        frozen(torch.zeros(3, dim + 1, dtype=F64))
