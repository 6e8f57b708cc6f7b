"""proxy/control/keygen.py: a key (0600) and a CSR from a child process, errors as OSError."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from proxy.control.keygen import new_key_and_csr


async def test_key_and_csr_match(tmp_path: Path) -> None:
    key_file = tmp_path / "tls" / "svid.key.new"
    pem = await new_key_and_csr(key_file, "spiffe://shop.local/ns/default/sa/orders")
    csr = x509.load_pem_x509_csr(pem)
    assert csr.is_signature_valid
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = serialization.load_pem_private_key(key_file.read_bytes(), None)
    assert key.public_key() == csr.public_key()
    san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["spiffe://shop.local/ns/default/sa/orders"]


async def test_a_failing_child_is_an_oserror(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"key generation failed .*must start with 'spiffe://'"):
        await new_key_and_csr(tmp_path / "k", "not-spiffe")
    assert not (tmp_path / "k").exists()


async def test_an_interpreter_this_uid_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """sys.executable unusable: /proc/self/exe; nothing startable at all: in process."""
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-python"))
    pem = await new_key_and_csr(tmp_path / "a.key", "spiffe://shop.local/ns/default/sa/a")
    assert x509.load_pem_x509_csr(pem).is_signature_valid

    async def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("asyncio.create_subprocess_exec", refuse)
    pem = await new_key_and_csr(tmp_path / "b.key", "spiffe://shop.local/ns/default/sa/b")
    key = serialization.load_pem_private_key((tmp_path / "b.key").read_bytes(), None)
    assert key.public_key() == x509.load_pem_x509_csr(pem).public_key()
