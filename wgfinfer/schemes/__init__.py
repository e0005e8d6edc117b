"""The schemes, one module each, and the registry that turns a scheme's name into its options.

Every scheme module has the same parts (see :mod:`wgfinfer.schemes.base`): a frozen options class,
a ``State``, ``init`` and ``step``.  Adding a scheme means writing its module and one line of
``SCHEMES`` (and one row of the contract tests).
"""

from __future__ import annotations

from wgfinfer.schemes.base import Info, Scheme
from wgfinfer.schemes.forward_backward import ForwardBackward
from wgfinfer.schemes.icnn import ICNN
from wgfinfer.schemes.pwgf import PWGF
from wgfinfer.schemes.variational import Variational

SCHEMES: dict[str, type[Scheme]] = {
    "icnn": ICNN,
    "variational": Variational,
    "pwgf": PWGF,
    "forward_backward": ForwardBackward,
}


def as_scheme(scheme: Scheme | str, allowed: tuple[str, ...] | None = None) -> Scheme:
    """The options object ``scheme`` (a name means that scheme with its defaults).

    Raises
    ------
    ValueError
        For an unknown name, or a scheme not in ``allowed``.
    TypeError
        For anything but a name or a scheme object.
    """
    names = tuple(SCHEMES) if allowed is None else allowed
    if isinstance(scheme, str):
        if scheme not in names:
            raise ValueError(f"scheme must be one of {names} or a scheme object, got {scheme!r}")
        return SCHEMES[scheme]()
    if not isinstance(scheme, Scheme):
        raise TypeError(
            f"scheme must be one of {names} or a scheme object (wgfinfer.ICNN(...), ...), got "
            f"{type(scheme).__name__}"
        )
    if scheme.name not in names:
        raise ValueError(f"scheme {type(scheme).__name__} cannot be used here; use one of {names}")
    return scheme


__all__ = ["SCHEMES", "ForwardBackward", "ICNN", "Info", "PWGF", "Scheme", "Variational", "as_scheme"]
