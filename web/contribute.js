// The contribute page: starts browser workers (worker.js, one Web Worker and one connection
// each), keeps their ed25519 keys in IndexedDB and the account token in localStorage, and
// shows what they are doing.

import { getKeys, putKeys } from "./store.js";

const $ = (id) => document.getElementById(id);
const ACCOUNT_KEY = "runegrid.contributor";
const BACKGROUND_KEY = "runegrid.background";
const SHARE_KEY = "runegrid.share";

let running = false;
let resumeWhenVisible = false;
let workers = []; // {worker, status}
let trust = new Map(); // worker id → WorkerInfo
let totals = { tasks: 0, busyMs: 0 }; // what stopped workers did

function message(text, bad = false) {
  $("message").textContent = text;
  $("message").className = bad ? "message bad" : "message";
}

function account() {
  try {
    return JSON.parse(localStorage.getItem(ACCOUNT_KEY));
  } catch {
    return null;
  }
}

async function api(path, opts = {}) {
  const a = account();
  const headers = { ...(opts.headers || {}) };
  if (a && a.token) headers.Authorization = `Bearer ${a.token}`;
  const r = await fetch(path, { ...opts, headers });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error((body.error && body.error.message) || `http ${r.status}`);
    e.status = r.status;
    throw e;
  }
  return body;
}

// The account the workers run under: the one kept in this browser, or a new contributor
// account made on first start.
async function ensureAccount() {
  const a = account();
  if (a && a.token) return a;
  const made = await api("/v1/contributors", { method: "POST" });
  const mine = { token: made.token, name: made.name };
  localStorage.setItem(ACCOUNT_KEY, JSON.stringify(mine));
  return mine;
}

// The key pair of worker slot `i`, made once and kept (the private key cannot be exported).
async function keysFor(i) {
  let keys = await getKeys(i);
  if (!keys) {
    keys = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
    await putKeys(i, keys);
  }
  return keys;
}

function workerCount() {
  const cores = navigator.hardwareConcurrency || 2;
  return Math.max(1, Math.round(cores * Number($("share").value)));
}

async function start() {
  if (running) return;
  running = true;
  $("toggle").textContent = "Pause";
  message("starting…");
  let acct;
  try {
    acct = await ensureAccount();
  } catch (e) {
    running = false;
    $("toggle").textContent = "Start contributing";
    message(`cannot start: ${e.message}`, true);
    return;
  }
  $("account").textContent = acct.name;
  const n = workerCount();
  const memoryBytes = Math.floor(((navigator.deviceMemory || 4) * 2 ** 30) / (2 * n));
  for (let i = 0; i < n; i++) {
    const keys = await keysFor(i);
    const worker = new Worker("/web/worker.js", { type: "module" });
    const entry = { worker, status: { state: "starting", tasks: 0, busyMs: 0, standing: "new" } };
    worker.onmessage = (ev) => {
      if (ev.data.type === "status") entry.status = ev.data;
      if (ev.data.type === "log") console.warn(`worker ${i + 1}: ${ev.data.message}`);
      render();
    };
    worker.onerror = (ev) => {
      entry.status = { ...entry.status, state: "crashed", reason: ev.message };
      render();
    };
    worker.postMessage({
      type: "start",
      coordinator: location.origin,
      token: acct.token,
      keys,
      name: `${acct.name}-${i + 1}`,
      memoryBytes,
    });
    workers.push(entry);
  }
  message(`running ${n} worker${n > 1 ? "s" : ""}`);
  render();
}

// Tells every worker to leave (the coordinator gives their tasks to others at once), then
// ends them.
function stop(reason) {
  if (!running) return;
  running = false;
  $("toggle").textContent = "Start contributing";
  const ending = workers;
  workers = [];
  // Keep what the stopped workers did in the totals.
  for (const w of ending) {
    totals.tasks += w.status.tasks;
    totals.busyMs += w.status.busyMs;
  }
  for (const { worker } of ending) worker.postMessage({ type: "leave", reason });
  setTimeout(() => ending.forEach(({ worker }) => worker.terminate()), 1000);
  message(`paused (${reason})`);
  render();
}

