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
  // The last change the registry rejected (the version before it keeps serving).
  const box = document.getElementById("config-error");
  const err = st.last_config_error;
  box.hidden = !err;
  box.textContent = err ? `config change rejected (version ${st.config_version} stays in ` +
    `force):\n${err.errors.join("\n")}` : "";
}

async function refresh() {
  const win = document.getElementById("window").value;
  try {
    const r = await fetch(`/api/graph?window=${win}`, { cache: "no-store" });
    if (r.ok) { update(await r.json()); }
    const c = await fetch("/api/canaries", { cache: "no-store" });
    if (c.ok) { showCanaries((await c.json()).canaries); }
    const s = await fetch("/api/config", { cache: "no-store" });
    if (s.ok) { showConfig(await s.json()); }
  } catch (err) {
    document.getElementById("updated").textContent = `no answer: ${err}`;
  }
}

document.getElementById("window").addEventListener("change", refresh);
refresh();
setInterval(refresh, REFRESH_MS);
