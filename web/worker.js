// A browser worker: one Web Worker, one WebSocket to the coordinator, one slot.
//
// It speaks the same versioned worker protocol as the native daemon (crates/proto/src/worker.rs):
// challenge → signed hello → welcome; assign / program / cancel in, output / result / failed /
// heartbeat / leaving out. Tasks run in a second, nested Web Worker (exec_worker.js) so that this
// one keeps answering the coordinator while WebAssembly runs, and so that a run past its wall
// time can be stopped by terminating that worker (fuel, injected into every module at upload,
// stops a loop first; the wall time is only the backstop).
//
// The page sends {type: "start", coordinator, token, keys, name, memoryBytes, blobSpace?} and
// later {type: "leave", reason}; this worker posts {type: "status", ...} and {type: "log", ...}
// back.
//
// Every `failed` message carries the human `reason` and a `kind` the coordinator decides blame
// by (crates/core/src/failure.rs): `wall_time`, `cancelled`, `program` (bytes or compilation),
// `blob` (a mount could not be loaded) or `internal` (the run failed in this engine), and a
// signature over the attempt, the assignment's digest, the kind and the reason (protocol
// version 3: a relay cannot fail an attempt in this worker's name).
//
// Blobs (read-only files a task mounts under /blobs, e.g. model weights) are kept in IndexedDB
// (store.js) within the blob space (BLOB_SPACE_BYTES, 1 GiB, unless the page sets blobSpace),
// as the native worker keeps them on disk (crates/worker/src/blobs.rs): fetched once with
// GET /v1/blobs/{sha256} and the token (requests of this worker for the same blob share one
// fetch), refused unless size and SHA-256 match (the attempt fails with `blob NAME: ...`, nothing
// is stored), hashed again the first time this worker loads a stored one (a damaged entry is
// dropped and fetched again), least recently used ones no task holds evicted. In memory it keeps
// the blobs of queued and running attempts and those of the latest attempt. The hello advertises
// blob_space and the blobs held, and {type: "blobs", held} follows every change.
//
// GPU tasks: when the browser has WebGPU (navigator.gpu, in this worker), a GPU is opened at
// start (software adapters included: the coordinator sends their tasks only to jobs that allow
// them) and advertised as `capabilities.gpu`. A program whose first non-whitespace byte is `{`
// is a kernel (the JSON the coordinator guarded and stored, runegrid_core::gpu::is_kernel); its
// tasks run here with gpu.js (WebGPU is asynchronous: this thread keeps answering) and end as
// crates/worker/src/gpu.rs ends them: status exit:0, or out_of_fuel when the guard's status
// buffer says a loop budget ran out; no stdout; fuel = the kernel's `work` (set by the
// coordinator, Checked::work: this engine has no naga to compute it); the output buffers as
// output files named after them, in the kernel's order, digested like a WASI task's files.

import { digestHex, fileRecords, toHex } from "./exec.js";
import { checkInputs, openGpu, runKernel, splitStatus } from "./gpu.js";
import { BLOB_SPACE_BYTES, deleteBlob, getBlob, getProgram, listBlobs, putBlob, putProgram } from "./store.js";

const PROTOCOL = 3;
const RUNTIME = "browser/0.1.0";
// Time a run may take past its wall-time limit before its exec worker is terminated.
const WALL_GRACE_MS = 2000;

let cfg = null;
let ws = null;
let heartbeat = null;
let leaving = false;
let reconnectDelay = 500;
const programs = new Map(); // sha256 → WebAssembly.Module, or {kernel, work} for a GPU kernel
let gpu = null; // {device, info} from openGpu, when this browser has a GPU
const waiting = new Map(); // sha256 → [assign]
let current = null; // {assign, started, timer}
const queue = []; // assigns not started yet
let exec = null; // the nested worker that runs tasks
const held = new Map(); // sha256 → size of the blobs in IndexedDB, as this worker knows them
const verified = new Set(); // blobs whose bytes this worker has hashed
const blobFetches = new Map(); // sha256 → Promise<Uint8Array>, loads under way
const blobUse = new Map(); // sha256 → attempts (loading, queued, waiting or running) holding it
let recentBlobs = new Map(); // sha256 → bytes of the latest attempt's blobs
const loadingBlobs = new Map(); // attempt → assign whose blobs are loading
let session = 0; // bumped when the connection ends: loads finishing later are ignored
const stats = { workerId: null, state: "starting", tasks: 0, busyMs: 0, standing: "new", reason: null };

