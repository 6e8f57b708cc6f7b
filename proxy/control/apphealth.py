"""The app-health loop: probe the proxy's app, feed the verdict policy, report transitions.

Thin asyncio around `proxy/policy/probe.py` (which decides). What to probe comes from the
current snapshot each period: the workload's `readinessProbe` in mesh.yaml, else a TCP
connect to the app behind the service's first port (docs/config.md). A transition is sent to
the registry at once (PUT /v1/endpoints/ID, as a heartbeat carrying `health` and `reason`);
the heartbeat repeats it, so a registry that was away when it happened learns it anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from proxy.httpio import Client, HttpError
from proxy.policy.clock import Clock
from proxy.policy.probe import AppHealth, ProbeParams
from registry.config.model import Service

log = logging.getLogger("meshctl.proxy.apphealth")
IDLE_S = 1.0  # no probe to run yet (no config, or a service without ports): look again


def probe_params(
    me: Service | None,
    labels: Mapping[str, str],
    app_address: Callable[[int], tuple[str, int]],
) -> ProbeParams | None:
    """The probe for this proxy's workload (matched by its `version` label)."""
    if me is None or not me.ports:
        return None
    version = labels.get("version")
    workload = next((w for w in me.workloads if w.version == version), None)
    spec = workload.readiness if workload is not None else None
    if spec is None:
        host, port = app_address(me.ports[0].port)
        return ProbeParams("tcp", host, port)
    host, port = app_address(spec.port)
    return ProbeParams(spec.kind, host, port, spec.path, spec.initial_delay_s, spec.period_s,
                       spec.timeout_s, spec.failure_threshold, spec.success_threshold)


async def probe(p: ProbeParams) -> str | None:
    """Run one probe: None if the app answered, else what went wrong, for `status`."""
    where = p.address
    try:
        async with asyncio.timeout(p.timeout_s):
            if p.kind == "tcp":
                _, writer = await asyncio.open_connection(p.host, p.port)
                writer.close()
                return None
            client = Client(f"http://{where}", connect_timeout=p.timeout_s)
            try:
                r = await client.request("GET", p.path, headers={"user-agent": "meshctl-probe"},
                                         timeout=p.timeout_s)
            finally:
                await client.close()
    except ConnectionRefusedError:
        return f"connect refused on {where}"
    except TimeoutError:
        return f"no answer within {p.timeout_s:g}s from {p.target}"
    except HttpError as exc:
        return f"bad HTTP answer from {p.target}: {exc}"
    except OSError as exc:
        return f"{exc.strerror or type(exc).__name__} on {where}"
    # Kubernetes' httpGet: any status from 200 to 399 is a success.
    return None if 200 <= r.status < 400 else f"HTTP {r.status} from {p.target}"


Report = Callable[[str, str], Awaitable[None]]


async def app_health_loop(
    params: Callable[[], ProbeParams | None], report: Report, clock: Clock = time.monotonic
) -> None:
    """Probe for ever; `report(health, reason)` on each change of verdict."""
    state: AppHealth | None = None
    while True:
        p = params()
        if p is None:
            await asyncio.sleep(IDLE_S)
            continue
        if state is None:
            state = AppHealth(p, clock)
        state.reconfigure(p)
        await asyncio.sleep(state.due_in())
        p = state.params
        try:
            error = await probe(p)
        except Exception as exc:  # a bug here must not end app health for the proxy's life
            log.exception("app probe of %s failed unexpectedly", p.target)
            error = f"probe error {type(exc).__name__}: {exc}"
        if state.record(error):
            if state.health == "healthy":
                log.info("app is healthy again (%s)", p.target)
            else:
                log.warning("app is unhealthy: %s", state.reason)
            await report(state.health, state.reason)
