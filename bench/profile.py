"""Profiling of the relay under load with py-spy, and a summary of its samples.

py-spy samples the running process from outside, so the relay runs
unchanged. Its ``raw`` output has one line per distinct stack:
``frame;frame;...;frame COUNT``, outermost frame first, where a frame reads
``function (path/to/file.py:LINE)``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SAMPLES_PER_S = 200
TOP_ENTRIES = 15
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^():]+)(?::\d+)?\)$")
_PACKAGES = ("relay", "aiohttp", "aiokafka", "asyncio", "orjson", "multidict", "yarl")
# Frames that start the process and run the event loop: they are on nearly every
# stack, so a list by total samples would only repeat them.
_OUTER_FUNCTIONS = frozenset({
    "_run_module_as_main", "_run_code", "<module>", "main", "_serve", "run_app",
    "BaseEventLoop.run_until_complete", "BaseEventLoop.run_forever", "BaseEventLoop._run_once",
    "Handle._run",
})  # fmt: skip


class Profiler:
    """A ``py-spy record`` process attached to one pid for a fixed time."""

    def __init__(self, pid: int, duration_s: int, output: Path, subprocesses: bool = False) -> None:
        py_spy = shutil.which("py-spy")
        if py_spy is None:
            raise RuntimeError("py-spy is not installed; run bench/setup (pip install py-spy)")
        self.output = output
        self._command = [
            py_spy, "record", "--pid", str(pid), "--duration", str(duration_s),
            "--rate", str(SAMPLES_PER_S), "--format", "raw", "--nonblocking",
            "--output", str(output),
        ]  # fmt: skip
        if subprocesses:
            # The workers of relay serve --workers are children of the process started.
            self._command.append("--subprocesses")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            self._command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def wait(self, timeout_s: float) -> None:
        """Wait for py-spy to write its output; raise if it failed."""
        assert self._process is not None
        _, stderr = self._process.communicate(timeout=timeout_s)
        if self._process.returncode != 0:
            message = stderr.decode(errors="replace").strip()[-2000:]
            raise RuntimeError(f"py-spy exited with {self._process.returncode}: {message}")


def summarize_profile(lines: Iterable[str]) -> dict[str, Any]:
    """Return the top functions by own and by total samples, and the share of each package."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    samples = 0
    for line in lines:
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame_name(frame) for frame in stack.split(";")]
        samples += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count
        for frame in set(frames):
            if frame.rpartition(":")[2] not in _OUTER_FUNCTIONS:
                total[frame] += count

    def top(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"function": name, "samples": count, "percent": round(100 * count / samples, 1)}
            for name, count in counter.most_common(TOP_ENTRIES)
        ]

    return {
        "samples": samples,
        "top_own": top(own) if samples else [],
        "top_total": top(total) if samples else [],
        "own_by_package": top(packages) if samples else [],
    }


def _frame_name(frame: str) -> str:
    """Turn ``send (aiokafka/producer/producer.py:123)`` into a path:function name."""
    # py-spy prints paths relative to sys.path unless given --full-filenames.
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    return f"{match['file']}:{match['function']}"


def _package(frame_name: str) -> str:
    first = frame_name.split(":", 1)[0].split("/", 1)[0]
    return first if first in _PACKAGES else "other (stdlib, C code, interpreter)"