function report(extra = {}) {
  Object.assign(stats, extra);
  postMessage({ type: "status", ...stats, running: current ? 1 : 0 });
}

function log(message) {
  postMessage({ type: "log", message });
}

function blobSpace() {
  return cfg.blobSpace ?? BLOB_SPACE_BYTES;
}

function sha256Hex(bytes) {
  return crypto.subtle.digest("SHA-256", bytes).then((d) => toHex(new Uint8Array(d)));
}

function sendHeld() {
  send({ type: "blobs", held: [...held.keys()] });
}

// Downloads blob `m` ({name, sha256, size}) into one buffer of the announced size, refusing a
// body of any other size or hash (native BlobError's wording).
async function download(m) {
  const sha = m.sha256;
  const r = await fetch(new URL(`/v1/blobs/${sha}`, cfg.coordinator), {
    headers: { Authorization: `Bearer ${cfg.token}` },
  }).catch((e) => {
    throw new Error(`cannot fetch blob ${sha} from the coordinator: ${e.message}`);
  });
  if (r.status === 404) throw new Error(`blob ${sha} is not on the coordinator`);
  if (!r.ok) {
    const text = await r.text().catch(() => "");
    let message = text;
    try {
      message = JSON.parse(text).message ?? text;
    } catch {
      // not JSON: the text itself
    }
    throw new Error(`blob ${sha}: the coordinator answered ${r.status}: ${message}`);
  }
  const bytes = new Uint8Array(m.size);
  let got = 0;
  const reader = r.body.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    if (got + value.length > m.size) {
      reader.cancel().catch(() => {});
      got += value.length;
      throw new Error(`blob ${sha} from the coordinator does not have the ${m.size} bytes announced (got more): rejected`);
    }
    bytes.set(value, got);
    got += value.length;
  }
  if (got !== m.size) {
    throw new Error(`blob ${sha} from the coordinator does not have the ${m.size} bytes announced (got ${got}): rejected`);
  }
  const actual = await sha256Hex(bytes);
  if (actual !== sha) throw new Error(`blob ${sha} from the coordinator has sha256 ${actual}: rejected`);
  return bytes;
}

// The checked bytes of blob `m`: in memory, else stored (hashed once per worker), else fetched.
function blobBytes(m) {
  const sha = m.sha256;
  if (recentBlobs.has(sha)) return Promise.resolve(recentBlobs.get(sha));
  if (blobFetches.has(sha)) return blobFetches.get(sha);
  const p = (async () => {
    if (!/^[0-9a-f]{64}$/.test(sha)) throw new Error(`invalid blob hash ${JSON.stringify(sha)}: expected 64 lowercase hex digits`);
    if (m.size > blobSpace()) {
      throw new Error(`blob ${sha} has ${m.size} bytes, more than this worker's blob space of ${blobSpace()} bytes`);
    }
    let bytes = await getBlob(sha);
    if (bytes && !verified.has(sha)) {
      const actual = await sha256Hex(bytes);
      if (actual !== sha) {
        log(`stored blob ${sha} has sha256 ${actual}: dropped, fetching it again`);
        await deleteBlob(sha);
        held.delete(sha);
        sendHeld();
        bytes = null;
      }
    }
    if (!bytes) {
      bytes = await download(m);
      const { stored, evicted } = await putBlob(sha, bytes, blobSpace(), new Set(blobUse.keys()));
      for (const e of evicted) held.delete(e);
      if (stored) held.set(sha, bytes.length);
      else log(`blob ${sha} (${bytes.length} bytes) is not kept: no room in the blob space, or storage failed`);
      if (stored || evicted.length > 0) sendHeld();
    }
    verified.add(sha);
    return bytes;
  })();
  blobFetches.set(sha, p);
  p.finally(() => blobFetches.delete(sha)).catch(() => {});
  return p;
}

