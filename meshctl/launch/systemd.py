"""systemd units for a VM: the registry, and a proxy beside an existing service unit.

The renderers are pure (strings in, unit text out); `install_units` is the only IO.

Three pieces mesh a service that already runs as, say, `orders.service`:

  meshctl-registry.service        the control plane (on one host of the mesh)
  meshctl-proxy-orders.service    the sidecar proxy, as user meshctl-proxy (uid 1337)
  orders.service.d/10-meshctl.conf  a drop-in for the app: wants the proxy, starts after
                                  it, and installs the iptables interception for as long
                                  as the app runs

Where interception lives is the main design choice, and it is made for failing closed.
The rules belong to the app unit (ExecStartPre=/ExecStopPost=), not to the proxy unit: a
proxy that crashes and restarts leaves them in place, so for that second the app's
traffic is refused rather than sent around the mesh in plaintext (and peers cannot reach
the app's ports unauthenticated). This is what an Istio pod does: its iptables rules are
set by an init container and live as long as the pod, not as long as the sidecar. It
also means the proxy unit needs no privilege at all.

Values are escaped for systemd: `%` -> `%%` everywhere (specifiers), `$` -> `$$` in
command lines (variable expansion), and words with spaces, quotes or backslashes
double-quoted (systemd.syntax(7), systemd.service(5) "Command lines").
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath

from common.state import atomic_write, ensure_dir

REGISTRY_UNIT = "meshctl-registry.service"
DROPIN_NAME = "10-meshctl.conf"
PROXY_UID = 1337  # as Istio: iptables excludes this uid's traffic from interception
PROXY_USER = "meshctl-proxy"  # the system user with that uid, made by `systemd install`
REGISTRY_USER = "meshctl"
OUTBOUND = "127.0.0.1:15001"  # where the interception rules send the app's connections
DNS_PORT = 15053  # where they send its DNS queries: the proxy answers mesh names (proxy/dns)
PROXY_STOP_S = 15  # the proxy drains 5 s (--drain); systemd kills it past this
REGISTRY_STOP_S = 10  # the registry closes its streams and stops in about a second
UNIT_DIR = Path("/etc/systemd/system")

_SERVICE_RE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")  # a DNS label, as the mesh
_UNIT_RE = re.compile(r"[A-Za-z0-9:_.\\@-]{1,247}\.service")  # systemd.unit(5) names
_NEEDS_QUOTES = frozenset(" \t\"'\\;")


class SystemdError(Exception):
    """Installing units failed: the message says what and what to do."""


class _Verbatim(str):
    """A command-line word written as is: it holds a specifier we mean (`%d`)."""


# -- escaping ------------------------------------------------------------------------


def _check(value: str, what: str) -> str:
    if not value or any(c in value for c in "\n\r\0"):
        raise ValueError(f"{what} must be non-empty and on one line, not {value!r}")
    return value


def _quote(word: str) -> str:
    """Double-quote a word if systemd would otherwise split or unescape it."""
    if any(c in _NEEDS_QUOTES for c in word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def _value(value: str, what: str) -> str:
    """A single word of a setting that takes a list (paths, assignments): `%%`, quoted."""
    return _quote(_check(value, what).replace("%", "%%"))


def _text(value: str, what: str) -> str:
    """Free text (Description=): only specifiers are special."""
    return _check(value, what).replace("%", "%%")


def _command(words: Iterable[str]) -> str:
    """An Exec*= command line: `%%` and `$$` so nothing is expanded but what we mean."""
    out: list[str] = []
    for w in words:
        if isinstance(w, _Verbatim):
            out.append(w)
        else:
            word = _check(w, "a command-line word").replace("%", "%%").replace("$", "$$")
            out.append(_quote(word))
    return " ".join(out)


def _abs(path: str, what: str) -> str:
    if not PurePosixPath(path).is_absolute():
        raise ValueError(f"{what} must be an absolute path (systemd needs one), not {path!r}")
    return path


# -- names ---------------------------------------------------------------------------


def check_service(service: str) -> str:
    if not _SERVICE_RE.fullmatch(service):
        raise ValueError(
            f"service {service!r} is not a mesh service name (a DNS label: a-z, 0-9, -)"
        )
    return service


def check_app_unit(unit: str) -> str:
    if not _UNIT_RE.fullmatch(unit):
        raise ValueError(f"app unit {unit!r} is not a service unit name (like orders.service)")
    return unit


def proxy_unit_name(service: str) -> str:
    return f"meshctl-proxy-{check_service(service)}.service"


def dropin_path(app_unit: str) -> str:
    """Where the app's drop-in goes, relative to the unit directory."""
    return f"{check_app_unit(app_unit)}.d/{DROPIN_NAME}"


