"""Ports relayed as opaque TCP (`tcp`, and Istio's `http2`, `grpc`, `grpc-web`): accepted by
their Istio names, and an HTTP route that would apply to one is a positioned warning in
`meshctl validate`, never silently ignored (issue 21)."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from meshctl.commands.validate import validate
from registry.config import load_directory
from tests.registry.config.conftest import replace_in

app = typer.Typer()
app.command()(validate)
app.command("noop")(lambda: None)  # two commands, so `validate` is a sub-command as in meshctl

ORDERS_PORT = "  orders:\n    ports:\n      - {port: 8080, protocol: http, name: http}"


def _orders_ports(directory: Path, ports: str) -> None:
    replace_in(directory, "mesh.yaml", ORDERS_PORT, f"  orders:\n    ports:\n{ports}")


@pytest.mark.parametrize("declared", ["grpc", "http2", "grpc-web", "GRPC"])
def test_istio_http2_protocols_are_accepted_and_relayed_as_tcp(
    example_copy: Path, declared: str
) -> None:
    _orders_ports(example_copy, f"      - {{port: 8080, protocol: {declared}, name: api}}")
    result = load_directory(example_copy)
    assert result.config is not None and not result.errors, result.errors
    orders = result.config.service("orders")
    assert orders is not None
    (port,) = orders.ports
    assert port.protocol == declared.lower()
    assert port.relayed_as_tcp and port.carried_as == "tcp"


def test_validate_warns_at_the_http_entry_for_a_grpc_port(example_copy: Path) -> None:
    _orders_ports(example_copy, "      - {port: 8080, protocol: grpc, name: api}")
    result = CliRunner().invoke(app, ["validate", str(example_copy)])
    assert result.exit_code == 0, result.output
    assert "1 warning(s)" in result.stdout
    (line,) = result.stderr.splitlines()
    # orders.yaml's first `http` entry (`- name: canary`) is at line 10, column 7.
    assert line.startswith("orders.yaml:10:7: warning: spec.http[0]: applies to port 8080 of "
                           "`orders`, which is relayed as opaque TCP (declared grpc: HTTP/2 is "
                           "not proxied per request yet)"), line
    assert "retries" in line and "`tcp` entry" in line


def test_validate_warns_for_a_tcp_port(example_copy: Path) -> None:
    _orders_ports(example_copy, "      - {port: 8080, protocol: tcp, name: kv}")
    result = load_directory(example_copy)
    assert result.ok
    (w,) = result.warnings
    assert (w.file, w.line, w.column, w.path) == ("orders.yaml", 10, 7, "spec.http[0]")
    assert "relayed as opaque TCP (declared tcp)" in w.message


def test_only_the_ports_a_route_applies_to_are_warned(example_copy: Path) -> None:
    _orders_ports(example_copy, "      - {port: 8080, protocol: http, name: http}\n"
                                "      - {port: 9090, protocol: grpc, name: api}")
    result = load_directory(example_copy)
    assert result.ok
    assert [(w.line, w.message.split(",")[0]) for w in result.warnings] == [
        (10, "applies to port 9090 of `orders`")]
    # A route that matches only the HTTP port applies to no opaque one: no warning.
    replace_in(example_copy, "orders.yaml", "    - name: canary\n",
               "    - name: canary\n      match: [{port: 8080}]\n")
    assert load_directory(example_copy).warnings == ()


def test_http_ports_have_no_warning(example_copy: Path) -> None:
    result = load_directory(example_copy)
    assert result.ok and result.warnings == ()