function holdBlobs(a, delta) {
  for (const m of a.blobs || []) {
    const n = (blobUse.get(m.sha256) || 0) + delta;
    if (n > 0) blobUse.set(m.sha256, n);
    else blobUse.delete(m.sha256);
  }
}

// An attempt that mounts blobs: loads them, then goes on like any other (admit), or fails
// saying which blob and why.
async function loadBlobs(a) {
  const mine = session;
  loadingBlobs.set(a.attempt, a);
  holdBlobs(a, 1);
  const mounts = [];
  let failure = null;
  for (const m of a.blobs) {
    try {
      mounts.push({ name: m.name, bytes: await blobBytes(m) });
    } catch (e) {
      failure = `blob ${m.name}: ${e.message}`;
      break;
    }
  }
  if (mine !== session || !loadingBlobs.has(a.attempt)) {
    holdBlobs(a, -1); // cancelled, or the connection ended meanwhile
    return;
  }
  loadingBlobs.delete(a.attempt);
  if (failure) {
    holdBlobs(a, -1);
    log(failure);
    sendFailed(a, failure, "blob");
    return;
  }
  recentBlobs = new Map(a.blobs.map((m, i) => [m.sha256, mounts[i].bytes]));
  a.mounts = mounts;
  admit(a);
}

// An attempt that no longer needs its blobs (done, failed, cancelled or dropped).
function release(a) {
  if (a.mounts) {
    a.mounts = null;
    holdBlobs(a, -1);
  }
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
    for (const a of list) {
      release(a);
      sendFailed(a, "program bytes do not match their hash", "program");
    }
    return true;
  }
  try {
    programs.set(sha256, isKernel(bytes) ? parseKernel(bytes) : await WebAssembly.compile(bytes));
  } catch (e) {
    for (const a of list) {
      release(a);
      sendFailed(a, `cannot compile the program: ${e.message}`, "program");
    }
    return true;
  }
  if (fromCoordinator) putProgram(sha256, bytes);
  queue.push(...list);
  next();
  return true;
}

// runegrid_core::gpu::is_kernel: the first non-whitespace byte is `{`.
function isKernel(bytes) {
  for (const b of bytes) {
    if (b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0c || b === 0x0d) continue;
    return b === 0x7b;
  }
  return false;
}

// A kernel program: its JSON and its work (the fuel of its tasks, a BigInt: read from the
// number's source text where the browser gives it, as a u64 may pass 2^53).
function parseKernel(bytes) {
  let work;
  const kernel = JSON.parse(new TextDecoder().decode(bytes), function (key, value, context) {
    if (key === "work" && this !== null && Array.isArray(this.buffers)) {
      const source = context && typeof context.source === "string" ? context.source : null;
      if (source !== null && /^\d+$/.test(source)) work = BigInt(source);
      else if (Number.isSafeInteger(value) && value >= 0) work = BigInt(value);
    }
    return value;
  });
  if (kernel === null || typeof kernel !== "object" || !Array.isArray(kernel.buffers) || !Array.isArray(kernel.dispatches)) {
    throw new Error("not a kernel: expected a JSON object with buffers and dispatches");
  }
  return { kernel, work };
}

// GPU task input buffers (runegrid_core::gpu::decode_buffers): per buffer, the name's length
// (u32 LE), the name, the bytes' length (u64 LE), the bytes.
function decodeBuffers(framed) {
  const out = new Map();
  const view = new DataView(framed.buffer, framed.byteOffset, framed.byteLength);
  const bad = (why) => new Error(`the task's input buffers are malformed: ${why}`);
  let at = 0;
  while (at < framed.length) {
    if (framed.length - at < 4) throw bad("truncated");
    const n = view.getUint32(at, true);
    at += 4;
    if (framed.length - at < n) throw bad("truncated");
    let name;
    try {
      name = new TextDecoder("utf-8", { fatal: true }).decode(framed.subarray(at, at + n));
    } catch {
      throw bad("a name is not UTF-8");
    }
    at += n;
    if (framed.length - at < 8) throw bad("truncated");
    const len = view.getBigUint64(at, true);
    at += 8;
    if (BigInt(framed.length - at) < len) throw bad("truncated");
    const bytes = framed.slice(at, at + Number(len));
    at += Number(len);
    if (out.has(name)) throw bad("a name appears twice");
    out.set(name, bytes);
  }
  return out;
}

