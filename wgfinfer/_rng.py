"""Running code that draws from torch's global RNG without touching the caller's global RNG.

``torch.distributions`` and Pyro (its model runs and initialisation strategies) draw from torch's
global generators only.  :func:`forked_global_rng` runs such code on the global generators of the
CPU (and of the CUDA device in use) seeded from wgfinfer's own seed, and restores the caller's states
afterwards, so that its results depend on that seed alone.  Python's :mod:`random` and NumPy's global
RNG are neither used nor changed by the code wgfinfer runs this way (Pyro touches them only in
``pyro.set_rng_seed`` and ``pyro.util.set_rng_state``, which wgfinfer never calls).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SEED_BOUND = 2**62
"""Seeds drawn from a generator for a fork lie in ``[0, SEED_BOUND)``."""


def seed_from(generator: torch.Generator) -> int:
    """One seed drawn from ``generator`` (advancing it), for :func:`forked_global_rng`."""
    return int(torch.randint(0, SEED_BOUND, (1,), generator=generator).item())


@contextmanager
def forked_global_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Seed torch's global RNG with ``seed`` for the ``with`` block; restore the caller's afterwards.

    Parameters
    ----------
    seed : int
        Seed of the global generators inside the block (any int ``torch.Generator.manual_seed``
        accepts).
    device : torch.device or str, default "cpu"
        The device the block draws on.  The CPU generator is always forked and seeded; for a CUDA
        device that device's generator too.  No other device's generator is seeded (unlike
        :func:`torch.manual_seed`, which seeds every CUDA device, also those not forked).

    Yields
    ------
    None
    """
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        torch.default_generator.manual_seed(seed)
        if device.type == "cuda":
            with torch.cuda.device(device):
                torch.cuda.manual_seed(seed)
        yield
