"""`up` and mesh.yaml's `registry.address`: a registry that lives elsewhere is never started
here as a second one; `--join` files are checked before anything starts."""

from __future__ import annotations

from pathlib import Path

from tests.commands.support import Cli, copy_example, mesh_home

ELSEWHERE = "192.0.2.7"  # TEST-NET-1 (RFC 5737): never an address of this host


def _nothing_running(cli: Cli) -> None:
    assert cli.processes() == []
    assert not (cli.home / "launch" / "plan.json").exists()
    assert not (cli.home / "registry").exists(), "no registry, no CA"
    assert not (cli.home / "joined.json").exists()


def _registry_elsewhere(tmp_path: Path) -> Path:
    config = copy_example(tmp_path)
    mesh = config / "mesh.yaml"
    mesh.write_text(mesh.read_text().replace(
        "certificateTTL: 24h\n", f"certificateTTL: 24h\nregistry: {{address: {ELSEWHERE}}}\n"))
    return config


def test_up_refuses_a_second_registry_when_mesh_yaml_says_it_is_elsewhere(
    tmp_path: Path,
) -> None:
    config = _registry_elsewhere(tmp_path)
    with mesh_home() as cli:
        done = cli.run("up", str(config), "--runtime", "local", check=False)
        assert done.returncode == 1
        assert f"registry is at {ELSEWHERE}, which is not this host" in done.stderr
        assert "--join FILE" in done.stderr and "meshctl token create" in done.stderr
        _nothing_running(cli)


def test_join_file_without_a_line_for_a_service_starts_nothing(tmp_path: Path) -> None:
    from registry.ca.joinstring import JoinString

    config = _registry_elsewhere(tmp_path)
    join = tmp_path / "host.join"
    pin = "ab" * 32
    join.write_text(JoinString("mtok.x", (f"https://{ELSEWHERE}:15012",), pin, "orders")
                    .encode() + "\n")
    with mesh_home() as cli:
        done = cli.run("up", str(config), "--runtime", "local", "--join", str(join),
                       check=False)  # fmt: skip
        assert done.returncode == 1
        assert "has no join string for frontend, inventory, payments" in done.stderr
        assert "meshctl token create frontend inventory orders payments" in done.stderr
        _nothing_running(cli)


def test_join_file_with_a_bare_token_says_how_to_make_one(tmp_path: Path) -> None:
    config = _registry_elsewhere(tmp_path)
    join = tmp_path / "host.join"
    join.write_text("# made by hand\nmtok.0123456789abcdef.secret\n")
    with mesh_home() as cli:
        done = cli.run("up", str(config), "--runtime", "local", "--join", str(join),
                       check=False)  # fmt: skip
        assert done.returncode == 1
        assert f"{join}:2: not a join string naming its service" in done.stderr
        _nothing_running(cli)


def test_status_on_a_joined_host_never_says_no_mesh_is_running() -> None:
    import json

    with mesh_home() as cli:
        cli.home.mkdir(parents=True, exist_ok=True)
        (cli.home / "joined.json").write_text(json.dumps(
            {"url": "https://127.0.0.1:9", "ca_sha256": "ab" * 32, "services": ["orders"]}))
        done = cli.run("status", check=False)
        assert done.returncode == 1
        assert "no mesh is running" not in done.stderr
        assert "registry not answering at https://127.0.0.1:9 (this host joined it" \
            in done.stderr, done.stderr


def test_one_time_join_string_for_a_service_with_several_workloads_is_refused(
    tmp_path: Path,
) -> None:
    from registry.ca.joinstring import JoinString

    config = _registry_elsewhere(tmp_path)  # orders has v1 and v2: two proxies here
    join = tmp_path / "host.join"
    lines = [JoinString(f"mtok.{s}", (f"https://{ELSEWHERE}:15012",), "ab" * 32, s,
                        reusable=s != "orders").encode()
             for s in ("frontend", "inventory", "orders", "payments")]
    join.write_text("\n".join(lines) + "\n")
    with mesh_home() as cli:
        done = cli.run("up", str(config), "--runtime", "local", "--join", str(join),
                       check=False)  # fmt: skip
        assert done.returncode == 1
        assert "orders runs several workloads here but the join string is one-time" \
            in done.stderr, done.stderr
        assert "meshctl token create orders --reusable --ttl 24h" in done.stderr
        _nothing_running(cli)
