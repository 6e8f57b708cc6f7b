"""The registry's own Prometheus metrics: snapshot version, config errors, proxies, CA issuance."""

from __future__ import annotations

from typing import TYPE_CHECKING

from common.promtext import MetricWriter

if TYPE_CHECKING:
    from registry.server.main import Registry


def render_metrics(reg: Registry) -> str:
    w = MetricWriter()
    snap = reg.store.current
    w.gauge(
        "meshctl_registry_config_version",
        "Version of the config snapshot in force.",
        snap.version if snap else 0,
    )
    w.gauge(
        "meshctl_registry_config_error",
        "1 while the last change to the config directory "
        "was rejected (the previous snapshot stays in force).",
        1 if reg.store.last_rejection else 0,
    )
    w.counter(
        "meshctl_registry_config_rejections_total",
        "Config changes rejected.",
        reg.store.rejections_total,
    )
    w.gauge("meshctl_registry_catalog_version", "Catalog version.", reg.catalog.version)
    w.gauge("meshctl_registry_endpoints", "Endpoints in the catalog.", len(reg.catalog.endpoints()))
    w.gauge(
        "meshctl_registry_proxies_connected",
        "Proxies with an open config stream.",
        reg.proxies.connected(),
    )
    w.gauge(
        "meshctl_registry_proxies",
        "Proxies the registry tracks (with a stream or reporting; bounded per identity).",
        len(reg.proxies),
    )
    latest = snap.version if snap else 0
    w.gauge(
        "meshctl_registry_proxies_stale",
        "Proxies not (yet) on the latest config version.",
        sum(1 for p in reg.proxies.all() if p.acked_version < latest),
    )
    w.counter(
        "meshctl_registry_svids_issued_total",
        "SVIDs signed (join and renew).",
        reg.metrics["svids_issued"],
    )
    w.counter(
        "meshctl_registry_join_refused_total", "Join attempts refused.", reg.metrics["join_refused"]
    )
    w.counter(
        "meshctl_registry_acks_refused_total",
        "ACKs refused: about a proxy of another identity.",
        reg.metrics["acks_refused"],
    )
    return w.text()
