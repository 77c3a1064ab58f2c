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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.haraka import installed_version, node_version
from bench.rounds import per_round_ratios
from bench.stats import ratio

# What Postroom's figures are divided by, in the ratio tables' column order: the do-nothing aiosmtpd (the
# ceiling for Python), the peer (Haraka: the same job in Node), the seed's Postfix + pipe, the C ceiling.
BASELINES = ("aiosmtpd", "haraka", "postfix", "smtp-sink")
CPU_BASELINES = ("haraka", "postfix")  # CPU per message is compared with the systems that do the same job
PEERS = ("haraka",)  # its own row in the ratio tables, against the ceilings
DEFAULT_SHAPE = "many"  # results written before shapes existed were all `many`
# Issue 16's targets, checked against whatever this run measured: ratios to the baselines and the peer of
# the same run (median of the round-by-round ratios), and absolute bounds where the issue sets them.
RATIO_TARGETS: tuple[tuple[str, tuple[str, ...], str, float], ...] = (
    # (shape, Postroom profiles, baseline, lowest ratio of msgs/s)
    ("one", ("none", "cheap"), "aiosmtpd", 0.5),
    ("one", ("none", "cheap"), "haraka", 1.5),
    ("many", ("none", "cheap"), "aiosmtpd", 0.5),
    ("one", ("all",), "aiosmtpd", 0.25),
    ("many", ("all",), "aiosmtpd", 0.25),
)
TARGETS: tuple[tuple[str, str, Callable[[dict[str, Any]], bool | None]], ...] = (
    ("*", "nothing lost", lambda e: e.get("lost") == 0),
    ("*", "p99 accept < 50 ms at 100/s", lambda e: _lt((e.get("accept_latency_ms") or {}).get("p99"), 50)),
    ("*", "peak RSS < 200 MB, 20,000 spooled", lambda e: _spool_rss_ok(e)),
)


def shape_of(entry: dict[str, Any]) -> str:
    return str(entry.get("shape") or DEFAULT_SHAPE)


def shapes(doc: dict[str, Any]) -> list[str]:
    """The shapes measured, in the order they were asked for, then any others the results hold."""
    out: list[str] = []
    for shape in [*(doc["settings"].get("shapes") or []), *(shape_of(e) for e in doc["results"])]:
        if shape not in out:
            out.append(shape)
    return out


def shape_title(shape: str, per_session: int) -> str:
    if shape == "one":
        return "one message per connection (connect, EHLO, MAIL, RCPT, DATA, QUIT: an MX's real traffic)"
    return f"{per_session} messages per connection"


@dataclass(frozen=True)
class Ratio:
    """A ratio between two systems: the median of the round-by-round ratios and their range (one round: all
    three the same)."""

    median: float
    low: float
    high: float
    rounds: int

    def cell(self) -> str:
        if self.rounds < 2:
            return _x(self.median)
        return f"{_x(self.median)} ({_x(self.low)}–{_x(self.high)})"


def ratio_of(entry: dict[str, Any], base: dict[str, Any], field: str) -> Ratio | None:
    """`field` of `entry` ÷ that of `base`, round by round when both have rounds."""
    by_round = per_round_ratios(entry, base, field)
    if len(by_round) >= 2:
        return Ratio(statistics.median(by_round), min(by_round), max(by_round), len(by_round))
    value = ratio(entry.get(field), base.get(field))
    return None if value is None else Ratio(value, value, value, 1)


@dataclass(frozen=True)
class RatioRow:
    system: str
    profile: str
    msgs_per_s: dict[str, Ratio | None]  # baseline -> this row's msgs/s ÷ the baseline's
    cpu: dict[str, Ratio | None]  # baseline -> this row's CPU per message ÷ the baseline's


