"""The compose and docker runtimes' pure parts: a compose file read into mesh services,
`docker inspect` output turned into workloads, project names, and the errors a user meets
before anything starts (a compose file that does not parse, Compose not installed)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from meshctl.launch import compose as cm
from meshctl.launch import docker as dm
from meshctl.launch.local import choose_runtime
from meshctl.launch.plan import DockerTarget
from meshctl.launch.procs import LaunchError
from registry.config import MeshConfig, load_directory
from tests.commands.support import EXAMPLE, mesh_home
from tests.example import copy_config

COMPOSE = EXAMPLE / "docker-compose.yml"
URL = "https://172.18.0.1:15012"


def _config() -> MeshConfig:
    result = load_directory(EXAMPLE / "mesh")
    assert result.config is not None, result.errors
    return result.config


def _attrs(name: str, compose_service: str, labels: dict[str, str] | None = None,
           ip: str = "172.18.0.5", pid: int = 4242, running: bool = True,
           project: str = "shop") -> dict[str, Any]:  # fmt: skip
    return {
        "Id": f"id-{name}",
        "Name": f"/{name}",
        "State": {"Running": running, "Pid": pid if running else 0},
        "Config": {"Labels": {cm.PROJECT_LABEL: project,
                              cm.COMPOSE_SERVICE_LABEL: compose_service, **(labels or {})}},
        "NetworkSettings": {"Networks": {"shop_shop": {"IPAddress": ip}}},
    }  # fmt: skip


def _target() -> DockerTarget:
    target, compose = dm.load_target(_config(), COMPOSE)
    assert compose is not None
    return DockerTarget(project="shop", network="shop_shop", services=target.services,
                        ports=target.ports)  # fmt: skip


def test_the_example_compose_file_names_every_mesh_service() -> None:
    f = cm.load_compose(COMPOSE)
    got = {s.name: (s.mesh_service, s.version, s.ports, s.named) for s in f.services}
    assert got == {
        "frontend": ("frontend", "v1", (8080,), True),
        "orders-v1": ("orders", "v1", (8080,), True),
        "orders-v2": ("orders", "v2", (8080,), True),
        "payments": ("payments", "v1", (8080,), True),
        "inventory": ("inventory", "v1", (8080,), True),
    }
    assert {s.image for s in f.services} == {"meshctl-example:latest"}


def test_x_mesh_and_list_labels_and_guessed_names(tmp_path: Path) -> None:
    text = """
services:
  a:
    image: x
    labels: ["mesh.service=orders", "mesh.version=v3"]
    ports: ["127.0.0.1:9000:8080/tcp", {target: 9090, published: 9091}]
  b:
    image: x
    x-mesh: {service: payments, version: v2}
  c:
    image: x
  db:
    image: x
x-mesh:
  services:
    c: {service: inventory}
