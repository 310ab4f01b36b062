"""Peak RSS of a whole process tree, polled from a background thread.

A Dagster run is several processes (the CLI or run worker, then one process per step), so
the peak RSS of one process says little. `TreeMonitor` sums the RSS of a root process and
all its descendants every `interval` seconds and keeps the largest sum. Shared pages are
counted once per process (as `ps` does), so the figure is an upper bound of what the tree
really holds. Polling can miss a spike shorter than the interval.
"""

from __future__ import annotations

import threading

import psutil

MB = 1_000_000


class TreeMonitor:
    """`with TreeMonitor(pid) as monitor: ...` then `monitor.peak_mb`.

    `ignore` holds pids that are not counted (e.g. a long-running server's own processes,
    when only the processes it starts for one run should be measured).
    """

    def __init__(self, pid: int, interval: float = 0.05, ignore: set[int] | None = None):
        self.root = psutil.Process(pid)
        self.interval = interval
        self.ignore = ignore or set()
        self.peak_bytes = 0
        self.peak_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / MB

    def sample(self) -> int:
        """The RSS sum of the tree now (bytes); updates the peak."""
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:  # the root exited
            return 0
        total = 0
        counted = 0
        for process in processes:
            if process.pid in self.ignore:
                continue
            try:
                total += process.memory_info().rss
                counted += 1
            except psutil.Error:  # exited between listing and reading
                continue
        if total > self.peak_bytes:
            self.peak_bytes = total
            self.peak_processes = counted
        return total

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def tree_pids(pid: int) -> set[int]:
    """The pid and every descendant's, now."""
    root = psutil.Process(pid)
    return {pid, *(p.pid for p in root.children(recursive=True))}
