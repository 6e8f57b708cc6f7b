"""One CA for every registry replica: its key kept in etcd, sealed with a key each replica holds.

    PREFIX/ca = {"cert": root PEM, "sealed_key": base64(nonce || AES-256-GCM(CA key PEM))}

The first replica to start puts its CA there (the one already under its MESH_HOME, so a
registry that moves from files to etcd keeps its proxies), in a transaction that creates
the key only if it is absent; every other replica opens it with the seal key, a 32-byte
file (`MESH_HOME/registry/ca/seal.key`, 0600) copied from the first replica, the way
Consul servers share `encrypt` (its gossip key) and its built-in CA keeps the root key in
Raft. So every replica signs with one root, the trust bundle is that one root, and a
proxy joined at any replica renews at and is trusted by any other. Reading etcd alone
does not give the CA key, and the seal key alone opens nothing. The AAD is the etcd key
name, so a sealed value copied under another prefix does not open. docs/etcd.md says why
this and not an intermediate per replica.
"""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from common.state import atomic_write, ensure_dir
from registry.ca.authority import (
    CERT_FILE,
    KEY_FILE,
    CaError,
    CertificateAuthority,
    check_private,
    load_key,
)
from registry.ca.csr import key_pem
from registry.store.etcd import EtcdClient, cmp_create, op_get, op_put

SEAL_FILE = "seal.key"
_NONCE = 12


def _seal_key(path: Path, *, create: bool) -> bytes:
    if not path.exists():
        if not create:
            raise CaError(
                f"etcd holds this mesh's CA, sealed with a key this replica does not have: "
                f"copy {SEAL_FILE} from the CA directory of a replica already running to "
                f"{path} (mode 0600), then start again (docs/etcd.md)"
            )
        ensure_dir(path.parent)
        atomic_write(path, base64.b64encode(secrets.token_bytes(32)) + b"\n", 0o600)
    check_private(path, "the CA's seal key",
                  "anyone with etcd read access as well has the CA key: start a new mesh")
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise CaError(f"{path}: not a seal key (base64 of 32 bytes): copy it again from a "
                      "replica already running")  # fmt: skip
    return key


def seal(ca_key: ec.EllipticCurvePrivateKey, root: x509.Certificate, seal_key: bytes,
         aad: str) -> bytes:  # fmt: skip
    nonce = secrets.token_bytes(_NONCE)
    box = nonce + AESGCM(seal_key).encrypt(nonce, key_pem(ca_key), aad.encode())
    return json.dumps({"cert": root.public_bytes(serialization.Encoding.PEM).decode(),
                       "sealed_key": base64.b64encode(box).decode()}).encode()  # fmt: skip


def unseal(value: bytes, seal_key: bytes, aad: str, where: str,
           ) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:  # fmt: skip
    try:
        doc = json.loads(value)
        root = x509.load_pem_x509_certificate(doc["cert"].encode())
        box = base64.b64decode(doc["sealed_key"])
    except (ValueError, KeyError, TypeError):
        raise CaError(f"etcd {aad}: not a sealed CA (written by something else?)") from None
    try:
        pem = AESGCM(seal_key).decrypt(box[:_NONCE], box[_NONCE:], aad.encode())
    except InvalidTag:
        raise CaError(
            f"{where}: this seal key does not open the CA in etcd {aad}: copy "
            f"{SEAL_FILE} again from a replica already running"
        ) from None
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != root.public_key():
        raise CaError(f"etcd {aad}: the sealed key does not belong to the root certificate")
    return key, root


async def shared_authority(client: EtcdClient, prefix: str, ca_dir: Path,
                           trust_domain: str) -> CertificateAuthority:  # fmt: skip
    """The mesh's one CA: put in etcd by the first replica, opened by the others."""
    k_ca = f"{prefix}/ca"
    seal_path = ca_dir / SEAL_FILE
    kv, _ = await client.get(k_ca)
    if kv is None:
        had = (ca_dir / CERT_FILE).exists()
        mine = CertificateAuthority.load_or_create(ca_dir, trust_domain)
        value = seal(load_key(ca_dir / KEY_FILE), mine.root,
                     _seal_key(seal_path, create=True), k_ca)  # fmt: skip
        r = await client.txn([cmp_create(k_ca, 0)], [op_put(k_ca, value)], [op_get(k_ca)])
        if r.succeeded:
            return mine
        stored = r.ranges[0][0].value  # another replica was first: its CA is the mesh's
        if not had:  # the CA made just now signed nothing: it gives way
            for name in (KEY_FILE, CERT_FILE):
                (ca_dir / name).unlink()
    else:
        stored = kv.value
    key, root = unseal(stored, _seal_key(seal_path, create=False), k_ca, str(seal_path))
    cert_path = ca_dir / CERT_FILE
    root_pem = root.public_bytes(serialization.Encoding.PEM)
    if cert_path.exists() and cert_path.read_bytes() != root_pem:
        raise CaError(
            f"{ca_dir} holds another CA than the mesh's in etcd {k_ca}: proxies joined with "
            f"it would not be trusted. Move {ca_dir}/{CERT_FILE} and {KEY_FILE} away (those "
            "proxies re-join) and start again"
        )
    # Only the root certificate is written here (the bundle `meshctl` reads): the key
    # stays in memory and sealed in etcd.
    ensure_dir(ca_dir)
    atomic_write(cert_path, root_pem, 0o644)
    return CertificateAuthority.of(key, root, trust_domain, f"etcd {k_ca}")