"""
    f = cm.parse_compose(text, tmp_path / "compose.yaml")
    got = {s.name: (s.mesh_service, s.version, s.named, s.ports) for s in f.services}
    assert got == {
        "a": ("orders", "v3", True, (8080, 9090)),
        "b": ("payments", "v2", True, ()),
        "c": ("inventory", "v1", True, ()),
        "db": ("db", "v1", False, ()),  # guessed: meshed only if mesh.yaml has `db`
    }


def test_a_compose_file_that_does_not_parse_says_where(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    with pytest.raises(LaunchError, match=r"docker-compose\.yml:\d+:\d+: the compose file "
                       r"does not parse \(.*\): fix it .*nothing was started"):  # fmt: skip
        cm.parse_compose("services:\n  a:\n  image: [x\n", bad)
    with pytest.raises(LaunchError, match="no `services:`"):
        cm.parse_compose("just: text\n", bad)


def test_a_label_naming_a_service_mesh_yaml_lacks_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "docker-compose.yml"
    f.write_text("services:\n  a:\n    image: x\n    labels: {mesh.service: billing}\n")
    with pytest.raises(LaunchError, match=r"'billing', which mesh\.yaml does not define"):
        dm.load_target(_config(), f)


def test_project_names_as_compose_makes_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPOSE_PROJECT_NAME", raising=False)
    assert cm.project_name(COMPOSE) == "compose"  # the file's directory
    assert cm.project_name(COMPOSE, "My.Shop") == "myshop"
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", "Shop_2")
    assert cm.project_name(COMPOSE) == "shop_2"
    with pytest.raises(LaunchError, match="--project"):
        cm.project_name(COMPOSE, "...")


def test_compose_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cm.shutil, "which", lambda name: None)
    with pytest.raises(LaunchError, match="Docker Compose is not installed: `apt-get install"):
        cm.compose_command()


def test_container_to_workload() -> None:
    target = _target()
    w = dm.container_workload(
        _attrs("shop_orders-v2_1", "orders-v2", {"mesh.service": "orders", "mesh.version": "v2"}),
        target, URL,
    )  # fmt: skip
    assert w is not None
    assert (w.name, w.service, w.version, w.address, w.pid) == (
        "shop_orders-v2_1", "orders", "v2", "172.18.0.5", 4242)  # fmt: skip
    assert w.container == "id-shop_orders-v2_1" and w.netns is None and w.app_argv == ()
    assert w.inbound_ports == (8080,)
    args = list(w.proxy_args)
    assert args[args.index("--advertise") + 1] == "172.18.0.5"  # what Docker's DNS answers
    assert args[args.index("--registry") + 1] == URL
    assert args[args.index("--proxy-id") + 1] == "shop_orders-v2_1"


def test_containers_left_alone() -> None:
    target = _target()
    assert dm.container_workload(_attrs("x", "frontend", running=False), target, URL) is None
    assert dm.container_workload(_attrs("x", "frontend", project="other"), target, URL) is None
    assert dm.container_workload(_attrs("x", "redis"), target, URL) is None  # not in mesh.yaml
    # compose service known from the file, no labels on the container: the file says
    assert dm.container_workload(_attrs("x", "payments"), target, URL) is not None


def test_labels_only_target_meshes_labelled_containers_of_any_project() -> None:
    target = DockerTarget(ports=(("orders", (8080,)),))
    labelled = _attrs("o", "", {"mesh.service": "orders"}, project="")
    assert dm.mesh_identity(labelled["Config"]["Labels"], target) == ("orders", "v1")
    assert dm.container_workload(labelled, target, URL) is not None


def test_auto_runtime_is_local_for_a_config_dir(tmp_path: Path) -> None:
    assert choose_runtime("auto", EXAMPLE / "mesh") == "local"  # no compose file there
    assert dm.compose_file_for(EXAMPLE) == COMPOSE.resolve()
    assert dm.compose_file_for(COMPOSE) == COMPOSE.resolve()
    assert dm.compose_file_for(tmp_path) is None


def test_up_with_a_bad_compose_file_starts_nothing(tmp_path: Path) -> None:
    copy_config(tmp_path / "mesh")
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  frontend:\n    image: [x\n")
    with mesh_home() as cli:
        done = cli.run("up", str(bad), "--runtime", "docker", check=False)
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "does not parse" in lines[0] and f"{bad}:" in lines[0]
        assert cli.processes() == []
        assert not (cli.home / "launch" / "plan.json").exists()


def test_published_service_ports_are_served_as_ingress() -> None:
    attrs = _attrs("shop_frontend_1", "frontend")
    attrs["NetworkSettings"] = {
        "Networks": {"shop_shop": {"IPAddress": "172.18.0.5", "Gateway": "172.18.0.1",
                                   "IPPrefixLen": 16}},
        "Ports": {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": "18080"},
                               {"HostIp": "::1", "HostPort": "18080"}],
                  "9999/tcp": [{"HostIp": "0.0.0.0", "HostPort": "19999"}],  # not a service port
                  "8080/udp": [{"HostIp": "", "HostPort": "18080"}],
                  "7070/tcp": None},
    }  # fmt: skip
    w = dm.container_workload(attrs, _target(), URL)
    assert w is not None
    assert w.published == ((8080, "127.0.0.1:18080"), (8080, "[::1]:18080"))
    assert w.published_from == "172.18.0.1"
    assert w.published_net == "172.18.0.0/16"
    assert w.published_open_ports() == ()  # loopback bindings only: from the host alone
    wide = replace(w, published=((8080, "0.0.0.0:8080"), (8081, "[::1]:8081")))
    assert wide.published_open_ports() == (8080,)
    assert w.proxy_args[-2:] == ("--published", "0.0.0.0:15007")
    plain = dm.container_workload(_attrs("shop_frontend_1", "frontend"), _target(), URL)
    assert plain is not None and plain.published == () and "--published" not in plain.proxy_args
