"""The package version, in a module of its own so that submodules can import it without importing
``wgfinfer`` (whose ``__init__`` imports the sampler, and so nearly everything else)."""

__version__ = "0.1.0"
