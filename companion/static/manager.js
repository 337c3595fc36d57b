// calmcue dashboard, the store manager's part: alerts by urgency with their context, undo and
// history; Web Push to a locked phone; charts with legends, pickers and text alternatives.
// Loaded before app.js, which calls startManager(session) and the hooks below from its live feed.
"use strict";

const UNDO_S = 10;  // companion setting alert_undo_s (its default)
// The cue table (firmware/core/cue_table.py via GET /api/cues): name, level, LED colour, label, whether
// it alerts the manager. startManager loads it before anything is drawn; nothing here names a cue.
let CUES = [];
const cueByName = (name) => CUES.find((c) => c.name === name);
const managerCall = (a) => Boolean(cueByName(a.kind)?.alert);  // else the silent-device watch
// a cue's colour as a mark beside its words (LED colours are too light for text); set through
// the style object, which the page's CSP allows (a style attribute it blocks)
function swatch(colour) {
  const s = el("span", { cls: "swatch" });
  s.style.background = colour;
  return s;
}
const MAX_ROWS = 100;
let me = { role: "demo", user: null };
let siteNames = {};  // site id -> the store's name

function el(tag, attrs = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "text") e.textContent = v; else if (k === "cls") e.className = v; else e.setAttribute(k, v);
  }
  e.append(...kids);
  return e;
}

function storeName(site) { return siteNames[site] || site; }
function actor(a) { return (a || "").replace(/^(user|mqtt):/, ""); }

function fmtWhen(t) {
  const d = new Date(t * 1000), today = new Date();
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  return d.toDateString() === today.toDateString() ? time
    : d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + time;
}

