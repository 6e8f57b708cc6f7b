"""mesh.yaml `user:` (who a local app runs as): accepted forms, and each refusal with its
exact file:line:column. Names are resolved on the host at `up` (tests/launch/test_users.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.config import load_directory
from tests.registry.config.conftest import replace_in

PAYMENTS = '"--service", "payments", "--version", "v1"]'


def _with_user(directory: Path, user: str) -> list[str]:
    replace_in(directory, "mesh.yaml", PAYMENTS, f"{PAYMENTS}\n        user: {user}")
    result = load_directory(directory)
    return [str(e) for e in result.errors]


@pytest.mark.parametrize(
    ("text", "want"),
    [("app", "app"), ('"1000"', "1000"), ("1000", "1000"), ("app:staff", "app:staff"),
     ('"4242:4242"', "4242:4242"), ("_svc-1.x", "_svc-1.x")],
)  # fmt: skip
def test_accepted_forms(example_copy: Path, text: str, want: str) -> None:
    assert _with_user(example_copy, text) == []
    cfg = load_directory(example_copy).config
    assert cfg is not None
    payments = next(s for s in cfg.services if s.name == "payments")
    (w,) = payments.workloads
    assert w.user == want
    assert w.user_source is not None and str(w.user_source).endswith("mesh.yaml:32:15")
    others = [w for s in cfg.services if s.name != "payments" for w in s.workloads]
    assert all(w.user == "" and w.user_source is None for w in others)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("root", "user `root` runs the app as root (id 0): workloads are not trusted"),
        ("0", "user `0` runs the app as root (id 0)"),
        ('"app:0"', "user `app:0` runs the app as root (id 0)"),
        ("1337", "user `1337`: id 1337 is the proxies'"),
        ('"app:1337"', "user `app:1337`: id 1337 is the proxies'"),
        ("App", "user `App`: give a user name or uid"),
        ('"a b"', "user `a b`: give a user name or uid"),
        ('"1:2:3"', "user `1:2:3`: give a user name or uid"),
        ("[app]", "expected a string, got a list"),
    ],
)
def test_refused_with_position(example_copy: Path, text: str, message: str) -> None:
    errors = _with_user(example_copy, text)
    assert len(errors) == 1, errors
    assert errors[0].startswith("mesh.yaml:32:15: services.payments.workloads[0].user: ")
    assert message in errors[0], errors[0]


def test_user_needs_a_command(example_copy: Path) -> None:
    replace_in(example_copy, "mesh.yaml",
               'command: ["python3", "apps/shop.py", "--service", "payments", "--version", "v1"]',
               "image: shop:latest\n        user: app")  # fmt: skip
    errors = [str(e) for e in load_directory(example_copy).errors]
    assert len(errors) == 1, errors
    assert errors[0].startswith("mesh.yaml:32:9: services.payments.workloads[0].user: ")
    assert "a container runs as its image's or its compose service's `user:`" in errors[0]


def test_a_snapshot_saved_before_user_existed_still_loads(example_copy: Path) -> None:
    """The registry restores its last snapshot from disk: one written by an older version
    has no `user` fields, which take their defaults; a field without a default is still
    required."""
    from registry.config import MeshConfig

    cfg = load_directory(example_copy).config
    assert cfg is not None
    wire = cfg.to_wire()
    for svc in wire["services"]:
        for w in svc["workloads"]:
            del w["user"], w["user_source"]
    assert MeshConfig.from_wire(wire) == cfg
    del wire["services"][0]["workloads"][0]["version"]
    with pytest.raises(ValueError, match=r"version: missing"):
        MeshConfig.from_wire(wire)
