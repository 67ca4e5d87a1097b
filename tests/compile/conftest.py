"""The compile tests hand programs to the real GPU and TPU compilers (``rnn_jax.aot``).

Tests that compile for a GPU carry ``xdist_group("gpu")``, those for a TPU
``xdist_group("tpu")``: with ``pytest -n 2`` each group runs in one worker (the
root conftest asks xdist to keep groups together), so the CUDA plugin (Triton,
ptxas) and libtpu each start in one process, while the rest of the suite runs
beside them. Without the ``aot`` extra they are skipped, naming what is missing.
"""
