"""The peer: Haraka (Node.js) as the MX, with a queue plugin that does what Postroom's no-filter path does.

Haraka and mailparser come from the npm registry at the versions pinned in
bench/baselines/haraka/package.json, installed on first use into bench/.haraka/ (gitignored; installed again
whenever the pins change). Each run gets its own instance directory: bench/baselines/haraka/{config,plugins}
copied, with the port, the webhook URL, the secret file and the spool filled in. One process (smtp.ini
`nodes=0`), listening on 127.0.0.1 only; the only plugin is postroom_queue, which answers Haraka's
lookup_rdns hook itself so no reverse DNS query is ever sent (docs/benchmark.md, "Haraka"). Haraka shuts
down on SIGINT (SIGTERM only when it is pid 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench import process
from bench.systems import System

BASELINE = Path(__file__).resolve().parent / "baselines" / "haraka"
INSTALL = Path(__file__).resolve().parent / ".haraka"  # gitignored
NPM_FLAGS = ("--omit=optional", "--no-audit", "--no-fund", "--loglevel=error")


def pins() -> dict[str, str]:
    """The npm packages and exact versions the peer runs."""
    deps: dict[str, str] = json.loads((BASELINE / "package.json").read_text())["dependencies"]
    return deps


def installed_version(package: str, root: Path = INSTALL) -> str | None:
    try:
        meta = json.loads((root / "node_modules" / package / "package.json").read_text())
    except (OSError, ValueError):
        return None
    version = meta.get("version")
    return str(version) if version else None


def ensure_installed(root: Path = INSTALL) -> Path:
    """Install the pinned packages into `root` unless they are there already; the path of Haraka's bin."""
    wanted = pins()
    if any(installed_version(name, root) != version for name, version in wanted.items()):
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BASELINE / "package.json", root / "package.json")
        result = subprocess.run(
            ["npm", "install", *NPM_FLAGS], cwd=root, capture_output=True, text=True, timeout=600
        )
        missing = [name for name, version in wanted.items() if installed_version(name, root) != version]
        if result.returncode != 0 or missing:
            raise RuntimeError(f"haraka: npm install failed: {(result.stderr or result.stdout)[-2000:]}")
    return root / "node_modules" / "Haraka" / "bin" / "haraka"


def render_instance(src: Path, dest: Path, values: dict[str, str]) -> None:
    """Copy the committed instance (config/, plugins/) to `dest`, filling {placeholders} in config files."""
    for sub in ("config", "plugins"):
        shutil.copytree(src / sub, dest / sub, dirs_exist_ok=True)
    for path in (dest / "config").iterdir():
        text = path.read_text()
        for key, value in values.items():
            text = text.replace("{" + key + "}", value)
        path.write_text(text)


class Haraka(System):
    name = "haraka"
    delivers = True

    async def start(self) -> None:
        haraka_bin = await asyncio.to_thread(ensure_installed)
        secret_file = self.dir / "secret"
        secret_file.write_text(self.ctx.secret)
        secret_file.chmod(0o600)
        values = {
            "port": str(self.port),
            "url": self.ctx.receiver_url,
            "secret_file": str(secret_file),
            "spool": str(self.dir / "spool"),
        }
        render_instance(BASELINE, self.dir, values)
        argv = ["node", str(haraka_bin), "-c", str(self.dir)]
        self.proc = process.spawn(argv, self.log, cwd=self.dir)
        await self._started()

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)  # Haraka's shutdown signal; SIGTERM only as pid 1
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await process.stop(proc)  # SIGTERM, then SIGKILL, to the group if it is still there

    def version(self) -> str:
        haraka, parser = installed_version("Haraka"), installed_version("mailparser")
        return f"Haraka {haraka or '?'}, mailparser {parser or '?'}, node {node_version()}"


def node_version() -> str:
    try:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return out.stdout.strip().lstrip("v") or "?"
