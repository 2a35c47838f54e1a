"""Compute backends (NumPy/pandas or CuPy/cuDF) and kernels written once against an array namespace.

Modules are imported where used (``gpu.backend``, ``gpu.detok``, ``gpu.text_escape``,
``gpu.hashing``): importing this package must stay cheap, since every worker process does.
"""
