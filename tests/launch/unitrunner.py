"""A small stand-in for systemd, for tests where systemd is not PID 1: it runs units as
rendered, in a network namespace, from a root directory made by `meshctl systemd install
--root`.

What it does as systemd does (systemd.service(5), systemd.exec(5)):
- ExecStartPre=, ExecStart=, ExecStopPost= in order; `+` runs as root, `-` ignores failure;
  `%d` is the credentials directory, `%%` a percent sign, `$$` a dollar sign; words are
  split as systemd splits them (double quotes, backslash escapes).
- User=/Group= by name, looked up in the root's /etc/passwd and applied with setpriv;
  Environment=; LoadCredential= copied into a directory only the unit's user can read.
- Type=notify: a NOTIFY_SOCKET, and the start waits for READY=1 (TimeoutStartSec=).
- Wants= and After= of the unit and its drop-ins (`NAME.d/*.conf`): wanted units start first.
What it does not: the sandboxing directives (ProtectSystem= and the rest) and cgroups.

Paths under /etc/meshctl and /var/lib/meshctl in the units are those of the installed
system: they are read under the root directory.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from meshctl.launch import netns

MAPPED = ("/etc/meshctl", "/var/lib/meshctl")  # paths of the installed system, under root


@dataclass
class Unit:
    name: str
    settings: dict[str, list[str]]

    def get(self, key: str, default: str = "") -> str:
        values = self.settings.get(key)
        return values[-1] if values else default

    def all(self, key: str) -> list[str]:
        return self.settings.get(key, [])


def parse_unit(texts: list[str], name: str) -> Unit:
    settings: dict[str, list[str]] = {}
    for text in texts:
        for line in text.splitlines():
            line = line.strip()
            if not line or line.startswith(("#", ";", "[")):
                continue
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return Unit(name, settings)


@dataclass
class Running:
    unit: Unit
    proc: subprocess.Popen[bytes]
    log: Path
    creds: Path | None


@dataclass
class Runner:
    """Units under `root`/etc/systemd/system, run inside network namespace `host`."""

    root: Path
    host: str
    logs: Path
    running: dict[str, Running] = field(default_factory=dict)

    @property
    def unit_dir(self) -> Path:
        return self.root / "etc" / "systemd" / "system"

    def load(self, name: str) -> Unit:
        texts = [(self.unit_dir / name).read_text()]
        dropins = self.unit_dir / f"{name}.d"
        if dropins.is_dir():
            texts += [p.read_text() for p in sorted(dropins.glob("*.conf"))]
        return parse_unit(texts, name)

    def path(self, word: str) -> str:
        for prefix in MAPPED:
            if word == prefix or word.startswith(prefix + "/"):
                return str(self.root) + word
        return word

    def _user(self, name: str) -> tuple[int, int]:
        for line in (self.root / "etc" / "passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2]), int(fields[3])
        raise AssertionError(f"User={name}: no such user in {self.root}/etc/passwd")

    def _argv(self, line: str, creds: Path | None) -> tuple[list[str], bool, bool]:
        """(argv, as root, failure ignored) of an Exec*= line."""
        privileged = ignore = False
        while line[:1] in ("+", "-", "@", ":", "!"):
            privileged |= line[0] == "+"
            ignore |= line[0] == "-"
            line = line[1:]
        line = line.replace("%d", str(creds) if creds else "%d").replace("%%", "%")
        words = [w.replace("$$", "$") for w in shlex.split(line)]
        return [self.path(w) for w in words], privileged, ignore

    def _env(self, unit: Unit) -> dict[str, str]:
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
        for value in unit.all("Environment"):
            for assignment in shlex.split(value):
                key, _, val = assignment.partition("=")
                env[key] = self.path(val)
        return env

    def _as_user(self, unit: Unit, argv: list[str]) -> list[str]:
        user = unit.get("User")
        if not user:
            return argv
        uid, gid = self._user(user)
        return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]

    def _credentials(self, unit: Unit) -> Path | None:
        loads = unit.all("LoadCredential")
        if not loads:
            return None
        creds = self.root / "run" / "credentials" / unit.name
        shutil.rmtree(creds, ignore_errors=True)
        creds.mkdir(parents=True)
        uid, gid = self._user(unit.get("User")) if unit.get("User") else (0, 0)
        for load in loads:
            cred, _, src = load.partition(":")
            dest = creds / cred
            shutil.copyfile(self.path(src.replace("%%", "%")), dest)
            os.chown(dest, uid, gid)
            dest.chmod(0o400)
        os.chown(creds, uid, gid)
        creds.chmod(0o500)
        return creds

    def _run_now(self, unit: Unit, line: str, creds: Path | None) -> None:
        argv, privileged, ignore = self._argv(line, creds)
        if not privileged:
            argv = self._as_user(unit, argv)
        proc = netns.run_in(self.host, argv, env=self._env(unit), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)  # fmt: skip
        out, _ = proc.communicate(timeout=60)
        if proc.returncode != 0 and not ignore:
            raise AssertionError(f"{unit.name}: `{' '.join(argv)}` failed: {out.decode()}")

    def start(self, name: str) -> None:
        """Start `name` and the units it wants, as systemd would; wait for READY=1 when
        Type=notify. AssertionError (with the unit's log) when it fails to start."""
        if name in self.running and self.running[name].proc.poll() is None:
            return
        unit = self.load(name)
        for wanted in unit.all("Wants"):
            for w in wanted.split():
                if (self.unit_dir / w).exists():
                    self.start(w)
        creds = self._credentials(unit)
        for line in unit.all("ExecStartPre"):
            self._run_now(unit, line, creds)
        argv, privileged, _ = self._argv(unit.get("ExecStart"), creds)
        if not privileged:
            argv = self._as_user(unit, argv)
        env = self._env(unit)
        notify = unit.get("Type") == "notify"
        sock: socket.socket | None = None
        if notify:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            path = self.root / "run" / f"notify-{name}"
            path.unlink(missing_ok=True)
            sock.bind(str(path))
            path.chmod(0o777)  # the unit's user writes to it
            env["NOTIFY_SOCKET"] = str(path)
        log = self.logs / f"{name}.log"
        proc = netns.run_in(self.host, argv, env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.running[name] = Running(unit, proc, log, creds)
        if sock is not None:
            timeout = float(unit.get("TimeoutStartSec", "90"))
            sock.settimeout(0.2)
            deadline = time.monotonic() + timeout
            try:
                while time.monotonic() < deadline:
                    try:
                        if b"READY=1" in sock.recv(4096).split(b"\n"):
                            return
                    except TimeoutError:
                        pass
                    if proc.poll() is not None:
                        raise AssertionError(
                            f"{name} exited ({proc.returncode}) before READY=1:\n"
                            + log.read_text()[-3000:]
                        )
                raise AssertionError(
                    f"{name}: no READY=1 within TimeoutStartSec={timeout}:\n"
                    + log.read_text()[-3000:]
                )
            finally:
                sock.close()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """The main process dies (a crash); the unit's ExecStopPost does not run."""
        r = self.running[name]
        r.proc.send_signal(sig)
        r.proc.wait(30)

    def stop(self, name: str) -> int | None:
        """SIGTERM, wait TimeoutStopSec= (then SIGKILL, as systemd), ExecStopPost=; returns
        the exit status, or None when the process had to be killed."""
        r = self.running.pop(name, None)
        if r is None:
            return 0
        timeout = float(r.unit.get("TimeoutStopSec", "90"))
        status: int | None = r.proc.poll()
        if status is None:
            r.proc.send_signal(signal.SIGTERM)
            try:
                status = r.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
                status = None
        for line in r.unit.all("ExecStopPost"):
            self._run_now(r.unit, line, r.creds)
        return status

    def restart(self, name: str) -> None:
        """`systemctl restart`: units that are PartOf= it stop and start with it."""
        parts = [n for n, r in self.running.items() if name in r.unit.get("PartOf").split()]
        self.stop(name)
        for n in parts:
            self.stop(n)
        self.start(name)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

    def systemctl(self, argv: list[str]) -> None:
        """The `systemctl` lines of the docs: enable --now, start, restart, stop."""
        verb, units = argv[0], [a for a in argv[1:] if not a.startswith("-")]
        for unit in units:
            if verb in ("start", "enable"):
                self.start(unit)
            elif verb == "restart":
                self.restart(unit)
            elif verb == "stop":
                self.stop(unit)
            elif verb != "daemon-reload":
                raise AssertionError(f"systemctl {verb}: not something this runner does")
