"""Run the relay benchmark and its two ceilings on this machine.

``python3 -m bench.run`` (from the repository root) starts a Kafka broker
from the tests' fixture code, creates the topics, then measures in turn:

1. ``relay serve`` as a process, driven by vegeta at saturation and then at
   a fixed rate (by default half the relay's saturation throughput);
2. the aiohttp no-op server with the same requests at the same rates;
3. the raw aiokafka producer with the relay's settings and event loop, at
   saturation with the same concurrency and at the same fixed rate.

It then reads the relay's topics and checks that every delivery that got a
2xx response is there, prints a Markdown table and writes the results as JSON. The
exit status is 0 on success, 1 when verification fails, 2 when the
benchmark could not run (vegeta missing, a process failed to start).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from bench import report
from bench.loadgen import Attack, LoadGeneratorError, RequestResult, Vegeta, find_vegeta
from bench.payloads import EVENT_TYPES, iter_deliveries, vegeta_target
from bench.processes import (
    CpuReading,
    CpuSampler,
    MachineCpu,
    ServerProcess,
    peak_rss_bytes,
    process_cpu_s,
    process_tree,
)
from bench.profile import Profiler, summarize_profile
from bench.stats import FIXED_RATE, SATURATION, Resources, RunStats, Sample, summarize
from bench.verify import SentDelivery, Verification, sent_delivery, verify
from tests.kafka_broker import KafkaBroker, free_port

log = logging.getLogger("bench")

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
WEBHOOK_PATH = "/webhooks/tasknation"
TOPIC_PREFIX = "tasknation."
CEILING_TOPIC_PREFIX = "bench.ceiling."
BENCH_SECRET = "bench-webhook-secret"
# Pause before each measured run, so that the broker and the server under test
# finish the work of the previous run (flushes, acknowledgements) first.
SETTLE_S = 2.0


@dataclass(frozen=True)
class Settings:
    """The command-line options; see ``parse_args`` for their meaning."""

    duration_s: float
    rate_per_s: int
    concurrency: int
    partitions: int
    linger_ms: int | None
    workers: int
    loop: str
    saturation_requests: int
    warmup_requests: int
    broker_warmup_s: float
    seed: int
    profile_s: int
    bootstrap: str | None
    output: Path
    keep_workdir: bool


@dataclass
class Workspace:
    """One benchmark run's files and server port, what it sent and the relay's 2xx responses."""

    root: Path
    run_id: str
    bootstrap: str
    settings: Settings
    # The event loop that settings.loop selects for the servers: "uvloop" or "asyncio".
    event_loop: str
    port: int = field(default_factory=free_port)
    fixed_rate_per_s: int = 0
    next_index: int = 0
    targets: dict[str, Path] = field(default_factory=dict)
    sent: dict[str, SentDelivery] = field(default_factory=dict)
    relay_responses: list[bytes] = field(default_factory=list)

    @property
    def url(self) -> str:
        # The relay and then the no-op server listen on this port, so both get the same targets.
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def make_targets(self, name: str, count: int) -> Path:
        """Write ``count`` new, unique deliveries as vegeta targets and remember each one."""
        path = self.root / f"{name}.jsonl"
        deliveries = iter_deliveries(
            self.run_id, self.next_index, count, self.settings.seed, BENCH_SECRET.encode()
        )
        with open(path, "wb") as targets:
            for delivery in deliveries:
                targets.write(vegeta_target(delivery, self.url))
                self.sent[delivery.event_id] = sent_delivery(
                    TOPIC_PREFIX + delivery.event, delivery.body
                )
        self.next_index += count
        self.targets[name] = path
        return path

    def saturation(self, name: str, duration_s: float | None = None) -> Attack:
        duration = duration_s or self.settings.duration_s
        return Attack(self.targets[name], duration, 0, self.settings.concurrency)


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(
        prog="python3 -m bench.run", description=__doc__.split("\n\n")[0]
    )
    add = parser.add_argument
    add(
        "--duration",
        type=float,
        default=15.0,
        metavar="SECONDS",
        help="seconds per measured run (default: 15)",
    )
    add(
        "--rate",
        type=int,
        metavar="PER_S",
        default=0,
        help="requests per second of the fixed-rate runs (default: half the relay's saturation "
        "throughput)",
    )
    add(
        "--concurrency",
        type=int,
        metavar="N",
        default=64,
        help="concurrent requests at saturation, for vegeta and the producer (default: 64)",
    )
    add("--partitions", type=int, default=3, metavar="N", help="partitions per topic (default: 3)")
    add(
        "--linger-ms",
        type=int,
        metavar="MS",
        help="kafka.linger_ms of the relay (default: the relay's)",
    )
    add(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="processes of the relay and of the no-op server (relay serve --workers; default: 1)",
    )
    add(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default="auto",
        help="event loop of the relay, the no-op server and the producer ceiling (relay serve "
        "--loop; default: auto)",
    )
    add(
        "--saturation-requests",
        type=int,
        metavar="N",
        default=100_000,
        help="deliveries generated for the saturation runs; a run ends when they run out or "
        "after --duration (default: 100000)",
    )
    add(
        "--warmup-requests",
        type=int,
        metavar="N",
        default=1000,
        help="deliveries sent before each server's measured runs (default: 1000)",
    )
    add(
        "--broker-warmup",
        type=float,
        metavar="SECONDS",
        default=20.0,
        help="seconds of raw producer load on the broker before the first measured run, so "
        "that the broker's JVM has compiled its produce path; 0 skips it (default: 20)",
    )
    add("--seed", type=int, default=1, help="seed of the generated bodies (default: 1)")
    add(
        "--profile",
        type=int,
        default=0,
        metavar="SECONDS",
        help="after the measured runs, profile the relay with py-spy at saturation for this "
        "many seconds (default: 0, no profile)",
    )
    add(
        "--bootstrap",
        metavar="HOST:PORT",
        help="use this running Kafka broker instead of starting one",
    )
    add(
        "--output",
        type=Path,
        metavar="FILE",
        help=f"JSON results file (default: {RESULTS_DIR}/<time>.json)",
    )
    add("--keep-workdir", action="store_true", help="keep the temporary files and logs")
    args = parser.parse_args(argv)  # fmt: skip

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Settings(
        duration_s=args.duration,
        rate_per_s=args.rate,
        concurrency=args.concurrency,
        partitions=args.partitions,
        linger_ms=args.linger_ms,
        workers=args.workers,
        loop=args.loop,
        saturation_requests=args.saturation_requests,
        warmup_requests=args.warmup_requests,
        broker_warmup_s=args.broker_warmup,
        seed=args.seed,
        profile_s=args.profile,
        bootstrap=args.bootstrap,
        output=args.output or RESULTS_DIR / f"{stamp}.json",
        keep_workdir=args.keep_workdir,
    )


@contextmanager
def kafka(settings: Settings, root: Path) -> Iterator[str]:
    """Yield the bootstrap address of the given broker, or of one started for this run."""
    if settings.bootstrap:
        yield settings.bootstrap
        return
    with KafkaBroker(root / "kafka", heap="1g") as broker:
        yield broker.bootstrap


async def create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    """Create the topics that do not exist yet, with ``partitions`` partitions each."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(name, num_partitions=partitions, replication_factor=1)
            for name in names
            if name not in existing
        ]
        if new:
            await admin.create_topics(new)
    finally:
        await admin.close()


