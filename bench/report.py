"""bench/results/latest.json and latest.md: the figures, the machine, the versions, the ratios."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.rounds import per_round_ratios
from bench.stats import ratio

BASELINES = ("postfix", "aiosmtpd", "smtp-sink")
# Issue 6's targets, checked against whatever this run measured.
TARGETS: tuple[tuple[str, str, Callable[[dict[str, Any]], bool | None]], ...] = (
    ("cheap", ">= 1,000 msgs/s end to end", lambda e: _ge(e.get("msgs_per_s"), 1000)),
    ("cheap", "nothing lost", lambda e: e.get("lost") == 0),
    (
        "cheap",
        "p99 accept < 50 ms at 100/s",
        lambda e: _lt((e.get("accept_latency_ms") or {}).get("p99"), 50),
    ),
    ("all", ">= 400 msgs/s end to end", lambda e: _ge(e.get("msgs_per_s"), 400)),
    ("*", "peak RSS < 200 MB, 20,000 spooled", lambda e: _spool_rss_ok(e)),
)


def _ge(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _lt(value: float | None, bound: float) -> bool | None:
    return None if value is None else value < bound


def _spool_rss_ok(entry: dict[str, Any]) -> bool | None:
    spool = entry.get("spool")
    if not spool or spool.get("accepted", 0) < 20000:
        return None
    return bool(spool["peak_rss_mb"] < 200 and spool["lost"] == 0)


def machine() -> dict[str, Any]:
    cpu = ""
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _cmd_version(argv: list[str], pattern: str) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    match = re.search(pattern, out.stdout + out.stderr)
    return match.group(1) if match else "?"


def versions() -> dict[str, str]:
    import aiosmtpd
    import orjson

    try:
        uvloop_version = importlib.metadata.version("uvloop")
    except importlib.metadata.PackageNotFoundError:
        uvloop_version = "not installed"
    repo = Path(__file__).resolve().parent.parent
    commit = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--", "inbound", "filters"],
        capture_output=True,
        text=True,
    )
    return {
        "postroom": commit.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else ""),
        "python": platform.python_version(),
        "uvloop": uvloop_version,
        "aiosmtpd": aiosmtpd.__version__,
        "orjson": orjson.__version__,
        "postfix": _cmd_version(["postconf", "-dh", "mail_version"], r"(\S+)"),
        "pipe script python": _cmd_version(["/usr/bin/python3", "--version"], r"Python (\S+)"),
        "rspamd": _cmd_version(["rspamd", "--version"], r"version (\S+)"),
        "clamd": _cmd_version(["clamd", "--version"], r"ClamAV ([^/\s]+)"),
        "nsd": _cmd_version(["nsd", "-v"], r"NSD version (\S+)"),
    }


def write(out_dir: Path, document: dict[str, Any]) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "latest.json", out_dir / "latest.md"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    md_path.write_text(markdown(document))
    return json_path, md_path


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _lat(figures: dict[str, Any] | None, keys: tuple[str, ...]) -> str:
    if not figures:
        return "–"
    return " / ".join(_fmt(figures.get(k), 1) for k in keys)


def _cpu(entry: dict[str, Any]) -> str:
    """The server's CPU per 1,000 messages, plus what the scanner daemons it called spent (all profile)."""
    own = _fmt(entry.get("cpu_s_per_1000"), 2)
    daemons = entry.get("daemons_cpu_s_per_1000")
    return own if daemons is None else f"{own} + {_fmt(daemons, 2)} scanners"