// proto::worker::assign_digest: the SHA-256 (hex) of an assignment's canonical encoding, signed
// with its result so that a relay cannot alter the task's inputs unseen. The line
// `runegrid-assign-v1\n`, then netstrings `LEN:BYTES,` (integers as decimal text, a list as its
// length then its elements): attempt, job, task, program, args, env (key, value), stdin, seed,
// limits (fuel, memory_bytes, wall_time_ms, stdout_bytes, scratch_bytes, output_bytes), blobs
// (name, sha256, size). A u64 past 2^53 arrives as a BigInt (see `exactNumbers`).
function assignDigest(a) {
  const enc = new TextEncoder();
  const parts = [enc.encode("runegrid-assign-v1\n")];
  const item = (bytes) => parts.push(enc.encode(`${bytes.length}:`), bytes, enc.encode(","));
  const str = (s) => item(enc.encode(s));
  const num = (n) => str(String(n));
  num(a.attempt);
  num(a.job);
  num(a.task);
  str(a.program);
  num(a.args.length);
  for (const s of a.args) str(s);
  num(a.env.length);
  for (const [k, v] of a.env) {
    str(k);
    str(v);
  }
  item(b64decode(a.stdin));
  num(a.seed);
  const l = a.limits;
  for (const n of [l.fuel, l.memory_bytes, l.wall_time_ms, l.stdout_bytes, l.scratch_bytes, l.output_bytes]) num(n);
  const blobs = a.blobs ?? [];
  num(blobs.length);
  for (const b of blobs) {
    str(b.name);
    str(b.sha256);
    num(b.size);
  }
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return sha256Hex(bytes);
}

// The bytes a result's signature covers (proto::worker::result_message).
async function signResult(a, digest) {
  return sign(`runegrid-result-v2\n${a.attempt}\n${await assignDigest(a)}\n${digest}`);
}

// The bytes a failure's signature covers (proto::worker::failure_message): attempt, the
// assignment's digest, the kind and the reason, so that a relay cannot fail an attempt in this
// worker's name.
async function signFailure(a, reason, kind) {
  return sign(`runegrid-failed-v1\n${a.attempt}\n${await assignDigest(a)}\n${kind ?? ""}\n${reason}`);
}

// Ends attempt `a` without a result: a signed `failed` message; `kind` is the protocol's
// failure kind.
async function sendFailed(a, reason, kind) {
  send({ type: "failed", attempt: a.attempt, reason, kind, signature: await signFailure(a, reason, kind) });
}