def write_relay_config(workspace: Workspace) -> Path:
    """Write the relay's YAML configuration; unset options keep the relay's defaults."""
    kafka_section: dict[str, Any] = {"bootstrap_servers": workspace.bootstrap}
    if workspace.settings.linger_ms is not None:
        kafka_section["linger_ms"] = workspace.settings.linger_ms
    document = {
        "server": {"host": "127.0.0.1", "port": workspace.port},
        "kafka": kafka_section,
        "routing": {"topic_prefix": TOPIC_PREFIX},
        "sources": [
            {
                "name": "tasknation",
                "path": WEBHOOK_PATH,
                "secrets": ["${TASKNATION_WEBHOOK_SECRET}"],
            }
        ],
        "log_level": "INFO",
    }
    path = workspace.root / "relay.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def python_module_command(module_args: list[str]) -> tuple[list[str], dict[str, str]]:
    """Return the command and environment that run a module from this repository's code."""
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": python_path, "TASKNATION_WEBHOOK_SECRET": BENCH_SECRET}
    return [sys.executable, "-m", *module_args], env


def relay_command(config: Path, settings: Settings) -> list[str]:
    """Return the module arguments of ``relay serve`` with the run's workers and event loop."""
    return ["relay", "serve", "--config", str(config), "--workers", str(settings.workers),
            "--loop", settings.loop]  # fmt: skip


