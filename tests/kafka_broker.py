"""A single-node KRaft Apache Kafka broker started from the official jars.

Maven resolves the jars named in ``tests/kafka/pom.xml`` from Maven Central
into a cache once (``$RELAY_KAFKA_CACHE``, default
``~/.cache/tasknation-relay``); the broker then runs as a Java 17 process on
free loopback ports. The tests, the benchmark and the local run without
Docker all use this module.

With a ``BrokerSecurity`` the broker also opens an SSL listener that requires
a client certificate and a SASL_SSL listener with SCRAM-SHA-256,
SCRAM-SHA-512 and PLAIN users, next to its PLAINTEXT one.

Run ``python -m tests.kafka_broker --port 9092`` to keep a broker in the
foreground until Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

KAFKA_VERSION = "4.1.1"
_HERE = Path(__file__).resolve().parent / "kafka"
_POM = _HERE / "pom.xml"
_LOG4J_CONFIG = _HERE / "log4j2.properties"
_STARTED_MARKER = "Kafka Server started"
# Logged when a listener's port is taken: "Socket server failed to bind to HOST:PORT: ...".
_BIND_FAILED_MARKER = "Socket server failed to bind to"
_BIND_ATTEMPTS = 3
_SCRAM_LOGIN = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
_PLAIN_LOGIN = "org.apache.kafka.common.security.plain.PlainLoginModule required"


def cache_dir() -> Path:
    root = os.environ.get("RELAY_KAFKA_CACHE") or Path.home() / ".cache" / "tasknation-relay"
    return Path(root) / f"kafka-{KAFKA_VERSION}"


def ensure_kafka_jars() -> Path:
    """Return the folder of the broker's jars, resolving them with Maven on first use."""
    target = cache_dir()
    libs = target / "libs"
    complete = target / "complete"
    if complete.exists():
        return libs

    target.mkdir(parents=True, exist_ok=True)
    with open(target / "lock", "w") as lock:
        # Several pytest or benchmark processes may start at once; one resolves.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete.exists():
            return libs
        if shutil.which("mvn") is None:
            raise RuntimeError("Maven (mvn) is not installed; it is needed to fetch the Kafka jars")
        shutil.rmtree(libs, ignore_errors=True)
        subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(_POM),
                f"-Dkafka.version={KAFKA_VERSION}",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={libs}",
            ],
            check=True,
        )
        complete.write_text(KAFKA_VERSION)
    return libs


def _all_threads_stopped(pid: int) -> bool:
    """Return True when every thread of process ``pid`` is in the stopped state (Linux /proc)."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except FileNotFoundError:
            continue  # The thread exited after the listing.
        # The state follows the command name, which is in parentheses and may contain spaces.
        state = stat.rpartition(")")[2].split()[0]
        if state not in ("T", "t"):
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class BrokerSecurity:
    """The PEM files and users of a broker's SSL and SASL_SSL listeners."""

    # One PEM file: the PKCS#8 private key, then the certificate chain. Kafka 4.1.1 on
    # Java 17 fails on a PBES2-encrypted key ("PBES2 SecretKeyFactory not available").
    keystore: Path
    # PEM certificates of the authorities that sign client certificates.
    truststore: Path
    # User name to password; each user gets SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN credentials.
    users: Mapping[str, str] = field(default_factory=dict)
    key_password: str | None = None


class _PortTaken(RuntimeError):
    """The broker exited at start-up because one of its ports was taken."""


