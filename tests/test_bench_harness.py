"""The benchmark harness in bench/: its deliveries, report, machine counters and verification.

Nothing here is timed. The full harness run at the end needs vegeta
(``bench/setup``) and is skipped where it is not installed.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from bench import producer_ceiling, report
from bench.loadgen import LoadGeneratorError, find_vegeta, parse_results
from bench.payloads import EVENT_TYPES, MAX_BODY_BYTES, MIN_BODY_BYTES, iter_deliveries
from bench.processes import CpuReading, CpuSampler, MachineCpu
from bench.profile import summarize_profile
from bench.run import Workspace, parse_args, producer_command
from bench.stats import (
    FIXED_RATE,
    SATURATION,
    UNKNOWN_CPU_SHARES,
    Resources,
    Sample,
    cpu_shares,
    per_second,
    percentile,
    summarize,
)
from bench.verify import sent_delivery, verify
from relay.envelope import parse_envelope
from relay.event_loop import event_loop_factory
from relay.routing import record_key
from relay.signature import verify_signature

REPO = Path(__file__).resolve().parent.parent
SECRET = b"bench-test-secret"


def test_deliveries_cover_every_event_type():
    deliveries = list(iter_deliveries("t1", 0, 400, seed=3, secret=SECRET))

    assert {delivery.event for delivery in deliveries} == set(EVENT_TYPES)
    assert len({delivery.event_id for delivery in deliveries}) == 400
    for delivery in deliveries:
        assert MIN_BODY_BYTES <= len(delivery.body) <= MAX_BODY_BYTES
        verify_signature(delivery.body, delivery.signature, (SECRET,))
        envelope = parse_envelope(delivery.body)
        assert envelope.id == delivery.event_id
        assert envelope.event == delivery.event
        assert record_key(envelope, ("data.leadID", "data.businessID")) is not None


def test_deliveries_span_size_range():
    sizes = [len(d.body) for d in iter_deliveries("t2", 0, 400, seed=4, secret=SECRET)]

    assert min(sizes) < 700
    assert max(sizes) > 3800


def test_vegeta_results_skip_end_marker():
    encoded = (
        b"1796414766759027010,200,3513428,2048,40,,eyJpZCI6ImV2dF8xIn0=,,1,POST,http://x/,\n"
        b"1796414766758832415,503,4122180,2048,40,503 Service Unavailable,,,0,POST,http://x/,\n"
        b"1796414766791008580,0,4328,0,0,no targets to attack,,,2,,,\n"
    )

    results = parse_results(encoded)

    assert [result.status for result in results] == [503, 200]
    assert results[1].body == b'{"id":"evt_1"}'
    assert results[1].latency_ns == 3513428
    assert results[0].error == "503 Service Unavailable"


def test_percentile_nearest_rank():
    values = list(range(1, 1001))

    assert percentile(values, 0.50) == 500
    assert percentile(values, 0.99) == 990
    assert percentile(values, 0.999) == 999
    assert percentile(values, 1.0) == 1000
    with pytest.raises(ValueError, match="empty"):
        percentile([], 0.5)


def test_machine_cpu_parses_stat_line():
    # user nice system idle iowait irq softirq steal guest guest_nice
    cpu = MachineCpu.parse("cpu  875322 7 136226 890708 6124 3 13325 7509 500 2\n")

    assert cpu.steal == 7509
    assert cpu.busy == 875322 + 7 + 136226 + 3 + 13325
    assert cpu.total == cpu.busy + 890708 + 6124 + cpu.steal


def test_machine_cpu_shares_since_reading():
    earlier = MachineCpu.parse("cpu  1000 0 500 4000 100 0 50 20 0 0")
    # 40 user, 10 system, 120 idle, 20 iowait and 10 steal ticks later: 200 in all.
    later = MachineCpu.parse("cpu  1040 0 510 4120 120 0 50 30 0 0")

    assert later.busy_percent_since(earlier) == 25.0
    assert later.steal_percent_since(earlier) == 5.0
    assert earlier.busy_percent_since(earlier) == 0.0
    assert earlier.steal_percent_since(earlier) == 0.0


def test_machine_cpu_rejects_short_line():
    with pytest.raises(ValueError, match="expected at least 8 values"):
        MachineCpu.parse("cpu  1000 0 500 4000 100 0 50")


def test_machine_cpu_reads_proc_stat():
    cpu = MachineCpu.read()

    assert 0 < cpu.busy < cpu.total
    assert 0 <= cpu.steal < cpu.total


def test_cpu_sampler_reads_own_process():
    # The interval outlasts the test: the readings are the first and the last.
    with CpuSampler([os.getpid()], interval_s=3600) as sampler:
        _wait_for(lambda: len(sampler.readings) >= 1)
        spin_until = time.process_time() + 0.3
        while time.process_time() < spin_until:
            pass

    first, last = sampler.readings
    assert first.time_ns < last.time_ns
    # One clock tick (10 ms) less than the 0.3 s spun, for the counters' resolution.
    assert last.process_cpu_s - first.process_cpu_s >= 0.29
    assert last.machine.total > first.machine.total


def test_cpu_sampler_stops_after_exit():
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                             stdin=subprocess.PIPE)  # fmt: skip
    with CpuSampler([child.pid], interval_s=0.01) as sampler:
        _wait_for(lambda: len(sampler.readings) >= 2)
        child.communicate(b"")
        count_after_exit = len(sampler.readings)
        _wait_for(lambda: not sampler._thread.is_alive())

    assert child.returncode == 0
    assert len(sampler.readings) <= count_after_exit + 1
    assert sampler.readings[-1].process_cpu_s >= sampler.readings[0].process_cpu_s


def _wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"condition not met within {timeout_s} s"
        time.sleep(0.01)


T0_NS = 1_796_414_766 * 10**9


def _reading(time_s: float, cpu_s: float) -> CpuReading:
    """Return a reading ``time_s`` after T0 with the machine 25% busy and 10% stolen since T0.

    Both cores count 200 ticks per second in all (USER_HZ 100).
    """
    ticks = 10_000 + round(time_s * 200)
    machine = MachineCpu(busy=ticks // 4, steal=ticks // 10, total=ticks)
    return CpuReading(T0_NS + round(time_s * 1e9), cpu_s, machine)


def _readings(times_s, cpu_s_at) -> list[CpuReading]:
    return [_reading(time_s, cpu_s_at(time_s)) for time_s in times_s]


def _tenths(start_s: float, end_s: float) -> list[float]:
    return [tenth / 10 for tenth in range(round(start_s * 10), round(end_s * 10) + 1)]


def _window(start_s: float, end_s: float) -> tuple[int, int]:
    return T0_NS + round(start_s * 1e9), T0_NS + round(end_s * 1e9)


def test_timeline_cpu_shares_per_second():
    # Three workers at 50% each in the first second, all busy in the second.
    def cpu_s_at(time_s: float) -> float:
        return 1.5 * time_s if time_s < 1 else 1.5 + 3.0 * (time_s - 1)

    readings = _readings(_tenths(-0.3, 2.4), cpu_s_at)
    samples = [Sample(T0_NS + offset_ns, 2_000_000, 200)
               for offset_ns in (0, 400_000_000, 1_500_000_000)]  # fmt: skip

    timeline = per_second(samples, readings)

    assert [entry["second"] for entry in timeline] == [0, 1]
    assert [entry["requests"] for entry in timeline] == [2, 1]
    assert timeline[0]["server_cpu_percent"] == 150.0
    assert timeline[1]["server_cpu_percent"] == 300.0
    assert timeline[0]["machine_busy_percent"] == 25.0
    assert timeline[1]["machine_steal_percent"] == 10.0


def test_cpu_shares_take_nearest_readings():
    # The readings nearest the edges of [1 s, 2 s) are at 1.05 s and 1.95 s:
    # 0.45 CPU seconds in 0.9 s. The others would give 0.3 / 1.1 s or 3 / 1.3 s.
    readings = [
        _reading(0.9, 9.7),
        _reading(1.05, 10.0),
        _reading(1.5, 10.2),
        _reading(1.95, 10.45),
        _reading(2.2, 13.0),
    ]

    shares = cpu_shares(readings, *_window(1.0, 2.0))

    assert shares["server_cpu_percent"] == 50.0
    assert shares["machine_busy_percent"] == 25.0
    assert shares["machine_steal_percent"] == 10.0


def test_cpu_shares_unknown_without_readings():
    # Readings every 0.1 s until 1.0 s, then none until 2.4 s.
    readings = _readings(_tenths(0.0, 1.0) + _tenths(2.4, 3.8), lambda time_s: 0.5 * time_s)

    assert cpu_shares(readings, *_window(0.0, 1.0))["server_cpu_percent"] == 50.0
    assert cpu_shares(readings, *_window(1.0, 2.0)) == UNKNOWN_CPU_SHARES
    assert cpu_shares(readings, *_window(2.0, 3.0)) == UNKNOWN_CPU_SHARES
    assert cpu_shares(readings, *_window(3.0, 4.0))["server_cpu_percent"] == 50.0
    assert cpu_shares([], *_window(0.0, 1.0)) == UNKNOWN_CPU_SHARES


def test_cpu_shares_cut_to_readings():
    def cpu_s_at(time_s: float) -> float:
        return 0.8 * time_s

    # The last second counts until the last reading, if that is 0.5 s or more.
    ending_at_3_7 = _readings(_tenths(0.0, 3.7), cpu_s_at)
    ending_at_3_3 = _readings(_tenths(0.0, 3.3), cpu_s_at)
    # The first second counts from the first reading, on the same condition.
    starting_at_0_3 = _readings(_tenths(0.3, 2.0), cpu_s_at)
    starting_at_0_6 = _readings(_tenths(0.6, 2.0), cpu_s_at)

    assert cpu_shares(ending_at_3_7, *_window(3.0, 4.0))["server_cpu_percent"] == 80.0
    assert cpu_shares(ending_at_3_3, *_window(3.0, 4.0)) == UNKNOWN_CPU_SHARES
    assert cpu_shares(ending_at_3_3, *_window(4.0, 5.0)) == UNKNOWN_CPU_SHARES
    assert cpu_shares(starting_at_0_3, *_window(0.0, 1.0))["server_cpu_percent"] == 80.0
    assert cpu_shares(starting_at_0_6, *_window(0.0, 1.0)) == UNKNOWN_CPU_SHARES
    assert cpu_shares(starting_at_0_6, *_window(-1.0, 0.0)) == UNKNOWN_CPU_SHARES


def _run(target: str, mode: str, throughput: int, rss_mb: int, latency_ms: int = 5):
    samples = [
        Sample(started_ns=index * 10**9 // throughput, latency_ns=latency_ms * 10**6, status=200)
        for index in range(throughput)
    ]
    samples.append(Sample(started_ns=0, latency_ns=latency_ms * 10**6, status=503))
    resources = Resources(
        cpu_s=0.5,
        peak_rss_bytes=rss_mb * 2**20,
        machine_busy_percent=50.0,
        machine_steal_percent=1.254,
    )
    rate = None if mode == SATURATION else throughput
    return summarize(
        target, mode, samples, resources, event_loop="uvloop", rate_per_s=rate, concurrency=8
    )


def test_report_has_every_field():
    runs = [
        _run(report.RELAY, SATURATION, 800, 60),
        _run(report.RELAY, FIXED_RATE, 400, 61, latency_ms=25),
        _run(report.NOOP, SATURATION, 1000, 40),
        _run(report.NOOP, FIXED_RATE, 400, 40),
        _run(report.PRODUCER, SATURATION, 2000, 45),
        _run(report.PRODUCER, FIXED_RATE, 400, 45),
    ]

    relay = runs[0].to_json()
    for field in ("throughput_per_s", "p50_ms", "p99_ms", "p999_ms", "cpu_ms_per_1k",
                  "peak_rss_mb", "machine_busy_percent", "statuses"):  # fmt: skip
        assert relay[field] is not None, field
    assert relay["machine_steal_percent"] == 1.25
    assert relay["event_loop"] == "uvloop"
    assert relay["ok"] == 800
    assert relay["failed"] == 1
    assert relay["statuses"] == {"200": 800, "503": 1}
    assert relay["timeline"] == [
        {"second": 0, "requests": 801, "p50_ms": 5.0, "p99_ms": 5.0, "max_ms": 5.0,
         "server_cpu_percent": None, "machine_busy_percent": None,
         "machine_steal_percent": None}
    ]  # fmt: skip
    assert report.ratios(runs) == {
        "relay_to_noop_throughput": 0.8,
        "relay_to_producer_throughput": 0.4,
        "noop_to_relay_cpu_per_delivery": 0.8,
    }
    targets = report.targets(runs)
    assert targets["relay_to_noop_throughput"]["met"] is True
    assert targets["relay_p99_ms_at_half_max_rate"] == {"goal": "< 20.0", "value": 25.0,
                                                        "met": False}  # fmt: skip
    assert targets["relay_peak_rss_mb"]["value"] == 61.0
    table = report.markdown(runs)
    assert table.count("\n| ") == 6
    assert "p99.9 ms" in table
    assert "(MISSED)" in table
    header, _, first_row = table.splitlines()[:3]
    assert "| machine busy % | steal % |" in header
    assert first_row.endswith("| 50 | 1.25 |")


def test_broker_warmup_command_runs_producer(tmp_path):
    workspace = _workspace(tmp_path, [])
    assert workspace.settings.broker_warmup_s == 20.0

    command = producer_command(workspace, 0, tmp_path / "warmup.json", duration_s=20.0)

    args = producer_ceiling.parse_args(command[1:])
    assert args.rate == 0
    assert args.duration == 20.0
    assert (
        producer_ceiling.parse_args(
            producer_command(workspace, 0, tmp_path / "p.json")[1:]
        ).duration
        == workspace.settings.duration_s
    )


def _workspace(tmp_path: Path, argv: list[str]) -> Workspace:
    workspace = Workspace(tmp_path, "t1", "127.0.0.1:9092", parse_args(argv), "uvloop", port=8080)
    workspace.targets["saturation"] = tmp_path / "saturation.jsonl"
    return workspace


@pytest.mark.parametrize(("argv", "loop"), [([], "auto"), (["--loop", "asyncio"], "asyncio")])
def test_producer_command_passes_loop(tmp_path, argv, loop):
    workspace = _workspace(tmp_path, argv)

    command = producer_command(workspace, 500, tmp_path / "producer.json")

    assert command[0] == "bench.producer_ceiling"
    args = producer_ceiling.parse_args(command[1:])
    assert args.loop == loop
    assert args.rate == 500
    assert args.targets == tmp_path / "saturation.jsonl"


def test_producer_ceiling_rejects_unknown_loop(capsys):
    argv = ["--config", "c.yaml", "--targets", "t.jsonl", "--topic-prefix", "p.",
            "--duration", "1", "--output", "o.json", "--loop", "trio"]  # fmt: skip

    with pytest.raises(SystemExit):
        producer_ceiling.parse_args(argv)

    assert "invalid choice: 'trio'" in capsys.readouterr().err


async def _running_loop_name() -> str:
    return producer_ceiling.running_loop_name()


@pytest.mark.parametrize("choice", ["asyncio", "uvloop"])
def test_loop_name_follows_choice(choice):
    with asyncio.Runner(loop_factory=event_loop_factory(choice)) as runner:
        assert runner.run(_running_loop_name()) == choice
    assert report.event_loop_name(choice) == choice


def test_profile_summary_counts_frames():
    raw = [
        "BaseEventLoop._run_once (asyncio/base_events.py:1922);handle (relay/handler.py:56);"
        "send (aiokafka/producer/producer.py:480) 3",
        "BaseEventLoop._run_once (asyncio/base_events.py:1922);"
        "write (asyncio/selector_events.py:1070) 1",
        "not a stack line",
    ]

    summary = summarize_profile(raw)

    assert summary["samples"] == 4
    assert summary["top_own"][0] == {
        "function": "aiokafka/producer/producer.py:send",
        "samples": 3,
        "percent": 75.0,
    }
    packages = {entry["function"]: entry["samples"] for entry in summary["own_by_package"]}
    assert packages == {"aiokafka": 3, "asyncio": 1}
    totals = {entry["function"]: entry["samples"] for entry in summary["top_total"]}
    assert totals["relay/handler.py:handle"] == 3
    assert "asyncio/base_events.py:BaseEventLoop._run_once" not in totals


async def _publish(bootstrap: str, topic: str, records: dict[str, bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for event_id, body in records.items():
            await producer.send_and_wait(topic, body, headers=[("ce_id", event_id.encode())])
    finally:
        await producer.stop()


async def test_verification_catches_missing_record(kafka_bootstrap, topic_prefix):
    topic = f"{topic_prefix}lead.created"
    bodies = {f"evt_{uuid.uuid4().hex}": f'{{"n":{n}}}'.encode() for n in range(4)}
    first, second, third, fourth = bodies
    await _publish(kafka_bootstrap, topic, {first: bodies[first], second: bodies[second]})
    await _publish(kafka_bootstrap, topic, {fourth: b"a different value"})
    sent = {event_id: sent_delivery(topic, body) for event_id, body in bodies.items()}

    def response(event_id: str) -> bytes:
        return orjson.dumps({"status": "published", "id": event_id})

    complete = await verify(
        kafka_bootstrap, sent, [response(first), response(second)], timeout_s=30
    )
    broken = await verify(
        kafka_bootstrap,
        sent,
        [
            response(first),
            response(second),
            response(third),
            response(fourth),
            response("evt_never_sent"),
        ],
        timeout_s=30,
    )

    assert complete.passed
    assert complete.found == 2
    assert not broken.passed
    assert broken.missing == [third]
    assert broken.wrong_value == [fourth]
    assert broken.unknown_ids == ["evt_never_sent"]
    assert f"1 missing (first: {third})" in broken.describe()


def _vegeta_installed() -> bool:
    try:
        find_vegeta()
    except LoadGeneratorError:
        return False
    return True


@pytest.mark.skipif(not _vegeta_installed(), reason="vegeta is not installed (bench/setup)")
def test_harness_short_run_reports_all(kafka_bootstrap, tmp_path):
    output = tmp_path / "results.json"
    command = [
        sys.executable, "-m", "bench.run", "--bootstrap", kafka_bootstrap,
        "--duration", "1", "--rate", "50", "--concurrency", "4",
        "--saturation-requests", "20000", "--warmup-requests", "20", "--broker-warmup", "1",
        "--output", str(output),
    ]  # fmt: skip

    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=100)

    assert completed.returncode == 0, completed.stderr[-3000:]
    document = orjson.loads(output.read_bytes())
    assert document["verification"]["passed"] is True
    runs = Counter((run["target"], run["mode"]) for run in document["runs"])
    assert runs == {
        (target, mode): 1
        for target in (report.RELAY, report.NOOP, report.PRODUCER)
        for mode in (SATURATION, FIXED_RATE)
    }
    for key in ("date", "machine", "versions", "settings", "ratios", "targets", "table"):
        assert document[key], key
    assert all(run["ok"] > 0 for run in document["runs"])
    # With the default --loop auto, the servers and the producer run on the same loop.
    loop = report.event_loop_name("auto")
    assert [run["event_loop"] for run in document["runs"]] == [loop] * 6
    assert document["versions"]["uvloop"] is not None
    for run in document["runs"]:
        assert 0 <= run["machine_steal_percent"] <= 100
        _check_timeline_cpu(run, workers=document["settings"]["workers"])
    assert "| steal % |" in document["table"]
    assert "server_cpu_percent" not in document["table"]
    assert "all " in completed.stdout
    assert "warming up the broker for 1 s" in completed.stderr


def _check_timeline_cpu(run: dict, workers: int) -> None:
    """Check the per-second CPU shares of one run's timeline in the JSON results."""
    # A fully busy process can read a few points above 100%: its CPU time counts
    # in 10 ms clock ticks, and the sampler thread may be preempted while reading.
    max_cpu_percent = 100 * workers + 5
    name = f"{run['target']}, {run['mode']}"
    for entry in run["timeline"]:
        for key in UNKNOWN_CPU_SHARES:
            assert key in entry, (name, key)
    measured = [entry for entry in run["timeline"] if entry["server_cpu_percent"] is not None]
    assert measured, name
    for entry in measured:
        assert 0 <= entry["server_cpu_percent"] <= max_cpu_percent, (name, entry)
        assert 0 <= entry["machine_busy_percent"] <= 100, (name, entry)
        assert 0 <= entry["machine_steal_percent"] <= 100, (name, entry)
    if run["mode"] == SATURATION:
        assert max(entry["server_cpu_percent"] for entry in measured) > 0, name