def _ports(ports: Iterable[int]) -> str:
    ports = sorted(set(ports))
    if not ports or not all(1 <= p <= 65535 for p in ports):
        raise ValueError(f"inbound ports must be one or more of 1-65535, not {ports!r}")
    return ",".join(map(str, ports))


# -- hardening shared by both units ---------------------------------------------------

_HARDENING = """\
# Sandboxing (systemd.exec(5)). Neither process needs a capability: their ports are
# above 1024 and SO_ORIGINAL_DST needs no privilege. An empty bounding set drops them all.
CapabilityBoundingSet=
AmbientCapabilities=
NoNewPrivileges=yes
# The whole file system read-only but the state directory; no /home, a private /tmp.
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
# AF_NETLINK: glibc's getaddrinfo() asks the kernel for local addresses over netlink
# (AI_ADDRCONFIG); without it name resolution fails.
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_NETLINK
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
# No MemoryDenyWriteExecute=: cffi callbacks (used by the cryptography stack) need
# writable-executable memory.
UMask=0077
"""


# -- renderers -----------------------------------------------------------------------


def render_registry_unit(
    *,
    meshctl_bin: str,
    config_dir: str,
    mesh_home: str,
    user: str = REGISTRY_USER,
    listen: str | None = None,
    port: int | None = None,
    sans: Iterable[str] = (),
    memory_max: str = "512M",
) -> str:
    """The registry's unit: a long-running, unprivileged, sandboxed control plane."""
    argv = [
        _abs(meshctl_bin, "meshctl_bin"),
        "registry",
        "--config",
        _abs(config_dir, "config_dir"),
    ]
    if listen is not None:
        argv += ["--listen", listen]
    if port is not None:
        argv += ["--port", str(port)]
    for san in sans:
        argv += ["--san", san]
    return f"""\
# Generated by `meshctl systemd render registry`.
[Unit]
Description=meshctl registry: config store, certificate authority and catalog
# Proxies reach the registry over the network; their joins fail until it listens.
Wants=network-online.target
After=network-online.target

[Service]
# Started means listening: the registry says READY=1 (sd_notify) once its API is bound.
Type=notify
NotifyAccess=main
ExecStart={_command(argv)}
Environment={_value("MESH_HOME=" + _abs(mesh_home, "mesh_home"), "mesh_home")}
# A dedicated system user owns MESH_HOME (with the CA key, mode 0600): never root.
User={_text(user, "user")}
Group={_text(user, "user")}
Restart=always
RestartSec=1
# SIGTERM closes the proxies' streams and stops within about a second.
TimeoutStopSec={REGISTRY_STOP_S}
# The config directory is only read: commands that edit it run as the operator.
ReadWritePaths={_value(mesh_home, "mesh_home")}
MemoryMax={_text(memory_max, "memory_max")}
LimitNOFILE=65536
{_HARDENING}
[Install]
WantedBy=multi-user.target
"""


