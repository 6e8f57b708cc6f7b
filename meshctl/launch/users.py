"""Who a local app runs as: mesh.yaml's `user:` resolved on this host, default `nobody`.

Workloads are not trusted (SECURITY.md): in transparent mode every app runs unprivileged,
never as root (it could read every key) nor as the proxies' uid 1337 (its traffic would
bypass interception, and it could read the proxies' keys). The default is `nobody`
(65534): it exists on every distribution, owns no files, and needs no change to the host;
a dedicated user would have to be created (a change to /etc/passwd that outlives `down`)
and would isolate apps from each other no better, since all would share it. Apps that must
not see each other's processes get a `user:` each.
"""

from __future__ import annotations

import grp
import pwd
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshctl.launch.procs import drop_to
from registry.config import MeshConfig
from registry.config.mesh_file import PROXY_UID

DEFAULT_USER = "nobody"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # as Docker's
NOBODY_ID = 65534


@dataclass(frozen=True, slots=True)
class AppUser:
    uid: int
    gid: int
    name: str  # for messages; the uid as text when it has no passwd entry


def _id(text: str, db: str) -> tuple[int, str] | None:
    """A user or group by name or number: (id, name), or None for an unknown name."""
    try:
        if db == "user":
            entry = pwd.getpwuid(int(text)) if text.isdigit() else pwd.getpwnam(text)
            return entry.pw_uid, entry.pw_name
        g = grp.getgrgid(int(text)) if text.isdigit() else grp.getgrnam(text)
        return g.gr_gid, g.gr_name
    except KeyError:
        return (int(text), text) if text.isdigit() else None  # a bare id needs no entry


def resolve(spec: str) -> AppUser:
    """`name`, `uid`, `name:group` or `uid:gid` (mesh.yaml checked the syntax); ValueError
    saying what is wrong. A user's group is its passwd entry's, else the same number."""
    if not spec:
        try:
            entry = pwd.getpwnam(DEFAULT_USER)
            return AppUser(entry.pw_uid, entry.pw_gid, DEFAULT_USER)
        except KeyError:
            return AppUser(NOBODY_ID, NOBODY_ID, str(NOBODY_ID))
    user_text, _, group_text = spec.partition(":")
    user = _id(user_text, "user")
    if user is None:
        raise ValueError(f"user `{user_text}` does not exist on this host: create it "
                         "(`useradd --system`) or give a uid")  # fmt: skip
    uid, name = user
    if group_text:
        group = _id(group_text, "group")
        if group is None:
            raise ValueError(f"group `{group_text}` does not exist on this host: create it "
                             "or give a gid")  # fmt: skip
        gid = group[0]
    else:
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = uid
    for what, value in (("uid", uid), ("gid", gid)):
        if value == 0:
            raise ValueError(f"user `{spec}` has {what} 0 (root): workloads are not trusted; "
                             "choose an unprivileged user")  # fmt: skip
        if value == PROXY_UID:
            raise ValueError(f"user `{spec}` has {what} {PROXY_UID}, the proxies' id: its "
                             "traffic would bypass interception; choose another")  # fmt: skip
    return AppUser(uid, gid, name)


def app_users(config: MeshConfig) -> tuple[dict[tuple[str, str], AppUser], list[str]]:
    """Each (service, version)'s user, and `file:line:column: ...` errors for those that
    do not resolve on this host."""
    users: dict[tuple[str, str], AppUser] = {}
    errors: list[str] = []
    for svc in config.services:
        for wl in svc.workloads:
            try:
                users[(svc.name, wl.version)] = resolve(wl.user)
            except ValueError as exc:
                errors.append(f"{wl.user_source or svc.source}: {exc}")
    return users, errors


def explicit_mode_errors(config: MeshConfig) -> list[str]:
    """Explicit mode runs every process as the user running meshctl: a `user:` it cannot
    honour is an error, not a silent change of meaning."""
    return [
        f"{wl.user_source}: `user: {wl.user}` needs transparent mode (root): explicit mode "
        "runs every app as the user running meshctl; run `sudo meshctl up`, or remove `user:`"
        for svc in config.services
        for wl in svc.workloads
        if wl.user
    ]


def session_env(uid: int, app_env: Mapping[str, str]) -> dict[str, str]:
    """HOME, USER, LOGNAME and PATH of the user an app runs as, not root's (as sudo's
    env_reset): root's PATH may name directories other users cannot enter (a pyenv under
    /root). The workload's own `env:` PATH wins."""
    try:
        entry = pwd.getpwuid(uid)
        home, name = entry.pw_dir, entry.pw_name
    except KeyError:
        home, name = "/", str(uid)
    return {"HOME": home, "USER": name, "LOGNAME": name,
            "PATH": app_env.get("PATH", DEFAULT_PATH)}  # fmt: skip


def unreachable(checks: Iterable[tuple[str, tuple[int, int], str, str, str]]) -> list[str]:
    """(workload, (uid, gid), cwd, PATH, command) whose user cannot enter its working
    directory or find its command there: one line each, saying what to do."""
    script = 'cd "$1" || exit 2; command -v "$2" >/dev/null || exit 3'
    probes = [
        (name, ids, cwd, path, cmd, subprocess.Popen(
            [*drop_to(*ids), "/bin/sh", "-c", script, "-", cwd, cmd],
            cwd="/", env={"PATH": path}, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ))
        for name, ids, cwd, path, cmd in checks
    ]  # fmt: skip
    out = []
    for name, (uid, _), cwd, path, cmd, probe in probes:
        _, err = probe.communicate(timeout=30)
        why = (err.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
        if probe.returncode == 2:
            out.append(
                f"workload {name} runs as uid {uid}, which cannot enter its working directory "
                f"{cwd} ({why}): make it readable and searchable by that user (chmod o+rx, "
                "or a group), or set the workload's `user:` in mesh.yaml"
            )
        elif probe.returncode != 0:
            out.append(
                f"workload {name} runs as uid {uid}, which cannot find or run `{cmd}` in "
                f"{cwd} with PATH={path}: install it where that user can run it, give its "
                "full path in `command`, or set PATH in the workload's `env:`"
            )
    return out
