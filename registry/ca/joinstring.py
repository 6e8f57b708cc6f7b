"""The join string `meshctl token create` prints: the token, where the registry is, the CA pin.

    mjoin1.<base64url of {"token": "mtok...", "registry": ["https://10.0.0.5:15012", ...],
                          "ca_sha256": "<hex SHA-256 of the root certificate's DER>",
                          "service": "orders", "reusable": true}>

`service` names the identity the token is bound to and `reusable` (absent: false) whether
several proxies may join with it (the registry still decides: they are labels, so that
`meshctl up --join FILE` can give each workload its line of FILE, and refuse a one-time
line for a service with several workloads before anything starts). The
same format carries the operator credential (`meshctl token operator`): no service then.

It is all a new host needs, as kubeadm's `--discovery-token-ca-cert-hash`: the joiner
fetches the CA certificate from the registry over an unverified TLS connection, and
trusts it only if its SHA-256 is the pin (so a man in the middle cannot substitute its
own CA), then joins over TLS verified against it. A bare `mtok.<id>.<secret>` (tokens
made before join strings) still works with `--registry` and a CA file.

Pure functions of strings and bytes, importable without `cryptography` (the proxy reads
these) or anything below the standard library.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import ssl
from dataclasses import dataclass

PREFIX = "mjoin1."


class JoinStringError(ValueError):
    """A join string that cannot be read; the message says what to do."""


@dataclass(frozen=True, slots=True)
class JoinString:
    token: str  # the one-time `mtok.<id>.<secret>` the registry redeems
    registry: tuple[str, ...] = ()  # URLs to try, in order; empty for a bare token
    ca_sha256: str | None = None  # hex; None for a bare token
    service: str | None = None  # the service the token is for; None: not said
    reusable: bool = False  # a label too: may several proxies join with it?

    def encode(self) -> str:
        doc: dict[str, object] = {
            "token": self.token, "registry": list(self.registry), "ca_sha256": self.ca_sha256}
        if self.service is not None:
            doc["service"] = self.service
        if self.reusable:
            doc["reusable"] = True
        raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
        return PREFIX + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse(text: str) -> JoinString:
    """A join string, or a bare token (returned with no registry and no pin)."""
    text = text.strip()
    if not text.startswith(PREFIX):
        return JoinString(token=text)
    body = text[len(PREFIX) :]
    try:
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        token, urls, pin = doc["token"], doc["registry"], doc["ca_sha256"]
        service, reusable = doc.get("service"), doc.get("reusable", False)
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise JoinStringError(
            "the join string is damaged (cut or mistyped): copy the whole line that "
            "`meshctl token create` printed"
        ) from None
    ok = (
        isinstance(token, str)
        and isinstance(urls, list)
        and all(isinstance(u, str) for u in urls)
        and isinstance(pin, str)
        and len(pin) == 64
        and (service is None or isinstance(service, str))
        and isinstance(reusable, bool)
    )
    if not ok:
        raise JoinStringError("the join string does not hold a token, registry URLs and a CA pin")
    return JoinString(token=token, registry=tuple(urls), ca_sha256=pin.lower(), service=service,
                      reusable=reusable)


def pem_certificates(bundle_pem: str) -> list[str]:
    """Each PEM certificate of a bundle, in order."""
    end = "-----END CERTIFICATE-----"
    return [part.strip() + "\n" + end + "\n" for part in bundle_pem.split(end) if "BEGIN" in part]


def ca_pin(cert_pem: str) -> str:
    """The pin of a CA certificate: hex SHA-256 of its DER encoding."""
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert_pem)).hexdigest()


def pinned(bundle_pem: str, pin: str) -> str | None:
    """The certificate of `bundle_pem` whose pin is `pin`, or None."""
    for cert in pem_certificates(bundle_pem):
        try:
            if ca_pin(cert) == pin:
                return cert
        except ValueError:
            continue
    return None
