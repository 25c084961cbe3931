// The hivemind dashboard (DESIGN.md §6i): plain JavaScript, no dependencies, served by the
// member itself. It reads the /v1 API as any client does and stays live without re-reading
// everything: the event feed (long-poll) says which views a change touched, the KV view
// follows a prefix watch, the services view a Consul blocking query.
"use strict";

let token = sessionStorage.getItem("hivemind-token") || "";

// ---- helpers ----

class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (token) headers["Authorization"] = "Bearer " + token;
  const response = await fetch(path, { method: opts.method || "GET", headers, body: opts.body, signal: opts.signal });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  // 401: no or a malformed token; 403 without a token: ACLs are on and anonymous may not look.
  if (response.status === 401 || (response.status === 403 && !token)) {
    needLogin(response.status === 401 ? "This token is not valid here." : "This cluster needs a token.");
    throw new ApiError(response.status, "login", "log in with a token (ACL view)");
  }
  if (!response.ok) {
    const e = (body && body.error) || {};
    throw new ApiError(response.status, e.code || String(response.status), e.message || String(text));
  }
  return { body, headers: response.headers };
}
const get = async path => (await api(path)).body;
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}
const cell = (text, cls) => el("td", cls ? { class: cls } : {}, text === undefined || text === null ? "" : String(text));

function fill(id, rows) {
  document.querySelector("#" + id + " tbody").replaceChildren(...rows.map(cells => el("tr", {}, cells)));
}

const bytes = n => n >= 1e9 ? (n / 1e9).toFixed(1) + " GB" : n >= 1e6 ? (n / 1e6).toFixed(1) + " MB" : n >= 1e3 ? (n / 1e3).toFixed(1) + " kB" : n + " B";
const when = ms => ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "";

function showError(e) {
  document.getElementById("error").textContent = e && e.code !== "login" ? e.message : "";
}

function message(id, text, good) {
  const box = document.getElementById(id);
  box.textContent = text;
  box.className = "message " + (good ? "good" : "bad");
}

// ---- login ----

function needLogin(reason) {
  document.getElementById("login-reason").textContent = reason;
  if (location.hash !== "#acl") location.hash = "#acl";
  document.getElementById("token").focus();
}

document.getElementById("login").addEventListener("submit", e => {
  e.preventDefault();
  token = document.getElementById("token").value.trim();
  sessionStorage.setItem("hivemind-token", token);
  document.getElementById("token").value = "";
  message("acl-message", token ? "Logged in: requests now carry this token." : "Logged out.", true);
  restartLive();
  render("acl");
});
document.getElementById("logout").addEventListener("click", () => {
  token = "";
  sessionStorage.removeItem("hivemind-token");
  message("acl-message", "Logged out.", true);
  render("acl");
});

// ---- summary and connection ----

let status = null;
async function summary() {
  try {
    status = await get("/v1/status");
    const cp = status.control_plane || {};
    const items = [["member", status.name], ["health", cp.health || "unknown", cp.health],
      ["leader", cp.leader ? cp.leader.name : "none"], ["term", cp.term], ["commit", cp.commit_index],
      ["epoch", status.epoch], ["ready", status.ready ? "yes" : "waiting for " + status.waiting_for.join(", ")]];
    document.getElementById("summary").replaceChildren(...items.map(([label, value, cls]) =>
      el("span", {}, label + ": ", el("b", cls ? { class: cls } : {}, value === undefined ? "?" : value))));
    setConnection(true);
  } catch (e) {
    if (!(e instanceof ApiError)) setConnection(false);
  }
}

function setConnection(ok) {
  const conn = document.getElementById("conn");
  conn.textContent = ok ? "connected" : "this member does not answer";
  conn.className = ok ? "ok" : "unreachable";
}

// ---- views ----

const RANK = { passing: 0, warning: 1, critical: 2 };
async function services() {
  const names = Object.keys(await get("/v1/catalog/services")).sort();
  const lists = await Promise.all(names.map(n => get("/v1/health/service/" + encodeURIComponent(n))));
  fill("services", lists.flat().map(e => {
    const worst = e.Checks.reduce((w, c) => RANK[c.Status] > RANK[w] ? c.Status : w, "passing");
    const checks = el("details", {}, el("summary", {}, e.Checks.length + " checks"),
      el("ul", {}, e.Checks.map(c => el("li", {}, c.Name + ": ", el("span", { class: c.Status }, c.Status),
        c.Output ? el("pre", {}, c.Output) : null))));
    return [cell(e.Service.Service), cell(e.Service.ID), cell(e.Node.Node),
      cell((e.Service.Address || e.Node.Address) + ":" + e.Service.Port), cell(worst, worst), el("td", {}, checks)];
  }));
  let leases = [];
  try { leases = await get("/v1/leases"); } catch (_) { /* only control-plane members keep leases */ }
  fill("leases", leases.map(l => [cell(l.id), cell(l.ttl),
    cell(l.remaining_ms === undefined || l.remaining_ms === null ? "" : (l.remaining_ms / 1000).toFixed(1) + " s"),
    cell((l.keys || []).join(", "))]));
}

