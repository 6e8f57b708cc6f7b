"""kind: Canary (meshctl.dev/v1alpha1) in the config directory: read, defaults, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import load_directory
from registry.config.model import CanaryPolicy, MeshConfig

CANARY = """\
# orders moves to v2 in three steps.
apiVersion: meshctl.dev/v1alpha1
kind: Canary
metadata:
  name: orders
spec:
  service: orders
  to: v2
  analysis:
    steps: [10, 50, 100]
    interval: 1s
    successRate: 95
    p99: 1s
    minRequests: 5
    failures: 2
"""


def test_a_canary_is_read(example_copy: Path) -> None:
    (example_copy / "canary.yaml").write_text(CANARY)
    result = load_directory(example_copy)
    assert result.ok, result.errors
    assert result.config is not None
    (c,) = result.config.canaries
    assert (c.name, c.service, c.from_, c.to, c.route) == ("orders", "orders", None, "v2", None)
    assert c.policy == CanaryPolicy((10, 50, 100), 1.0, 95.0, 1000.0, 5, 2)
    assert (c.source.file, c.source.line) == ("canary.yaml", 2)
    assert MeshConfig.from_wire(result.config.to_wire()) == result.config


def test_defaults_are_flaggers(example_copy: Path) -> None:
    (example_copy / "canary.yaml").write_text(CANARY.split("  to: v2")[0])
    result = load_directory(example_copy)
    assert result.config is not None, result.errors
    assert result.config.canaries[0].policy == CanaryPolicy()
    assert CanaryPolicy().steps == (5, 10, 25, 50, 100) and CanaryPolicy().interval_s == 30.0


@pytest.mark.parametrize(("old", "new", "error"), [
    ("to: v2", "to: v3", "canary.yaml:8:7: spec.to: unknown subset `v3` of `orders`"),
    ("service: orders", "service: ordrs", "canary.yaml:7:12: spec.service: unknown service"),
    ("[10, 50, 100]", "[50, 10]", "canary.yaml:10:12: spec.analysis.steps: steps [50, 10] must "
                                  "rise"),
    ("[10, 50, 100]", "[10, 101]", "canary.yaml:10:17: spec.analysis.steps[1]: weight 101 is "
                                   "outside 1..100"),
    ("interval: 1s", "interval: 1", "canary.yaml:11:15: spec.analysis.interval: duration 1 has "
                                    "no unit"),
    ("successRate: 95", "successRate: 120", "canary.yaml:12:18: spec.analysis.successRate: "
                                            "successRate 120 is not a percent"),
    ("failures: 2", "failures: 0", "canary.yaml:15:15: spec.analysis.failures: failures 0 is "
                                   "outside 1..1000"),
    ("failures: 2", "threshold: 2", "canary.yaml:15:5: spec.analysis.threshold: unknown field"),
    ("meshctl.dev/v1alpha1", "flagger.app/v1beta1", "canary.yaml:2:13: apiVersion: apiVersion "
                                                    "`flagger.app/v1beta1` is not supported for "
                                                    "Canary: use meshctl.dev/v1alpha1"),
])
def test_errors_say_where(example_copy: Path, old: str, new: str, error: str) -> None:
    (example_copy / "canary.yaml").write_text(CANARY.replace(old, new))
    result = load_directory(example_copy)
    assert result.config is None
    assert any(str(e).startswith(error) for e in result.errors), result.errors


def test_two_canaries_for_one_service(example_copy: Path) -> None:
    (example_copy / "canary.yaml").write_text(
        CANARY + "---\n" + CANARY.replace("name: orders", "name: orders-again"))
    errors = [str(e) for e in load_directory(example_copy).errors]
    assert any("a second Canary for `orders`" in e for e in errors), errors


def test_validate_summary_names_the_canary(example_copy: Path) -> None:
    from registry.config import summary_lines

    (example_copy / "canary.yaml").write_text(CANARY)
    config = load_directory(example_copy).config
    assert config is not None
    assert summary_lines(config)[-1] == ("Canary orders: orders to v2, steps 10,50,100 every 1s, "
                                         "rollback after 2 failed check(s)")
