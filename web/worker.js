// A browser worker: one Web Worker, one WebSocket to the coordinator, one slot.
//
// It speaks the same versioned worker protocol as the native daemon (crates/proto/src/worker.rs):
// challenge → signed hello → welcome; assign / program / cancel in, output / result / failed /
// heartbeat / leaving out. Tasks run in a second, nested Web Worker (exec_worker.js) so that this
// one keeps answering the coordinator while WebAssembly runs, and so that a run past its wall
// time can be stopped by terminating that worker (fuel, injected into every module at upload,
// stops a loop first; the wall time is only the backstop).
//
// The page sends {type: "start", coordinator, token, keys, name} and later {type: "leave",
// reason}; this worker posts {type: "status", ...} and {type: "log", ...} back.

import { digestHex, toHex } from "./exec.js";
import { getProgram, putProgram } from "./store.js";

const PROTOCOL = 1;
const RUNTIME = "browser/0.1.0";
// Time a run may take past its wall-time limit before its exec worker is terminated.
const WALL_GRACE_MS = 2000;

let cfg = null;
let ws = null;
let heartbeat = null;
let leaving = false;
let reconnectDelay = 500;
const programs = new Map(); // sha256 → WebAssembly.Module
const waiting = new Map(); // sha256 → [assign]
let current = null; // {assign, started, timer}
const queue = []; // assigns not started yet
let exec = null; // the nested worker that runs tasks
const stats = { workerId: null, state: "starting", tasks: 0, busyMs: 0, standing: "new", reason: null };

function report(extra = {}) {
  Object.assign(stats, extra);
  postMessage({ type: "status", ...stats, running: current ? 1 : 0 });
}

