"""Peak anonymous memory of a child process, sampled from /proc (Linux), for the Hub-layout tests and bench/.

``ru_maxrss`` (and VmHWM) count file pages too: a safetensors checkpoint read through mmap adds its whole size to
the resident set although the kernel can drop those pages at any time. What loading really costs is anonymous memory
(``RssAnon``: heap and tensors), which this samples every few milliseconds from a separate process, so a child busy
in C code holding its GIL is still observed. A spike shorter than the interval can be missed.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    code: int
    output: str
    peak_anon: int  # bytes: the highest RssAnon sampled
    peak_rss: int  # bytes: the highest VmRSS sampled (anonymous + file + shared memory pages)


def _status(pid: int) -> tuple[int, int] | None:
    """(RssAnon, VmRSS) in bytes, or None once the process is gone or a zombie."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    if "RssAnon" not in fields:  # a zombie has no memory fields
        return None
    kib = lambda name: int(fields[name].split()[0]) * 1024  # noqa: E731
    return kib("RssAnon"), kib("VmRSS")


def run_measured(argv: list[str], env: dict | None = None, cwd=None, timeout: float = 600, interval: float = 0.003):
    """Run ``argv`` to completion (killed after ``timeout`` s); its exit code, output and peak memory."""
    peak_anon = peak_rss = 0
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            sample = _status(proc.pid)
            if sample:
                peak_anon, peak_rss = max(peak_anon, sample[0]), max(peak_rss, sample[1])
            if time.monotonic() > deadline:
                proc.kill()
                proc.wait()
                break
            time.sleep(interval)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Measured(proc.returncode, text, peak_anon, peak_rss)
