"""Resident memory of this process: the current RSS and its peak (high-water mark).

``psutil`` is used when installed (the ``bench`` extra); otherwise Linux's
``/proc/self`` files. The peak comes from ``resource.getrusage`` (``ru_maxrss``),
which the kernel keeps exactly, so it needs no sampling.
"""

from __future__ import annotations

import os
import sys

MIB = 1024 * 1024


def current_rss() -> int | None:
    """The process's resident set size now, in bytes (None if it cannot be read)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        return psutil.Process().memory_info().rss
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def proc_status(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``RssAnon``, ``RssFile``, ...), in bytes; Linux only."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def current_rss_anon() -> int | None:
    """Anonymous resident memory (the heap, not mapped files such as LMDB's), in bytes; Linux only."""
    return proc_status("RssAnon")


def current_rss_file() -> int | None:
    """Resident pages of mapped files (LMDB's map among them), in bytes; Linux only."""
    return proc_status("RssFile")


def disk_usage(path: str) -> int:
    """Bytes allocated on disk under ``path`` (sparse files count what they hold, not their length)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                st = os.stat(os.path.join(root, name))
            except OSError:
                continue
            total += st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size
    return total


def peak_rss() -> int | None:
    """The highest RSS this process has had, in bytes."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def mib(value: int | None) -> float | None:
    return None if value is None else value / MIB
