"""The systems under test, behind one interface: start on a loopback port, expose a pid tree, stop.

`delivers` says whether tickets reach the receiver: the two ceilings (smtp-sink, the do-nothing aiosmtpd)
accept and discard, so their end-to-end figure is their accept rate.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench import process
from bench.postroom_config import Services, render_config

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent


@dataclass
class Context:
    """What every system may need: a private directory and the receiver to deliver to."""

    workdir: Path
    receiver_url: str
    secret: str
    services: Services = field(default_factory=Services)
    filters_off: tuple[str, ...] = ()  # Postroom filters forced off in every profile (--without)
    workers: int = 1  # Postroom's [smtp] workers


class System:
    name = "?"
    delivers = False

    def __init__(self, ctx: Context, profile: str = "none") -> None:
        self.ctx = ctx
        self.profile = profile
        self.port = process.free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.dir = ctx.workdir / f"{self.name}-{profile}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "server.log"

    @property
    def root_pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        if self.proc is not None:
            await process.stop(self.proc)

    async def _started(self, timeout: float = 30.0) -> None:
        try:
            await process.wait_smtp(HOST, self.port, timeout, self.proc)
        except RuntimeError as exc:
            await self.stop()
            raise RuntimeError(f"{self.name}: {exc}\n{process.tail(self.log)}") from None

    def version(self) -> str:
        return ""


class SmtpSink(System):
    """Postfix's smtp-sink: an event-driven C server that accepts and discards — the machine's ceiling."""

    name = "smtp-sink"

    async def start(self) -> None:
        # -u: drop root after binding; backlog 1024 so connection bursts are not refused.
        argv = ["smtp-sink", "-u", "nobody", f"{HOST}:{self.port}", "1024"]
        self.proc = process.spawn(argv, self.log)
        await self._started()

    def version(self) -> str:
        return f"postfix {_postconf('mail_version')}"


class NullAiosmtpd(System):
    """aiosmtpd with a do-nothing handler — the ceiling for a Python SMTP server."""

    name = "aiosmtpd"

    async def start(self) -> None:
        argv = [
            sys.executable,
            "-m",
            "bench.baselines.null_aiosmtpd",
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]
        self.proc = process.spawn(argv, self.log, cwd=REPO)
        await self._started()

    def version(self) -> str:
        import aiosmtpd

        return f"aiosmtpd {aiosmtpd.__version__}"


class Postroom(System):
    """`postroom serve` with a generated config for the profile, its spool in the run's directory."""

    name = "postroom"
    delivers = True
    overrides: dict[str, dict[str, object]] | None = None  # config keys a scenario changes

    async def start(self) -> None:
        config = self.dir / "postroom.toml"
        config.write_text(
            render_config(
                self.profile,
                listen=f"{HOST}:{self.port}",
                spool=self.dir / "spool",
                webhook_url=self.ctx.receiver_url,
                secret=self.ctx.secret,
                services=self.ctx.services,
                without=self.ctx.filters_off,
                overrides={"smtp": {"workers": self.ctx.workers}, **(self.overrides or {})},
            )
        )
        argv = [sys.executable, "-m", "postroom.app.cli", "serve", "--config", str(config)]
        self.proc = process.spawn(argv, self.log, cwd=REPO)
        await self._started(timeout=60)

    def version(self) -> str:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        return f"postroom {commit or '?'}"


def _postconf(name: str) -> str:
    out = subprocess.run(["postconf", "-dh", name], capture_output=True, text=True)
    return out.stdout.strip()
