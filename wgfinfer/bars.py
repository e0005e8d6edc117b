"""tqdm progress bars of the phases that can take long: the start fit, the steps, large draws.

Every bar is off unless the caller asks for it (``WGFSampler(progress_bar=True)``, the default,
passes its flag down); library functions take ``progress_bar: bool = False``, so that the calls the
library makes for itself (training steps, probes, fingerprints) stay quiet.  A chunked computation
(draws pushed through the maps, a Pyro model's log joint, its pointwise log-likelihoods) shows a bar
only when it takes at least :data:`MIN_CHUNKS_FOR_BAR` chunks: a call of one chunk prints nothing.
"""

from __future__ import annotations

import math
from typing import Any

MIN_CHUNKS_FOR_BAR = 2
"""A chunked computation shows a bar (when asked for one) only from this many chunks on."""


class NoBar:
    """What a switched-off bar is: every method of the tqdm bars used here, doing nothing."""

    n = 0
    total = None

    def update(self, n: int = 1) -> None:
        """Do nothing."""

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        """Do nothing."""

    def refresh(self) -> None:
        """Do nothing."""

    def close(self) -> None:
        """Do nothing."""

    def __enter__(self) -> NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def bar(
    enabled: bool, total: int | None, desc: str, unit: str = "it", initial: int = 0, leave: bool = True
) -> Any:
    """A tqdm bar (``tqdm.auto``: a widget in notebooks, text on stderr elsewhere), or a
    :class:`NoBar` when ``enabled`` is false.

    Parameters
    ----------
    enabled : bool
        Whether to show the bar.
    total : int or None
        The count at which the bar is full (``None``: unknown).
    desc : str
        The bar's label.
    unit : str, default "it"
        What one count is.
    initial : int, default 0
        The count the bar starts from.
    leave : bool, default True
        Keep the finished bar on screen (``False``: clear it when it closes).

    Returns
    -------
    tqdm.tqdm or NoBar
        Usable as a context manager; ``update``, ``set_postfix``, ``refresh`` and ``close`` work on both.
    """
    if not enabled:
        return NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave)


def chunk_bar(enabled: bool, n: int, chunk_size: int, desc: str, unit: str = "draw") -> Any:
    """A bar over ``n`` items processed ``chunk_size`` at a time, updated by the caller with each
    chunk's size; a real one only if ``enabled`` and the work takes at least
    :data:`MIN_CHUNKS_FOR_BAR` chunks.  The finished bar is cleared.

    Parameters
    ----------
    enabled : bool
        Whether a bar is wanted at all.
    n : int
        Items in all.
    chunk_size : int
        Items per chunk (at least 1).
    desc : str
        The bar's label.
    unit : str, default "draw"
        What one item is.

    Returns
    -------
    tqdm.tqdm or NoBar
    """
    large = math.ceil(n / max(1, int(chunk_size))) >= MIN_CHUNKS_FOR_BAR
    return bar(enabled and large, n, desc, unit=unit, leave=False)