def producer_command(
    workspace: Workspace, rate: int, output: Path, duration_s: float | None = None
) -> list[str]:
    """Return the module arguments of the producer ceiling at ``rate`` sends/s, 0 for saturation.

    It runs for ``duration_s``, by default the measured runs' ``--duration``.
    """
    settings = workspace.settings
    duration_s = settings.duration_s if duration_s is None else duration_s
    return ["bench.producer_ceiling", "--config", str(workspace.root / "relay.yaml"),
            "--targets", str(workspace.targets["saturation"]),
            "--topic-prefix", CEILING_TOPIC_PREFIX, "--duration", str(duration_s),
            "--rate", str(rate), "--concurrency", str(settings.concurrency),
            "--loop", settings.loop, "--output", str(output)]  # fmt: skip


def server_process(name: str, module_args: list[str], workspace: Workspace) -> ServerProcess:
    command, env = python_module_command(module_args)
    return ServerProcess(
        name,
        command,
        ready_url=f"http://127.0.0.1:{workspace.port}/readyz",
        log_path=workspace.root / f"{name}.log",
        env=env,
        cwd=REPO,
    )


def measure(
    vegeta: Vegeta, server: ServerProcess, attack: Attack, target: str, workspace: Workspace
) -> tuple[RunStats, list[RequestResult]]:
    """Run one attack against ``server`` and summarize it with the server's CPU and memory."""
    time.sleep(SETTLE_S)
    results_file, resources, cpu_readings = attack_sampled(
        vegeta, attack, server.pid, workspace.root
    )

    results = vegeta.decode(results_file)
    samples = [Sample(r.started_ns, r.latency_ns, r.status) for r in results]
    mode = FIXED_RATE if attack.rate_per_s else SATURATION
    stats = summarize(
        target,
        mode,
        samples,
        resources,
        event_loop=workspace.event_loop,
        rate_per_s=attack.rate_per_s or None,
        concurrency=attack.workers if mode == SATURATION else None,
        cpu_readings=cpu_readings,
    )
    log.info("%s, %s: %.0f/s, p99 %s ms", target, mode, stats.throughput_per_s, stats.p99_ms)
    return stats, results


def attack_sampled(
    vegeta: Vegeta, attack: Attack, server_pid: int, workdir: Path
) -> tuple[Path, Resources, list[CpuReading]]:
    """Run one attack; return vegeta's results file, the server's resource use and CPU readings.

    The CPU time and the readings cover ``server_pid`` and its descendants.
    """
    machine_before = MachineCpu.read()
    pids = process_tree(server_pid)
    cpu_before = sum(process_cpu_s(pid) for pid in pids)
    with CpuSampler(pids) as sampler:
        results_file, loadgen_cpu_s = vegeta.attack(attack, workdir)
    cpu_s = sum(process_cpu_s(pid) for pid in pids) - cpu_before
    machine_after = MachineCpu.read()
    # With several workers, the peak of the largest process: the target is per process.
    peak_rss = max(peak_rss_bytes(pid) for pid in pids)
    resources = Resources(
        cpu_s,
        peak_rss,
        machine_after.busy_percent_since(machine_before),
        machine_after.steal_percent_since(machine_before),
        loadgen_cpu_s,
    )
    return results_file, resources, sampler.readings


def bodies_of_2xx(results: list[RequestResult]) -> list[bytes]:
    return [result.body for result in results if 200 <= result.status < 300]


