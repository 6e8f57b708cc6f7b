"""A real etcd for tests: Debian's etcd-server, 1 or 3 members on 127.0.0.1, data in tmp."""

from __future__ import annotations

import shutil
import signal
import ssl
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from meshctl.launch.local import free_port
from registry.ca import CertificateAuthority, SpiffeId
from tests.integration.harness import Proc, wait_until

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


@dataclass(frozen=True)
class Tls:
    """etcd serves TLS with `cert`/`key` and demands client certificates signed by `ca`."""

    ca: Path
    cert: Path
    key: Path

    @classmethod
    def make(cls, where: Path) -> Tls:
        """A CA (the registry's own CA code) and one certificate for 127.0.0.1, usable for
        both ends (its EKU has serverAuth and clientAuth)."""
        ca = CertificateAuthority.load_or_create(where, "etcd.test")
        cert, key = ca.issue_server_cert(SpiffeId.for_service("etcd.test", "ns", "etcd"),
                                         ["localhost"], ["127.0.0.1"], 3600)  # fmt: skip
        (where / "etcd.crt").write_bytes(cert)
        (where / "etcd.key").write_bytes(key)
        return cls(where / "ca.crt", where / "etcd.crt", where / "etcd.key")


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    proc: Proc | None = None
    tls: Tls | None = None

    @property
    def client_url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    def healthy(self) -> bool:
        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=str(self.tls.ca))
            ctx.load_cert_chain(self.tls.cert, self.tls.key)
        with urllib.request.urlopen(self.client_url + "/health", timeout=2, context=ctx) as r:
            return b'"true"' in r.read()


@dataclass
class EtcdCluster:
    """`size` members forming one cluster; `store` is the registry's --store value."""

    tmp: Path
    size: int = 1
    tls: Tls | None = None
    members: list[Member] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.members = [Member(f"m{i}", free_port(), free_port(), tls=self.tls)
                        for i in range(self.size)]  # fmt: skip

    @property
    def store(self) -> str:
        scheme = "etcds" if self.tls else "etcd"
        return f"{scheme}://" + ",".join(f"127.0.0.1:{m.client_port}" for m in self.members)

    def start(self) -> EtcdCluster:
        initial = ",".join(f"{m.name}=http://127.0.0.1:{m.peer_port}" for m in self.members)
        for m in self.members:
            self.start_member(m, initial)
        for m in self.members:
            wait_until(lambda m=m: m.proc.running() and m.healthy(), timeout=30,
                       what=f"etcd member {m.name} healthy")  # fmt: skip
        return self

    def start_member(self, m: Member, initial: str) -> None:
        argv = [
            ETCD, "--name", m.name, "--data-dir", str(self.tmp / f"etcd-{m.name}"),
            "--listen-client-urls", m.client_url, "--advertise-client-urls", m.client_url,
            "--listen-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{m.peer_port}",
            "--initial-cluster", initial, "--initial-cluster-state", "new",
            "--initial-cluster-token", f"t{self.members[0].client_port}",
            # Fast elections among members on one host (defaults: 100 ms, 1 s).
            "--heartbeat-interval", "50", "--election-timeout", "500",
        ]  # fmt: skip
        if m.tls:
            argv += ["--cert-file", str(m.tls.cert), "--key-file", str(m.tls.key),
                     "--client-cert-auth", "--trusted-ca-file", str(m.tls.ca)]  # fmt: skip
        m.proc = Proc(argv, {"PATH": "/usr/bin:/bin"}, self.tmp / f"etcd-{m.name}.log").start()

    def kill(self, m: Member) -> None:
        assert m.proc is not None
        m.proc.stop(signal.SIGKILL)

    def close(self) -> None:
        for m in self.members:
            if m.proc is not None:
                m.proc.stop()
