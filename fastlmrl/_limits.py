"""Size limits (internal): moved to :mod:`fastlmrl._validation` (``check.size``,
``check.physical_memory``, ``check.MAX_ELEMENTS``).

Kept until its last importer (fastlmrl/environments.py) calls ``_validation.size``; the two
functions below are that one check with their old argument order.
"""

from __future__ import annotations

from ._validation import MAX_ELEMENTS, physical_memory, size

__all__ = ["MAX_ELEMENTS", "check_elements", "check_iterations", "physical_memory"]


def check_elements(count: int, bytes_per_element: int, name: str, what: str) -> None:
    """:func:`fastlmrl._validation.size` (``count`` elements of ``bytes_per_element`` bytes)."""
    size(count, name, what, bytes_per_element)


def check_iterations(count: int, name: str, what: str) -> None:
    """:func:`fastlmrl._validation.size` of a loop (at most 2**31 iterations)."""
    size(count, name, what, 0, unit="iterations")
