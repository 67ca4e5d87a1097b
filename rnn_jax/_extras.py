"""Optional packages, imported where first used and named in one line when missing.

The core (cells, ``rj.scan``, backends, layers) needs jax, flax, optax, chex
and numpy only. The application's packages come with extras of
``pyproject.toml``: ``app`` (checkpoints, plots, progress bars, the bundled
tasks) and ``data`` (Parquet files).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

# The distribution and the extra that bring each optional top-level package.
PACKAGES = {
    "matplotlib": ("matplotlib", "app"),
    "orbax": ("orbax-checkpoint", "app"),
    "pyarrow": ("pyarrow", "data"),
    "sklearn": ("scikit-learn", "app"),
    "statsmodels": ("statsmodels", "app"),
    "tqdm": ("tqdm", "app"),
}


class MissingExtra(ImportError):
    """An optional package that a feature needs is not installed; the message says how to add it."""


def require(module: str, feature: str) -> ModuleType:
    """The module ``module`` (of a package in `PACKAGES`), imported for ``feature``.

    Raises a `MissingExtra` of one line when the package is not installed.

    Example:
        >>> from rnn_jax._extras import require
        >>> require("tqdm.auto", "the progress bar").__name__
        'tqdm.auto'
    """
    top = module.split(".")[0]
    distribution, extra = PACKAGES[top]
    try:
        import_module(top)  # first, so a package missing underneath a loaded submodule counts
        return import_module(module)
    except ImportError:
        raise MissingExtra(
            f"{feature} needs {distribution}: pip install 'rnn_jax[{extra}]'"
        ) from None
