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

function renderAlerts() {
  alertList.replaceChildren();
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
    if (a.state === "open") li.append(actionButton(a, "ack", "Acknowledge"));
    li.append(actionButton(a, "resolve", "Resolve"));
    alertList.append(li);
  }
}

function actionButton(a, action, label) {
  const b = document.createElement("button");
  b.textContent = label;
  b.className = action;
  b.onclick = async () => {
    b.disabled = true;
    const r = await fetch(`/api/alerts/${a.id}/${action}`, { method: "POST", credentials: "same-origin" });
    if (r.ok) updateAlert(await r.json()); else b.disabled = false;
  };
  return b;
}

function updateAlert(a) {
  if (a.state === "resolved") activeAlerts.delete(a.id); else activeAlerts.set(a.id, a);
  renderAlerts();
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
  es.onopen = () => { live.textContent = "live"; live.className = "badge on"; };
  es.onerror = () => { live.textContent = "reconnecting…"; live.className = "badge off"; };
  es.addEventListener("event", (m) => addCue(JSON.parse(m.data), true));
  es.addEventListener("alert", (m) => updateAlert(JSON.parse(m.data)));
  es.addEventListener("resync", () => { cueBody.replaceChildren(); loadCues(); loadAlerts(); });
}

async function loadCues() {
  const cues = await getJSON("/api/events?type=cue&limit=" + MAX_ROWS);
  // newest first; rows already shown by the live feed are newer and stay on top
  cues.forEach((ev) => addCue(ev, false));
}

async function main() {
  const session = await getJSON("/api/session");
  const mode = document.getElementById("mode");
  mode.textContent = session.mode === "demo" ? "demo mode" : session.mode;
  if (session.mode !== "demo" && !session.user) { location.href = "/login"; return; }
  if (session.user) {
    document.getElementById("who").textContent = session.user + " · " + session.role;
    document.getElementById("logout").hidden = false;
  }
  connectLive();
  await Promise.all([loadCues(), loadAlerts()]);
}

main();