def markdown(doc: dict[str, Any]) -> str:
    settings, entries = doc["settings"], doc["results"]
    m = doc["machine"]
    lines = [
        f"# Postroom benchmark — {doc['date']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Linux {m['kernel']}, "
        f"load average at start {m['loadavg_at_start']}.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + ".  ",
        f"Load: {settings['sessions']} sessions, {settings['per_session']} messages per session, from "
        f"{settings['sources']} source addresses, mix `{settings['mix']}`; throughput over "
        f"{settings['messages']:,} messages (Postfix: {settings['postfix_messages']:,}), latency at "
        f"{settings['rate']:g} msgs/s offered over {settings['rate_messages']:,} messages (Postfix: "
        f"{settings['postfix_rate_messages']:,}). Postroom runs `[smtp] workers = "
        f"{settings.get('workers', 1)}`.  ",
        f"Command: `{doc['command']}`",
        "",
        "| system | profile | msgs/s end to end | accept ms p50 / p95 / p99 | delivery ms p50 / p99 "
        "| CPU s per 1,000 msgs | machine cores busy | peak RSS MB | lost |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        lines.append(
            f"| {e['system']} | {e['profile']} | {_fmt(e.get('msgs_per_s'))} "
            f"| {_lat(e.get('accept_latency_ms'), ('p50', 'p95', 'p99'))} "
            f"| {_lat(e.get('delivery_latency_ms'), ('p50', 'p99'))} "
            f"| {_cpu(e)} | {_fmt(e.get('machine_cores_busy'), 2)} "
            f"| {_fmt(e.get('peak_rss_mb'))} | {_fmt(e.get('lost'))} |"
        )
    lines += ["", "Accept and delivery latency are measured at the fixed offered rate; throughput, CPU and",
              "lost over the closed-loop run. smtp-sink and the do-nothing aiosmtpd deliver nothing: their",
              "end-to-end rate is their accept rate. \"+ N scanners\": CPU Rspamd and clamd spent for the",
              "server. Machine cores busy: the whole machine (load generator and receiver included) during",
              "the throughput run, of its cores. See docs/benchmark.md for definitions.", ""]  # fmt: skip
    lines += _ratios(entries)
    lines += _rounds(entries)
    lines += _spool(entries)
    lines += _targets(entries)
    lines += _py_spy(entries)
    if doc.get("errors"):
        lines += ["## Errors", ""] + [
            f"- {e['system']} ({e['profile']}): {e['error']}" for e in doc["errors"]
        ]
        lines.append("")
    return "\n".join(lines)


