"""Process memory and CPU: read with psutil once per flush, and the resident size per request.

`resident_bytes()` is what the performance middleware reads twice a request. psutil opens,
reads and closes /proc/self/statm each time (about 30 µs, and a measured tenth of a trivial
request's server time). Here the file is opened once (again in a forked child) and read in
place with one pread called through ctypes.PyDLL, which keeps the GIL: in a server whose
event loop thread is busy, every call that lets the GIL go (os.pread does) waits to get it
back, which measured 50 µs a read against 6 µs. Where there is no /proc it is psutil's figure.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

# cgroup v2, then v1: the container's memory limit when there is one.
_CGROUP_LIMIT_FILES = (
    Path("/sys/fs/cgroup/memory.max"),
    Path("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
)


@dataclass(frozen=True, slots=True)
class MemoryUsage:
    rss_bytes: int
    limit_bytes: int
    limit_source: str  # "cgroup" or "machine"

    @property
    def percent(self) -> float:
        return 100.0 * self.rss_bytes / self.limit_bytes if self.limit_bytes else 0.0


def cgroup_memory_limit(files: tuple[Path, ...] = _CGROUP_LIMIT_FILES) -> int | None:
    machine = psutil.virtual_memory().total
    for path in files:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if not text.isdigit():
            return None  # "max": no limit set
        limit = int(text)
        # v1 reports an absurdly large number when unlimited.
        return limit if 0 < limit < machine else None
    return None


_process: psutil.Process | None = None
_process_pid: int | None = None


def _this_process() -> psutil.Process:
    global _process, _process_pid
    if _process is None or _process_pid != os.getpid():
        _process, _process_pid = psutil.Process(), os.getpid()
    return _process


class _Statm:
    """/proc/self/statm held open: its second field is the resident size in pages."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.unavailable = False
        self.pread: Any = None
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.forget)

    def forget(self) -> None:
        # The inherited descriptor still reads the parent's figures.
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None

    def read(self) -> int | None:
        if self.unavailable:
            return None
        if self.fd is None:
            try:
                self.fd = os.open("/proc/self/statm", os.O_RDONLY)
                self.pread = _gil_holding_pread()
            except (OSError, AttributeError):
                self.unavailable = True
                return None
        buffer = ctypes.create_string_buffer(128)
        read = self.pread(self.fd, buffer, 128, 0)
        if read <= 0:
            return None
        return int(buffer.raw[:read].split()[1]) * self.page_size


def _gil_holding_pread() -> Any:
    pread = ctypes.PyDLL(None).pread
    pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
    pread.restype = ctypes.c_ssize_t
    return pread


_statm = _Statm()


def resident_bytes() -> int:
    """This process's resident set size now; cheap enough to read per request."""
    rss = _statm.read()
    return rss if rss is not None else int(_this_process().memory_info().rss)


def memory_usage() -> MemoryUsage:
    rss = _this_process().memory_info().rss
    limit = cgroup_memory_limit()
    if limit is not None:
        return MemoryUsage(rss, limit, "cgroup")
    return MemoryUsage(rss, psutil.virtual_memory().total, "machine")


def cpu_seconds() -> float:
    times = _this_process().cpu_times()
    return float(times.user + times.system)