// JSON.parse reviver: an integer past 2^53 (a u64 seed) kept exact as a BigInt, read from its
// source text where the browser gives it.
function exactNumbers(key, value, context) {
  if (typeof value === "number" && !Number.isSafeInteger(value) && context && typeof context.source === "string" && /^\d+$/.test(context.source)) {
    return BigInt(context.source);
  }
  return value;
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
      msg = JSON.parse(ev.data, exactNumbers);
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
  session++;
  for (const a of queue) release(a);
  queue.length = 0;
  for (const list of waiting.values()) list.forEach(release);
  waiting.clear();
  loadingBlobs.clear();
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
          blob_space: blobSpace(),
          blobs: [...held.keys()],
          ...(gpu ? { gpu: gpu.info } : {}),
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
      if (msg.blobs && msg.blobs.length > 0) loadBlobs(msg);
      else admit(msg);
      break;
    case "program":
      await loaded(msg.sha256, b64decode(msg.module), true);
      break;
    case "cancel": {
      const i = queue.findIndex((a) => a.attempt === msg.attempt);
      const loading = loadingBlobs.get(msg.attempt);
      if (loading) {
        loadingBlobs.delete(msg.attempt);
        sendFailed(loading, "cancelled", "cancelled");
      } else if (i >= 0) {
        const a = queue.splice(i, 1)[0];
        release(a);
        sendFailed(a, "cancelled", "cancelled");
      } else if (current && current.assign.attempt === msg.attempt) {
        const a = current.assign;
        stopExec();
        sendFailed(a, "cancelled", "cancelled");
        next();
      } else {
        for (const list of waiting.values()) {
          const j = list.findIndex((a) => a.attempt === msg.attempt);
          if (j >= 0) {
            const a = list.splice(j, 1)[0];
            release(a);
            sendFailed(a, "cancelled", "cancelled");
          }
        }
      }
      break;
    }
    default:
      break;
  }
}

// An attempt ready to run once its program is compiled.
function admit(a) {
  if (programs.has(a.program)) {
    queue.push(a);
    next();
  } else {
    const list = waiting.get(a.program);
    if (list) {
      list.push(a);
    } else {
      waiting.set(a.program, [a]);
      fetchProgram(a.program);
    }
  }
}

function execWorker() {
  if (!exec) {
    exec = new Worker(new URL("./exec_worker.js", import.meta.url), { type: "module" });
    exec.onmessage = (ev) => onExec(ev.data);
    exec.onerror = (ev) => {
      ev.preventDefault();
      if (current) finishFailed(`the run failed: ${ev.message}`, "internal");
    };
  }
  return exec;
}

// Terminates the exec worker (its run, if any, is abandoned).
function stopExec() {
  if (current) {
    clearTimeout(current.timer);
    release(current.assign);
  }
  current = null;
  if (exec) exec.terminate();
  exec = null;
}

function next() {
  if (current || queue.length === 0) return;
  const a = queue.shift();
  current = { assign: a, started: performance.now(), timer: null };
  current.timer = setTimeout(() => {
    stopExec();
    sendFailed(a, `wall time limit of ${a.limits.wall_time_ms} ms exceeded`, "wall_time");
    report();
    next();
  }, a.limits.wall_time_ms + WALL_GRACE_MS);
  report({ state: "running" });
  const program = programs.get(a.program);
  if (!(program instanceof WebAssembly.Module)) {
    runGpuTask(current, program);
    return;
  }
  execWorker().postMessage({
    module: programs.get(a.program),
    task: {
      args: a.args,
      env: a.env,
      stdin: b64decode(a.stdin),
      seed: a.seed,
      limits: a.limits,
      // Copied into the exec worker (structured clone); the checked bytes stay here.
      blobs: a.mounts || [],
    },
  });
}

