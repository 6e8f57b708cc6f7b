"""Fixtures for the CA tests: a fresh CA in a temporary state directory, and a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from registry.ca.authority import CertificateAuthority
from registry.ca.spiffe import SpiffeId

TD = "shop.local"


@pytest.fixture
def now() -> datetime:
    return datetime(2026, 3, 2, 12, 0, 0, tzinfo=UTC)


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state" / "ca"


@pytest.fixture
def ca(state_dir: Path, now: datetime) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(state_dir, TD, now=now)


@pytest.fixture
def orders() -> SpiffeId:
    return SpiffeId.for_service(TD, "default", "orders")
