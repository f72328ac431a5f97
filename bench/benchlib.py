"""What every end-to-end bench script shares: the machine, process CPU/RSS, /metrics.

Process figures come from ``/proc/<pid>/stat`` (utime + stime, all threads)
and ``/proc/<pid>/statm`` (resident pages): no extra dependency, and the
same numbers ``top`` shows.  ``/metrics`` is parsed with prometheus_client's
own text parser; histogram quantiles are interpolated linearly inside the
bucket, as Prometheus' ``histogram_quantile`` does, so they are only as fine
as the buckets of ``mixer_ext.metrics``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
import sys
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

# the same port helpers as the test suite's (re-exported for the bench scripts)
from mixer_ext.testing.net import (  # noqa: E402
    free_port,
    wait_for_port,
)

__all__ = ["free_port", "wait_for_port"]

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def machine() -> str:
    """CPU model, logical CPUs, memory, kernel, Python: the line every script prints first."""
    model = "unknown CPU"
    mem_kb = 0
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    import av
    import numpy

    libavcodec = ".".join(map(str, av.library_versions["libavcodec"]))
    return (
        f"{model}, nproc={os.cpu_count()}, {mem_kb / 1048576:.1f} GiB RAM; "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}; "
        f"numpy {numpy.__version__}; PyAV {av.__version__} (libavcodec {libavcodec})"
    )


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} CPUs"


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of process ``pid`` (every thread); 0 when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def rss_bytes(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (every thread's ``children`` list)."""
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out += [int(c) for c in (task / "children").read_text().split()]
    except OSError:
        pass
    return out


def tree_rss_bytes(pid: int) -> int:
    """RSS of ``pid`` and its children (the worker and its RTMP child, for example)."""
    return rss_bytes(pid) + sum(rss_bytes(c) for c in children(pid))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` (0..100) percentile, linear between closest ranks; nan when empty."""
    if not values:
        return float("nan")
    xs = sorted(values)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


# --- /metrics --------------------------------------------------------------------------


@dataclass
class Scrape:
    """One read of a ``/metrics`` page: plain samples and histogram buckets by name."""

    values: dict[str, float] = field(default_factory=dict)
    #: histogram name -> [(upper bound, cumulative count)], +Inf last
    buckets: dict[str, list[tuple[float, float]]] = field(default_factory=dict)

    def value(self, name: str) -> float:
        return self.values.get(name, 0.0)


def scrape(url: str, timeout: float = 5.0) -> Scrape:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        text = resp.read().decode()
    out = Scrape()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_bucket"):
                base = s.name[: -len("_bucket")]
                out.buckets.setdefault(base, []).append((float(s.labels["le"]), s.value))
            elif not s.labels:
                out.values[s.name] = s.value
            else:  # e.g. mixer_output_bytes_total{kind=rtmp}
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out.values[f"{s.name}{{{labels}}}"] = s.value
    for b in out.buckets.values():
        b.sort()
    return out


@dataclass
class Histogram:
    """The observations between two scrapes of one histogram."""

    buckets: list[tuple[float, float]]
    count: float
    total: float

    @classmethod
    def between(cls, a: Scrape, b: Scrape, name: str) -> Histogram:
        before = dict(a.buckets.get(name, []))
        after = b.buckets.get(name, [])
        return cls(
            [(le, n - before.get(le, 0.0)) for le, n in after],
            b.value(name + "_count") - a.value(name + "_count"),
            b.value(name + "_sum") - a.value(name + "_sum"),
        )

    def quantile(self, q: float) -> float:
        """Like Prometheus' histogram_quantile (q in 0..1): linear inside the bucket."""
        if self.count <= 0:
            return float("nan")
        rank = q * self.count
        prev_le, prev_n = 0.0, 0.0
        for le, n in self.buckets:
            if n >= rank:
                if le == float("inf"):
                    return prev_le
                span = n - prev_n
                return prev_le + (le - prev_le) * ((rank - prev_n) / span if span else 0.0)
            prev_le, prev_n = le, n
        return prev_le

    def fraction_above(self, bound: float) -> float:
        """Share of observations above ``bound`` (which must be a bucket bound)."""
        if self.count <= 0:
            return float("nan")
        at = dict(self.buckets)
        if bound not in at:
            raise ValueError(f"{bound} is not a bucket bound of this histogram")
        return 1.0 - at[bound] / self.count

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


def mixer_cmd() -> list[str]:
    """This checkout's ``mixer-ext`` (the same interpreter)."""
    return [sys.executable, "-m", "mixer_ext"]


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """SIGTERM, wait, SIGKILL if needed: every process a bench starts ends this way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