def ratio_rows(entries: Sequence[dict[str, Any]], shape: str) -> tuple[list[str], list[str], list[RatioRow]]:
    """Postroom's profiles (then the peer) against the baselines measured in `shape`.

    Returns the baselines of the msgs/s columns, those of the CPU columns, and the rows; a system is never
    divided by itself.
    """
    here = [e for e in entries if shape_of(e) == shape]
    base = {e["system"]: e for e in here if e["system"] in BASELINES}
    rate_cols = [b for b in BASELINES if b in base]
    cpu_cols = [b for b in CPU_BASELINES if b in base]
    subjects = [e for e in here if e["system"] == "postroom"] + [e for e in here if e["system"] in PEERS]
    rows = [
        RatioRow(
            e["system"],
            e["profile"],
            {b: ratio_of(e, base[b], "msgs_per_s") for b in rate_cols if b != e["system"]},
            {b: ratio_of(e, base[b], "cpu_s_per_1000") for b in cpu_cols if b != e["system"]},
        )
        for e in subjects
    ]
    return rate_cols, cpu_cols, rows


def shape_rows(
    entries: Sequence[dict[str, Any]], shape: str, other: str
) -> list[tuple[str, str, Ratio | None, Ratio | None]]:
    """Each system measured in both shapes: (system, profile, msgs/s ratio, CPU per message ratio) of `shape`
    ÷ `other`."""
    others = {(e["system"], e["profile"]): e for e in entries if shape_of(e) == other}
    rows = []
    for e in entries:
        match = others.get((e["system"], e["profile"]))
        if shape_of(e) == shape and match is not None:
            rows.append(
                (
                    e["system"],
                    e["profile"],
                    ratio_of(e, match, "msgs_per_s"),
                    ratio_of(e, match, "cpu_s_per_1000"),
                )
            )
    return rows


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
        **peer_versions(),
        "node": node_version(),
    }


def peer_versions() -> dict[str, str]:
    return {
        "haraka": installed_version("Haraka") or "not installed",
        "mailparser": installed_version("mailparser") or "not installed",
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
    measured = shapes(doc)
    per_session = settings["per_session"]
    lines = [
        f"# Postroom benchmark — {doc['date']}",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['ram_gb']} GB RAM, Linux {m['kernel']}, "
        f"load average at start {m['loadavg_at_start']}.  ",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()) + ".  ",
        f"Load: {settings['sessions']} sessions from {settings['sources']} source addresses, mix "
        f"`{settings['mix']}`, in "
        + ("shapes " if len(measured) > 1 else "shape ")
        + ", ".join(f"`{shape}` ({shape_title(shape, per_session).split(' (')[0]})" for shape in measured)
        + f"; throughput over {settings['messages']:,} messages (Postfix: {settings['postfix_messages']:,}), "
        f"latency at {settings['rate']:g} msgs/s offered over {settings['rate_messages']:,} messages "
        f"(Postfix: {settings['postfix_rate_messages']:,}). Postroom runs `[smtp] workers = "
        f"{settings.get('workers', 1)}`.  ",
        f"Command: `{doc['command']}`",
        "",
        "Accept and delivery latency are measured at the fixed offered rate; throughput, CPU and lost",
        "over the closed-loop run. smtp-sink and the do-nothing aiosmtpd deliver nothing: their end-to-end",
        "rate is their accept rate. Haraka answers 250 only after its webhook POST succeeded, so its tickets",
        "arrive before the 250 and its delivery latency is negative. CPU ms per msg is the server's CPU",
        'seconds per 1,000 messages; "+ N scanners": CPU Rspamd and clamd spent for the server. Machine',
        "cores busy: the whole machine (load generator and receiver included) during the throughput run, of",
        "its cores. See docs/benchmark.md for definitions.",
        "",
    ]
    for shape in measured:
        here = [e for e in entries if shape_of(e) == shape]
        title = shape_title(shape, int(here[0].get("per_session") or per_session) if here else per_session)
        lines += [f"## Shape `{shape}`: {title}", ""]
        lines += _table(here)
        lines += _ratios(entries, shape)
        lines += _rounds(here)
    if "one" in measured and "many" in measured:
        lines += _shape_ratios(entries)
    lines += _spool(entries)
    lines += _targets(entries, multi=len(measured) > 1)
    lines += _py_spy(entries)
    if doc.get("errors"):
        lines += ["## Errors", ""] + [
            f"- {e['system']} ({e['profile']}{', ' + e['shape'] if e.get('shape') else ''}): {e['error']}"
            for e in doc["errors"]
        ]
        lines.append("")
    return "\n".join(lines)


