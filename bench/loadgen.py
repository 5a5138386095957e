"""The HTTP load generator: vegeta, run as a subprocess, and its per-request results.

vegeta (https://github.com/tsenart/vegeta) is used because it sends a
different body and header per request from a target file, paces requests at
a fixed rate in an open model (a slow response does not delay the next
request, so latencies are free of coordinated omission), and records every
request's status, latency and response body. wrk sends at saturation only,
and bombardier sends one fixed body per run.
"""

from __future__ import annotations

import base64
import csv
import io
import os
import resource
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

VEGETA_VERSION = "v12.13.0"
VEGETA_MODULE = f"github.com/tsenart/vegeta/v12@{VEGETA_VERSION}"
TOOLS_BIN = Path(__file__).resolve().parent / ".tools" / "bin"
# vegeta's result for a request it never sent because the target file ran out.
_NO_TARGETS = "no targets to attack"


class LoadGeneratorError(RuntimeError):
    """vegeta is missing or failed."""


@dataclass(frozen=True, slots=True)
class Attack:
    """One vegeta run: a fixed rate in requests per second, or saturation (rate 0)."""

    targets: Path
    duration_s: float
    rate_per_s: int = 0
    workers: int = 64


@dataclass(frozen=True, slots=True)
class RequestResult:
    """One request as vegeta recorded it; ``status`` is 0 for a transport error."""

    started_ns: int
    latency_ns: int
    status: int
    error: str
    body: bytes


def find_vegeta() -> Path:
    """Return the vegeta binary: ``$RELAY_BENCH_VEGETA``, then bench/.tools/bin, then PATH."""
    configured = os.environ.get("RELAY_BENCH_VEGETA")
    candidates = [Path(configured)] if configured else []
    candidates.append(TOOLS_BIN / "vegeta")
    found = shutil.which("vegeta")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise LoadGeneratorError(
        f"vegeta not found in $RELAY_BENCH_VEGETA, {TOOLS_BIN} or PATH; run bench/setup "
        f"(go install {VEGETA_MODULE})"
    )


class Vegeta:
    """The vegeta binary: attacks, and the decoding of their results."""

    def __init__(self, binary: Path) -> None:
        self.binary = binary

    def attack(self, attack: Attack, workdir: Path) -> tuple[Path, float]:
        """Run one attack; return its binary results file and vegeta's CPU time in seconds.

        The attack ends after ``duration_s`` or when the target file runs
        out, whichever comes first.
        """
        results = workdir / f"{attack.targets.stem}-{attack.rate_per_s or 'max'}.bin"
        command = [
            str(self.binary), "attack", "-format=json", "-lazy", f"-targets={attack.targets}",
            f"-duration={attack.duration_s}s", f"-rate={attack.rate_per_s}/s",
            f"-output={results}", "-timeout=30s",
        ]  # fmt: skip
        if attack.rate_per_s == 0:
            # Saturation: a closed loop of `workers` concurrent requests.
            command += [f"-workers={attack.workers}", f"-max-workers={attack.workers}"]

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        _run(command)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return results, cpu_s

    def decode(self, results: Path) -> list[RequestResult]:
        """Return every request of a results file in start order, and delete the file."""
        encoded = _run([str(self.binary), "encode", "--to", "csv", str(results)])
        results.unlink()
        return parse_results(encoded)

    def run(self, attack: Attack, workdir: Path) -> list[RequestResult]:
        """Run one attack and return every request's result."""
        results, _ = self.attack(attack, workdir)
        return self.decode(results)


def parse_results(encoded: bytes) -> list[RequestResult]:
    """Parse ``vegeta encode --to csv`` output, dropping the end-of-targets markers.

    The columns are: start time in Unix nanoseconds, status, latency in
    nanoseconds, bytes out, bytes in, error, base64 response body, then
    fields that the benchmark does not use.
    """
    results = []
    for row in csv.reader(io.StringIO(encoded.decode())):
        if not row or row[5] == _NO_TARGETS:
            continue
        results.append(
            RequestResult(
                started_ns=int(row[0]),
                latency_ns=int(row[2]),
                status=int(row[1]),
                error=row[5],
                body=base64.b64decode(row[6]),
            )
        )
    results.sort(key=lambda result: result.started_ns)
    return results


def _run(command: Sequence[str]) -> bytes:
    completed = subprocess.run(command, capture_output=True, check=False)
    if completed.returncode != 0:
        raise LoadGeneratorError(
            f"{command[0]} {command[1]} exited with {completed.returncode}: "
            f"{completed.stderr.decode(errors='replace').strip()[-2000:]}"
        )
    return completed.stdout