function fmtTime(ms) {
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function render() {
  const rows = workers.map(({ status }, i) => {
    const t = trust.get(status.workerId);
    const standing = t ? t.standing : status.standing;
    return `<tr><td>${i + 1}</td><td>${status.workerId ?? "–"}</td><td>${status.state}${status.reason ? ` <span class="muted">(${escapeHtml(status.reason)})</span>` : ""}</td>` +
      `<td><span class="pill ${standing}">${standing}</span></td><td>${t ? t.agreed : 0}</td><td>${status.tasks}</td><td>${fmtTime(status.busyMs)}</td></tr>`;
  });
  $("rows").innerHTML = rows.length ? rows.join("") : `<tr><td colspan="7" class="muted">${running ? "starting" : "not running"}</td></tr>`;
  const tasks = totals.tasks + workers.reduce((s, w) => s + w.status.tasks, 0);
  const busy = totals.busyMs + workers.reduce((s, w) => s + w.status.busyMs, 0);
  $("state").textContent = running ? "running" : "stopped";
  $("workers").textContent = String(workers.filter((w) => w.status.state === "connected" || w.status.state === "running").length);
  $("tasks").textContent = String(tasks);
  $("time").textContent = fmtTime(busy);
  const mine = workers.map((w) => trust.get(w.status.workerId)).filter(Boolean);
  $("trust").textContent = mine.length ? mine.map((t) => t.standing).sort()[0] + ` (${(mine.reduce((s, t) => s + t.score, 0) / mine.length).toFixed(2)})` : "–";
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// Micro-credits as credits, with at most 6 decimals.
function fmtCredits(micros) {
  const sign = micros < 0 ? "-" : "";
  const m = Math.abs(micros);
  const frac = String(m % 1e6).padStart(6, "0").replace(/0+$/, "");
  return sign + Math.floor(m / 1e6).toLocaleString("en") + (frac ? "." + frac : "");
}

async function refreshTrust() {
  if (!account()) return;
  try {
    const list = await api("/v1/workers");
    trust = new Map(list.map((w) => [w.id, w]));
    render();
    const c = await api("/v1/account");
    $("credits").textContent = fmtCredits(c.earned);
    $("credits").dataset.micros = String(c.earned);
    const input = $("display-name");
    if (c.display_name && !input.value && document.activeElement !== input) input.value = c.display_name;
  } catch {
    // The next refresh tries again.
  }
}

$("toggle").addEventListener("click", () => {
  if (running) {
    resumeWhenVisible = false;
    stop("paused by the contributor");
  } else {
    start();
  }
});

$("share").value = localStorage.getItem(SHARE_KEY) || "0.5";
$("share").addEventListener("change", () => {
  localStorage.setItem(SHARE_KEY, $("share").value);
  if (running) {
    stop("cpu share changed");
    start();
  }
});
$("background").checked = localStorage.getItem(BACKGROUND_KEY) === "1";
$("background").addEventListener("change", () => localStorage.setItem(BACKGROUND_KEY, $("background").checked ? "1" : "0"));

document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "hidden" && running && !$("background").checked) {
    resumeWhenVisible = true;
    stop("page hidden");
  } else if (document.visibilityState === "visible" && resumeWhenVisible) {
    resumeWhenVisible = false;
    start();
  }
});
window.addEventListener("pagehide", () => stop("page closed"));

$("signin").addEventListener("click", async (ev) => {
  ev.preventDefault();
  const token = prompt("Your account's API token (runegrid account create prints it):");
  if (!token) return;
  try {
    const r = await fetch("/v1/me", { headers: { Authorization: `Bearer ${token.trim()}` } });
    if (!r.ok) throw new Error("invalid api token");
    const me = await r.json();
    localStorage.setItem(ACCOUNT_KEY, JSON.stringify({ token: token.trim(), name: me.name }));
    $("account").textContent = me.name;
    message(`signed in as ${me.name}`);
  } catch (e) {
    message(`cannot sign in: ${e.message}`, true);
  }
});

$("name-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  if (!account()) {
    message("start contributing first: your account is made then", true);
    return;
  }
  const name = $("display-name").value.trim();
  try {
    await api("/v1/account", {
      method: "PUT",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ display_name: name || null }),
    });
    message(name ? `shown on the leaderboard as ${name}` : "shown on the leaderboard without a name");
  } catch (e) {
    message(`cannot save the name: ${e.message}`, true);
  }
});

const a = account();
if (a) $("account").textContent = a.name;
setInterval(refreshTrust, 3000);
render();
