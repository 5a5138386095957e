"""Summaries of one measured run: throughput, latency percentiles, CPU and memory."""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.processes import CpuReading

SATURATION = "saturation"
FIXED_RATE = "fixed rate"

NS_PER_S = 1_000_000_000
# A timeline second's CPU shares come from the two CPU readings nearest its
# edges. A reading farther than this from its edge, as in a second without
# readings, leaves the shares unknown (None).
MAX_EDGE_DISTANCE_NS = 250_000_000
# Less time between the two readings also leaves them unknown, because
# process CPU time counts in clock ticks (10 ms at USER_HZ 100): one tick is
# 2% of a core over 0.5 s.
MIN_READING_SPAN_NS = 500_000_000
UNKNOWN_CPU_SHARES: dict[str, float | None] = {
    "server_cpu_percent": None,
    "machine_busy_percent": None,
    "machine_steal_percent": None,
}


@dataclass(frozen=True, slots=True)
class Sample:
    """One request or send: start time, latency (both in nanoseconds) and outcome.

    ``status`` is the HTTP status, 200 for a record the broker acknowledged,
    or 0 for a transport or producer error.
    """

    started_ns: int
    latency_ns: int
    status: int


@dataclass(frozen=True, slots=True)
class Resources:
    """CPU and memory spent by the process under test during one run, and the machine's load."""

    cpu_s: float
    peak_rss_bytes: int
    machine_busy_percent: float
    machine_steal_percent: float
    loadgen_cpu_s: float | None = None


