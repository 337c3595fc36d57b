// calmcue fleet screens for IT: one device list with health flags, a configuration form made
// from the settings table, roll-outs, dead letters, users and tokens. Vanilla JS served by the
// companion (no CDN: a store may have no internet). Only what the role may do is offered.
"use strict";

const $ = (sel) => document.querySelector(sel);
let session = null;
let csrf = null;
let thresholds = {};
let devices = [];
const timers = {};

// ---- plumbing ----------------------------------------------------------------------------------
async function getJSON(url) {
  const r = await fetch(url, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/login"; throw new Error("login needed"); }
  if (!r.ok) throw new Error(`${url}: ${r.status} ${(await r.json().catch(() => ({}))).detail || ""}`);
  return r.json();
}

async function send(method, url, body) {
  const headers = { "Content-Type": "application/json" };
  if (csrf) headers["X-CSRF-Token"] = csrf;
  const r = await fetch(url, { method, credentials: "same-origin", headers,
    body: body === undefined ? undefined : JSON.stringify(body) });
  const j = await r.json().catch(() => ({}));
  if (!r.ok) {
    const d = Array.isArray(j.detail) ? j.detail.map((e) => e.msg).join("; ") : j.detail;
    throw new Error(d || `${r.status}`);
  }
  return j;
}

function say(text) { $("#status").textContent = text; }

function el(tag, props = {}, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "data") Object.assign(e.dataset, v);
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

function td(label, content, cls) {
  const c = el("td", { "data-label": label }, content ?? "");
  if (cls) c.className = cls;
  return c;
}

function ago(t) {
  if (!t) return "never";
  const s = Math.max(0, Math.round(Date.now() / 1000 - t));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function isoTime(t) { return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC"; }

function every(name, ms, fn) {
  clearInterval(timers[name]);
  timers[name] = setInterval(() => { if (!document.hidden) fn().catch(showError); }, ms);
}

function showError(e) { say(String(e.message || e)); }

const may = {
  fleet: () => ["admin", "it"].includes(session.role),  // the /fleet API is never open in demo
  login: () => session.role !== "demo",
  admin: () => session.role === "admin",
};

// ---- tabs -----------------------------------------------------------------------------------------
const SCREENS = { devices: loadDevices, config: loadConfig, rollouts: loadRollouts,
  "dead-letters": loadDeadLetters, people: loadPeople };

function offered(id) {
  const link = document.querySelector(`#tabs a[href="#${id}"]`);
  return link && !link.hidden;
}

async function show() {
  let id = location.hash.slice(1);
  if (!SCREENS[id] || !offered(id)) id = "devices";
  for (const s of Object.keys(SCREENS)) document.getElementById(s).hidden = s !== id;
  for (const a of document.querySelectorAll("#tabs a")) {
    if (a.getAttribute("href") === "#" + id) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  Object.keys(timers).forEach((k) => clearInterval(timers[k]));
  try { await SCREENS[id](); } catch (e) { showError(e); }
}

// ---- devices ------------------------------------------------------------------------------------
function memory(d) {
  if (d.heap_free_kb != null) return `${d.heap_free_kb} kB free`;
  if (d.mem_kb != null) return `${Math.round(d.mem_kb)} kB used`;
  return "";
}

function status(d) { return d.silent ? "silent" : d.status; }

function flagged(d, key) { return d.flags.some((f) => f.key === key); }

const SORTS = {
  flags: (a, b) => b.flags.length - a.flags.length,
  name: () => 0,
  last_seen: (a, b) => (a.last_seen ?? 0) - (b.last_seen ?? 0),
  battery_pct: (a, b) => (a.battery_pct ?? 999) - (b.battery_pct ?? 999),
  rssi_dbm: (a, b) => (a.rssi_dbm ?? 0) - (b.rssi_dbm ?? 0),
  queue: (a, b) => (b.queue ?? -1) - (a.queue ?? -1),
  firmware: (a, b) => String(a.firmware ?? "").localeCompare(String(b.firmware ?? "")),
};

const CONFIG_TEXT = { confirmed: "confirmed", pending: "waiting for device", defaults: "defaults",
  unknown: "not reported", refused: "refused by device" };

function renderDevices() {
  const q = $("#dev-filter").value.trim().toLowerCase();
  const showWhat = $("#dev-show").value;
  let list = devices.filter((d) => {
    if (q && ![d.site, d.device, d.name, d.label, d.firmware, d.model, d.status]
      .some((x) => String(x ?? "").toLowerCase().includes(q))) return false;
    if (showWhat === "flagged") return d.flags.length > 0;
    if (showWhat === "offline") return ["offline", "silent", "never seen"].includes(status(d));
    if (showWhat === "unprovisioned") return !d.in_inventory;
    return true;
  });
  list = list.slice().sort(SORTS[$("#dev-sort").value] || SORTS.name);
  const body = $("#device-table tbody");
  body.replaceChildren(...list.map((d) => {
    const who = el("td", { "data-label": "device" },
      el("b", {}, d.name || d.device), el("br"), el("small", {}, `${d.site} · ${d.device}`));
    if (!d.in_inventory) who.append(el("br"), el("small", { class: "warn" }, "not provisioned"));
    if (d.in_registry) {
      who.append(el("br"), el("a", { href: `?device=${encodeURIComponent(d.site + "/" + d.device)}#config`,
        "aria-label": `Configure ${d.name || d.device} at ${d.site}`, class: "configure" }, "Configure"));
    }
    const flags = el("td", { "data-label": "needs a look" });
    if (d.flags.length) {
      flags.append(el("ul", { class: "flags" }, ...d.flags.map((f) => el("li", { data: { flag: f.key } }, f.text))));
    } else flags.textContent = "—";
    const tr = el("tr", { data: { device: d.device, site: d.site }, class: d.flags.length ? "flagged" : "" },
      who,
      td("status", status(d), "st-" + status(d).replace(" ", "-")),
      td("last seen", el("time", { datetime: d.last_seen ? new Date(d.last_seen * 1000).toISOString() : "",
        title: d.last_seen ? isoTime(d.last_seen) : "" }, ago(d.last_seen)), flagged(d, "last_seen") ? "bad" : ""),
      td("firmware", d.firmware || d.version || ""),
      td("model", d.model || ""),
      td("battery", d.battery_pct != null ? `${d.battery_pct} %` : "", flagged(d, "battery") ? "bad" : ""),
      td("signal", d.rssi_dbm != null ? `${d.rssi_dbm} dBm` : "", flagged(d, "signal") ? "bad" : ""),
      td("queue", d.queue != null ? String(d.queue) : "", flagged(d, "queue") ? "bad" : ""),
      td("memory", memory(d), flagged(d, "heap") ? "bad" : ""),
      td("config", CONFIG_TEXT[d.config_state] || d.config_state),
      flags);
    return tr;
  }));
  $("#devices-count").textContent = `${list.length} of ${devices.length}` +
    ` · ${devices.filter((d) => d.flags.length).length} need a look`;
}

async function loadThresholds() {
  if (thresholds.queue_high !== undefined) return;
  const s = await getJSON("/api/fleet/settings");
  thresholds = s.thresholds;
  $("#thresholds").textContent = `Flagged at: battery ≤ ${thresholds.battery_low_pct} %, ` +
    `signal ≤ ${thresholds.signal_weak_dbm} dBm, queue ≥ ${thresholds.queue_high} events, ` +
    `free heap < ${thresholds.heap_low_kb} kB, silent ≥ ${Math.round(thresholds.silent_after_s / 60)} min.`;
}

async function loadDevices() {
  await loadThresholds();
  devices = await getJSON("/api/fleet/devices");
  renderDevices();
  every("devices", 10000, async () => { devices = await getJSON("/api/fleet/devices"); renderDevices(); });
}

// ---- configuration --------------------------------------------------------------------------------
let cfgInfo = null;

function limitsText(r) {
  if (r.kind === "bool") return "on / off";
  if (r.kind === "choice") return r.options.join(", ");
  return `${r.lo} – ${r.hi}${r.unit ? " " + r.unit : ""}`;
}

function fmtValue(r, v) {
  if (v === null || v === undefined) return "—";
  if (r.kind === "bool") return v ? "on" : "off";
  return String(v) + (r.unit && r.kind !== "choice" && !r.unit.includes("..") ? " " + r.unit : "");
}

function inputFor(r) {
  const id = "cfg-" + r.key;
  const own = r.device_value;
  let input;
  if (r.kind === "bool" || r.kind === "choice") {
    const opts = r.kind === "bool" ? [["", "inherit"], ["true", "on"], ["false", "off"]]
      : [["", "inherit"], ...r.options.map((o) => [o, o])];
    input = el("select", { id, name: r.key }, ...opts.map(([v, t]) => el("option", { value: v }, t)));
    input.value = own === null || own === undefined ? "" : String(own);
  } else {
    input = el("input", { id, name: r.key, type: "number", inputmode: "decimal",
      min: String(r.lo), max: String(r.hi), step: r.kind === "int" ? "1" : "any",
      placeholder: String(r.effective) });
    if (own !== null && own !== undefined) input.value = String(own);
  }
  input.dataset.kind = r.kind;
  return input;
}

function renderConfig(info) {
  cfgInfo = info;
  const body = $("#cfg-table tbody");
  body.replaceChildren(...info.rows.map((r) => {
    const label = el("label", { for: "cfg-" + r.key }, r.key);
    const conf = r.set ? ({ confirmed: "yes", pending: "not yet", refused: "refused" }[info.state] || "not reported") : "default";
    return el("tr", { data: { key: r.key } },
      el("th", { scope: "row", "data-label": "setting" }, label, r.unit ? el("small", {}, " " + r.unit) : null),
      td("this device", inputFor(r)),
      td("limits", limitsText(r)),
      td("default", fmtValue(r, r.default)),
      td("site", fmtValue(r, r.site_value)),
      td("effective", fmtValue(r, r.effective), "effective"),
      td("device confirmed", conf, "conf-" + conf.replace(" ", "-")));
  }));
  renderConfigState(info);
}

function renderConfigState(info) {
  const st = $("#cfg-state");
  st.dataset.state = info.state;
  if (info.target === "site") {
    const c = info.counts;
    st.textContent = `Site ${info.site}: ${c.confirmed || 0} of ${info.devices} devices confirmed` +
      ` what they were sent` + (c.pending ? `, ${c.pending} waiting` : "") +
      (c.refused ? `, ${c.refused} refused (${info.refused.map((r) => `${r.device}: ${r.detail}`).join("; ")})` : "") +
      (c.unknown ? `, ${c.unknown} not reporting a revision` : "") + ". A device's own value wins over the site's.";
    return;
  }
  const seen = info.tele_at ? ` (last report ${ago(info.tele_at)})` : "";
  st.textContent = {
    confirmed: info.expected_rev == null ? `The device answered that it applied this configuration${seen}.`
      : `The device confirmed this configuration (revision ${info.expected_rev})${seen}.`,
    pending: info.expected_rev == null ? `Waiting for the device to answer${seen}.`
      : `Waiting for the device to confirm revision ${info.expected_rev}; it reports ` +
      `${info.reported_rev ?? "none"}${seen}.`,
    refused: `The device refused this configuration and keeps its own: ${info.detail}.`,
    defaults: `Nothing set for this device: it runs the defaults${seen}.`,
    unknown: `This device does not report which configuration it runs${seen}.`,
  }[info.state] || info.state;
}

function formDoc() {
  const policy = {}, doc = {}, problems = [];
  for (const r of cfgInfo.rows) {
    const input = document.getElementById("cfg-" + r.key);
    const raw = input.value.trim();
    input.removeAttribute("aria-invalid");
    if (raw === "") continue;
    let v = raw;
    if (r.kind === "bool") v = raw === "true";
    else if (r.kind === "num" || r.kind === "int") {
      v = Number(raw);
      if (!Number.isFinite(v) || v < r.lo || v > r.hi || (r.kind === "int" && !Number.isInteger(v))) {
        problems.push(`${r.key}: choose ${r.kind === "int" ? "a whole number" : "a number"} from ${r.lo} to ${r.hi}`);
        input.setAttribute("aria-invalid", "true");
        continue;
      }
    }
    if (r.group === "policy") policy[r.key] = v; else doc[r.key] = v;
  }
  if (Object.keys(policy).length) doc.policy = policy;
  return { doc, problems };
}

// a target is "site" or "site/device"
function target() {
  const [site, device] = $("#cfg-device").value.split("/");
  return device ? { site, device, read: `/api/fleet/devices/${site}/${device}/config`,
    write: `/api/devices/${site}/${device}/config`, name: `device ${device}` }
    : { site, read: `/api/fleet/sites/${site}/config`, write: `/api/sites/${site}/config`,
      name: `site ${site}` };
}

async function pollConfig(t, announce) {
  const info = await getJSON(t.read);
  if (target().read !== t.read) return;
  renderConfig(info);
  $("#cfg-table thead th:nth-child(2)").textContent = t.device ? "this device" : "this site";
  if (announce && info.state === "confirmed") {  // said once; then the slower refresh
    say(t.device ? `Device ${t.device} confirmed the configuration.`
      : `Every device of site ${t.site} confirmed the configuration.`);
    every("config", 2000, () => pollConfig(t, false));
  }
}

async function loadConfig() {
  const list = await getJSON("/api/fleet/devices");
  const sel = $("#cfg-device");
  const keep = sel.value;
  const known = list.filter((d) => d.in_registry);
  const sites = [...new Set(known.map((d) => d.site))];
  sel.replaceChildren(...sites.map((site) => el("optgroup", { label: site },
    el("option", { value: site }, `${site}: whole site`),
    ...known.filter((d) => d.site === site).map((d) =>
      el("option", { value: `${d.site}/${d.device}` }, `${d.site} / ${d.name || d.device}`)))));
  if (!known.length) {
    $("#cfg-state").textContent = "No device has reported yet: a device appears here after its first contact.";
    $("#cfg-form").hidden = true;
    return;
  }
  $("#cfg-form").hidden = false;
  const want = new URLSearchParams(location.search).get("device");
  if (keep && known.some((d) => `${d.site}/${d.device}` === keep)) sel.value = keep;
  else if (want && known.some((d) => `${d.site}/${d.device}` === want)) sel.value = want;
  else if (known.length) sel.value = `${known[0].site}/${known[0].device}`;
  const load = async () => {
    const t = target();
    $("#cfg-result").textContent = "";
    await pollConfig(t, false);
    every("config", 2000, () => pollConfig(t, false));
  };
  sel.onchange = () => load().catch(showError);
  await load();
}

$("#cfg-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const out = $("#cfg-result");
  const { doc, problems } = formDoc();
  if (problems.length) { out.className = "error"; out.textContent = problems.join("; "); return; }
  const t = target();
  $("#cfg-save").disabled = true;
  try {
    await send("PUT", t.write, doc);
    out.className = "";
    out.textContent = `Saved and sent; waiting for ${t.device ? "the device" : "the devices"} to confirm.`;
    await pollConfig(t, false);
    every("config", 1000, () => pollConfig(t, true));
  } catch (err) {
    out.className = "error";
    out.textContent = "Not saved: " + err.message;
  } finally {
    $("#cfg-save").disabled = false;
  }
});

// ---- roll-outs ----------------------------------------------------------------------------------
function rolloutItem(u) {
  const name = `update ${u.version} for ${u.site}`;
  const pct = u.targets ? Math.round((100 * u.done) / u.targets) : 0;
  const li = el("li", { class: "rollout " + u.state, data: { update: u.update } });
  li.append(el("h3", {}, `${u.version} → ${u.site}`, el("small", {}, ` ${u.update} · ${u.state} · offered to ${u.percent} %`
    + (u.content_of ? ` · rollback to the files of ${u.content_of}` : ""))));
  if (u.no_devices) {
    li.append(el("p", { class: "warn" }, `No devices: site ${u.site} has no device the companion knows of, so nothing will take this update.`));
  }
  const bar = el("progress", { max: String(Math.max(1, u.targets)), value: String(u.done),
    "aria-label": `${name}: ${u.done} of ${u.targets} devices confirmed` });
  li.append(el("p", { class: "progress" }, bar,
    el("span", { class: "done" }, ` ${u.done} of ${u.targets} devices confirmed (${pct} %)`)));
  const c = u.counts;
  li.append(el("p", { class: "counts" }, `applied ${c.applied} · confirmed ${c.confirmed} · rolled back ${c.rolled_back} · refused ${c.refused}`));
  if (u.devices.length) {
    li.append(el("details", {}, el("summary", {}, `Devices (${u.devices.length})`),
      el("ul", {}, ...u.devices.map((d) => el("li", {}, `${d.device}: ${d.state} ${ago(d.updated_at)}${d.detail ? " — " + d.detail : ""}`)))));
  }
  const act = el("div", { class: "actions" });
  const run = async (what, fn) => {
    try { await fn(); say(what); await loadRollouts(true); } catch (err) { say(`${name}: ${err.message}`); }
  };
  if (u.state === "active") {
    act.append(el("button", { type: "button", class: "pause", "aria-label": `Pause ${name}`,
      onclick: () => run(`Paused ${name}.`, () => send("PATCH", `/fleet/updates/${u.update}`, { state: "paused" })) }, "Pause"));
  } else {
    act.append(el("button", { type: "button", class: "resume", "aria-label": `Resume ${name}`,
      onclick: () => run(`Resumed ${name}.`, () => send("PATCH", `/fleet/updates/${u.update}`, { state: "active" })) }, "Resume"));
  }
  const pctIn = el("input", { type: "number", min: "0", max: "100", step: "1", value: String(u.percent),
    id: "pct-" + u.update, class: "pct" });
  act.append(el("label", { for: "pct-" + u.update }, "Offer to %"), pctIn,
    el("button", { type: "button", class: "widen", "aria-label": `Set the share for ${name}`,
      onclick: () => run(`${name} offered to ${pctIn.value} %.`, () => send("PATCH", `/fleet/updates/${u.update}`, { percent: Number(pctIn.value) })) }, "Set"));
  if (!u.content_of) {
    const confirmBox = el("span", { class: "confirm", hidden: true },
      `Send the devices back to the previous version? `,
      el("button", { type: "button", class: "rollback-yes danger", "aria-label": `Confirm roll back of ${name}`,
        onclick: () => run(`Rolled back ${name}.`, () => send("POST", `/fleet/updates/${u.update}/rollback`)) }, "Roll back now"),
      el("button", { type: "button", class: "rollback-no", "aria-label": `Keep ${name}`,
        onclick: () => { confirmBox.hidden = true; } }, "Cancel"));
    act.append(el("button", { type: "button", class: "rollback", "aria-label": `Roll back ${name}`,
      onclick: () => { confirmBox.hidden = false; confirmBox.querySelector(".rollback-yes").focus(); } }, "Roll back…"), confirmBox);
  }
  li.append(act);
  return li;
}

async function loadRollouts(force) {
  const list = await getJSON("/api/fleet/rollouts");
  const ul = $("#rollout-list");
  const confirming = [...ul.querySelectorAll(".confirm")].some((c) => !c.hidden);
  if (confirming && force !== true) return;  // not redrawn under a question being answered
  ul.replaceChildren(...(list.length ? list.map(rolloutItem) : [el("li", { class: "empty" }, "No updates published yet.")]));
  every("rollouts", 3000, () => loadRollouts(false));
}

// ---- dead letters ----------------------------------------------------------------------------------
async function loadDeadLetters() {
  const list = await getJSON("/api/dead-letters?limit=200");
  $("#dead-table tbody").replaceChildren(...(list.length ? list.map((d) => el("tr", {},
    td("received", el("span", { title: isoTime(d.received_at) }, ago(d.received_at))),
    td("topic", el("code", {}, d.topic)),
    td("reason", d.reason),
    td("size", `${d.size} B${d.truncated ? " (cut)" : ""}`),
    td("payload", el("code", { class: "payload" }, d.payload.slice(0, 300))))) :
    [el("tr", {}, el("td", { colspan: "5" }, "No dead letters: every message was stored."))]));
}

// ---- users and tokens -----------------------------------------------------------------------------
async function loadPeople() {
  if (may.admin()) {
    $("#users-box").hidden = false;
    const users = await getJSON("/api/users");
    $("#user-table tbody").replaceChildren(...users.map((u) => el("tr", {},
      td("user", u.username), td("role", u.role), td("sites", u.sites.join(", ") || "all"))));
  }
  const tokens = await getJSON("/api/tokens" + (may.admin() ? "?all=true" : ""));
  $("#token-table tbody").replaceChildren(...(tokens.length ? tokens.map((t) => el("tr", {},
    td("name", t.name), td("user", t.username), td("created", ago(t.created_at)),
    td("action", el("button", { type: "button", class: "revoke", "aria-label": `Revoke token ${t.name} of ${t.username}`,
      onclick: async () => { try { await send("DELETE", `/api/tokens/${t.id}`); say(`Token ${t.name} revoked.`); await loadPeople(); } catch (err) { say(err.message); } } }, "Revoke")))) :
    [el("tr", {}, el("td", { colspan: "4" }, "No API tokens."))]));
}

$("#user-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = new FormData(e.target);
  const out = $("#user-result");
  try {
    await send("POST", "/api/users", { username: f.get("username"), password: f.get("password"),
      role: f.get("role"), sites: String(f.get("sites")).split(",").map((s) => s.trim()).filter(Boolean) });
    out.className = ""; out.textContent = `User ${f.get("username")} added.`;
    e.target.reset();
    await loadPeople();
  } catch (err) { out.className = "error"; out.textContent = err.message; }
});

$("#token-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = new FormData(e.target).get("name");
  try {
    const t = await send("POST", "/api/tokens", { name });
    $("#token-new").textContent = `New token (shown once, copy it now): ${t.token}`;
    await loadPeople();
  } catch (err) { $("#token-new").textContent = err.message; }
});

// ---- start ---------------------------------------------------------------------------------------
async function main() {
  session = await getJSON("/api/session");
  csrf = session.csrf || null;
  if (session.mode !== "demo" && !session.user) { location.href = "/login"; return; }
  $("#who").textContent = session.user ? `${session.user} · ${session.role}` : "demo mode";
  if (!["admin", "it", "demo"].includes(session.role)) {
    $("#refused").hidden = false;
    $("#tabs").hidden = true;
    return;
  }
  for (const a of document.querySelectorAll("#tabs a[data-needs]")) a.hidden = !may[a.dataset.needs]();
  for (const id of ["dev-filter", "dev-show", "dev-sort"]) {
    document.getElementById(id).addEventListener("input", renderDevices);
  }
  window.addEventListener("hashchange", show);
  await show();
}

main().catch(showError);