def render_proxy_unit(
    *,
    service: str,
    version: str | None,
    app_unit: str,
    meshctl_bin: str,
    mesh_home: str,
    registry: str | None,
    token_file: str,
    advertise: str = "auto",
    proxy_user: str = PROXY_USER,
    memory_max: str = "256M",
    notify: bool = True,
) -> str:
    """The proxy's unit: started before `app_unit`, stopped and restarted with it.

    `notify`: the proxy tells systemd it is ready (sd_notify READY=1 once its listeners
    are bound), so "started" means "accepting connections" and the app's first call is
    proxied. With notify=False, started only means the process was executed.
    `registry`: None when the token file holds a join string, which carries the address.
    `advertise`: `auto` finds the address peers dial when the proxy starts (the source
    address of its route towards the registry), so one rendered unit fits every host.
    """
    check_service(service)
    check_app_unit(app_unit)
    argv: list[str] = [_abs(meshctl_bin, "meshctl_bin"), "proxy", "--service", service]
    if version is not None:
        argv += ["--version", version]
    if registry is not None:
        argv += ["--registry", registry]
    # %d is the credentials directory (systemd >= 248), readable by this unit's user only.
    argv += ["--token-file", _Verbatim("%d/join-token"), "--advertise", advertise]
    # The interception rules of the app's drop-in send its connections here.
    argv += ["--outbound", OUTBOUND, "--dns-port", str(DNS_PORT)]
    credential = _check(_abs(token_file, "token_file"), "token_file").replace("%", "%%")
    return f"""\
# Generated by `meshctl systemd render proxy`: the sidecar proxy of {_text(app_unit, "app_unit")}.
[Unit]
Description=meshctl sidecar proxy for {_text(service, "service")} ({_text(app_unit, "app_unit")})
# Ordering. The app must find its proxy listening when it starts, or its first calls are
# refused by the interception rules: Before= (and After= in the app's drop-in) orders
# the two, and Type=notify makes "started" mean "listening".
Before={app_unit}
After=network.target
# PartOf=, not BindsTo=: stopping or restarting the app stops or restarts its proxy,
# but nothing flows the other way. BindsTo={app_unit} would stop the proxy as soon as
# it started, since the app is not yet active then (it starts after the proxy). Starting
# is pulled by the app's drop-in (Wants=), so this unit needs no [Install] section.
PartOf={app_unit}

[Service]
Type={"notify" if notify else "exec"}
NotifyAccess=main
TimeoutStartSec=30
# SIGTERM drains in-flight requests for up to 5 s (--drain), then the proxy exits.
TimeoutStopSec={PROXY_STOP_S}
ExecStart={_command(argv)}
Environment={_value("MESH_HOME=" + _abs(mesh_home, "mesh_home"), "mesh_home")}
# The join string is copied by systemd into a directory only this unit can read (%d), so
# the file itself can stay root-only. Its one-time token is spent at the first join; a
# restart reuses the certificate kept in the state directory. Keep the file: the unit
# still names it.
LoadCredential=join-token:{credential}
# A crash restarts the proxy; the interception rules stay (they belong to the app), so
# meanwhile the app's traffic is refused, never sent around the mesh (fail closed).
Restart=always
RestartSec=1
# The interception rules exclude this user's uid (--proxy-uid in the app's drop-in),
# which is how the proxy's own connections leave without being sent back to itself.
# systemd needs the user to exist: `meshctl systemd install` creates it (uid 1337 if free).
User={_text(proxy_user, "proxy_user")}
Group={_text(proxy_user, "proxy_user")}
ReadWritePaths={_value(mesh_home, "mesh_home")}
MemoryMax={_text(memory_max, "memory_max")}
# One proxy holds the app's connections and as many upstream ones.
LimitNOFILE=65536
{_HARDENING}"""


