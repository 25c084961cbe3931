// The KV view: browse by prefix as a tree (`#kv/<prefix>`), view a value as text or hex,
// create, edit with compare-and-set on the modify index, delete; a prefix watch keeps the
// listing and the open key current, and an edit that lost a race shows the conflict.

let kvPrefix = "";
let kvEntries = [];
let kvSelected = null; // { key, entry, dirty, hex }
let kvAbort = null;

const keyPath = key => "/v1/kv/" + key.split("/").map(encodeURIComponent).join("/");

function decodeValue(b64) {
  const raw = atob(b64 || "");
  const data = Uint8Array.from(raw, c => c.charCodeAt(0));
  let text = null;
  try { text = new TextDecoder("utf-8", { fatal: true }).decode(data); } catch (_) { text = null; }
  const hex = [...data].map(b => b.toString(16).padStart(2, "0")).join(" ");
  return { data, text, hex };
}

function kvEnter() {
  const rest = location.hash.startsWith("#kv/") ? decodeURIComponent(location.hash.slice(4)) : "";
  if (rest !== kvPrefix) { kvPrefix = rest; kvSelected = null; kvPanel(); }
  document.getElementById("kv-new-key").value = kvPrefix;
}

function kvGo(prefix) { location.hash = "#kv/" + encodeURIComponent(prefix); }

async function kvLoad() {
  const { body, headers } = await api("/v1/kv?prefix=" + encodeURIComponent(kvPrefix));
  kvEntries = body;
  kvCrumbs();
  kvDraw();
  return Number(headers.get("x-hivemind-index") || 0);
}

// Lists the prefix, then follows it with a watch until the view or the prefix changes.
async function kvList() {
  const index = await kvLoad();
  if (kvSelected) {
    const entry = kvEntries.find(e => e.key === kvSelected.key);
    if (entry && !kvSelected.dirty) { kvSelected.entry = entry; kvPanel(); }
  }
  kvWatch(index);
}

async function kvWatch(from) {
  if (kvAbort) kvAbort.abort();
  const control = new AbortController();
  kvAbort = control;
  const prefix = kvPrefix;
  let after = from;
  while (!control.signal.aborted && current === "kv" && prefix === kvPrefix) {
    try {
      const page = (await api("/v1/kv?prefix=" + encodeURIComponent(prefix) + "&watch=true&after=" + after + "&wait=30s",
        { signal: control.signal })).body;
      after = page.next_after;
      if (page.events.length) {
        await kvLoad();
        for (const e of page.events) kvChanged(e);
      }
    } catch (e) {
      if (control.signal.aborted) return;
      if (e.status === 410) { after = await kvLoad(); continue; }
      await sleep(2000);
    }
  }
}

// A change to the open key: shown at once, unless the user is editing it.
function kvChanged(change) {
  if (!kvSelected || change.key !== kvSelected.key) return;
  // Our own save (or anything older than what the panel shows) is no news.
  if (change.kind === "put" && change.modify_index <= kvSelected.entry.modify_index) return;
  if (change.kind === "delete") {
    kvSelected.deleted = change.modify_index;
    message("kv-message", kvSelected.key + " was deleted at index " + change.modify_index + ".");
  } else if (kvSelected.dirty) {
    message("kv-message", kvSelected.key + " changed elsewhere at index " + change.modify_index +
      " while you edit it: saving will report a conflict.");
    return;
  } else {
    kvSelected.entry = Object.assign({}, kvSelected.entry, change);
    message("kv-message", kvSelected.key + " changed at index " + change.modify_index + ".", true);
  }
  kvPanel();
}

function kvCrumbs() {
  const parts = kvPrefix.split("/").filter(Boolean);
  const crumbs = [el("button", { type: "button", onclick: () => kvGo("") }, "(root)")];
  let path = "";
  for (const p of parts) {
    path += p + "/";
    const target = path;
    crumbs.push(" / ", el("button", { type: "button", onclick: () => kvGo(target) }, p));
  }
  document.getElementById("kv-crumbs").replaceChildren(...crumbs);
}

function kvDraw() {
  const folders = new Set();
  const keys = [];
  for (const entry of kvEntries) {
    const rest = entry.key.slice(kvPrefix.length);
    const slash = rest.indexOf("/");
    if (slash >= 0 && slash < rest.length - 1) folders.add(rest.slice(0, slash + 1));
    else keys.push(entry);
  }
  const items = [...folders].sort().map(f => el("li", {}, el("button", { type: "button", class: "folder", "data-prefix": kvPrefix + f,
    onclick: () => kvGo(kvPrefix + f) }, f)));
  for (const entry of keys) {
    items.push(el("li", {}, el("button", { type: "button", "data-key": entry.key,
      "aria-selected": kvSelected && kvSelected.key === entry.key ? "true" : "false",
      onclick: () => { kvSelected = { key: entry.key, entry, dirty: false, hex: false }; message("kv-message", ""); kvDraw(); kvPanel(); } },
    entry.key.slice(kvPrefix.length) || entry.key, " ", el("span", { class: "meta" }, "@" + entry.modify_index))));
  }
  if (!items.length) items.push(el("li", { class: "meta", style: "padding:.4em .6em" }, "No keys under this prefix."));
  document.getElementById("kv-list").replaceChildren(...items);
}

