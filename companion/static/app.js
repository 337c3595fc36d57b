// calmcue dashboard: recent cues and alerts, updated live over Server-Sent Events.
// Vanilla JS, served by the companion itself: it must work in a store without internet.
"use strict";

function fmtTime(t) {
  return new Date(t * 1000).toLocaleTimeString();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// alerts, statistics and the cue table: manager.js

async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; throw new Error("login needed"); }
  if (!r.ok) throw new Error(url + ": " + r.status);
  return r.json();
}

function connectLive() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/stream");
  let dropped = false;
  es.onopen = () => {
    live.textContent = "live"; live.className = "badge on";
    if (dropped) { dropped = false; loadCues(); loadAlerts(); }  // catch up on what we missed
  };
  es.onerror = () => { dropped = true; live.textContent = "reconnecting…"; live.className = "badge off"; };
  es.addEventListener("event", (m) => { addCue(JSON.parse(m.data), true); statsSoon(); });
  es.addEventListener("alert", (m) => updateAlert(JSON.parse(m.data)));
  es.addEventListener("resync", () => { document.querySelector("#cues tbody").replaceChildren(); loadCues(); loadAlerts(); });
}

// ---- devices ------------------------------------------------------------------------------
async function loadDevices() {
  const list = await getJSON("/api/devices");
  const body = document.querySelector("#devices tbody");
  body.replaceChildren();
  for (const d of list) {
    let t = {};
    try { t = JSON.parse(d.tele || "{}"); } catch (e) { t = {}; }
    const tr = document.createElement("tr");
    const status = d.silent ? "silent" : d.status;
    tr.append(cell(d.site), cell(d.device), cell(status, status), cell(d.last_seen ? fmtTime(d.last_seen) : "never"),
      cell(d.firmware || ""), cell(d.model || ""),
      cell(t.heap_free ?? (t.mem_kb != null ? t.mem_kb + " kB" : "")),
      cell(t.cpu_pct != null ? t.cpu_pct + " %" : ""), cell(t.rssi ?? ""),
      cell(t.batt_pct != null ? t.batt_pct + " %" : ""), cell(t.queue ?? ""));
    body.append(tr);
  }
}

// ---- configuration (IT and admin): a whole site, or one device's overrides -----------------
async function setupConfig(session) {
  if (!["admin", "it", "demo"].includes(session.role)) return;
  const [sites, devices] = await Promise.all([getJSON("/api/sites"), getJSON("/api/devices")]);
  if (!sites.length) return;
  document.getElementById("config-panel").hidden = false;
  const select = document.getElementById("config-site");
  const doc = document.getElementById("config-doc");
  const result = document.getElementById("config-result");
  const targets = [];
  for (const s of sites) {
    targets.push({ label: `${s.site} (whole site)`, url: `/api/sites/${s.site}/config`,
      load: async () => getJSON(`/api/sites/${s.site}/config`) });
    for (const d of devices.filter((x) => x.site === s.site)) {
      const url = `/api/devices/${d.site}/${d.device}/config`;
      targets.push({ label: `${d.site} / ${d.device}`, url,
        load: async () => (await getJSON(url)).device_config });
    }
  }
  select.replaceChildren(...targets.map((t, i) => new Option(t.label, String(i))));
  const show = async () => {
    result.textContent = "";
    const t = targets[Number(select.value)];
    doc.value = JSON.stringify(await t.load(), null, 2);
    doc.dataset.for = t.label;  // which target the text shows (tests wait for it)
  };
  select.onchange = show;
  await show();
  document.getElementById("config-form").onsubmit = async (e) => {
    e.preventDefault();
    let body;
    try { body = JSON.parse(doc.value); } catch (err) { result.textContent = "not valid JSON"; return; }
    const r = await fetch(targets[Number(select.value)].url, {
      method: "PUT", credentials: "same-origin",
      headers: csrfHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body) });
    const j = await r.json();
    result.className = r.ok ? "" : "error";
    result.textContent = !r.ok ? j.detail
      : j.published ? `saved; published to ${j.published.length} device(s)` : "saved; published";
  };
}

// State-changing calls carry the session's CSRF token (companion/web_security.py refuses a
// cookie-authenticated POST/PUT/PATCH/DELETE without it); demo mode has no session and no token.
let csrfToken = null;
function csrfHeaders(extra = {}) {
  return csrfToken ? { ...extra, "X-CSRF-Token": csrfToken } : extra;
}

async function main() {
  const session = await getJSON("/api/session");
  csrfToken = session.csrf || null;
  document.getElementById("logout").onsubmit = async (e) => {
    e.preventDefault();
    await fetch("/api/logout", { method: "POST", credentials: "same-origin", headers: csrfHeaders() });
    location.href = "/login";
  };
  const mode = document.getElementById("mode");
  mode.textContent = session.mode === "demo" ? "demo mode" : session.mode;
  if (session.mode !== "demo" && !session.user) { location.href = "/login"; return; }
  if (session.user) {
    document.getElementById("who").textContent = session.user + " · " + session.role;
    document.getElementById("logout").hidden = false;
  }
  document.getElementById("it-link").hidden = !["admin", "it", "demo"].includes(session.role);
  connectLive();
  await Promise.all([startManager(session), loadDevices(), setupConfig(session)]);
  setInterval(loadStats, 30000);
  setInterval(loadDevices, 15000);
}

main();
