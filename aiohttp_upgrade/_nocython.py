"""Stands in for the ``cython`` module where Cython is not installed.

A hot-path module tests ``cython.compiled`` to take C twins of its helpers (as
``_tcp`` takes ``_csyscalls.pxd``'s) when compiled; run as Python, it is False.
"""

__all__ = ["compiled"]

compiled = False