function kvPanel() {
  const panel = document.getElementById("kv-panel");
  if (!kvSelected) { panel.replaceChildren(el("p", { class: "meta" }, "Choose a key.")); return; }
  const s = kvSelected;
  const value = decodeValue(s.entry.value_base64);
  const binary = value.text === null;
  const showHex = s.hex || binary;
  const editor = el("textarea", { id: "kv-value", "aria-label": "value", readonly: showHex ? true : null });
  editor.value = showHex ? value.hex : (s.draft ?? value.text);
  editor.addEventListener("input", () => { s.dirty = true; s.draft = editor.value; });
  panel.replaceChildren(
    el("h3", { style: "margin:.2em 0", id: "kv-key" }, s.key),
    el("p", { class: "meta", id: "kv-meta" }, "create index " + s.entry.create_index + " · modify index " + s.entry.modify_index + " · " + bytes(value.data.length) +
      (s.deleted ? " · deleted at index " + s.deleted : "")),
    el("div", { class: "row" },
      el("button", { type: "button", disabled: binary ? true : null, "aria-pressed": String(!showHex), onclick: () => { s.hex = false; kvPanel(); } }, "Text"),
      el("button", { type: "button", "aria-pressed": String(showHex), onclick: () => { s.hex = true; kvPanel(); } }, "Hex")),
    editor,
    el("div", { class: "row" },
      el("button", { type: "button", class: "primary", id: "kv-save", disabled: showHex || s.deleted ? true : null, onclick: kvSave }, "Save"),
      el("button", { type: "button", class: "danger", id: "kv-delete", disabled: s.deleted ? true : null, onclick: kvDelete }, "Delete"),
      el("button", { type: "button", onclick: kvReload }, "Reload")));
}

async function kvSave() {
  const s = kvSelected;
  const text = document.getElementById("kv-value").value;
  try {
    const written = (await api(keyPath(s.key) + "?cas=" + s.entry.modify_index, { method: "PUT", body: text })).body;
    s.entry = Object.assign({}, s.entry, { modify_index: written.index, value_base64: btoa(unescape(encodeURIComponent(text))) });
    s.dirty = false; s.draft = undefined;
    message("kv-message", "Saved " + s.key + " at index " + written.index + ".", true);
    kvPanel();
  } catch (e) {
    if (e.code === "cas_failed") {
      message("kv-message", "Conflict: " + s.key + " changed since you opened it at index " + s.entry.modify_index +
        ". Your edit was not saved; Reload shows the current value.");
    } else {
      message("kv-message", "Not saved: " + e.message);
    }
  }
}

async function kvDelete() {
  const s = kvSelected;
  if (!confirm("Delete " + s.key + "?")) return;
  try {
    await api(keyPath(s.key) + "?cas=" + s.entry.modify_index, { method: "DELETE" });
    message("kv-message", "Deleted " + s.key + ".", true);
    kvSelected = null;
    kvPanel();
    await kvLoad();
  } catch (e) {
    message("kv-message", (e.code === "cas_failed" ? "Conflict: " + s.key + " changed since you opened it; not deleted." : "Not deleted: " + e.message));
  }
}

async function kvReload() {
  const s = kvSelected;
  try {
    const entry = (await api(keyPath(s.key) + "?meta=true")).body;
    kvSelected = { key: s.key, entry, dirty: false, hex: s.hex };
    message("kv-message", "");
  } catch (e) {
    message("kv-message", e.status === 404 ? s.key + " no longer exists." : e.message);
  }
  kvPanel();
}

document.getElementById("kv-create").addEventListener("submit", async e => {
  e.preventDefault();
  const key = document.getElementById("kv-new-key").value.trim();
  const value = document.getElementById("kv-new-value").value;
  try {
    const written = (await api(keyPath(key) + "?cas=0", { method: "PUT", body: value })).body;
    message("kv-message", "Created " + key + " at index " + written.index + ".", true);
    document.getElementById("kv-new-value").value = "";
    await kvLoad();
  } catch (err) {
    message("kv-message", err.code === "cas_failed" ? key + " exists already; open it to edit." : "Not created: " + err.message);
  }
});