function fmtAgo(t) {
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// ---- alerts: by urgency, with context ----------------------------------------------------------
const alertList = document.getElementById("alerts");
const activeAlerts = new Map();
const baseTitle = document.title;

// customers waiting on a manager first, escalated before not yet, open before acknowledged;
// then device alarms; the longest-waiting first within a rank
function urgency(a) {
  const customer = managerCall(a) ? 0 : 10;
  return customer + (a.state === "open" ? (a.escalated_at ? 0 : 1) : 2);
}

function alertTitle(a) {
  return managerCall(a)
    ? `${cueByName(a.kind).label} at ${a.device}, ${storeName(a.site)}`
    : `Device silent: ${a.device}, ${storeName(a.site)}`;
}

function alertContext(a) {
  const bits = [`open ${fmtAgo(a.opened_at)} (since ${fmtWhen(a.opened_at)})`];
  if (a.level != null) bits.push(`cue level ${a.level}`);
  if (a.reason) bits.push(`reason: ${a.reason.replace(/_/g, " ")}`);
  if (a.acked_by) bits.push(`acknowledged by ${actor(a.acked_by)} ${fmtAgo(a.acked_at)} ago`);
  if (a.escalated_at) bits.push(`escalated to ${a.second_contact || "the second contact (none set)"}`);
  else if (a.state === "open" && a.first_contact) bits.push(`for ${a.first_contact}`);
  return bits.join(" · ");
}

function renderAlerts() {
  const items = [...activeAlerts.values()].sort((a, b) => urgency(a) - urgency(b) || a.opened_at - b.opened_at);
  const open = items.filter((a) => a.state === "open" && managerCall(a)).length;
  document.title = open ? `(${open}) manager needed · ${baseTitle}` : baseTitle;
  alertList.replaceChildren();
  if (!items.length) alertList.append(el("li", { cls: "empty", text: "No open alerts." }));
  for (const a of items) {
    const li = el("li", { cls: `alert ${a.state} ${a.kind}` + (a.escalated_at ? " escalated" : ""), id: "alert-" + a.id });
    li.dataset.id = a.id;
    const what = el("h3", { cls: "what", text: alertTitle(a) });
    const badge = el("span", { cls: "state", text: a.escalated_at && a.state === "open" ? "escalated" : a.state });
    const ctx = el("p", { cls: "ctx", text: alertContext(a) });
    const actions = el("div", { cls: "actions" });
    if (mayHandleAlerts()) {
      if (a.state === "open") actions.append(actionButton(a, "ack", "Acknowledge"));
      actions.append(actionButton(a, "resolve", "Resolve"));
    }
    li.append(el("div", { cls: "head" }, what, badge), ctx, actions);
    alertList.append(li);
  }
}

function mayHandleAlerts() { return ["admin", "manager", "demo"].includes(me.role); }

function actionButton(a, action, label) {
  const b = el("button", { type: "button", cls: action, text: label,
    "aria-label": `${label}: ${alertTitle(a)}` });
  b.onclick = async () => {
    b.disabled = true;
    const r = await post(`/api/alerts/${a.id}/${action}`);
    if (r.ok) {
      const done = await r.json();
      updateAlert(done);
      offerUndo(done, action === "ack" ? "Acknowledged" : "Resolved");
    } else {
      b.disabled = false;
      say(`Could not ${label.toLowerCase()}: ${(await r.json().catch(() => ({}))).detail || r.status}`);
    }
  };
  return b;
}

// Undo: the companion takes back your own acknowledge or resolve for UNDO_S seconds.
const undoBar = document.getElementById("undo-bar");
let undoTimer = null;
function offerUndo(a, what) {
  clearInterval(undoTimer);
  let left = UNDO_S;
  const text = el("span", { text: `${what}: ${a.device}, ${storeName(a.site)}.` });
  const btn = el("button", { type: "button", cls: "undo", text: `Undo (${left} s)`,
    "aria-label": `Undo ${what.toLowerCase()}: ${alertTitle(a)}` });
  btn.onclick = async () => {
    clearInterval(undoTimer);
    btn.disabled = true;
    const r = await post(`/api/alerts/${a.id}/undo`);
    if (r.ok) { updateAlert(await r.json()); undoBar.replaceChildren(el("span", { text: "Undone." })); }
    else undoBar.replaceChildren(el("span", { text: (await r.json()).detail }));
    setTimeout(() => undoBar.replaceChildren(), 4000);
  };
  undoBar.replaceChildren(text, btn);
  undoTimer = setInterval(() => {
    left -= 1;
    if (left <= 0) { clearInterval(undoTimer); undoBar.replaceChildren(); return; }
    btn.textContent = `Undo (${left} s)`;
  }, 1000);
}

// New alerts are announced to screen readers (a polite region would wait; this cannot)
const news = document.getElementById("alert-news");
function say(text) { news.textContent = ""; setTimeout(() => { news.textContent = text; }, 50); }

function updateAlert(a) {
  const isNew = a.state === "open" && !activeAlerts.has(a.id);
  const known = activeAlerts.get(a.id);
  if (a.state === "resolved") activeAlerts.delete(a.id); else activeAlerts.set(a.id, a);
  renderAlerts();
  if (isNew || (a.state === "open" && known && a.notify_count > known.notify_count)) {
    chime();
    say(alertTitle(a) + (a.escalated_at ? ", escalated" : ""));
  }
  if (historyList.dataset.loaded && a.state === "resolved") loadHistory(true);
}

// Fallback when notifications are off: a synthesised chime (nothing fetched) and the title.
// Browsers allow sound only after a click or key on the page: the first one unlocks it.
let audio = null;
const soundHint = document.getElementById("sound-hint");
function unlockAudio() {
  try { audio = audio || new AudioContext(); audio.resume(); } catch (e) { /* no audio */ }
  soundHint.hidden = true;
}
document.addEventListener("click", unlockAudio, { once: true });  // not pointerdown: the hint going away would move the button being tapped
document.addEventListener("keydown", unlockAudio, { once: true });
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
  activeAlerts.clear();
  list.forEach((a) => activeAlerts.set(a.id, a));
  renderAlerts();
}