def render_app_dropin(
    *,
    service: str,
    app_unit: str,
    meshctl_bin: str,
    inbound_ports: Iterable[int],
    proxy_uid: int = PROXY_UID,
    exclude_inbound_ports: Iterable[int] = (),
    hidden: Iterable[str] = (),
) -> str:
    """The drop-in that meshes `app_unit`: its proxy first, interception for its lifetime.

    `hidden`: paths the app must not see at all (the proxy's state directory with its key
    and SVID, the join token), whatever user the app unit runs as, root included.

    Every inbound port is captured (Istio's includeInboundPorts "*"), not only the app's
    declared `inbound_ports`: a listener the app opens on another port must not answer in
    plaintext. `exclude_inbound_ports` (Istio's excludeInboundPorts) are left reachable.
    """
    proxy = proxy_unit_name(service)
    base = [_abs(meshctl_bin, "meshctl_bin"), "intercept"]
    declared = _ports(inbound_ports)
    excluded = _ports(exclude_inbound_ports) if exclude_inbound_ports else ""
    install = [
        *base,
        "install",
        "--service",
        service,
        "--proxy-uid",
        str(proxy_uid),
        "--inbound-ports",
        "*",
        *(["--exclude-inbound-ports", excluded] if excluded else []),
        # The app's port 53 to the proxy: a VM has no other resolver for mesh names.
        "--dns",
        "--dns-port",
        str(DNS_PORT),
    ]
    remove = [*base, "remove", "--service", service]
    return f"""\
# Generated by `meshctl systemd render proxy`: meshes {_text(app_unit, "app_unit")} with {proxy}.
[Unit]
# Wants=, not Requires=/BindsTo=: a proxy that fails or is stopped does not take the app
# down with it. The app keeps running, and its traffic fails closed (the interception
# rules below stay), which is the state to alert on, not to hide by stopping the app.
Wants={proxy}
After={proxy}

[Service]
# `+`: run with full privileges whatever the app's User= and sandbox are (iptables needs
# CAP_NET_ADMIN). Installed before the app starts, so its first connection is proxied.
# IPv4 and IPv6; inbound, every port (the app declares {declared}), not only those.
ExecStartPre=+{_command(install)}
# `-`: a failed removal must not fail the stop. Removed only once the app has stopped:
# the rules live exactly as long as the app, not as long as the proxy.
ExecStopPost=-+{_command(remove)}
{_hide(hidden)}"""


def _hide(paths: Iterable[str]) -> str:
    """InaccessiblePaths= for the app: workloads are not trusted (SECURITY.md), and an app
    unit may well run as root. `-`: a path that does not exist yet is no error. The `+`
    commands above run outside this sandbox, so interception is unaffected."""
    listed = " ".join(f"-{_value(_abs(p, 'hidden path'), 'hidden path')}" for p in paths)
    if not listed:
        return ""
    return (
        "# The proxy's key, SVID and join token are not the app's to read, even as root.\n"
        f"InaccessiblePaths={listed}\n"
    )


def render_proxy_units(
    *,
    service: str,
    version: str | None,
    app_unit: str,
    meshctl_bin: str,
    mesh_home: str,
    registry: str | None,
    token_file: str,
    inbound_ports: Iterable[int],
    advertise: str = "auto",
    proxy_user: str = PROXY_USER,
    proxy_uid: int = PROXY_UID,
    memory_max: str = "256M",
    notify: bool = True,
    exclude_inbound_ports: Iterable[int] = (),
) -> dict[str, str]:
    """Everything that meshes `app_unit`: {path relative to the unit directory: text}."""
    return {
        proxy_unit_name(service): render_proxy_unit(
            service=service,
            version=version,
            app_unit=app_unit,
            meshctl_bin=meshctl_bin,
            mesh_home=mesh_home,
            registry=registry,
            token_file=token_file,
            advertise=advertise,
            proxy_user=proxy_user,
            memory_max=memory_max,
            notify=notify,
        ),
        dropin_path(app_unit): render_app_dropin(
            service=service,
            app_unit=app_unit,
            meshctl_bin=meshctl_bin,
            inbound_ports=inbound_ports,
            proxy_uid=proxy_uid,
            exclude_inbound_ports=exclude_inbound_ports,
            hidden=(mesh_home, token_file),
        ),
    }


