"""The benchmark harness in bench/: its deliveries, report, machine counters and verification.

Nothing here is timed. The full harness run at the end needs vegeta
(``bench/setup``) and is skipped where it is not installed.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from bench import producer_ceiling, report
from bench.loadgen import LoadGeneratorError, find_vegeta, parse_results
from bench.payloads import EVENT_TYPES, MAX_BODY_BYTES, MIN_BODY_BYTES, iter_deliveries
from bench.processes import MachineCpu
from bench.profile import summarize_profile
from bench.run import Workspace, parse_args, producer_command
from bench.stats import FIXED_RATE, SATURATION, Resources, Sample, percentile, summarize
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
        {"second": 0, "requests": 801, "p50_ms": 5.0, "p99_ms": 5.0, "max_ms": 5.0}
    ]
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
        "--saturation-requests", "200", "--warmup-requests", "20", "--broker-warmup", "1",
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
    assert "| steal % |" in document["table"]
    assert "all " in completed.stdout
    assert "warming up the broker for 1 s" in completed.stderr