// ---- past alerts (the companion keeps each one with its audit trail) ------------------------------
const historyList = document.getElementById("history-list");
const historyMore = document.getElementById("history-more");
let historyOffset = 0;
async function loadHistory(reset) {
  if (reset) { historyOffset = 0; historyList.replaceChildren(); }
  const page = await getJSON(`/api/alerts?resolved=true&limit=20&offset=${historyOffset}`);
  historyOffset += page.length;
  historyList.dataset.loaded = "1";
  for (const a of page) {
    const took = a.resolved_at - a.opened_at;
    const li = el("li", { cls: "past " + a.kind },
      el("b", { text: managerCall(a) ? `Manager called to ${a.device}, ${storeName(a.site)}` : alertTitle(a) }),
      el("span", { text: ` · ${fmtWhen(a.opened_at)} · acknowledged by ${actor(a.acked_by) || "—"}` +
        ` · resolved by ${actor(a.resolved_by) || "—"} after ${Math.round(took / 60)} min` +
        (a.escalated_at ? ` · escalated to ${a.second_contact || "second contact"}` : "") }));
    historyList.append(li);
  }
  if (!historyList.children.length) historyList.append(el("li", { cls: "empty", text: "No past alerts." }));
  historyMore.hidden = page.length < 20;
}
document.getElementById("history").addEventListener("toggle", (e) => {
  if (e.target.open && !historyList.dataset.loaded) loadHistory(true);
});
historyMore.onclick = () => loadHistory(false);

// ---- Web Push: notifications that reach a locked phone ----------------------------------------
const pushBtn = document.getElementById("push-on");
const pushNote = document.getElementById("push-note");

function b64urlBytes(s) {
  const raw = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - s.length % 4) % 4));
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

async function setupPush() {
  if (!("serviceWorker" in navigator)) { pushNote.textContent = "This browser cannot notify; keep this page open for the chime."; return; }
  const reg = await navigator.serviceWorker.register("/sw.js");
  navigator.serviceWorker.addEventListener("message", (m) => {
    if (m.data && m.data.type === "push") loadAlerts();  // the feed usually got there first
  });
  if (!me.user || !["manager", "admin"].includes(me.role)) return;
  if (!("PushManager" in window)) { pushNote.textContent = "No push service in this browser: alerts chime while this page is open."; return; }
  const { public_key: key } = await getJSON("/api/push/key");
  const show = async () => {
    const sub = await reg.pushManager.getSubscription();
    pushBtn.hidden = false;
    pushBtn.textContent = sub ? "Stop notifications on this phone" : "Notify me on this phone";
    pushBtn.setAttribute("aria-pressed", sub ? "true" : "false");
    pushNote.textContent = sub ? "Alerts reach this device even when it is locked." : "";
  };
  pushBtn.onclick = async () => {
    pushBtn.disabled = true;
    try {
      const sub = await reg.pushManager.getSubscription();
      if (sub) {
        await post("/api/push/unsubscribe", { endpoint: sub.endpoint });
        await sub.unsubscribe();
      } else {
        if ((await Notification.requestPermission()) !== "granted") throw new Error("notifications are blocked for this site in the browser's settings");
        const s = await reg.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: b64urlBytes(key) });
        const r = await post("/api/push/subscriptions", s.toJSON());
        if (!r.ok) throw new Error((await r.json()).detail);
      }
      await show();
    } catch (e) {
      pushNote.textContent = `Notifications could not be turned on (${e.message}); alerts still chime while this page is open.`;
    } finally { pushBtn.disabled = false; }
  };
  await show();
}

// ---- statistics: range and store pickers, charts with legends and tables ------------------------
const SVG = "http://www.w3.org/2000/svg";
let minGroup = 5;
const rangeSel = document.getElementById("range");
const fromIn = document.getElementById("from");
const toIn = document.getElementById("to");
const siteSel = document.getElementById("site");

function svgEl(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}
function fmtCount(n) { return n === null ? `fewer than ${minGroup}` : String(n); }
function isoDay(d) { return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 10); }

function legend(parts) {
  return el("ul", { cls: "legend", "aria-hidden": "true" }, ...parts.map(([cls, label, colour]) =>
    el("li", {}, colour ? swatch(colour) : el("span", { cls: "swatch " + cls }), label)));
}

