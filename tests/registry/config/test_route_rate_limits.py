"""mesh.yaml `routeRateLimits`: parsed into the model, route names checked against the
service's VirtualService with a positioned error."""

from __future__ import annotations

from pathlib import Path

from registry.config import MeshConfig, load_directory
from registry.config.mesh_file import check_route_rate_limits
from registry.config.model import RateLimit
from tests.registry.config.conftest import replace_in

ORDERS = "  orders:\n    ports:\n"


def _with_limits(directory: Path, limits: str) -> None:
    replace_in(directory, "mesh.yaml", ORDERS,
               f"  orders:\n    routeRateLimits: {limits}\n    ports:\n")


def _errors(directory: Path) -> list[str]:
    """The route-name diagnostics, whether or not the loader runs the check itself."""
    result = load_directory(directory)
    if result.config is None:
        return [str(e) for e in result.errors]
    config = result.config
    return [str(e) for e in check_route_rate_limits(config.services, config.virtual_services)]


def test_route_rate_limits_are_parsed(example_copy: Path) -> None:
    _with_limits(example_copy, "{canary: {requestsPerUnit: 5, unit: minute, burst: 7}}")
    result = load_directory(example_copy)
    assert result.ok and result.config is not None
    orders = result.config.service("orders")
    assert orders is not None
    (limit,) = orders.route_rate_limits
    assert (limit.route, limit.limit) == ("canary", RateLimit(5, "minute", 7))
    assert (limit.source.file, limit.source.line) == ("mesh.yaml", 16)
    assert check_route_rate_limits(result.config.services, result.config.virtual_services) == []
    # The snapshot crosses the wire to the proxies unchanged.
    assert MeshConfig.from_wire(result.config.to_wire()) == result.config


def test_burst_defaults_to_requests_per_unit(example_copy: Path) -> None:
    _with_limits(example_copy, "{canary: {requestsPerUnit: 3}}")
    config = load_directory(example_copy).config
    assert config is not None
    orders = config.service("orders")
    assert orders is not None
    assert orders.route_rate_limits[0].limit == RateLimit(3, "second", 3)


def test_unknown_route_names_the_known_routes(example_copy: Path) -> None:
    _with_limits(example_copy, "{canery: {requestsPerUnit: 5}}")
    assert _errors(example_copy) == [
        "mesh.yaml:16:23: services.orders.routeRateLimits.canery: unknown route `canery`: "
        "VirtualService `orders` (orders.yaml:2:1) names these http routes for `orders`: "
        "`canary`"
    ]


def test_a_service_without_virtual_service_has_no_routes(example_copy: Path) -> None:
    replace_in(example_copy, "mesh.yaml", "  inventory:\n    ports:\n",
               "  inventory:\n    routeRateLimits: {main: {requestsPerUnit: 5}}\n    ports:\n")
    errors = _errors(example_copy)
    assert len(errors) == 1
    assert "services.inventory.routeRateLimits.main: route `main` is not defined: " \
        "no VirtualService for `inventory`" in errors[0]


def test_bad_limit_fields_are_positioned(example_copy: Path) -> None:
    _with_limits(example_copy, "{canary: {requestsPerUnit: 0, brust: 2}}")
    errors = [str(e) for e in load_directory(example_copy).errors]
    assert any("services.orders.routeRateLimits.canary.requestsPerUnit" in e for e in errors)
    assert any("unknown field `brust` (did you mean `burst`?)" in e for e in errors)