def bench_relay(workspace: Workspace, vegeta: Vegeta) -> list[RunStats]:
    """Measure the relay at saturation, then at the fixed rate."""
    settings = workspace.settings
    config = write_relay_config(workspace)
    workspace.make_targets("warmup", settings.warmup_requests)
    workspace.make_targets("saturation", settings.saturation_requests)
    warm_up_broker(workspace)

    runs: list[RunStats] = []
    relay_args = relay_command(config, settings)
    with server_process("relay", relay_args, workspace) as relay:
        warmup = workspace.saturation("warmup", duration_s=120)
        workspace.relay_responses += bodies_of_2xx(vegeta.run(warmup, workspace.root))

        attack = workspace.saturation("saturation")
        stats, results = measure(vegeta, relay, attack, report.RELAY, workspace)
        runs.append(stats)
        workspace.relay_responses += bodies_of_2xx(results)

        rate = settings.rate_per_s or max(1, int(stats.throughput_per_s / 2))
        workspace.fixed_rate_per_s = rate
        workspace.make_targets("fixed", int(rate * settings.duration_s))
        attack = Attack(workspace.targets["fixed"], settings.duration_s, rate)
        stats, results = measure(vegeta, relay, attack, report.RELAY, workspace)
        runs.append(stats)
        workspace.relay_responses += bodies_of_2xx(results)
    return runs


def profile_relay(workspace: Workspace, vegeta: Vegeta, max_rate: float) -> dict[str, Any]:
    """Sample a fresh relay with py-spy during a saturation run and summarize the samples."""
    settings = workspace.settings
    count = int(max_rate * settings.profile_s * 1.5)
    workspace.make_targets("profile", settings.warmup_requests + count)
    output = workspace.root / "profile.txt"
    relay_args = relay_command(workspace.root / "relay.yaml", settings)
    with server_process("relay-profiled", relay_args, workspace) as relay:
        profiler = Profiler(relay.pid, settings.profile_s, output, settings.workers > 1)
        profiler.start()
        attack = workspace.saturation("profile", duration_s=settings.profile_s)
        workspace.relay_responses += bodies_of_2xx(vegeta.run(attack, workspace.root))
        profiler.wait(timeout_s=settings.profile_s + 60)

    summary = summarize_profile(output.read_text().splitlines())
    kept = settings.output.with_suffix(".profile.txt")
    shutil.copyfile(output, kept)
    summary["raw_stacks"] = str(kept)
    return summary


def bench_noop(workspace: Workspace, vegeta: Vegeta) -> list[RunStats]:
    """Measure the no-op aiohttp server with the relay's requests at the same rates."""
    settings = workspace.settings
    args = ["bench.noop_server", "--port", str(workspace.port), "--path", WEBHOOK_PATH]
    args += ["--workers", str(settings.workers), "--loop", settings.loop]
    runs = []
    with server_process("noop", args, workspace) as noop:
        vegeta.run(workspace.saturation("warmup", duration_s=120), workspace.root)
        attack = workspace.saturation("saturation")
        runs.append(measure(vegeta, noop, attack, report.NOOP, workspace)[0])
        attack = Attack(workspace.targets["fixed"], settings.duration_s, workspace.fixed_rate_per_s)
        runs.append(measure(vegeta, noop, attack, report.NOOP, workspace)[0])
    return runs


def bench_producer(workspace: Workspace) -> list[RunStats]:
    """Measure the raw producer at saturation and at the fixed rate, each in its own process."""
    settings = workspace.settings
    runs = []
    for mode, rate in ((SATURATION, 0), (FIXED_RATE, workspace.fixed_rate_per_s)):
        output = workspace.root / f"producer-{rate or 'max'}.json"
        command, env = python_module_command(producer_command(workspace, rate, output))
        time.sleep(SETTLE_S)
        machine_before = MachineCpu.read()
        cpu_readings = run_sampled(command, env)
        machine_after = MachineCpu.read()

        result = orjson.loads(output.read_bytes())
        samples = [Sample(*sample) for sample in result["samples"]]
        resources = Resources(
            result["cpu_s"],
            result["peak_rss_bytes"],
            machine_after.busy_percent_since(machine_before),
            machine_after.steal_percent_since(machine_before),
        )
        stats = summarize(
            report.PRODUCER,
            mode,
            samples,
            resources,
            event_loop=result["event_loop"],
            rate_per_s=rate or None,
            concurrency=settings.concurrency if mode == SATURATION else None,
            cpu_readings=cpu_readings,
        )
        log.info("%s, %s: %.0f/s, p99 %s ms", report.PRODUCER, mode, stats.throughput_per_s,
                 stats.p99_ms)  # fmt: skip
        runs.append(stats)
    return runs


