"""Load shapes (one message per connection, many) and the ratio tables per shape, with the Haraka peer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.haraka import pins, render_instance
from bench.main import parse_args
from bench.report import markdown, ratio_rows, ratio_target_rows, shape_of, shape_rows, shapes
from bench.rounds import median_round


def entry(system: str, shape: str, rate: float, cpu: float, profile: str = "none") -> dict[str, Any]:
    return {
        "system": system,
        "profile": profile,
        "shape": shape,
        "per_session": 1 if shape == "one" else 20,
        "msgs_per_s": float(rate),
        "cpu_s_per_1000": float(cpu),
        "machine_cores_busy": 1.5,
        "lost": 0,
        "peak_rss_mb": 50.0,
        "accept_latency_ms": {"p50": 1.0, "p95": 2.0, "p99": 3.0},
    }


def rounds(system: str, shape: str, rates: list[float], cpus: list[float], profile: str = "none") -> Any:
    return median_round([entry(system, shape, r, c, profile) for r, c in zip(rates, cpus, strict=True)])


def document(results: list[dict[str, Any]], shapes: list[str] | None = None) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "sessions": 10, "per_session": 20, "sources": 8, "mix": "small:100", "messages": 1,
        "postfix_messages": 1, "rate": 100, "rate_messages": 1, "postfix_rate_messages": 1,
    }  # fmt: skip
    if shapes is not None:
        settings["shapes"] = shapes
    return {
        "date": "d",
        "command": "bench/run",
        "machine": {"nproc": 2, "cpu": "x", "ram_gb": 1, "kernel": "k", "loadavg_at_start": []},
        "versions": {},
        "settings": settings,
        "results": results,
    }


def test_both_shapes_by_default_and_the_selector_checks_names() -> None:
    plan, _ = parse_args([])
    assert plan.shapes == ["one", "many"]
    assert "haraka" in plan.systems
    assert (plan.session_length("one"), plan.session_length("many")) == (1, 20)
    plan, _ = parse_args(["--shapes", "many", "--per-session", "5"])
    assert plan.shapes == ["many"] and plan.session_length("many") == 5
    for bad in ("few", "one,one", ","):
        with pytest.raises(SystemExit):
            parse_args(["--shapes", bad])


def test_ratios_are_per_shape_against_aiosmtpd_and_haraka_round_by_round() -> None:
    results = [
        rounds("aiosmtpd", "one", [1000, 500, 1000], [0.5, 1.0, 0.5]),
        rounds("haraka", "one", [200, 100, 250], [3.0, 6.0, 3.0]),
        rounds("postroom", "one", [400, 200, 500], [1.5, 3.0, 1.2], "cheap"),
        rounds("aiosmtpd", "many", [2000, 2000, 2000], [0.4, 0.4, 0.4]),
        rounds("haraka", "many", [250, 250, 250], [2.5, 2.5, 2.5]),
        rounds("postroom", "many", [500, 600, 1000], [1.0, 1.0, 1.0], "cheap"),
    ]
    rate_cols, cpu_cols, rows = ratio_rows(results, "one")
    assert rate_cols == ["aiosmtpd", "haraka"] and cpu_cols == ["haraka"]
    postroom, haraka = rows
    assert (postroom.system, postroom.profile) == ("postroom", "cheap")
    # Round by round: 0.4x, 0.4x, 0.5x aiosmtpd; 2x, 2x, 2x Haraka; CPU 0.5x, 0.5x, 0.4x Haraka's.
    by_aiosmtpd, by_haraka = postroom.msgs_per_s["aiosmtpd"], postroom.msgs_per_s["haraka"]
    cpu = postroom.cpu["haraka"]
    assert by_aiosmtpd is not None and by_haraka is not None and cpu is not None
    assert (by_aiosmtpd.median, by_aiosmtpd.low, by_aiosmtpd.high) == pytest.approx((0.4, 0.4, 0.5))
    assert (by_haraka.median, by_haraka.rounds) == (2.0, 3)
    assert (cpu.median, cpu.low, cpu.high) == pytest.approx((0.5, 0.4, 0.5))
    # The peer gets its own row against the ceilings, never against itself.
    assert haraka.system == "haraka" and set(haraka.msgs_per_s) == {"aiosmtpd"} and haraka.cpu == {}
    # Ratios never mix shapes: in `many` Postroom's median round is 600, Haraka's 250.
    _, _, (many, _) = ratio_rows(results, "many")
    many_by_haraka = many.msgs_per_s["haraka"]
    assert many_by_haraka is not None and many_by_haraka.median == pytest.approx(2.4)

    text = markdown(document(results, ["one", "many"]))
    one_at, many_at = text.index("## Shape `one`"), text.index("## Shape `many`")
    assert one_at < many_at
    assert "| profile | msgs/s ÷ aiosmtpd | msgs/s ÷ haraka | CPU per msg ÷ haraka |" in text
    assert "| cheap | 0.40× (0.40×–0.50×) | 2.00× (2.00×–2.00×) | 0.50× (0.40×–0.50×) |" in text[:many_at]
    assert "| haraka (peer) | 0.20× (0.20×–0.25×) | – |" in text[:many_at]
    assert "| postroom | cheap | 400.0 / 200.0 / 500.0 | 1.50 / 3.00 / 1.20 | 0 |" in text[:many_at]
    assert "## One message per connection relative to many" in text


def test_one_against_many_pairs_the_same_system_and_profile() -> None:
    results = [
        entry("haraka", "one", 100, 3.0),
        entry("haraka", "many", 200, 2.0),
        entry("postroom", "many", 500, 1.0, "all"),
        entry("postroom", "one", 250, 2.0, "none"),
    ]
    rows = shape_rows(results, "one", "many")
    assert [(system, profile) for system, profile, _, _ in rows] == [("haraka", "none")]
    _, _, rate, cpu = rows[0]
    assert rate is not None and cpu is not None and (rate.median, cpu.median) == (0.5, 1.5)


def test_results_from_before_shapes_read_as_many() -> None:
    old = {"system": "aiosmtpd", "profile": "none", "msgs_per_s": 1.0}
    assert shape_of(old) == "many"
    assert shapes(document([old])) == ["many"]
    assert shapes(document([old], ["one", "many"])) == ["one", "many"]


def test_the_haraka_instance_is_rendered_with_its_placeholders_filled(tmp_path: Path) -> None:
    from bench.haraka import BASELINE

    render_instance(
        BASELINE,
        tmp_path,
        {"port": "2999", "url": "http://127.0.0.1:1/t", "spool": "/s", "secret_file": "/f"},
    )
    smtp = (tmp_path / "config" / "smtp.ini").read_text()
    assert "listen=127.0.0.1:2999" in smtp and "nodes=0" in smtp
    queue = (tmp_path / "config" / "postroom_queue.ini").read_text()
    assert "url=http://127.0.0.1:1/t" in queue and "spool_dir=/s" in queue and "{" not in queue
    # The instance's plugin list replaces Haraka's default one (which does DNS lookups): ours alone.
    plugins = [
        line for line in (tmp_path / "config" / "plugins").read_text().splitlines() if line and line[0] != "#"
    ]
    assert plugins == ["postroom_queue"]
    assert (tmp_path / "plugins" / "postroom_queue.js").exists()
    assert set(pins()) == {"Haraka", "mailparser"} and all(v[0].isdigit() for v in pins().values())


def test_issue_16_targets_are_same_run_ratios_checked_round_by_round() -> None:
    results = [
        rounds("aiosmtpd", "one", [1000, 1200, 1100], [0.8, 0.8, 0.8]),
        rounds("haraka", "one", [200, 180, 190], [3.5, 3.5, 3.5]),
        rounds("postroom", "one", [450, 600, 560], [3.0, 3.0, 3.0]),  # 0.45×, 0.5×, 0.51× → median 0.5×
        rounds("postroom", "one", [250, 300, 260], [5.0, 5.0, 5.0], profile="all"),  # 0.25×, 0.25×, 0.24×
    ]
    rows = {(shape, profile, base): (target, measured) for shape, profile, base, target, measured in
            ratio_target_rows(results)}  # fmt: skip
    target, measured = rows[("one", "none", "aiosmtpd")]
    assert target == 0.5 and measured is not None and round(measured.median, 2) == 0.5
    target, measured = rows[("one", "none", "haraka")]  # 2.25×, 3.33×, 2.95× round by round
    assert target == 1.5 and measured is not None and round(measured.median, 2) == 2.95
    text = markdown(document(results, ["one"]))
    assert "| none | one | msgs/s >= 0.5× aiosmtpd | 0.50× (0.45×–0.51×) | yes |" in text
    assert "| all | one | msgs/s >= 0.25× aiosmtpd | 0.25× (0.24×–0.25×) | yes |" in text
    assert "Issue 6" not in text
