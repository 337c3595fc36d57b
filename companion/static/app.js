// calmcue dashboard: recent cues and alerts, updated live over Server-Sent Events.
// Vanilla JS, served by the companion itself: it must work in a store without internet.
"use strict";

const MAX_ROWS = 100;
const cueBody = document.querySelector("#cues tbody");

function fmtTime(t) {
  return new Date(t * 1000).toLocaleTimeString();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function addCue(ev, fresh) {
  if (ev.type !== "cue" || cueBody.querySelector(`tr[data-id="${ev.id}"]`)) return;
  const tr = document.createElement("tr");
  tr.dataset.id = ev.id;
  if (fresh) tr.className = "new";
  tr.append(
    cell(fmtTime(ev.ts || ev.received_at)), cell(ev.site), cell(ev.device),
    cell(ev.cue, "cue-" + ev.cue), cell(ev.level), cell(ev.score.toFixed(2)), cell(ev.reason || ""),
  );
  if (fresh) cueBody.prepend(tr); else cueBody.append(tr);
  while (cueBody.rows.length > MAX_ROWS) cueBody.deleteRow(-1);
}

// ---- alerts: open → acknowledged → resolved --------------------------------------------------
const alertList = document.getElementById("alerts");
const activeAlerts = new Map();
let mayAct = false;  // acknowledge/resolve: managers and admins (IT sees alerts, acts on devices)

function renderAlerts() {
  alertList.replaceChildren();
  const open = [...activeAlerts.values()].filter((a) => a.state === "open").length;
  document.title = open ? `(${open}) manager needed · ${baseTitle}` : baseTitle;
  const items = [...activeAlerts.values()].sort((a, b) => b.id - a.id);
  if (!items.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "No open alerts.";
    alertList.append(li);
  }
  for (const a of items) {
    const li = document.createElement("li");
    li.dataset.id = a.id;
    li.className = "alert " + a.state + (a.escalated_at ? " escalated" : "");
    const what = document.createElement("span");
    what.className = "what";
    const label = a.kind === "call_manager" ? "Manager needed at" : "Device silent:";
    what.textContent = `${label} ${a.site} / ${a.device} · ${fmtTime(a.opened_at)} · ${a.state}` +
      (a.escalated_at ? " · escalated" : "");
    li.append(what);
    if (mayAct && a.state === "open") li.append(actionButton(a, "ack", "Acknowledge"));
    if (mayAct) li.append(actionButton(a, "resolve", "Resolve"));
    alertList.append(li);
  }
}

function actionButton(a, action, label) {
  const b = document.createElement("button");
  b.textContent = label;
  b.className = action;
  b.onclick = async () => {
    b.disabled = true;
    const r = await fetch(`/api/alerts/${a.id}/${action}`,
      { method: "POST", credentials: "same-origin", headers: csrfHeaders() });
    if (r.ok) updateAlert(await r.json()); else b.disabled = false;
  };
  return b;
}

function updateAlert(a) {
  const isNew = a.state === "open" && !activeAlerts.has(a.id);
  if (a.state === "resolved") activeAlerts.delete(a.id); else activeAlerts.set(a.id, a);
  renderAlerts();
  if (isNew || (a.state === "open" && a.notify_count > 1)) chime();
}

// An alert that cannot be missed: the tab title counts open alerts, and a short chime sounds
// (synthesised; no audio file, nothing fetched). Browsers allow it after the login click.
const baseTitle = document.title;
let audio = null;
function chime() {
  try {
    audio = audio || new AudioContext();
    const o = audio.createOscillator(), g = audio.createGain();
    o.frequency.value = 880;
    g.gain.setValueAtTime(0.15, audio.currentTime);
    g.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.6);
    o.connect(g).connect(audio.destination);
    o.start(); o.stop(audio.currentTime + 0.6);
  } catch (e) { /* no audio output: the title and the panel still show it */ }
}

async function loadAlerts() {
  const list = await getJSON("/api/alerts?active=true");
  list.forEach((a) => { if (!activeAlerts.has(a.id)) activeAlerts.set(a.id, a); });
  renderAlerts();
}

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
  es.addEventListener("resync", () => { cueBody.replaceChildren(); loadCues(); loadAlerts(); });
}