// Stacked bars; null parts (suppressed groups) are drawn grey at the threshold's height.
function barChart(svg, bars, { W = 480, H = 170 } = {}) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const top = 12, bottom = 22, left = 30;
  const val = (p) => (p.value === null ? minGroup : p.value || 0);
  const max = Math.max(1, ...bars.map((b) => b.parts.reduce((s, p) => s + val(p), 0)));
  const bw = (W - left) / Math.max(1, bars.length);
  svg.append(svgEl("text", { x: 2, y: top + 8 }, String(max)), svgEl("text", { x: 2, y: H - bottom }, "0"),
    svgEl("line", { x1: left - 2, x2: W, y1: H - bottom, y2: H - bottom, class: "axis" }));
  const every = Math.ceil(bars.length / 12);
  bars.forEach((b, i) => {
    let y = H - bottom;
    const x = left + i * bw + 1;
    for (const p of b.parts) {
      const h = (val(p) / max) * (H - top - bottom);
      if (h <= 0) continue;
      y -= h;
      const r = svgEl("rect", { x, y, width: Math.max(1, bw - 2), height: h,
        class: p.value === null ? "suppressed" : "bar-" + p.cls });
      if (p.fill && p.value !== null) r.setAttribute("fill", p.fill);
      r.append(svgEl("title", {}, `${b.label}, ${p.name}: ${fmtCount(p.value)}`));
      svg.append(r);
    }
    if (i % every === 0) svg.append(svgEl("text", { x: x + 1, y: H - 7 }, b.short || b.label));
  });
}

function lineChart(svg, points, { W = 480, H = 170 } = {}) {
  svg.replaceChildren();
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const top = 12, bottom = 22, left = 30;
  const vals = points.flatMap((p) => [p.median, p.p90]).filter((v) => v != null);
  const max = Math.max(1, ...vals);
  const step = (W - left - 10) / Math.max(1, points.length - 1);
  const xy = (i, v) => [left + i * step, H - bottom - (v / max) * (H - top - bottom)];
  svg.append(svgEl("text", { x: 2, y: top + 8 }, `${Math.round(max)} s`), svgEl("text", { x: 2, y: H - bottom }, "0"),
    svgEl("line", { x1: left - 2, x2: W, y1: H - bottom, y2: H - bottom, class: "axis" }));
  for (const [key, cls] of [["p90", "line-p90"], ["median", "line-median"]]) {
    let d = "";
    points.forEach((p, i) => {
      if (p[key] == null) return;
      const [x, y] = xy(i, p[key]);
      d += (d && points[i - 1] && points[i - 1][key] != null ? "L" : "M") + x.toFixed(1) + " " + y.toFixed(1);
      const c = svgEl("circle", { cx: x, cy: y, r: 3, class: cls });
      c.append(svgEl("title", {}, `${p.label}: ${key} ${p[key]} s`));
      svg.append(c);
    });
    if (d) svg.append(svgEl("path", { d, class: cls }));
  }
  const every = Math.ceil(points.length / 10);
  points.forEach((p, i) => {
    if (p.median == null) svg.append(svgEl("rect", { x: xy(i, 0)[0] - 2, y: H - bottom - 6, width: 4, height: 6, class: "suppressed" }));
    if (i % every === 0) svg.append(svgEl("text", { x: xy(i, 0)[0] - 8, y: H - 7 }, p.short || p.label));
  });
}

// The text alternative: a summary sentence (the svg's name) and the full numbers as a table.
function dataTable(caption, head, rows) {
  return el("details", { cls: "data" }, el("summary", { text: "Show as table" }),
    el("table", { cls: "figures" }, el("caption", { text: `${caption} (<${minGroup}: fewer than ${minGroup}, hidden)` }),
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows.map((r) => el("tr", {}, el("th", { scope: "row", text: r[0] }),
        ...r.slice(1).map((c) => el("td", { text: c })))))));
}

function cueParts(g) { return CUES.map((c) => ({ cls: "cue", fill: c.colour, name: c.label, value: g.by_type[c.name] })); }
function cellCount(n) { return n === null ? `<${minGroup}` : String(n); }
function cueRow(label, g) { return [label, ...CUES.map((c) => cellCount(g.by_type[c.name])), cellCount(g.total)]; }
const CUE_HEAD = (first) => [first, ...CUES.map((c) => c.label), "all cues"];
const CUE_LEGEND = () => legend([...CUES.map((c) => ["cue", c.label, c.colour]), ["suppressed", `fewer than ${minGroup}`]]);

function busiest(groups, label) {
  const shown = groups.filter((g) => g.total);
  if (!shown.length) return "no group large enough to show";
  const top = shown.reduce((a, b) => (b.total > a.total ? b : a));
  return `busiest ${label(top)} with ${top.total} cues`;
}

