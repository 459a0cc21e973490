"""Size limits checked before anything large is computed or allocated (internal).

A size that would need more than :data:`MAX_ELEMENTS` = 2**31 array elements (or loop
iterations), or more bytes than the machine's physical memory, is refused at once with a
ValueError that names the argument and the number that is too large, instead of a MemoryError, an
OverflowError or a computation that runs for minutes.
"""

from __future__ import annotations

import os

#: The most elements (or iterations) one call may ask for.
MAX_ELEMENTS = 2**31


def physical_memory() -> int:
    """Bytes of physical memory (2**40 when the system does not say)."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return 1 << 40
    if pages <= 0 or page_size <= 0:  # pragma: no cover
        return 1 << 40
    return int(pages) * int(page_size)


def check_elements(count: int, bytes_per_element: int, name: str, what: str) -> None:
    """Refuse ``count`` elements of ``bytes_per_element`` bytes (``what`` describes the count,
    e.g. ``"num_envs * max_new_tokens = 4 * 2**40"``)."""
    if count > MAX_ELEMENTS:
        raise ValueError(
            f"{name} is too large: {what} = {count} elements, more than 2**31 = {MAX_ELEMENTS}"
        )
    need = count * bytes_per_element
    have = physical_memory()
    if need > have:
        raise ValueError(
            f"{name} is too large: {what} = {count} elements need {need} bytes "
            f"({need / 2**30:.1f} GiB), more than the {have / 2**30:.1f} GiB of "
            "memory of this machine"
        )


def check_iterations(count: int, name: str, what: str) -> None:
    """Refuse a loop of more than 2**31 iterations."""
    if count > MAX_ELEMENTS:
        raise ValueError(
            f"{name} is too large: {what} = {count} iterations, more than 2**31 = {MAX_ELEMENTS}"
        )