class KafkaBroker:
    """One broker-and-controller process with its own data folder and ports.

    ``stop``, ``kill``, ``pause`` and ``resume`` let fault tests act on the
    process; ``start`` after ``stop`` brings it back on the same ports and data.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        properties: Mapping[str, str] | None = None,
        heap: str = "512m",
        security: BrokerSecurity | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        # Only ports the broker picked itself are replaced when one is taken.
        self._ports_picked = port is None
        self.port = port or free_port()
        self.controller_port = free_port()
        self.security = security
        self.ssl_port = free_port() if security else None
        self.sasl_ssl_port = free_port() if security else None
        self.properties = dict(properties or {})
        self.heap = heap
        self.log_file = self.workdir / "broker.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def ssl_bootstrap(self) -> str:
        """Return the address of the SSL listener, which requires a client certificate."""
        if self.ssl_port is None:
            raise RuntimeError("this broker has no SSL listener; pass security=BrokerSecurity(...)")
        return f"127.0.0.1:{self.ssl_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        """Return the address of the SASL_SSL listener (SCRAM-SHA-256, SCRAM-SHA-512, PLAIN)."""
        if self.sasl_ssl_port is None:
            raise RuntimeError(
                "this broker has no SASL_SSL listener; pass security=BrokerSecurity(...)"
            )
        return f"127.0.0.1:{self.sasl_ssl_port}"

    def start(self, timeout_s: float = 90.0) -> None:
        """Start the process and return once the broker serves requests.

        Ports come from ``free_port``, which releases each port before the
        broker binds it, so another process can take one in between. On the
        first start, a broker that fails to bind a port it picked itself gets
        new ports and starts again, up to ``_BIND_ATTEMPTS`` times in all.
        """
        libs = ensure_kafka_jars()
        first_start = not (self.workdir / "data" / "meta.properties").exists()
        for attempt in range(1, _BIND_ATTEMPTS + 1):
            try:
                self._launch(libs, timeout_s)
                return
            except _PortTaken:
                if not (first_start and self._ports_picked) or attempt == _BIND_ATTEMPTS:
                    raise
            shutil.rmtree(self.workdir / "data", ignore_errors=True)
            self.port, self.controller_port = free_port(), free_port()
            if self.security is not None:
                self.ssl_port, self.sasl_ssl_port = free_port(), free_port()

    def _launch(self, libs: Path, timeout_s: float) -> None:
        config = self._write_config()
        if not (self.workdir / "data" / "meta.properties").exists():
            self._format(libs, config)

        log_offset = self.log_file.stat().st_size if self.log_file.exists() else 0
        with open(self.workdir / "stdout.log", "ab") as stdout:
            self._process = subprocess.Popen(
                [*self._java(libs), "kafka.Kafka", str(config)],
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_started(log_offset, timeout_s)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the broker with SIGTERM (a controlled shutdown), then SIGKILL."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGCONT)
        process.terminate()
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def kill(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def pause(self, timeout_s: float = 30.0) -> None:
        """Freeze the broker with SIGSTOP: connections stay open but get no response.

        The kernel stops a process's threads one by one, each when it next
        runs, which can take a while on a loaded machine. Until then the broker
        can still respond to a request sent after this call. So this waits
        until every thread of the process is stopped.
        """
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + timeout_s
        while not _all_threads_stopped(self._process.pid):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Kafka broker's threads did not stop within {timeout_s} s")
            time.sleep(0.01)

    def resume(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _java(self, libs: Path) -> list[str]:
        return [
            "java",
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={_LOG4J_CONFIG}",
            f"-Dbroker.log.file={self.log_file}",
            "-cp",
            f"{libs}/*",
        ]

    def _write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        properties = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": (
                f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}"
            ),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.workdir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            **self._security_properties(),
            **self.properties,
        }
        path = self.workdir / "server.properties"
        path.write_text("".join(f"{key}={value}\n" for key, value in properties.items()))
        return path

    def _security_properties(self) -> dict[str, str]:
        if self.security is None:
            return {}
        security = self.security
        listeners = {
            "PLAINTEXT": self.port,
            "SSL": self.ssl_port,
            "SASL_SSL": self.sasl_ssl_port,
        }
        advertised = ",".join(f"{name}://127.0.0.1:{port}" for name, port in listeners.items())
        plain_users = "".join(
            f' user_{name}="{password}"' for name, password in security.users.items()
        )
        properties = {
            "listeners": f"{advertised},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": advertised,
            "listener.security.protocol.map": (
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL"
            ),
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(security.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(security.truststore),
            "listener.name.ssl.ssl.client.auth": "required",
            "sasl.enabled.mechanisms": "SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
            "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config": _SCRAM_LOGIN,
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": _SCRAM_LOGIN,
            "listener.name.sasl_ssl.plain.sasl.jaas.config": f"{_PLAIN_LOGIN}{plain_users};",
        }
        if security.key_password is not None:
            properties["ssl.key.password"] = security.key_password
        return properties

    def _format(self, libs: Path, config: Path) -> None:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # KRaft stores SCRAM credentials in the cluster metadata, so they are added at format time.
        scram_arguments = [
            argument
            for name, password in (self.security.users.items() if self.security else ())
            for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
            for argument in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
        ]
        subprocess.run(
            [*self._java(libs), "kafka.tools.StorageTool", "format",
             # `=` keeps an id that starts with "-" from reading as an option.
             f"--cluster-id={cluster_id}",
             "-c", str(config), *scram_arguments],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def _wait_started(self, log_offset: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                message = (
                    f"the Kafka broker exited with {self._process.returncode}; see {self.log_file}"
                )
                if self._log_contains(_BIND_FAILED_MARKER, log_offset):
                    raise _PortTaken(message)
                raise RuntimeError(message)
            if self._log_contains(_STARTED_MARKER, log_offset) and self._accepts_connections():
                return
            time.sleep(0.2)
        self.kill()
        raise RuntimeError(
            f"the Kafka broker did not start within {timeout_s} s; see {self.log_file}"
        )

    def _log_contains(self, marker: str, offset: int) -> bool:
        try:
            with open(self.log_file, "rb") as log:
                log.seek(offset)
                return marker.encode() in log.read()
        except FileNotFoundError:
            return False

    def _accepts_connections(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False


def main() -> int:
    parser = argparse.ArgumentParser(description="Run a single-node Kafka broker until Ctrl-C.")
    parser.add_argument("--port", type=int, default=9092, help="client port (default: 9092)")
    parser.add_argument(
        "--data", type=Path, help="data folder, kept between runs (default: a temporary folder)"
    )
    args = parser.parse_args()

    workdir = args.data or Path(tempfile.mkdtemp(prefix="relay-kafka-"))
    broker = KafkaBroker(workdir, port=args.port)
    print(f"starting Kafka {KAFKA_VERSION} in {workdir} ...", flush=True)
    broker.start()
    print(f"Kafka is ready at {broker.bootstrap}; press Ctrl-C to stop", flush=True)
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        signal.sigwait(signals)
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
