// The live service graph: fetch /api/graph every few seconds, update Cytoscape in place.
"use strict";

const COLOURS = { healthy: "#2a2", degraded: "#e90", failing: "#d00", idle: "#999" };
const REFRESH_MS = 3000;

const cy = cytoscape({
  container: document.getElementById("cy"),
  style: [
    { selector: "node", style: {
        "label": "data(id)", "background-color": (n) => COLOURS[n.data("health")] || "#999",
        "text-valign": "bottom", "font-size": 11 } },
    { selector: "node[?ejected]", style: {
        "background-color": COLOURS.failing, "border-width": 4, "border-color": "#600",
        "label": (n) => `${n.id()} (ejected)` } },
    { selector: "edge", style: {
        "label": "data(label)", "curve-style": "bezier", "target-arrow-shape": "triangle",
        "width": 2, "font-size": 9, "text-background-color": "#fff",
        "text-background-opacity": 0.8,
        "line-color": (e) => COLOURS[e.data("health")] || "#999",
        "target-arrow-color": (e) => COLOURS[e.data("health")] || "#999",
        "line-style": (e) => (e.data("mtls") === false ? "dashed" : "solid") } },
  ],
});
window.cy = cy;  // for tests and the curious

function pct(v) { return v === null ? "-" : (100 * v).toFixed(2) + "%"; }
function ms(v) { return v === null ? "-" : v.toFixed(0) + " ms"; }

function update(g) {
  const seen = new Set();
  let added = false;
  for (const n of g.nodes) {
    seen.add(n.id);
    const el = cy.getElementById(n.id);
    const data = Object.assign({ ejected: null }, n);  // null clears an ejection that ended
    if (el.empty()) { cy.add({ group: "nodes", data }); added = true; } else { el.data(data); }
  }
  for (const e of g.edges) {
    seen.add(e.id);
    const data = Object.assign({}, e, { label: `${e.rps.toFixed(1)} rps ${pct(e.success_rate)}` });
    const el = cy.getElementById(e.id);
    if (el.empty()) { cy.add({ group: "edges", data }); added = true; } else { el.data(data); }
  }
  cy.elements().filter((el) => !seen.has(el.id())).remove();
  if (added) { cy.layout({ name: "breadthfirst", directed: true, spacingFactor: 1.2 }).run(); }
  const body = document.querySelector("#edges tbody");
  body.replaceChildren(...g.edges.map((e) => {
    const tr = document.createElement("tr");
    tr.className = e.health;
    tr.dataset.edge = e.id;
    for (const text of [e.id, e.rps.toFixed(2), pct(e.success_rate), ms(e.p50_ms), ms(e.p99_ms),
                        pct(e.share), e.mtls === null ? "-" : (e.mtls ? "yes" : "no")]) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  }));
  document.getElementById("updated").textContent =
    g.interval_s ? `over the last ${g.interval_s.toFixed(0)} s, ${new Date().toLocaleTimeString()}`
                 : "waiting for two scrapes";
}

function showCanaries(list) {
  // One line per canary: phase, weights, step, failed checks, and the last event.
  document.getElementById("canaries").replaceChildren(...list.map((c) => {
    const div = document.createElement("div");
    div.className = `canary ${c.phase}`;
    div.dataset.service = c.service;
    const steps = c.policy.steps;
    const at = c.phase === "progressing" ? `step ${c.step + 1}/${steps.length}, ` : "";
    const last = c.events.length ? c.events[c.events.length - 1].message : "";
    div.textContent = `canary ${c.service}: ${c.baseline} -> ${c.canary} ` +
      `${c.phase.replace("_", " ")}, ${c.canary} ${c.weight}%, ${at}` +
      `failed checks ${c.failed}/${c.policy.failures}: ${last}`;
    return div;
  }));
}

function showConfig(st) {
  // The last change the registry rejected (the version before it keeps serving): here the
  // errors no service's panel shows (a new file, mesh-wide settings), and which panels have
  // the others.
  const box = document.getElementById("config-error");
  const err = st.last_config_error;
  box.hidden = !err;
  const lines = st.unattributed || (err ? err.errors : []);
  const panels = Object.keys(st.by_service || {}).sort();
  box.textContent = err ? `config change rejected (version ${st.config_version} stays in ` +
    `force):` + (lines.length ? `\n${lines.join("\n")}` : "") +
    (panels.length ? `\nsee the panel of ${panels.join(", ")}` : "") : "";
}

