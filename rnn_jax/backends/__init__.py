"""The scan kernels (backends) behind ``rj.scan``.

Importing this package registers every backend module listed here.
"""

from rnn_jax.backends import checkpointed, reference, sequential  # noqa: F401  (registering)
from rnn_jax.backends import cudnn as _cudnn  # noqa: F401  (registers "cudnn")
from rnn_jax.backends.masking import flip_valid
from rnn_jax.backends.newton import NewtonInfo, newton_backend, newton_scan  # registers "newton"
from rnn_jax.backends.pallas import backend as _pallas  # noqa: F401  (registers "pallas")
from rnn_jax.backends.parallel import parallel_backend  # registers "parallel"
from rnn_jax.backends.registry import Backend, backend_names, get_backend, register_backend

__all__ = [
    "Backend",
    "NewtonInfo",
    "backend_names",
    "flip_valid",
    "get_backend",
    "newton_backend",
    "newton_scan",
    "parallel_backend",
    "register_backend",
]