function log(message) {
  postMessage({ type: "log", message });
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function b64encode(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function b64decode(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// A program not compiled yet: from the browser's cache if it is there, else from the coordinator.
async function fetchProgram(sha256) {
  const cached = await getProgram(sha256);
  if (cached && (await loaded(sha256, cached, false))) return;
  send({ type: "need_program", sha256 });
}

// Checks program bytes against their hash and compiles them; the attempts waiting for them go to
// the queue, or fail. Bytes from the cache that do not check out are fetched again instead.
async function loaded(sha256, bytes, fromCoordinator) {
  const actual = toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", bytes)));
  if (actual !== sha256 && !fromCoordinator) return false;
  const list = waiting.get(sha256) || [];
  waiting.delete(sha256);
  if (actual !== sha256) {
    log(`program bytes do not match their hash ${sha256}`);
    for (const a of list) send({ type: "failed", attempt: a.attempt, reason: "program bytes do not match their hash" });
    return true;
  }
  try {
    programs.set(sha256, await WebAssembly.compile(bytes));
  } catch (e) {
    for (const a of list) send({ type: "failed", attempt: a.attempt, reason: `cannot compile the program: ${e.message}` });
    return true;
  }
  if (fromCoordinator) putProgram(sha256, bytes);
  queue.push(...list);
  next();
  return true;
}

async function sign(text) {
  const sig = await crypto.subtle.sign("Ed25519", cfg.keys.privateKey, new TextEncoder().encode(text));
  return toHex(new Uint8Array(sig));
}

function connect() {
  const url = new URL("/v1/worker", cfg.coordinator);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  url.searchParams.set("token", cfg.token);
  ws = new WebSocket(url);
  report({ state: "connecting" });
  ws.onmessage = (ev) => {
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch (e) {
      log(`malformed message from the coordinator: ${e}`);
      return;
    }
    handle(msg).catch((e) => log(`error handling ${msg.type}: ${e}`));
  };
  ws.onclose = (ev) => {
    clearInterval(heartbeat);
    heartbeat = null;
    dropAll();
    if (leaving) {
      report({ state: "stopped" });
      return;
    }
    report({ state: "reconnecting", reason: ev.reason || null });
    setTimeout(connect, reconnectDelay);
    reconnectDelay = Math.min(reconnectDelay * 2, 30000);
  };
}

// Forget everything tied to the connection that ended: the coordinator has already given
// those attempts to other workers.
function dropAll() {
  queue.length = 0;
  waiting.clear();
  if (current) stopExec();
}

async function handle(msg) {
  switch (msg.type) {
    case "challenge": {
      const pub = new Uint8Array(await crypto.subtle.exportKey("raw", cfg.keys.publicKey));
      send({
        type: "hello",
        protocol: PROTOCOL,
        public_key: toHex(pub),
        signature: await sign(`runegrid-hello-v1\n${msg.nonce}`),
        name: cfg.name,
        capabilities: {
          cores: 1,
          memory_bytes: cfg.memoryBytes,
          slots: 1,
          arch: "wasm32",
          os: "browser",
          runtime: RUNTIME,
        },
      });
      break;
    }
    case "welcome":
      reconnectDelay = 500;
      heartbeat = setInterval(() => send({ type: "heartbeat" }), msg.heartbeat_ms);
      report({ state: "connected", workerId: msg.worker_id });
      break;
    case "reject":
      leaving = true;
      report({ state: "rejected", reason: msg.message });
      ws.close();
      break;
    case "standing":
      report({ standing: msg.standing, reason: msg.reason || null });
      break;
    case "assign":
      if (programs.has(msg.program)) {
        queue.push(msg);
        next();
      } else {
        const list = waiting.get(msg.program);
        if (list) {
          list.push(msg);
        } else {
          waiting.set(msg.program, [msg]);
          fetchProgram(msg.program);
        }
      }
      break;
    case "program":
      await loaded(msg.sha256, b64decode(msg.module), true);
      break;
    case "cancel": {
      const i = queue.findIndex((a) => a.attempt === msg.attempt);
      if (i >= 0) {
        queue.splice(i, 1);
        send({ type: "failed", attempt: msg.attempt, reason: "cancelled" });
      } else if (current && current.assign.attempt === msg.attempt) {
        stopExec();
        send({ type: "failed", attempt: msg.attempt, reason: "cancelled" });
        next();
      } else {
        for (const list of waiting.values()) {
          const j = list.findIndex((a) => a.attempt === msg.attempt);
          if (j >= 0) {
            list.splice(j, 1);
            send({ type: "failed", attempt: msg.attempt, reason: "cancelled" });
          }
        }
      }
      break;
    }
    default:
      break;
  }
}

function execWorker() {
  if (!exec) {
    exec = new Worker(new URL("./exec_worker.js", import.meta.url), { type: "module" });
    exec.onmessage = (ev) => onExec(ev.data);
    exec.onerror = (ev) => {
      ev.preventDefault();
      if (current) finishFailed(`the run failed: ${ev.message}`);
    };
  }
  return exec;
}

// Terminates the exec worker (its run, if any, is abandoned).
function stopExec() {
  if (current) clearTimeout(current.timer);
  current = null;
  if (exec) exec.terminate();
  exec = null;
}

function next() {
  if (current || queue.length === 0) return;
  const a = queue.shift();
  current = { assign: a, started: performance.now(), timer: null };
  current.timer = setTimeout(() => {
    const attempt = a.attempt;
    stopExec();
    send({ type: "failed", attempt, reason: `wall time limit of ${a.limits.wall_time_ms} ms reached` });
    report();
    next();
  }, a.limits.wall_time_ms + WALL_GRACE_MS);
  report({ state: "running" });
  execWorker().postMessage({
    module: programs.get(a.program),
    task: {
      args: a.args,
      env: a.env,
      stdin: b64decode(a.stdin),
      seed: a.seed,
      limits: a.limits,
    },
  });
}

function finishFailed(reason) {
  const a = current.assign;
  stopExec();
  send({ type: "failed", attempt: a.attempt, reason });
  report({ state: "connected" });
  next();
}

async function onExec(m) {
  if (!current) return;
  const a = current.assign;
  if (m.type === "stdout") {
    send({ type: "output", attempt: a.attempt, data: b64encode(m.data) });
    return;
  }
  if (m.type === "error") {
    finishFailed(m.message);
    return;
  }
  // m.type === "done"
  clearTimeout(current.timer);
  const elapsedMs = performance.now() - current.started;
  current = null;
  const r = m.result;
  const digest = await digestHex(r.code, r.fuel, r.stdout);
  const stderr = new TextDecoder().decode(r.stderr.subarray(Math.max(0, r.stderr.length - 4096)));
  send({
    type: "result",
    attempt: a.attempt,
    status: r.status,
    stdout: b64encode(r.stdout),
    fuel: r.fuel,
    digest,
    signature: await sign(`runegrid-result-v1\n${a.attempt}\n${digest}`),
    stderr,
    elapsed_us: Math.round(elapsedMs * 1000),
  });
  report({ state: "connected", tasks: stats.tasks + 1, busyMs: stats.busyMs + elapsedMs });
  next();
}

onmessage = (ev) => {
  const m = ev.data;
  if (m.type === "start") {
    cfg = m;
    leaving = false;
    connect();
  } else if (m.type === "leave") {
    leaving = true;
    send({ type: "leaving", reason: m.reason });
    dropAll();
    if (ws) ws.close(1000, m.reason);
    report({ state: "stopped" });
  }
};
