"""Sphinx configuration: the API reference from the docstrings, the notebooks with the outputs
they are stored with (the tests execute them), a page per backend, the book theme."""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]  # this checkout's rnn_jax, the directives
os.environ.setdefault("KERAS_BACKEND", "jax")  # before rnn_jax.interop.keras imports Keras

import rnn_jax  # noqa: E402

project = "rnn_jax"
author = "the rnn_jax authors"
copyright = "the rnn_jax authors"
version = release = rnn_jax.__version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "rnn_jax_docs",
]
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
default_role = "py:obj"  # `Cell` in a docstring links to rnn_jax.Cell

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

nb_execution_mode = "off"  # tests/test_notebooks.py executes them; pages show stored outputs
nb_merge_streams = True  # a loop's prints read as one output
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "sphinx_book_theme"
html_title = "rnn_jax"
html_theme_options = {"show_toc_level": 2, "navigation_with_keys": False}
