"""Affine coupling layers as a PWGF push-forward map (exact, cheap densities in both directions).

A coupling layer splits the coordinates into a conditioning half ``a`` and a transformed half ``b``
and moves only ``b``, by an affine map whose log-scale ``s`` and shift ``t`` are functions of ``a``:

.. math::

    y_a = x_a, \\qquad y_b = x_b \\odot e^{s(x_a)} + t(x_a).

Its Jacobian is triangular, so ``log|det dT/dx| = sum(s(x_a))`` exactly, and the inverse is explicit:
``x_b = (y_b - t(y_a)) e^{-s(y_a)}``.  This is the affine coupling of real NVP (Dinh, Sohl-Dickstein
and Bengio, 2017).  Layers come in pairs: the second layer of a pair transforms the coordinates the
first one conditioned on, and each pair draws a fresh random split, so every coordinate can depend
on every other after a few pairs.

Why it is here: a planar layer moves mass along one direction, so a target whose spread in many
directions depends on another coordinate (the hierarchical ``w | alpha`` of Bayesian logistic
regression, a funnel) needs many planar layers, while one coupling layer that conditions on that
coordinate rescales all of them at once (the breast-cancer measurements are in
``docs/benchmarks.md``, "Settings of the logistic-regression model").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from wgfinfer.nn.mlp import mlp
from wgfinfer.nn.pushforward import check_points


class AffineCouplingFlow(nn.Module):
    """Composition of ``n_layers`` affine coupling layers, equal to the identity at construction.

    Parameters
    ----------
    dim : int
        Dimension ``d`` (at least 2: a coupling layer needs two non-empty halves).
    n_layers : int, default 4
        Coupling layers.  Layer ``2k`` conditions on a random half of the coordinates (``floor(d/2)``
        of them) and transforms the rest; layer ``2k + 1`` swaps the roles.
    hidden : sequence of int, default (64,)
        Hidden widths of each layer's conditioner, a ``tanh`` MLP from ``x_a`` to ``(s, t)``.  Its
        output layer starts at zero, so every layer starts as the identity.
    scale_bound : float, default 3.0
        The log-scale is ``scale_bound * tanh(raw / scale_bound)``: each layer stretches or shrinks a
        coordinate by at most ``e^scale_bound``, which keeps the flow's Jacobian bounded during
        training (the raw output is unbounded, and ``exp`` of it could overflow).
    generator : torch.Generator, optional
        Source of the splits and of the conditioners' initial weights (seeded with 0 when omitted).
    dtype, device
        Where the parameters live.

    Raises
    ------
    ValueError
        If ``dim < 2``, ``n_layers < 1``, a hidden width is not a positive int, or ``scale_bound``
        is not a positive finite number.
    """

    def __init__(
        self,
        dim: int,
        n_layers: int = 4,
        hidden: Sequence[int] = (64,),
        scale_bound: float = 3.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an int >= 2 for coupling layers, got {dim!r}")
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ValueError(f"n_layers must be a positive int, got {n_layers!r}")
        hidden = tuple(hidden)
        if not hidden or any(isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive ints, got {hidden}")
        if isinstance(scale_bound, bool) or not math.isfinite(float(scale_bound)) or scale_bound <= 0:
            raise ValueError(f"scale_bound must be a positive finite number, got {scale_bound!r}")
        self.dim, self.n_layers, self.hidden = dim, n_layers, hidden
        self.scale_bound = float(scale_bound)
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        n_cond = dim // 2
        perms = []
        for j in range(n_layers):
            if j % 2 == 0:
                perm = torch.randperm(dim, generator=gen)
            else:  # swap the halves of the previous layer
                prev = perms[-1]
                perm = torch.cat([prev[n_cond:], prev[:n_cond]])
            perms.append(perm)
        # row j: the conditioning coordinates first, then the transformed ones (a buffer, so that it is
        # saved with the state and a rebuilt map uses the same splits whatever its generator)
        self.register_buffer("permutations", torch.stack(perms).to(device))
        self.register_buffer("inverse_permutations", torch.argsort(self.permutations, dim=-1))
        self.conditioners = nn.ModuleList()
        for j in range(n_layers):
            size_a = self._split(j)
            size_b = dim - size_a
            self.conditioners.append(
                mlp(size_a, hidden, 2 * size_b, "tanh", gen, zero_last=True, dtype=dtype, device=device)
            )

    def _split(self, j: int) -> int:
        """Size of layer ``j``'s conditioning half."""
        return self.dim // 2 if j % 2 == 0 else self.dim - self.dim // 2

    def _scale_shift(self, j: int, x_a: Tensor) -> tuple[Tensor, Tensor]:
        raw_s, t = self.conditioners[j](x_a).chunk(2, dim=-1)
        return self.scale_bound * torch.tanh(raw_s / self.scale_bound), t

    def map_and_log_det(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``T(x)`` and ``log|det dT/dx (x)|`` for ``(n, d)`` points (shapes ``(n, d)``, ``(n,)``)."""
        check_points(x, self.dim)
        log_det = x.new_zeros(x.shape[0])
        # x is kept in the order of the current layer's permutation (its conditioning half first), so
        # that each layer takes its halves as slices and one gather moves to the next layer's order
        x = x.index_select(-1, self.permutations[0])
        for j in range(self.n_layers):
            k = self._split(j)
            x_a, x_b = x[:, :k], x[:, k:]
            s, t = self._scale_shift(j, x_a)
            y = torch.cat([x_a, x_b * torch.exp(s) + t], dim=-1)
            x = y.index_select(-1, self._reorder(j, j + 1))
            log_det = log_det + s.sum(-1)
        return x, log_det

    def _reorder(self, j: int, i: int) -> Tensor:
        """Indices that take points from layer ``j``'s order to layer ``i``'s (to the coordinates'
        own order when ``i`` is out of range)."""
        back = self.inverse_permutations[j]
        return back if not 0 <= i < self.n_layers else back.index_select(0, self.permutations[i])

    def forward(self, x: Tensor) -> Tensor:
        """``T(x)`` for ``(n, d)`` points."""
        return self.map_and_log_det(x)[0]

    def transport(self, x: Tensor) -> Tensor:
        """The push-forward map (same as calling the module)."""
        return self(x)

    @torch.no_grad()
    def inverse_and_log_det(
        self, y: Tensor, tol: float | None = None, max_iter: int = 100
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Invert the map exactly: ``x = T^{-1}(y)``.

        Parameters
        ----------
        y : Tensor
            ``(n, d)`` points.
        tol, max_iter
            Unused (the inverse is explicit); accepted for the density protocol of
            :class:`wgfinfer.flow.Flow`.

        Returns
        -------
        x : Tensor
            ``(n, d)`` pre-images.
        log_abs_det : Tensor
            ``(n,)`` ``log|det dT/dx|`` of the forward map at ``x``.
        converged : Tensor
            ``(n,)`` booleans, ``False`` only where a pre-image is not finite.
        """
        check_points(y, self.dim)
        log_det = y.new_zeros(y.shape[0])
        y = y.index_select(-1, self.permutations[-1])
        for j in reversed(range(self.n_layers)):
            k = self._split(j)
            y_a, y_b = y[:, :k], y[:, k:]
            s, t = self._scale_shift(j, y_a)
            x = torch.cat([y_a, (y_b - t) * torch.exp(-s)], dim=-1)
            y = x.index_select(-1, self._reorder(j, j - 1))
            log_det = log_det + s.sum(-1)
        return y, log_det, torch.isfinite(y).all(-1)
