"""Plain networks of the variational scheme: the residual transport map and the dual function.

* :class:`ResidualMap` is ``T(x) = x + MLP(x)`` (Fan et al. 2022 §3.2; with ``activation=None`` the linear
  residual map of Fan et al. 2022 App. F.3).  Its last layer starts at zero, so ``T`` starts as the identity.
* :class:`DualNetwork` is the positive test function ``h`` of the variational formula of the KL
  divergence, with a choice of output head (Fan et al. 2022 App. E.2 for ``"expm1"``).

Weights are drawn from an explicit ``torch.Generator``; the global RNG is never used.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from wgfinfer.nn.icnn import inverse_softplus

ACTIVATIONS = ("prelu", "celu", "tanh", None)
DUAL_HEADS = ("softplus", "expm1", "exp")

# below this pre-activation the positive heads are ~exp(g): use g itself as log h (no underflow)
_LOG_FLOOR = -20.0


def init_linear(
    layer: nn.Linear, generator: torch.Generator, scale: float = 1.0, zero: bool = False
) -> nn.Linear:
    """Uniform ``+-scale/sqrt(fan_in)`` weights and biases drawn from ``generator`` (or zeros)."""
    with torch.no_grad():
        if zero:
            layer.weight.zero_()
            layer.bias.zero_()
            return layer
        bound = scale / math.sqrt(layer.in_features)
        for p in (layer.weight, layer.bias):
            noise = torch.rand(p.shape, generator=generator, dtype=torch.float64)
            p.copy_(((2.0 * noise - 1.0) * bound).to(p))
    return layer


def linear(w_in: int, w_out: int, dtype: torch.dtype, device: torch.device | str) -> nn.Linear:
    # skip_init: nn.Linear's own initialisation would draw from the global RNG
    return torch.nn.utils.skip_init(nn.Linear, w_in, w_out, dtype=dtype, device=device)


def mlp(
    dim_in: int,
    hidden: Sequence[int],
    dim_out: int,
    activation: str | None,
    generator: torch.Generator,
    zero_last: bool,
    dtype: torch.dtype,
    device: torch.device | str,
) -> nn.Sequential:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    widths = [int(dim_in), *(int(h) for h in hidden)]
    if len(widths) < 2 or any(w < 1 for w in widths):
        raise ValueError(f"hidden must be a non-empty sequence of positive widths, got {tuple(hidden)}")
    layers: list[nn.Module] = []
    for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
        layers.append(init_linear(linear(w_in, w_out, dtype, device), generator))
        if activation == "prelu":
            layers.append(nn.PReLU(w_out, dtype=dtype, device=device))
        elif activation == "celu":
            layers.append(nn.CELU())
        elif activation == "tanh":
            layers.append(nn.Tanh())
    last = linear(widths[-1], dim_out, dtype, device)
    layers.append(init_linear(last, generator, zero=zero_last))
    return nn.Sequential(*layers)


class ResidualMap(nn.Module):
    """Transport map ``T(x) = x + MLP(x)``, the identity at initialisation.

    Parameters
    ----------
    dim : int
        Dimension ``d``.
    hidden : sequence of int, default (64, 64)
        Hidden widths of the MLP.
    activation : {"prelu", "celu", "tanh", None}, default "prelu"
        ``None`` gives a linear (affine) residual map, which represents the Gaussian-to-Gaussian
        steps of Ornstein-Uhlenbeck flows exactly.
    generator : torch.Generator, optional
        Source of the initial weights.
    dtype, device
        Where the parameters live.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str | None = "prelu",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.residual = mlp(dim, hidden, dim, activation, gen, zero_last=True, dtype=dtype, device=device)

    def forward(self, x: Tensor) -> Tensor:
        """``T(x)`` for ``(n, d)`` points."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected points of shape (n, {self.dim}), got {tuple(x.shape)}")
        return x + self.residual(x)

    def transport(self, x: Tensor) -> Tensor:
        """The transport map (same as calling the module); the name every JKO map shares."""
        return self(x)


class DualNetwork(nn.Module):
    """Positive test function ``h`` of the KL variational formula, an MLP with a positive head.

    With ``g`` the MLP's output:

    * ``"softplus"``: ``h = softplus(g)``;
    * ``"expm1"``: ``h = exp(hbar) - 1`` with ``hbar = bound * tanh(softplus(g) / bound)`` (Fan et al. 2022
      App. E.2: the optimal ``hbar = log(1 + h)`` is much less steep than ``h`` itself, and the
      ``tanh`` keeps ``h`` below ``e^bound``);
    * ``"exp"``: ``h = exp(g)`` (``g`` is then ``log h`` itself, unbounded).

    The head starts at ``h ~ 1``, the optimum when the pushed measure equals the reference ``mu``.

    Parameters
    ----------
    dim : int
        Dimension ``d``.
    hidden : sequence of int, default (64, 64, 64)
    head : {"softplus", "expm1", "exp"}, default "softplus"
    bound : float, default 30.0
        Upper bound of ``log(1 + h)`` for the ``"expm1"`` head.
    activation : {"prelu", "celu", "tanh"}, default "prelu"
    generator, dtype, device
        As for :class:`ResidualMap`.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64, 64),
        head: str = "softplus",
        bound: float = 30.0,
        activation: str = "prelu",
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if head not in DUAL_HEADS:
            raise ValueError(f"head must be one of {DUAL_HEADS}, got {head!r}")
        if activation is None:
            raise ValueError("the dual network needs a non-linear activation")
        if not bound > 0:
            raise ValueError(f"bound must be positive, got {bound}")
        self.dim, self.head, self.bound = int(dim), head, float(bound)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        self.body = mlp(dim, hidden, 1, activation, gen, zero_last=True, dtype=dtype, device=device)
        # h = 1 at initialisation: g0 solves head(g0) = 1
        start = {
            "softplus": math.log(math.e - 1.0),
            "expm1": inverse_softplus(self.bound * math.atanh(math.log(2.0) / self.bound)),
            "exp": 0.0,
        }[head]
        with torch.no_grad():
            self.body[-1].bias.fill_(start)

    def _log_ratio(self, g: Tensor) -> Tensor:
        """``hbar = log(1 + h)`` of the ``"expm1"`` head."""
        return self.bound * torch.tanh(F.softplus(g) / self.bound)

    def log_h(self, x: Tensor) -> Tensor:
        """``log h(x)``, shape ``(n,)``, computed without forming ``h`` where it would underflow."""
        return self._log_from_output(self.body(x).squeeze(-1))

    def _log_from_output(self, g: Tensor) -> Tensor:
        if self.head == "exp":
            return g
        safe = g.clamp(min=_LOG_FLOOR)
        if self.head == "softplus":
            value = torch.log(F.softplus(safe))
        else:
            hbar = self._log_ratio(safe)
            value = hbar + torch.log(-torch.expm1(-hbar))  # log(e^hbar - 1)
        return torch.where(g < _LOG_FLOOR, g, value)

    def objective(self, pushed: Tensor, reference_draws: Tensor) -> Tensor:
        """``E[log h(pushed)] - E[h(reference_draws)]`` (the dual's objective), in one forward pass."""
        g = self.body(torch.cat([pushed, reference_draws])).squeeze(-1)
        n = pushed.shape[0]
        return self._log_from_output(g[:n]).mean() - self._from_output(g[n:]).mean()

    def forward(self, x: Tensor) -> Tensor:
        """``h(x) > 0``, shape ``(n,)``."""
        return self._from_output(self.body(x).squeeze(-1))

    def _from_output(self, g: Tensor) -> Tensor:
        if self.head == "softplus":
            return F.softplus(g)
        if self.head == "exp":
            return torch.exp(g)
        return torch.expm1(self._log_ratio(g))