function drawFigure(id, summary, draw, table) {
  const fig = document.getElementById(id);
  const svg = fig.querySelector("svg");
  draw(svg);
  svg.setAttribute("aria-label", summary);
  fig.querySelector(".summary").textContent = summary;
  fig.querySelector(".legend-slot").replaceChildren(table.legend || "");
  fig.querySelector(".table-slot").replaceChildren(table.el);
}

function statsQuery() {
  const q = new URLSearchParams();
  const today = new Date();
  if (rangeSel.value === "custom") {
    if (fromIn.value) q.set("from", fromIn.value);
    if (toIn.value) q.set("to", toIn.value);
  } else {
    const days = Number(rangeSel.value);
    q.set("from", isoDay(new Date(today.getTime() - (days - 1) * 86400000)));
    q.set("to", isoDay(today));
  }
  if (siteSel.value) q.set("site", siteSel.value);
  return q;
}

async function loadStats() {
  const q = statsQuery();
  let s;
  try { s = await getJSON("/api/stats?" + q); } catch (e) {
    document.getElementById("stats-note").textContent = "(" + e.message + ")"; return;
  }
  const r = s.range;
  minGroup = s.min_group_size;
  document.getElementById("stats-note").textContent =
    `${r.from} to ${r.to}${r.site ? ", " + storeName(r.site) : ""} · groups under ${minGroup} cues are hidden; no per-employee figures`;
  const none = document.getElementById("stats-empty");
  none.hidden = r.total !== 0;
  none.textContent = me.role === "demo"
    ? "No cues yet: the demo's counter replays a conversation, and its first cues appear about 30 s after the start."
    : "No cues in this range: they appear here as the counters' devices report them.";
  const cards = document.getElementById("today-cards");
  cards.replaceChildren(...CUES.map((c) => el("div", { cls: "card cue" },
    el("b", { text: fmtCount(r.by_type[c.name]) }), swatch(c.colour), c.label)));

  const hours = r.per_hour.filter((h) => h.total !== 0 || (h.hour >= 7 && h.hour <= 21));
  drawFigure("fig-hour", `Cues by hour of day, ${r.from} to ${r.to}: ${busiest(r.per_hour, (h) => `${h.hour}:00`)}.`,
    (svg) => barChart(svg, hours.map((h) => ({ label: `${h.hour}:00`, short: String(h.hour), parts: cueParts(h) }))),
    { legend: CUE_LEGEND(), el: dataTable("Cues by hour of day", CUE_HEAD("hour"), r.per_hour.map((h) => cueRow(`${h.hour}:00`, h))) });

  const counterName = (g) => `${g.device}, ${g.site_name || g.site}`;
  drawFigure("fig-counter", `Cues by counter: ${r.per_counter.length} counters, ${busiest(r.per_counter, counterName)}.`,
    (svg) => barChart(svg, r.per_counter.map((g) => ({ label: counterName(g), short: g.device.slice(0, 10), parts: cueParts(g) }))),
    { legend: CUE_LEGEND(), el: dataTable("Cues by counter", CUE_HEAD("counter"), r.per_counter.map((g) => cueRow(counterName(g), g))) });

  const dayLabel = (d) => new Date(d.date + "T12:00").toLocaleDateString([], { month: "short", day: "numeric" });
  drawFigure("fig-day", `Cues per day, ${r.from} to ${r.to}: ${busiest(r.days, dayLabel)}.`,
    (svg) => barChart(svg, r.days.map((d) => ({ label: dayLabel(d), short: d.date.slice(8), parts: cueParts(d) }))),
    { legend: CUE_LEGEND(), el: dataTable("Cues per day", CUE_HEAD("day"), r.days.map((d) => cueRow(dayLabel(d), d))) });

  const t = r.time_to_deescalate;
  const pts = r.days.map((d) => ({ label: dayLabel(d), short: d.date.slice(8),
    median: d.time_to_deescalate.median_s, p90: d.time_to_deescalate.p90_s }));
  drawFigure("fig-ttd", t.median_s === null
    ? `Time to de-escalate: not enough de-escalated conversations (${fmtCount(t.n)}) in this range.`
    : `Time to de-escalate: median ${t.median_s} s, 90th percentile ${t.p90_s} s over ${t.n} conversations, ${r.from} to ${r.to}.`,
    (svg) => lineChart(svg, pts),
    { legend: legend([["line-median", "median"], ["line-p90", "90th percentile"], ["suppressed", `fewer than ${minGroup} conversations`]]),
      el: dataTable("Time to de-escalate per day (seconds)", ["day", "conversations", "median", "90th percentile"],
        r.days.map((d) => [dayLabel(d), cellCount(d.time_to_deescalate.n),
          d.time_to_deescalate.median_s ?? "—", d.time_to_deescalate.p90_s ?? "—"])) });

  document.getElementById("csv").href = "/api/stats.csv?" + q;
  document.getElementById("csv-raw").href = "/api/events.csv?" + q;
}