def _table(entries: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| system | profile | msgs/s end to end | accept ms p50 / p95 / p99 | delivery ms p50 / p99 "
        "| CPU ms per msg | machine cores busy | peak RSS MB | lost |",
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
    return [*lines, ""]


def _ratios(entries: list[dict[str, Any]], shape: str) -> list[str]:
    rate_cols, cpu_cols, rows = ratio_rows(entries, shape)
    if not rows or not rate_cols:
        return []
    lines = [
        "### Postroom relative to the baselines and the peer (same run)",
        "",
        "| profile | "
        + " | ".join([*(f"msgs/s ÷ {b}" for b in rate_cols), *(f"CPU per msg ÷ {b}" for b in cpu_cols)])
        + " |",
        "|---|" + "---:|" * (len(rate_cols) + len(cpu_cols)),
    ]
    for row in rows:
        cells = [_cell(row.msgs_per_s, b) for b in rate_cols] + [_cell(row.cpu, b) for b in cpu_cols]
        label = row.profile if row.system == "postroom" else f"{row.system} (peer)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if any(e.get("rounds") for e in entries):
        lines += ["", "With several rounds: the median of the round-by-round ratios, and their range."]
    return [*lines, ""]


def _cell(ratios: dict[str, Ratio | None], base: str) -> str:
    found = ratios.get(base)
    return found.cell() if found is not None else "–"


def _shape_ratios(entries: list[dict[str, Any]]) -> list[str]:
    rows = shape_rows(entries, "one", "many")
    if not rows:
        return []
    lines = [
        "## One message per connection relative to many (same run)",
        "",
        "What connection set-up costs each system: msgs/s and CPU per message of shape `one` ÷ shape `many`.",
        "",
        "| system | profile | msgs/s one ÷ many | CPU per msg one ÷ many |",
        "|---|---|---:|---:|",
    ]
    for system, profile, rate, cpu in rows:
        cells = [r.cell() if r is not None else "–" for r in (rate, cpu)]
        lines.append(f"| {system} | {profile} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _rounds(entries: list[dict[str, Any]]) -> list[str]:
    rows = [e for e in entries if e.get("rounds")]
    if not rows:
        return []
    lines = [
        "### Rounds",
        "",
        "Every system was measured once per round, the rounds one after the other; the tables above "
        "show each one's median round.",
        "",
        "| system | profile | msgs/s per round | CPU ms per msg per round | lost |",
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


def ratio_target_rows(entries: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, float, Ratio | None]]:
    """(shape, profile, baseline, target, measured ratio) for every ratio target this run can check."""
    rows = []
    for shape, profiles, baseline, target in RATIO_TARGETS:
        _, _, ratio_rows_here = ratio_rows(entries, shape)
        for row in ratio_rows_here:
            if row.system == "postroom" and row.profile in profiles and baseline in row.msgs_per_s:
                rows.append((shape, row.profile, baseline, target, row.msgs_per_s[baseline]))
    return rows


def _targets(entries: list[dict[str, Any]], *, multi: bool = False) -> list[str]:
    head = "| profile | shape | target | measured | met |"
    lines = ["## Issue 16 targets", "", head, "|---|---|---|---:|---|"]
    checked = False
    for shape, profile, baseline, target, measured in ratio_target_rows(entries):
        if measured is None:
            continue
        checked = True
        label = f"msgs/s >= {target:g}× {baseline}"
        verdict = "yes" if measured.median >= target else "**no**"
        lines.append(f"| {profile} | {shape} | {label} | {measured.cell()} | {verdict} |")
    for profile, label, check in TARGETS:
        for e in entries:
            if e["system"] != "postroom" or (profile != "*" and e["profile"] != profile):
                continue
            met = check(e)
            if met is not None:
                checked = True
                lines.append(f"| {e['profile']} | {shape_of(e)} | {label} | | {'yes' if met else '**no**'} |")
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