async function members() {
  const list = await get("/v1/members");
  const cp = (status && status.control_plane) || {};
  const voters = new Set((cp.voters || []).map(v => v.id));
  fill("members", list.map(m => [cell(m.name), cell(m.state, m.state), cell(m.roles.join(", ")),
    cell(cp.leader && cp.leader.id === m.id ? "leader" : voters.has(m.id) ? "follower" : m.control_plane ? "learner" : ""),
    cell(m.node), cell(m.generation), cell(m.http), cell(m.id)]));
}

async function keygroups() {
  fill("keygroups", (await get("/v1/keygroups")).map(k => [cell(k.name), cell(k.version),
    cell(k.replicas.join(", ")), cell(k.triggers.join(", ")), cell(k.ttl), cell(k.open ? "yes" : "no"),
    cell(k.tombstoned ? "tombstoned" : "live", k.tombstoned ? "tombstoned" : "live")]));
}

async function responsibilities() {
  fill("responsibilities", (await get("/v1/responsibilities")).map(r => [cell(r.node), cell(r.keygroup),
    cell(r.machine_name || r.machine), cell(r.fence), cell(r.subscriptions ?? "?")]));
}

async function backup() {
  const [spaces, snapshots] = await Promise.all([get("/v1/backup/spaces"), get("/v1/backup/snapshots")]);
  fill("spaces", spaces.map(s => [cell(s.name || s.member), cell(s.state, s.state), cell(bytes(s.capacity)),
    cell(bytes(s.stored)), cell(bytes(s.reserved)),
    cell(s.capacity ? Math.round(100 * (s.stored + s.reserved) / s.capacity) + "%" : "")]));
  const row = s => [cell(s.owner), cell(s.id), cell(when(s.time_ms)), cell(s.files), cell(bytes(s.bytes))];
  const last = new Map();
  for (const s of snapshots) last.set(s.owner, s);
  fill("last-runs", [...last.values()].map(row));
  fill("snapshots", snapshots.slice(-50).reverse().map(row));
}

async function nginx() {
  const list = await get("/v1/nginx");
  const box = document.getElementById("nginx");
  if (!list.length) { box.replaceChildren(el("p", { class: "meta" }, "No live nginx member.")); return; }
  box.replaceChildren(...list.map(n => {
    const c = n.config;
    if (!c) return el("div", { class: "panel" }, el("b", {}, n.member), " ", el("span", { class: "error" }, n.error || "no answer"));
    const reload = c.last_reload;
    return el("div", { class: "panel", style: "margin-bottom:.8em" },
      el("b", {}, n.member), " ", el("span", { class: "meta" }, n.http),
      el("p", {}, "services: " + c.services + " · renders: " + c.renders + " · reloads: " + c.reloads +
        " · nginx pid: " + (c.nginx_pid ?? "none") + " · hash: " + (c.hash || "").slice(0, 12)),
      el("p", {}, "last reload: ", reload
        ? el("span", { class: reload.ok ? "ok" : "error" }, (reload.ok ? "ok" : "failed: " + reload.error) +
          " at " + when(reload.at_unix_ms) + " (" + reload.duration_ms.toFixed(1) + " ms)")
        : "none"),
      c.last_failure ? el("p", { class: "error" }, "last failure at " + when(c.last_failure.at_unix_ms) + ": " + c.last_failure.error) : null,
      el("details", {}, el("summary", {}, "running configuration"), el("pre", {}, c.render || "")));
  }));
}