def run_sampled(command: list[str], env: dict[str, str]) -> list[CpuReading]:
    """Run ``command`` from the repository root and return the CPU readings of its process.

    Raise ``CalledProcessError`` when it exits with a status other than 0.
    """
    process = subprocess.Popen(command, env=env, cwd=REPO)
    try:
        with CpuSampler([process.pid]) as sampler:
            # Wait for the exit without reaping the process, so that the
            # sampler's last reading still finds its CPU time.
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
    except BaseException:
        process.kill()
        process.wait()
        raise
    returncode = process.wait()
    if returncode != 0:
        raise subprocess.CalledProcessError(returncode, command)
    return sampler.readings


def warm_up_broker(workspace: Workspace) -> None:
    """Load the fresh broker with the raw producer for ``--broker-warmup`` seconds.

    The relay is measured first. Without this, the broker's JVM would still be
    compiling its produce path during the relay's runs, on the same cores, and
    the relay would be measured against a slower broker than the producer
    ceiling, which runs last. The records go to the ceiling's topics.
    """
    duration_s = workspace.settings.broker_warmup_s
    if duration_s <= 0:
        return
    log.info("warming up the broker for %.0f s", duration_s)
    output = workspace.root / "broker-warmup.json"
    command, env = python_module_command(producer_command(workspace, 0, output, duration_s))
    subprocess.run(command, env=env, cwd=REPO, check=True)


def run_benchmark(
    settings: Settings, vegeta: Vegeta, event_loop: str, root: Path
) -> tuple[dict[str, Any], Verification]:
    """Run every measurement and the verification; return the results document."""
    machine = report.machine_info()
    with kafka(settings, root) as bootstrap:
        relay_topics = [TOPIC_PREFIX + event for event in EVENT_TYPES]
        relay_topics += [TOPIC_PREFIX + "unrouted", TOPIC_PREFIX + "deadletter"]
        ceiling_topics = [CEILING_TOPIC_PREFIX + event for event in EVENT_TYPES]
        asyncio.run(create_topics(bootstrap, relay_topics + ceiling_topics, settings.partitions))

        workspace = Workspace(root, secrets.token_hex(4), bootstrap, settings, event_loop)
        runs = bench_relay(workspace, vegeta)
        runs += bench_noop(workspace, vegeta)
        runs += bench_producer(workspace)
        profile = None
        if settings.profile_s:
            profile = profile_relay(workspace, vegeta, runs[0].throughput_per_s)
        log.info("verifying %d 2xx responses against the topics", len(workspace.relay_responses))
        verification = asyncio.run(verify(bootstrap, workspace.sent, workspace.relay_responses))

    document = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python3 -m bench.run", *sys.argv[1:]]),
        "machine": machine,
        "versions": report.versions(),
        "settings": {
            **{
                key: str(value) if isinstance(value, Path) else value
                for key, value in asdict(settings).items()
            },
            "fixed_rate_per_s": workspace.fixed_rate_per_s,
            "relay_config": (root / "relay.yaml").read_text(),
        },
        "runs": [run.to_json() for run in runs],
        "ratios": report.ratios(runs),
        "targets": report.targets(runs),
        "verification": verification.to_json(),
        "profile": profile,
        "table": report.markdown(runs),
    }
    return document, verification


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    settings = parse_args(argv)
    try:
        vegeta = Vegeta(find_vegeta())
    except LoadGeneratorError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    try:
        event_loop = report.event_loop_name(settings.loop)
    except ImportError as exc:
        print(f"bench: --loop {settings.loop} failed: {exc}. Install uvloop or use --loop auto.",
              file=sys.stderr)  # fmt: skip
        return 2

    root = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    settings.output.parent.mkdir(parents=True, exist_ok=True)
    try:
        document, verification = run_benchmark(settings, vegeta, event_loop, root)
    except (RuntimeError, OSError, subprocess.CalledProcessError, KafkaError) as exc:
        # The logs of the broker and the servers stay in the work folder for diagnosis.
        log.error("the benchmark failed: %s; logs are in %s", exc, root)
        return 2
    if settings.keep_workdir:
        log.info("kept the work folder %s", root)
    else:
        shutil.rmtree(root, ignore_errors=True)

    settings.output.write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(document["table"])
    print(f"\nverification: {verification.describe()}")
    print(f"results: {settings.output}")
    return 0 if verification.passed else 1


if __name__ == "__main__":
    sys.exit(main())