async function refresh() {
  const win = document.getElementById("window").value;
  try {
    const r = await fetch(`/api/graph?window=${win}`, { cache: "no-store" });
    const g = await r.json();
    if (r.ok) { update(g); listServices(g); } else {
      document.getElementById("updated").textContent = g.error || `HTTP ${r.status}`;
    }
    const c = await fetch("/api/canaries", { cache: "no-store" });
    if (c.ok) { showCanaries((await c.json()).canaries); }
    const s = await fetch("/api/config", { cache: "no-store" });
    if (s.ok) { showConfig(await s.json()); }
  } catch (err) {
    document.getElementById("updated").textContent = `no answer: ${err}`;
  }
}

// -- the per-service panel and its live requests -----------------------------------------

const picker = document.getElementById("service");

function listServices(g) {
  // The services of the graph, in the picker (kept: the choice survives a refresh).
  const names = [...new Set(g.nodes.map((n) => n.service).filter((s) => s !== "unknown"))].sort();
  const have = [...picker.options].map((o) => o.value).filter((v) => v);
  if (names.join() === have.join()) { return; }
  const chosen = picker.value;
  picker.replaceChildren(picker.options[0], ...names.map((s) => new Option(s, s)));
  picker.value = names.includes(chosen) ? chosen : "";
}

function rows(selector, list, cells) {
  document.querySelector(`${selector} tbody`).replaceChildren(...list.map((item) => {
    const tr = document.createElement("tr");
    for (const text of cells(item)) {
      const td = document.createElement("td");
      td.textContent = text;
      tr.appendChild(td);
    }
    return tr;
  }));
}

function expires(t) {
  if (!t) { return "-"; }
  const days = (t * 1000 - Date.now()) / 86400000;
  return `${new Date(t * 1000).toISOString().slice(0, 16)}Z (${days.toFixed(1)} d)`;
}

function routeText(w) {
  // The route in force as `meshctl why` explains it, for a request from w.source.
  if (w.error) { return `route: ${w.error}`; }
  const r = w.route;
  const name = !r ? "none" : r.default ? "default (no VirtualService)" : r.name;
  const dests = w.destinations.map((d) =>
    `${d.service}${d.subset ? "/" + d.subset : ""} ${d.weight}%`).join(", ");
  return `route for ${w.source} -> ${w.destination} ${w.request.path}: ${name} -> ` +
    `${dests || "nothing"}; ${w.outcome} (config version ${w.config_version})`;
}

function showPanel(p) {
  document.getElementById("panel-body").hidden = false;
  document.getElementById("route").textContent = routeText(p.why);
  rows("#endpoints", p.endpoints, (e) => [e.id, e.address, e.host, e.version || "-",
    e.health + (e.reason ? `: ${e.reason}` : ""),
    e.ejected_by.length ? `ejected by ${e.ejected_by.join(", ")}` : "no"]);
  rows("#proxies", p.proxies, (x) => [x.proxy_id, x.connected ? "yes" : "no",
    `${x.acked_version} / ${x.latest_version}` + (x.current ? "" : " (behind)") +
    (x.nack_error ? ` rejected: ${x.nack_error}` : ""), expires(x.cert_not_after)]);
  const err = document.getElementById("panel-error");
  const last = p.last_config_error;
  err.hidden = !last;
  err.textContent = last ? `last config error: ${last.errors.join("; ")}` : "";
}

async function refreshPanel() {
  const name = picker.value;
  if (!name) { document.getElementById("panel-body").hidden = true; return; }
  const q = encodeURIComponent(name);
  const r = await fetch(`/api/service?name=${q}`, { cache: "no-store" });
  if (r.ok) { showPanel(await r.json()); }
  const path = encodeURIComponent(document.getElementById("tap-path").value);
  const status = encodeURIComponent(document.getElementById("tap-status").value);
  const t = await fetch(`/api/tap?service=${q}&path=${path}&status=${status}`,
                        { cache: "no-store" });
  const tap = await t.json();
  document.getElementById("tap-info").textContent =
    tap.error ? tap.error : `${tap.requests.length} shown of ${tap.kept} kept`;
  rows("#requests", tap.requests || [], (e) => [e.proxy,
    e.direction === "outbound" ? "out" : "in", e.method, e.path, String(e.status),
    `${Number(e.latency_ms).toFixed(1)} ms`, e.flags, e.peer || "-"]);
}

cy.on("tap", "node", (ev) => {
  const s = ev.target.data("service");
  if (s && s !== "unknown") { picker.value = s; refreshPanel(); }
});
picker.addEventListener("change", refreshPanel);
for (const id of ["tap-path", "tap-status"]) {
  document.getElementById(id).addEventListener("input", refreshPanel);
}

document.getElementById("window").addEventListener("change", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
setInterval(() => refreshPanel().catch(() => {}), 1000);
