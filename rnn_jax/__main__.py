"""``python -m rnn_jax``: the ``rnn-jax`` command line (train, compare, generate, bench, gradflow)."""

import sys

from rnn_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