async function loadCues() {
  const cues = await getJSON("/api/events?type=cue&limit=" + MAX_ROWS);
  // newest first; rows already shown by the live feed are newer and stay on top
  cues.forEach((ev) => addCue(ev, false));
}

// ---- statistics: charts drawn as inline SVG (no libraries, no network) ------------------------
const SVG = "http://www.w3.org/2000/svg";
const CUE_NAMES = ["slow_down", "empathize", "call_manager", "settled"];
let minGroup = 5;

function svgEl(tag, attrs, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// bars: [{label, parts: [{cls, value|null}]}]; null = suppressed (small group), drawn grey
function barChart(svg, bars) {
  svg.replaceChildren();
  const W = 480, H = 160, top = 10, bottom = 20, left = 24;
  const totals = bars.map((b) => b.parts.reduce((s, p) => s + (p.value ?? minGroup), 0));
  const max = Math.max(1, ...totals);
  const bw = (W - left) / Math.max(1, bars.length);
  svg.append(svgEl("text", { x: 2, y: top + 8 }, String(max)));
  bars.forEach((b, i) => {
    let y = H - bottom;
    const x = left + i * bw + 1;
    for (const p of b.parts) {
      const v = p.value ?? (p.value === null ? minGroup : 0);
      const h = (v / max) * (H - top - bottom);
      if (h <= 0) continue;
      y -= h;
      const r = svgEl("rect", { x, y, width: Math.max(1, bw - 2), height: h,
        class: p.value === null ? "suppressed" : "bar-" + p.cls });
      r.append(svgEl("title", {}, `${b.label}: ${p.value === null ? "fewer than " + minGroup : p.value}`));
      svg.append(r);
    }
    if (bars.length <= 12 || i % 3 === 0) {
      svg.append(svgEl("text", { x: x + 1, y: H - 6 }, b.label));
    }
  });
}

function fmtCount(n) { return n === null ? `<${minGroup}` : String(n); }

async function loadStats() {
  const s = await getJSON("/api/stats");
  minGroup = s.min_group_size;
  document.getElementById("stats-note").textContent =
    `(groups under ${minGroup} are hidden; no per-employee figures)`;
  const cards = document.getElementById("today-cards");
  cards.replaceChildren();
  for (const c of CUE_NAMES) {
    const d = document.createElement("div");
    d.className = "card cue-" + c;
    d.innerHTML = `<b></b>${c.replace("_", " ")}`;
    d.querySelector("b").textContent = fmtCount(s.today.by_type[c]);
    cards.append(d);
  }
  barChart(document.getElementById("chart-hour"),
    s.today.per_hour.map((v, h) => ({ label: String(h), parts: [{ cls: "all", value: v }] })));
  barChart(document.getElementById("chart-counter"),
    Object.entries(s.today.per_counter).map(([k, v]) => ({ label: k.split("/")[1], parts: [{ cls: "all", value: v }] })));
  barChart(document.getElementById("chart-week"), s.weekly.map((w) => ({
    label: w.week.slice(5), parts: CUE_NAMES.map((c) => ({ cls: c, value: w.by_type[c] })) })));
  const t = s.today.time_to_deescalate, wk = s.this_week.time_to_deescalate;
  const ttd = (x) => x.median_s === null ? `not enough conversations (${fmtCount(x.n)})`
    : `median ${x.median_s} s, p90 ${x.p90_s} s over ${x.n}`;
  document.getElementById("ttd").textContent =
    `Time to de-escalate — today: ${ttd(t)}; this week: ${ttd(wk)}.`;
}

let statsTimer = null;
function statsSoon() {
  if (statsTimer) return;
  statsTimer = setTimeout(() => { statsTimer = null; loadStats(); loadDevices(); }, 2000);
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
  mayAct = ["admin", "manager", "demo"].includes(session.role);
  document.getElementById("it-link").hidden = !["admin", "it", "demo"].includes(session.role);
  connectLive();
  await Promise.all([loadCues(), loadAlerts(), loadStats(), loadDevices(), setupConfig(session)]);
  setInterval(loadStats, 30000);
  setInterval(loadDevices, 15000);
}

main();