// Runs the kernel of `run` (the current attempt) as crates/worker/src/gpu.rs does; a run
// that is no longer current when it ends (cancelled, timed out, connection gone) is dropped.
async function runGpuTask(run, { kernel, work }) {
  const a = run.assign;
  const fail = (reason, kind) => {
    if (current !== run) return;
    log(`attempt ${a.attempt}: ${reason}`);
    finishFailed(reason, kind);
  };
  if (!gpu) return fail("this worker has no GPU", "internal");
  if (work === undefined) {
    return fail("the kernel has no work (fuel) set by the coordinator: this worker cannot report its fuel", "internal");
  }
  let inputs;
  try {
    inputs = decodeBuffers(b64decode(a.stdin));
    for (const m of a.mounts || []) inputs.set(m.name, m.bytes);
    checkInputs(kernel, Object.fromEntries(inputs));
  } catch (e) {
    return fail(e.message, "invalid_task");
  }
  let outputs;
  try {
    if (gpu.lost) {
      const info = gpu.info;
      gpu = await openGpu({ allowSoftware: true });
      gpu.info = info; // advertised in the hello
    }
    outputs = await runKernel(gpu.device, kernel, inputs, { wallTimeMs: a.limits.wall_time_ms });
  } catch (e) {
    const message = e && e.message ? e.message : String(e);
    if (/^the run did not finish within/.test(message)) {
      gpu.lost = true; // runKernel destroyed the device
      return fail(`wall time limit of ${a.limits.wall_time_ms} ms exceeded`, "wall_time");
    }
    if (/device was lost/.test(message)) gpu.lost = true;
    return fail(`the GPU run failed: ${message}`, "internal");
  }
  if (current !== run) return;
  const { exhausted, outputs: files } = splitStatus(outputs);
  const status = exhausted ? { kind: "out_of_fuel" } : { kind: "exited", code: 0 };
  const code = exhausted ? "out_of_fuel" : "exit:0";
  const records = await fileRecords(files.map((f) => ({ path: f.name, bytes: f.bytes })));
  const digest = await digestHex(code, work, new Uint8Array(0), records);
  const signature = await signResult(a, digest);
  if (current !== run) return;
  clearTimeout(run.timer);
  const elapsedMs = performance.now() - run.started;
  current = null;
  release(a);
  const msg = {
    type: "result",
    attempt: a.attempt,
    status,
    stdout: "",
    fuel: work,
    digest,
    signature,
    stderr: "",
    elapsed_us: Math.round(elapsedMs * 1000),
    files: records.map((f, i) => ({ ...f, data: b64encode(files[i].bytes) })),
  };
  // The fuel is a u64: written as the exact number even past 2^53.
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(
      JSON.stringify(msg, (_, v) => (typeof v === "bigint" ? `__runegrid_u64_${v}__` : v)).replace(
        /"__runegrid_u64_(\d+)__"/g,
        "$1",
      ),
    );
  }
  report({ state: "connected", tasks: stats.tasks + 1, busyMs: stats.busyMs + elapsedMs });
  next();
}

// Ends the current attempt without a result; `kind` is the protocol's failure kind.
function finishFailed(reason, kind) {
  const a = current.assign;
  stopExec();
  sendFailed(a, reason, kind);
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
    finishFailed(m.message, "internal");
    return;
  }
  // m.type === "done"
  clearTimeout(current.timer);
  const elapsedMs = performance.now() - current.started;
  current = null;
  release(a);
  const r = m.result;
  const records = await fileRecords(r.files ?? []);
  const digest = await digestHex(r.code, r.fuel, r.stdout, records);
  const stderr = new TextDecoder().decode(r.stderr.subarray(Math.max(0, r.stderr.length - 4096)));
  send({
    type: "result",
    attempt: a.attempt,
    status: r.status,
    stdout: b64encode(r.stdout),
    fuel: r.fuel,
    digest,
    signature: await signResult(a, digest),
    stderr,
    elapsed_us: Math.round(elapsedMs * 1000),
    files: records.map((f, i) => ({ ...f, data: b64encode(r.files[i].bytes) })),
  });
  report({ state: "connected", tasks: stats.tasks + 1, busyMs: stats.busyMs + elapsedMs });
  next();
}

onmessage = (ev) => {
  const m = ev.data;
  if (m.type === "start") {
    cfg = m;
    leaving = false;
    // The blobs already stored are advertised in the hello, and the GPU, if there is one.
    const opening =
      gpu || !(globalThis.navigator && navigator.gpu)
        ? Promise.resolve()
        : openGpu({ allowSoftware: true }).then(
            (g) => {
              gpu = g;
              log(`GPU found: ${g.info.name} (${g.info.driver || g.info.backend}${g.info.software ? ", software" : ""})`);
            },
            (e) => log(`no GPU: this worker takes no GPU tasks (${e.message})`),
          );
    Promise.all([listBlobs(), opening]).then(([list]) => {
      held.clear();
      for (const b of list) held.set(b.sha256, b.size);
      connect();
    });
  } else if (m.type === "leave") {
    leaving = true;
    send({ type: "leaving", reason: m.reason });
    dropAll();
    if (ws) ws.close(1000, m.reason);
    report({ state: "stopped" });
  }
};