async function setupStats() {
  const sites = await getJSON("/api/sites");
  siteNames = Object.fromEntries(sites.map((s) => [s.site, s.name || s.site]));
  siteSel.replaceChildren(new Option(sites.length > 1 ? "All my stores" : "All", ""),
    ...sites.map((s) => new Option(s.name ? `${s.name} (${s.site})` : s.site, s.site)));
  const today = isoDay(new Date());
  fromIn.value = isoDay(new Date(Date.now() - 6 * 86400000));
  toIn.value = today;
  fromIn.max = toIn.max = today;
  const custom = () => { fromIn.disabled = toIn.disabled = rangeSel.value !== "custom"; };
  rangeSel.onchange = () => { custom(); loadStats(); };
  fromIn.onchange = toIn.onchange = siteSel.onchange = () => loadStats();
  custom();
}

let statsTimer = null;
function statsSoon() {
  if (statsTimer) return;
  statsTimer = setTimeout(() => { statsTimer = null; loadStats(); if (typeof loadDevices === "function") loadDevices(); }, 2000);
}

// ---- single cues: IT and admin only (docs/privacy.md), in time order with the date ---------------
const cueBody = document.querySelector("#cues tbody");
function cueTime(ev) { return ev.ts || ev.received_at; }
function addCue(ev, fresh) {
  if (!singleCues() || ev.type !== "cue" || cueBody.querySelector(`tr[data-id="${ev.id}"]`)) return;
  const tr = el("tr", fresh ? { cls: "new" } : {});
  tr.dataset.id = ev.id;
  tr.dataset.t = cueTime(ev);
  tr.append(el("td", { text: fmtWhen(cueTime(ev)) }), el("td", { text: storeName(ev.site) }), el("td", { text: ev.device }),
    cueCell(ev.cue), el("td", { text: ev.level }),
    el("td", { text: ev.score.toFixed(2) }), el("td", { text: ev.reason || "" }));
  // a late event goes to its place in time, not on top
  const after = [...cueBody.rows].find((r) => Number(r.dataset.t) < cueTime(ev));
  cueBody.insertBefore(tr, after || null);
  while (cueBody.rows.length > MAX_ROWS) cueBody.deleteRow(-1);
}
function cueCell(name) {
  const c = cueByName(name);
  const td = el("td", { cls: "cue" + (c && c.alert ? " alert-cue" : "") }, ...(c ? [swatch(c.colour)] : []), name);
  if (c) td.title = c.label;
  return td;
}
function singleCues() { return ["admin", "it", "demo"].includes(me.role); }
async function loadCues() {
  if (!singleCues()) return;
  (await getJSON("/api/events?type=cue&limit=" + MAX_ROWS)).forEach((ev) => addCue(ev, false));
}

function post(url, body) {
  const headers = csrfHeaders(body ? { "Content-Type": "application/json" } : {});
  return fetch(url, { method: "POST", credentials: "same-origin", headers,
    body: body ? JSON.stringify(body) : undefined });
}

async function startManager(session) {
  me = { role: session.role || "demo", user: session.user };
  CUES = await getJSON("/api/cues");
  document.getElementById("cues-panel").hidden = !singleCues();
  document.getElementById("csv-raw").hidden = !singleCues();
  await setupStats();
  setInterval(renderAlerts, 15000);  // "open 3 min" keeps counting
  setupPush().catch((e) => { pushNote.textContent = "Notifications unavailable: " + e.message; });
  await Promise.all([loadCues(), loadAlerts(), loadStats()]);
}
