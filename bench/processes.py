"""Server processes under test and their resource use, read from /proc."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """Return the user plus system CPU time of ``pid`` so far, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name in field 2 may contain spaces, so fields are counted after its ")".
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / CLOCK_TICKS_PER_S


def process_tree(pid: int) -> list[int]:
    """Return ``pid`` and its descendants, such as the workers of ``relay serve --workers``."""
    pids = [pid]
    for parent in pids:
        for task in Path(f"/proc/{parent}/task").iterdir():
            children = (task / "children").read_text().split()
            pids.extend(int(child) for child in children)
    return pids


def peak_rss_bytes(pid: int) -> int:
    """Return the peak resident set size of ``pid`` (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


@dataclass(frozen=True, slots=True)
class MachineCpu:
    """The machine's CPU time counters, summed over all cores, in clock ticks.

    ``busy`` is the time the cores ran processes or the kernel, ``steal`` the
    time the hypervisor kept this virtual machine's cores waiting while they
    had work to run, and ``total`` is both plus the idle time.
    """

    busy: int
    steal: int
    total: int

    @classmethod
    def parse(cls, line: str) -> MachineCpu:
        """Parse the ``cpu`` line of /proc/stat, as documented in proc(5)."""
        # user, nice, system, idle, iowait, irq, softirq, steal, then guest and
        # guest_nice, which are already counted in user and nice.
        fields = [int(value) for value in line.split()[1:]]
        if len(fields) < 8:
            raise ValueError(
                f"invalid /proc/stat cpu line {line.strip()!r}: expected at least 8 values "
                "(user to steal)"
            )
        idle = fields[3] + fields[4]  # idle and iowait
        steal = fields[7]
        total = sum(fields[:8])
        return cls(busy=total - idle - steal, steal=steal, total=total)

    @classmethod
    def read(cls) -> MachineCpu:
        with open("/proc/stat") as stat:
            return cls.parse(stat.readline())

    def busy_percent_since(self, earlier: MachineCpu) -> float:
        """Return the share of all cores that was busy between ``earlier`` and this reading."""
        return self._percent_of_total(self.busy - earlier.busy, earlier)

    def steal_percent_since(self, earlier: MachineCpu) -> float:
        """Return the share of all cores stolen by the hypervisor since ``earlier``."""
        return self._percent_of_total(self.steal - earlier.steal, earlier)

    def _percent_of_total(self, ticks: int, earlier: MachineCpu) -> float:
        total = self.total - earlier.total
        return 100.0 * ticks / total if total else 0.0


@dataclass(frozen=True, slots=True)
class CpuReading:
    """One reading of a ``CpuSampler``: the time and the CPU time counters then."""

    # Unix time in nanoseconds, the clock of vegeta's request start times.
    time_ns: int
    # User plus system CPU time of the sampled processes, summed, in seconds.
    process_cpu_s: float
    machine: MachineCpu


class CpuSampler:
    """A background thread that reads the CPU time of ``pids`` and of the machine.

    It takes a reading every ``interval_s`` seconds from entering the
    ``with`` block until leaving it, with one last reading then, or until one
    of the processes exits and its counters can no longer be read.
    """

    def __init__(self, pids: Sequence[int], interval_s: float = 0.1) -> None:
        self.pids = list(pids)
        self.interval_s = interval_s
        self.readings: list[CpuReading] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def read(self) -> CpuReading:
        """Read the counters now; raise ``FileNotFoundError`` once a process is gone."""
        before_ns = time.time_ns()
        cpu_s = sum(process_cpu_s(pid) for pid in self.pids)
        machine = MachineCpu.read()
        after_ns = time.time_ns()
        # The midpoint halves the timing error when the thread is preempted while reading.
        return CpuReading((before_ns + after_ns) // 2, cpu_s, machine)

    def _run(self) -> None:
        while self._append_reading():
            if self._stopping.wait(self.interval_s):
                self._append_reading()
                return

    def _append_reading(self) -> bool:
        try:
            self.readings.append(self.read())
        except (FileNotFoundError, ProcessLookupError) as exc:
            log.debug("CPU sampling stopped because a process exited: %s", exc)
            return False
        return True

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stopping.set()
        self._thread.join()


class ServerProcess:
    """An HTTP server run as a child process, ready once ``ready_url`` returns 200."""

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        ready_url: str,
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.ready_url = ready_url
        self.log_path = log_path
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError(f"{self.name} is not running")
        return self._process.pid

    def start(self, timeout_s: float = 60.0) -> None:
        """Start the process and return once ``ready_url`` returns 200."""
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.cwd
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self._process.returncode} at start; "
                    f"see {self.log_path}"
                )
            if _responds_ok(self.ready_url):
                return
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} was not ready within {timeout_s} s; see {self.log_path}")

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """Stop the process with SIGTERM, then SIGKILL, and return its exit code."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _responds_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False
