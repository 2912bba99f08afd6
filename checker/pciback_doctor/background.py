"""Work on a thread while the main thread does something else: decompression (liblzma, zlib,
ISA-L) releases the GIL, so an initramfs or a kernel image inflates while the rest is read or
imported (issue 17)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

_T = TypeVar("_T")


def in_background(work: Callable[[], _T]) -> Callable[[], _T]:
    """Start `work` on a daemon thread (Ctrl-C does not wait for it); the function returned waits
    for it and gives its result, or raises what it raised."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # handed to the caller, raised there
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> _T:
        thread.join()
        ok, value = outcome[0]
        if not ok:
            raise value
        return cast("_T", value)

    return result