def _ratios(entries: list[dict[str, Any]]) -> list[str]:
    base = {e["system"]: e for e in entries if e["system"] in BASELINES}
    ours = [e for e in entries if e["system"] == "postroom"]
    if not ours or not base:
        return []
    names = [b for b in BASELINES if b in base]
    lines = [
        "## Postroom relative to the baselines (same run)",
        "",
        "| profile | " + " | ".join(f"msgs/s ÷ {b}" for b in names) + " | CPU per msg ÷ postfix |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    for e in ours:
        cells = [_ratio_cell(e, base[b], "msgs_per_s") for b in names]
        cpu = _ratio_cell(e, base["postfix"], "cpu_s_per_1000") if "postfix" in base else "–"
        lines.append(f"| {e['profile']} | " + " | ".join(cells) + f" | {cpu} |")
    if any(e.get("rounds") for e in entries):
        lines += ["", "With several rounds: the median of the round-by-round ratios, and their range."]
    return [*lines, ""]


def _ratio_cell(entry: dict[str, Any], base: dict[str, Any], field: str) -> str:
    by_round = per_round_ratios(entry, base, field)
    if len(by_round) < 2:
        return _x(ratio(entry.get(field), base.get(field)))
    return f"{_x(statistics.median(by_round))} ({_x(min(by_round))}–{_x(max(by_round))})"


def _rounds(entries: list[dict[str, Any]]) -> list[str]:
    rows = [e for e in entries if e.get("rounds")]
    if not rows:
        return []
    lines = [
        "## Rounds",
        "",
        "Every system was measured once per round, the rounds one after the other; the tables above "
        "show each one's median round.",
        "",
        "| system | profile | msgs/s per round | CPU s per 1,000 msgs per round | lost |",
        "|---|---|---|---|---:|",
    ]
    for e in rows:
        rates = " / ".join(_fmt(r.get("msgs_per_s")) for r in e["rounds"])
        cpus = " / ".join(_fmt(r.get("cpu_s_per_1000"), 2) for r in e["rounds"])
        lines.append(f"| {e['system']} | {e['profile']} | {rates} | {cpus} | {_fmt(e.get('lost'))} |")
    return [*lines, ""]


def _x(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}×" if value < 10 else f"{value:.0f}×"


def _spool(entries: list[dict[str, Any]]) -> list[str]:
    rows = [e for e in entries if e.get("spool")]
    if not rows:
        return []
    lines = [
        "## Spool: receiver down, messages accepted into the spool, then the receiver back",
        "",
        "| system | profile | accepted into the spool | peak RSS MB (spooled / overall) "
        "| drain msgs/s (from restart / from first ticket) | first ticket after s | lost | duplicates |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for e in rows:
        s = e["spool"]
        lines.append(
            f"| {e['system']} | {e['profile']} | {_fmt(s.get('accepted'))} of {_fmt(s.get('messages'))} "
            f"| {_fmt(s.get('peak_rss_mb_spooled'))} / {_fmt(s.get('peak_rss_mb'))} "
            f"| {_fmt(s.get('drain_msgs_per_s'))} / {_fmt(s.get('drain_msgs_per_s_from_first'))} "
            f"| {_fmt(s.get('first_ticket_after_s'), 2)} | {_fmt(s.get('lost'))} "
            f"| {_fmt(s.get('duplicates'))} |"
        )
    return [*lines, ""]


def _targets(entries: list[dict[str, Any]]) -> list[str]:
    lines = ["## Issue 6 targets", "", "| profile | target | met |", "|---|---|---|"]
    checked = False
    for profile, label, check in TARGETS:
        for e in entries:
            if e["system"] != "postroom" or (profile != "*" and e["profile"] != profile):
                continue
            met = check(e)
            if met is not None:
                checked = True
                lines.append(f"| {e['profile']} | {label} | {'yes' if met else '**no**'} |")
    return [*lines, ""] if checked else []


def _py_spy(entries: list[dict[str, Any]], top: int = 15) -> list[str]:
    rows = [e for e in entries if e.get("py_spy")]
    if not rows:
        return []
    lines = [
        "## Where Postroom's time goes (py-spy, extra unmeasured run)",
        "",
        "Share of samples taken while a thread held the GIL (py-spy --gil): where Python burns CPU, in the",
        "server and its normaliser processes. Time blocked in fsync or on sockets releases the GIL and is",
        "not in this view. Line numbers merged per function.",
        "",
    ]
    for e in rows:
        prof = e["py_spy"]
        lines += [
            f"### {e['profile']} — {prof['samples']:,} samples, collapsed stacks in `{prof['file']}`",
            "",
            "| self % | function | | inclusive % | function |",
            "|---:|---|---|---:|---|",
        ]
        own, inclusive = prof["self_pct"][:top], prof["inclusive_pct"]
        # Inclusive shares of the outermost frames (runpy, threading) say nothing: show Postroom's and libs'.
        inclusive = [r for r in inclusive if not r[0].startswith(_FRAMEWORK_FRAMES)][:top]
        for i in range(max(len(own), len(inclusive))):
            a = own[i] if i < len(own) else ["", None]
            b = inclusive[i] if i < len(inclusive) else ["", None]
            lines.append(f"| {_fmt(a[1])} | `{a[0]}` | | {_fmt(b[1])} | `{b[0]}` |")
        lines.append("")
    return lines


_FRAMEWORK_FRAMES = (
    "Thread.",
    "_worker (concurrent",
    "_WorkItem.run",
    "_run_code",
    "_run_module_as_main",
    "_run_async",
    "main (postroom/app/cli.py)",
    "<module> (postroom/app/cli.py)",
    "run (uvloop",
    "Runner.run",
    "cmd_serve",
    "main(",
    "BaseProcess.",
    "_serve_one (multiprocessing",
    "_main (multiprocessing",
    "<module> (<string>)",
    "_process_worker (concurrent",
)


def command_line() -> str:
    return " ".join(["bench/run", *sys.argv[1:]])