@dataclass(frozen=True, slots=True)
class RunStats:
    """The summary of one run, as printed and written to the JSON results."""

    target: str
    mode: str
    rate_per_s: int | None
    concurrency: int | None
    sent: int
    ok: int
    failed: int
    duration_s: float
    throughput_per_s: float
    p50_ms: float | None
    p99_ms: float | None
    p999_ms: float | None
    max_ms: float | None
    cpu_ms_per_1k: float | None
    peak_rss_mb: float
    loadgen_cpu_ms_per_1k: float | None
    machine_busy_percent: float
    machine_steal_percent: float
    # "uvloop" or "asyncio": the event loop of the server or producer under test.
    event_loop: str
    statuses: dict[str, int] = field(default_factory=dict)
    # One entry per second of the run, by request start: it shows whether a high
    # p99 comes from one stall or from every second, and whether the process
    # under test was busy on a core in that second.
    timeline: list[dict[str, float | None]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: Sequence[int], fraction: float) -> int:
    """Return the nearest-rank percentile of ascending ``sorted_values``."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(
    target: str,
    mode: str,
    samples: Sequence[Sample],
    resources: Resources,
    *,
    event_loop: str,
    rate_per_s: int | None = None,
    concurrency: int | None = None,
    cpu_readings: Sequence[CpuReading] = (),
) -> RunStats:
    """Summarize ``samples``; latencies cover every request that got a response (status > 0).

    ``cpu_readings``, in time order, give the timeline's per-second CPU
    shares, which are None without them.
    """
    ok = sum(1 for sample in samples if 200 <= sample.status < 300)
    responded = sorted(sample.latency_ns for sample in samples if sample.status > 0)
    if samples:
        first_start = min(sample.started_ns for sample in samples)
        last_end = max(sample.started_ns + sample.latency_ns for sample in samples)
        duration_s = (last_end - first_start) / 1e9
    else:
        duration_s = 0.0

    def latency_ms(fraction: float) -> float | None:
        return round(percentile(responded, fraction) / 1e6, 3) if responded else None

    def per_1k(cpu_s: float | None) -> float | None:
        return round(cpu_s * 1e6 / ok, 1) if ok and cpu_s is not None else None

    statuses = Counter(str(sample.status) for sample in samples)
    return RunStats(
        target=target,
        mode=mode,
        rate_per_s=rate_per_s,
        concurrency=concurrency,
        sent=len(samples),
        ok=ok,
        failed=len(samples) - ok,
        duration_s=round(duration_s, 3),
        throughput_per_s=round(ok / duration_s, 1) if duration_s else 0.0,
        p50_ms=latency_ms(0.50),
        p99_ms=latency_ms(0.99),
        p999_ms=latency_ms(0.999),
        max_ms=latency_ms(1.0),
        cpu_ms_per_1k=per_1k(resources.cpu_s),
        peak_rss_mb=round(resources.peak_rss_bytes / 2**20, 1),
        loadgen_cpu_ms_per_1k=per_1k(resources.loadgen_cpu_s),
        machine_busy_percent=round(resources.machine_busy_percent, 1),
        machine_steal_percent=round(resources.machine_steal_percent, 2),
        event_loop=event_loop,
        statuses=dict(sorted(statuses.items())),
        timeline=per_second(samples, cpu_readings),
    )


def per_second(
    samples: Sequence[Sample], cpu_readings: Sequence[CpuReading] = ()
) -> list[dict[str, float | None]]:
    """Return the request count, the p50, p99 and max latency in ms and the CPU shares per second.

    Second k covers request starts from k to k + 1 s after the first request's start.
    """
    if not samples:
        return []
    first_start = min(sample.started_ns for sample in samples)
    seconds: dict[int, list[int]] = {}
    for sample in samples:
        if sample.status > 0:
            second = (sample.started_ns - first_start) // NS_PER_S
            seconds.setdefault(second, []).append(sample.latency_ns)
    timeline: list[dict[str, float | None]] = []
    for second, latencies in sorted(seconds.items()):
        latencies.sort()
        window_start_ns = first_start + second * NS_PER_S
        shares = cpu_shares(cpu_readings, window_start_ns, window_start_ns + NS_PER_S)
        timeline.append(
            {
                "second": second,
                "requests": len(latencies),
                "p50_ms": round(percentile(latencies, 0.50) / 1e6, 1),
                "p99_ms": round(percentile(latencies, 0.99) / 1e6, 1),
                "max_ms": round(latencies[-1] / 1e6, 1),
                **shares,
            }
        )
    return timeline


def cpu_shares(
    readings: Sequence[CpuReading], start_ns: int, end_ns: int
) -> dict[str, float | None]:
    """Return the process CPU time as % of one core and the machine's busy and steal %.

    They cover the time between the readings nearest ``start_ns`` and
    ``end_ns``, after the window is cut to the time the readings span, so the
    last second of a run counts until the last reading. ``readings`` are in
    time order. The shares are None when a reading is not near an edge or the
    readings are too close together (``MAX_EDGE_DISTANCE_NS``,
    ``MIN_READING_SPAN_NS``).
    """
    if not readings:
        return dict(UNKNOWN_CPU_SHARES)
    start_ns = max(start_ns, readings[0].time_ns)
    end_ns = min(end_ns, readings[-1].time_ns)
    first = _nearest_reading(readings, start_ns)
    last = _nearest_reading(readings, end_ns)
    near_edges = (
        abs(first.time_ns - start_ns) <= MAX_EDGE_DISTANCE_NS
        and abs(last.time_ns - end_ns) <= MAX_EDGE_DISTANCE_NS
    )
    span_ns = last.time_ns - first.time_ns
    if not near_edges or span_ns < MIN_READING_SPAN_NS:
        return dict(UNKNOWN_CPU_SHARES)

    process_cpu_s = last.process_cpu_s - first.process_cpu_s
    return {
        "server_cpu_percent": round(100 * process_cpu_s * NS_PER_S / span_ns, 1),
        "machine_busy_percent": round(last.machine.busy_percent_since(first.machine), 1),
        "machine_steal_percent": round(last.machine.steal_percent_since(first.machine), 2),
    }


def _nearest_reading(readings: Sequence[CpuReading], time_ns: int) -> CpuReading:
    index = bisect.bisect_left(readings, time_ns, key=lambda reading: reading.time_ns)
    candidates = readings[max(0, index - 1) : index + 1]
    return min(candidates, key=lambda reading: abs(reading.time_ns - time_ns))
