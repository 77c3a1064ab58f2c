"""Where Postroom's time goes: py-spy samples the server (and its worker processes) under benchmark load.

Profiling runs in its own phase after the measured ones (py-spy's sampling costs the server CPU, so no
figure in the results table is taken while it runs). Output: py-spy's collapsed stacks, which
flamegraph.pl / speedscope read, plus a summary of the functions with the most samples.

Needs py-spy in the venv: /opt/postroom-venv/bin/pip install py-spy.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench import process

_LINE_RE = re.compile(r" \((?P<file>[^()]*?):\d+\)$")


def py_spy() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def start(pid: int, out: Path, log: Path) -> subprocess.Popen[bytes]:
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: pip install py-spy")
    # --gil: only the thread holding the GIL is sampled, i.e. Python's CPU time. Blocking calls (fsync,
    # sockets) release the GIL and do not show; the idle heuristics py-spy offers instead proved unreliable
    # for thread-pool workers.
    argv = [exe, "record", "--pid", str(pid), "--subprocesses", "--gil", "--rate", "250"]
    return process.spawn([*argv, "--format", "raw", "--output", str(out)], log)


async def stop(recorder: subprocess.Popen[bytes]) -> None:
    """py-spy writes its output when interrupted."""
    recorder.send_signal(signal.SIGINT)
    for _ in range(600):  # up to 30 s to write a large profile
        if recorder.poll() is not None:
            return
        await asyncio.sleep(0.05)
    await process.stop(recorder)


def _function(frame: str) -> str:
    """'handle_DATA (inbound/smtp/handler.py:243)' -> 'handle_DATA (inbound/smtp/handler.py)'."""
    return _LINE_RE.sub(lambda m: f" ({m.group('file')})", frame.strip())


def summarize(collapsed: Path, top: int = 25) -> dict[str, object]:
    """Self and inclusive sample shares per function, from py-spy's raw (collapsed) output."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_function(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count
    share = (lambda n: round(100 * n / total, 1)) if total else (lambda n: 0.0)
    return {
        "samples": total,
        "self_pct": [[name, share(n)] for name, n in own.most_common(top)],
        "inclusive_pct": [[name, share(n)] for name, n in inclusive.most_common(top)],
    }