async function acl() {
  const admin = document.getElementById("acl-admin");
  let policies, tokens;
  try {
    [policies, tokens] = await Promise.all([get("/v1/acl/policies"), get("/v1/acl/tokens")]);
  } catch (e) {
    admin.hidden = true;
    if (e.code !== "login") {
      document.getElementById("login-reason").textContent = e.status === 403
        ? "Policies and tokens need a management token." : e.message;
    }
    return;
  }
  admin.hidden = false;
  const remove = (path, what) => el("button", { class: "danger", type: "button", onclick: async () => {
    if (!confirm("Delete " + what + "?")) return;
    try { await api(path, { method: "DELETE" }); message("acl-message", "Deleted " + what + ".", true); }
    catch (e) { message("acl-message", e.message); }
    render("acl");
  } }, "Delete");
  fill("policies", policies.map(p => [cell(p.name), el("td", {}, el("pre", {}, p.rules)), cell(p.modify_index),
    el("td", {}, remove("/v1/acl/policy/" + encodeURIComponent(p.name), "policy " + p.name))]));
  fill("tokens", tokens.map(t => [cell(t.accessor), cell(t.management ? "management" : t.policies.join(", ")),
    cell(t.description), cell(t.expires_at_ms ? when(t.expires_at_ms) : "never"),
    el("td", {}, remove("/v1/acl/token/" + encodeURIComponent(t.accessor), "token " + t.accessor))]));
}

document.getElementById("policy-create").addEventListener("submit", async e => {
  e.preventDefault();
  const name = document.getElementById("policy-name").value.trim();
  try {
    await api("/v1/acl/policy/" + encodeURIComponent(name), { method: "PUT", body: document.getElementById("policy-rules").value });
    message("acl-message", "Policy " + name + " saved.", true);
  } catch (err) { message("acl-message", err.message); }
  render("acl");
});
document.getElementById("token-create").addEventListener("submit", async e => {
  e.preventDefault();
  const policies = document.getElementById("token-policies").value.split(",").map(s => s.trim()).filter(Boolean);
  const description = document.getElementById("token-description").value.trim();
  try {
    const made = (await api("/v1/acl/tokens", { method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(description ? { policies, description } : { policies }) })).body;
    message("acl-message", "Token " + made.accessor + " created; its secret (shown once): " + made.secret, true);
  } catch (err) { message("acl-message", err.message); }
  render("acl");
});

// A value of an event in one line: a name first, then the plain fields (details hold the rest).
function readable(v) {
  if (Array.isArray(v)) return v.map(readable).join(", ");
  if (v === null || typeof v !== "object") return String(v);
  const plain = Object.entries(v).filter(([k, x]) => k !== "name" && x !== null && typeof x !== "object");
  return [v.name, ...plain.map(([k, x]) => k + " " + x)].filter(x => x !== undefined).join(", ");
}

// Events: readable rows, details on demand, a filter by kind.
let events = [];
const kinds = new Set();
function eventsView() {
  const select = document.getElementById("event-kind");
  for (const k of [...kinds].sort()) {
    if (![...select.options].some(o => o.value === k)) select.append(el("option", { value: k }, k));
  }
  const shown = events.filter(e => !select.value || e.kind === select.value).slice(-200).reverse();
  fill("events", shown.map(e => {
    const rest = Object.entries(e).filter(([k]) => !["index", "epoch", "kind"].includes(k));
    const line = rest.map(([k, v]) => k + ": " + readable(v)).join(" · ");
    return [cell(e.index), cell(e.kind), el("td", { class: "trunc" },
      el("details", {}, el("summary", {}, line), el("pre", {}, JSON.stringify(e, null, 2))))];
  }));
}
document.getElementById("event-kind").addEventListener("change", eventsView);

const VIEWS = { services, members, kv: () => kvList(), keygroups, responsibilities, backup, nginx, acl, events: async () => eventsView() };

// Which views an event of each kind touches.
function touched(kind) {
  if (kind.startsWith("member_") || kind === "epoch_started" || kind === "node_config_updated") return ["members", "services", "backup", "nginx"];
  if (kind.startsWith("keygroup_")) return ["keygroups", "responsibilities"];
  if (kind.startsWith("responsibility_")) return ["responsibilities"];
  if (kind === "acl_changed") return ["acl"];
  if (kind.startsWith("backup")) return ["backup"];
  return [];
}

let current = "";
async function render(view) {
  try { await VIEWS[view](); if (view !== "acl") showError(null); }
  catch (e) { showError(e); }
}

function route() {
  const view = (location.hash || "#services").slice(1).split("/")[0];
  const name = VIEWS[view] ? view : "services";
  for (const section of document.querySelectorAll("main > section")) section.hidden = section.id !== "view-" + name;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === "#" + name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  current = name;
  if (name === "kv") kvEnter();
  render(name);
}
window.addEventListener("hashchange", route);
