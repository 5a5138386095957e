"""Summaries of one measured run: throughput, latency percentiles, CPU and memory."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

SATURATION = "saturation"
FIXED_RATE = "fixed rate"


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
    # p99 comes from one stall or from every second.
    timeline: list[dict[str, float]] = field(default_factory=list)

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
) -> RunStats:
    """Summarize ``samples``; latencies cover every request that got a response (status > 0)."""
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
        timeline=per_second(samples),
    )


def per_second(samples: Sequence[Sample]) -> list[dict[str, float]]:
    """Return the request count and the p50, p99 and max latency in ms of each second."""
    if not samples:
        return []
    first_start = min(sample.started_ns for sample in samples)
    seconds: dict[int, list[int]] = {}
    for sample in samples:
        if sample.status > 0:
            second = (sample.started_ns - first_start) // 1_000_000_000
            seconds.setdefault(second, []).append(sample.latency_ns)
    timeline = []
    for second, latencies in sorted(seconds.items()):
        latencies.sort()
        timeline.append(
            {
                "second": second,
                "requests": len(latencies),
                "p50_ms": round(percentile(latencies, 0.50) / 1e6, 1),
                "p99_ms": round(percentile(latencies, 0.99) / 1e6, 1),
                "max_ms": round(latencies[-1] / 1e6, 1),
            }
        )
    return timeline