# -- installing ----------------------------------------------------------------------


def systemd_booted() -> bool:
    """Whether systemd is PID 1 here: the test sd_booted(3) documents."""
    return Path("/run/systemd/system").is_dir()


def _passwd(root: Path) -> list[list[str]]:
    try:
        text = (root / "etc" / "passwd").read_text()
    except FileNotFoundError:
        return []
    return [line.split(":") for line in text.splitlines() if line.count(":") >= 6]


def ensure_system_user(
    name: str, uid: int | None = None, root: Path = Path("/")
) -> tuple[int, int]:
    """The (uid, gid) of system user `name`, created with `useradd` if it is missing: with
    `uid` if that is free, else whichever the system picks. `root`: another /etc (tests,
    images), passed to useradd's --prefix."""
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,30}", name):
        raise ValueError(f"user {name!r} is not a valid system user name")

    def find() -> tuple[int, int] | None:
        for fields in _passwd(root):
            if fields[0] == name:
                return int(fields[2]), int(fields[3])
        return None

    found = find()
    if found is not None:
        return found
    argv = ["useradd", "--system", "--no-create-home", "--user-group",
            "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin",
            "--comment", "meshctl"]  # fmt: skip
    if uid is not None and all(int(f[2]) != uid for f in _passwd(root)):
        argv += ["--uid", str(uid)]
    if root != Path("/"):
        argv += ["--prefix", str(root)]
    try:
        res = subprocess.run([*argv, name], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SystemdError(f"cannot create user {name}: {e} (create it with useradd)") from e
    found = find()
    if res.returncode != 0 or found is None:
        raise SystemdError(
            f"cannot create user {name}: {res.stderr.strip() or 'useradd failed'}; create it "
            f"with `useradd --system --no-create-home --user-group --shell /usr/sbin/nologin "
            f"{name}`"
        )
    return found


def prepare_state_dir(path: Path, uid: int, gid: int) -> None:
    """Create a unit's state directory, 0700 and owned by its user, if it is missing.

    It must exist before the unit starts: systemd cannot set up ReadWritePaths= for a
    missing path (the unit fails with 226/NAMESPACE). An existing directory is left as
    the operator made it.
    """
    if path.exists():
        return
    try:
        ensure_dir(path)
        os.chown(path, uid, gid)
    except OSError as e:
        raise SystemdError(f"cannot create {path}: {e.strerror}") from e


def install_units(
    units: Mapping[str, str], unit_dir: Path = UNIT_DIR, *, reload: bool = True
) -> list[Path]:
    """Write `units` (relative path -> text) under `unit_dir` atomically, then daemon-reload.

    With `reload`, systemd must be running: checked first, so nothing is written where
    it would not be picked up.
    """
    if reload and not systemd_booted():
        raise SystemdError(
            "systemd is not running on this host (no /run/systemd/system), so the units "
            "would never be loaded: write them with `meshctl systemd render --out DIR` "
            "and copy them to a systemd host"
        )
    written = []
    for rel, text in units.items():
        relpath = PurePosixPath(rel)
        if relpath.is_absolute() or ".." in relpath.parts:
            raise ValueError(f"unit path {rel!r} must be relative to the unit directory")
        path = unit_dir / relpath
        try:
            atomic_write(path, text, mode=0o644)
        except OSError as e:
            raise SystemdError(f"cannot write {path}: {e.strerror} (install needs root)") from e
        written.append(path)
    if reload:
        try:
            res = subprocess.run(
                ["systemctl", "daemon-reload"], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise SystemdError(f"systemctl daemon-reload failed: {e}") from e
        if res.returncode != 0:
            raise SystemdError(f"systemctl daemon-reload failed: {res.stderr.strip()}")
    return written
