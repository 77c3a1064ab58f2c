"""Baseline (a): a private Postfix instance as the MX, piping each message to the seed's script.

Everything lives in the run's directory — config, queue_directory, data_directory, maillog — and the master
runs in the foreground as our child (`postfix start-fg`), so it is measured as one process tree and stopped
for sure. It must be started as root: the master binds, then its daemons drop to mail_owner (postfix); the
pipe script runs as `nobody`, with Debian's /usr/bin/python3 (the venv lives under /root, which nobody cannot
enter) — the seed's set-up exactly.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from bench import process
from bench.postroom_config import MAIL_DOMAIN
from bench.systems import HOST, System, _postconf

PIPE_SCRIPT = Path(__file__).resolve().parent / "baselines" / "postfix_pipe.py"
PIPE_PYTHON = "/usr/bin/python3"
PIPE_USER = "nobody"
# Pipe processes at once: Postfix's default_process_limit is 100, but 10 matches the SMTP sessions and the
# seed's set-up; more only makes 2 cores thrash between interpreters starting up.
PIPE_MAXPROC = 10

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.bench.test
mydomain = bench.test
myorigin = bench.test
mydestination =
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {domain}
relay_recipient_maps =
relay_transport = bench
default_transport = error:the benchmark sends no outbound mail
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
bench_destination_recipient_limit = 1
bench_destination_concurrency_limit = {maxproc}
default_process_limit = 200
smtpd_client_connection_count_limit = 0
smtpd_client_connection_rate_limit = 0
alias_maps =
alias_database =
biff = no
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
"""

MASTER_CF = """\
{host}:{port} inet n - n - - smtpd
pickup    unix  n - n 60   1 pickup
cleanup   unix  n - n -    0 cleanup
qmgr      unix  n - n 300  1 qmgr
rewrite   unix  - - n -    - trivial-rewrite
bounce    unix  - - n -    0 bounce
defer     unix  - - n -    0 bounce
trace     unix  - - n -    0 bounce
verify    unix  - - n -    1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -    - proxymap
smtp      unix  - - n -    - smtp
showq     unix  n - n -    - showq
error     unix  - - n -    - error
retry     unix  - - n -    - error
discard   unix  - - n -    - discard
anvil     unix  - - n -    1 anvil
scache    unix  - - n -    1 scache
postlog   unix-dgram n - n - 1 postlogd
bench     unix  - n n -    {maxproc} pipe flags=Rq user={user}
  argv={python} {script} --url {url} --secret-file {secret_file} ${{queue_id}} ${{sender}} ${{recipient}}
"""


class Postfix(System):
    name = "postfix"
    delivers = True

    async def start(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("postfix: a private Postfix instance must be started as root")
        conf = self.dir / "conf"
        for sub in ("conf", "queue", "data"):
            (self.dir / sub).mkdir(exist_ok=True)
        # The script and secret are copied beside the config: `nobody` can read them there whatever the
        # checkout's permissions are.
        script = self.dir / "postfix_pipe.py"
        shutil.copyfile(PIPE_SCRIPT, script)
        secret_file = self.dir / "secret"
        secret_file.write_text(self.ctx.secret)
        nobody = pwd.getpwnam(PIPE_USER)
        os.chown(secret_file, nobody.pw_uid, nobody.pw_gid)
        secret_file.chmod(0o400)
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.dir / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        for path in (self.ctx.workdir, self.dir, script):
            path.chmod(path.stat().st_mode | 0o005)  # world read/search: pipe runs as nobody
        values = {
            "dir": self.dir,
            "host": HOST,
            "port": self.port,
            "domain": MAIL_DOMAIN,
            "maxproc": PIPE_MAXPROC,
            "user": PIPE_USER,
            "python": PIPE_PYTHON,
            "script": script,
            "url": self.ctx.receiver_url,
            "secret_file": secret_file,
        }
        (conf / "main.cf").write_text(MAIN_CF.format(**values))
        (conf / "master.cf").write_text(MASTER_CF.format(**values))
        # `postfix check` creates the queue directories with the owners and modes Postfix insists on.
        check = subprocess.run(["postfix", "-c", str(conf), "check"], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"postfix check failed: {check.stderr or process.tail(self.dir / 'maillog')}")
        self.proc = process.spawn(["postfix", "-c", str(conf), "start-fg"], self.log)
        await self._started()

    async def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        subprocess.run(["postfix", "-c", str(self.dir / "conf"), "stop"], capture_output=True, timeout=30)
        await super().stop()

    def queue_size(self) -> int:
        """Messages still in Postfix's queue (not yet piped): for the report when deliveries lag."""
        queue = self.dir / "queue"
        return sum(
            len(files) for sub in ("incoming", "active", "deferred") for _, _, files in os.walk(queue / sub)
        )

    def version(self) -> str:
        return f"postfix {_postconf('mail_version')}"
