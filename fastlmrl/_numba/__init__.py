"""The Numba backend: ``@njit(cache=True, nogil=True)`` kernels, callable from a user's ``@njit``
code."""

from .._topics import gather

NAME = "numba"
__all__ = gather(__name__, globals())
