"""``python -m rnn_jax``: the ``rnn-jax`` command line."""

import sys

from rnn_jax.cli import main

if __name__ == "__main__":
    sys.exit(main())
