"""The benchmark's report: machine, versions, the results table, ratios and targets."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.loadgen import VEGETA_VERSION
from bench.stats import FIXED_RATE, SATURATION, RunStats
from relay.event_loop import event_loop_factory
from tests.kafka_broker import KAFKA_VERSION

RELAY = "relay"
NOOP = "aiohttp no-op"
PRODUCER = "aiokafka producer"

# The goals that the benchmark checks on every run.
MIN_RATIO_TO_NOOP = 0.70
MAX_P99_MS_AT_HALF_RATE = 20.0
MAX_PEAK_RSS_MB = 150.0

_COLUMNS = (
    ("target", "target"),
    ("mode", "mode"),
    ("rate/s", "rate_per_s"),
    ("sent", "sent"),
    ("2xx", "ok"),
    ("throughput/s", "throughput_per_s"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("p99.9 ms", "p999_ms"),
    ("CPU ms/1k", "cpu_ms_per_1k"),
    ("peak RSS MB", "peak_rss_mb"),
    ("loadgen CPU ms/1k", "loadgen_cpu_ms_per_1k"),
    ("machine busy %", "machine_busy_percent"),
    ("steal %", "machine_steal_percent"),
)


def machine_info() -> dict[str, Any]:
    """Return the cores, CPU model, memory, kernel and load average of this machine."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "memory_gib": round(memory_kib / 2**20, 1),
        "kernel": platform.release(),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


def versions() -> dict[str, Any]:
    """Return the versions of Python, the libraries, Kafka, Java and the load generator.

    ``uvloop`` is None where it is not installed.
    """
    from aiokafka.record.default_records import DefaultRecordBatchBuilder

    found: dict[str, Any] = {"python": platform.python_version()}
    for package in ("aiohttp", "aiokafka", "orjson", "pydantic"):
        found[package] = metadata.version(package)
    found["aiokafka_c_extension"] = DefaultRecordBatchBuilder.__module__.startswith(
        "aiokafka.record._crecords"
    )
    try:
        found["uvloop"] = metadata.version("uvloop")
    except metadata.PackageNotFoundError:
        found["uvloop"] = None
    found["kafka"] = KAFKA_VERSION
    found["java"] = _java_version()
    found["vegeta"] = VEGETA_VERSION
    return found


def event_loop_name(choice: str) -> str:
    """Return the event loop that ``--loop choice`` selects here: "uvloop" or "asyncio".

    The servers run in this Python environment and resolve the choice with
    the same function, relay/event_loop.py ``event_loop_factory``. Raises
    ``ImportError`` for the choice ``uvloop`` where uvloop is not installed.
    """
    return "asyncio" if event_loop_factory(choice) is None else "uvloop"


def ratios(runs: Sequence[RunStats]) -> dict[str, float | None]:
    """Return the relay's saturation throughput as a fraction of each ceiling's.

    ``noop_to_relay_cpu_per_delivery`` is the no-op server's CPU time per
    delivery over the relay's, both at saturation: the throughput ratio that
    two CPU-bound single processes reach when they get the same CPU share. It
    varies less than the throughput ratio when other processes load the machine.
    """
    relay = _find(runs, RELAY, SATURATION)
    noop = _find(runs, NOOP, SATURATION)
    producer = _find(runs, PRODUCER, SATURATION)
    cpu_ratio = None
    if relay and noop and relay.cpu_ms_per_1k and noop.cpu_ms_per_1k:
        cpu_ratio = round(noop.cpu_ms_per_1k / relay.cpu_ms_per_1k, 3)
    return {
        "relay_to_noop_throughput": _ratio(relay, noop),
        "relay_to_producer_throughput": _ratio(relay, producer),
        "noop_to_relay_cpu_per_delivery": cpu_ratio,
    }


def targets(runs: Sequence[RunStats]) -> dict[str, dict[str, Any]]:
    """Return each target's measured value and whether it was met."""
    found = ratios(runs)["relay_to_noop_throughput"]
    half_rate = _find(runs, RELAY, FIXED_RATE)
    p99 = half_rate.p99_ms if half_rate else None
    rss = max((run.peak_rss_mb for run in runs if run.target == RELAY), default=None)
    return {
        "relay_to_noop_throughput": {
            "goal": f">= {MIN_RATIO_TO_NOOP}",
            "value": found,
            "met": found is not None and found >= MIN_RATIO_TO_NOOP,
        },
        "relay_p99_ms_at_half_max_rate": {
            "goal": f"< {MAX_P99_MS_AT_HALF_RATE}",
            "value": p99,
            "met": p99 is not None and p99 < MAX_P99_MS_AT_HALF_RATE,
        },
        "relay_peak_rss_mb": {
            "goal": f"< {MAX_PEAK_RSS_MB}",
            "value": rss,
            "met": rss is not None and rss < MAX_PEAK_RSS_MB,
        },
    }


def markdown(runs: Sequence[RunStats]) -> str:
    """Return the results table, the ratios and the targets as Markdown."""
    lines = [
        "| " + " | ".join(title for title, _ in _COLUMNS) + " |",
        "|" + "---|" * len(_COLUMNS),
    ]
    for run in runs:
        cells = [_cell(getattr(run, name)) for _, name in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, value in ratios(runs).items():
        lines.append(f"- {name}: {_cell(value)}")
    for name, target in targets(runs).items():
        verdict = "met" if target["met"] else "MISSED"
        lines.append(f"- target {name} {target['goal']}: {_cell(target['value'])} ({verdict})")
    return "\n".join(lines)


def _find(runs: Sequence[RunStats], target: str, mode: str) -> RunStats | None:
    return next((run for run in runs if run.target == target and run.mode == mode), None)


def _ratio(numerator: RunStats | None, denominator: RunStats | None) -> float | None:
    if numerator is None or denominator is None or not denominator.throughput_per_s:
        return None
    return round(numerator.throughput_per_s / denominator.throughput_per_s, 3)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _java_version() -> str:
    try:
        completed = subprocess.run(["java", "-version"], capture_output=True, text=True)
    except OSError:
        return "not found"
    lines = completed.stderr.strip().splitlines()
    return lines[0] if lines else "unknown"
