"""Several worker processes behind one port, for ``relay serve --workers N``.

The parent starts N copies of ``relay serve`` that each listen on the same
port with ``SO_REUSEPORT``, so the kernel spreads new connections over them.
Each worker has its own event loop, Kafka producer, deduplication memory and
spool folder. The parent forwards SIGTERM and SIGINT to every worker and
exits 0 once all of them exited 0. When a worker exits while no stop signal
was received, the parent stops the other workers and exits 1.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from relay.config import RelayConfig

log = logging.getLogger(__name__)

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def worker_config(config: RelayConfig, index: int) -> RelayConfig:
    """Return the configuration of worker ``index``: its own spool folder under ``spool.path``.

    The spool locks its folder, so two workers cannot share one.
    """
    spool = config.spool
    if spool.path is None:
        return config
    worker_spool = spool.model_copy(update={"path": Path(spool.path) / f"worker-{index}"})
    return config.model_copy(update={"spool": worker_spool})


def run_workers(worker_command: Callable[[int], Sequence[str]], count: int) -> int:
    """Run ``count`` workers, each the command ``worker_command(index)``; return the status."""
    supervisor = _Supervisor()
    previous = {signum: signal.signal(signum, supervisor.forward) for signum in FORWARDED_SIGNALS}
    try:
        for index in range(count):
            supervisor.spawn(subprocess.Popen(worker_command(index)))
        log.info("started %d workers: pids %s", count, ", ".join(map(str, supervisor.pids)))
        return supervisor.wait_all()
    finally:
        supervisor.stop_all(signal.SIGTERM)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _Supervisor:
    """Tracks the workers, forwards signals to them and collects their exit codes."""

    def __init__(self) -> None:
        self._running: dict[int, subprocess.Popen[bytes]] = {}
        self._stop_signal: int | None = None

    @property
    def pids(self) -> list[int]:
        return sorted(self._running)

    def spawn(self, process: subprocess.Popen[bytes]) -> None:
        self._running[process.pid] = process
        if self._stop_signal is not None:
            # The stop signal came while the workers were being started.
            os.kill(process.pid, self._stop_signal)

    def forward(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum
        self.stop_all(signal.Signals(signum))

    def stop_all(self, signum: signal.Signals) -> None:
        for pid in list(self._running):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def wait_all(self) -> int:
        failed = False
        while self._running:
            pid, wait_status = os.wait()
            process = self._running.pop(pid, None)
            if process is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            process.returncode = code
            if self._stop_signal is not None and code == -self._stop_signal:
                # Killed by the signal's default action: the worker had not yet installed
                # its handlers, which it does before it listens, so it served nothing.
                log.info("worker pid %d stopped before it started serving", pid)
            elif code != 0:
                failed = True
                log.error("worker pid %d exited with %d", pid, code)
            if self._stop_signal is None and self._running:
                log.error("worker pid %d exited without a stop signal; stopping the others", pid)
                failed = True
                self._stop_signal = signal.SIGTERM
                self.stop_all(signal.SIGTERM)
        return 1 if failed else 0
