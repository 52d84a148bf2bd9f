// runegrid's browser execution engine: runs one instrumented WASI preview-1 task and reports
// the same (status, fuel, stdout) as the native sandbox, byte for byte.
//
// This file MIRRORS crates/sandbox/src/wasi.rs (the WASI host) and `execute` / `classify` in
// crates/sandbox/src/lib.rs (limits, how a run ends) and must be changed together with them.
// crates/sandbox/tests/browser_conformance.rs runs both on the same tasks and compares them.
//
// No DOM: it runs unchanged in a (Chromium) Web Worker and in Node 20. Instantiation is
// synchronous, which is fine in a worker. The wall-time limit is NOT enforced here: a run is
// synchronous, so the caller enforces `limits.wall_time_ms` by terminating the worker (the
// attempt is then lost, like a native `Timeout`).
//
// Modules given to `runTask` are always the output of runegrid-instrument: the module counts
// its own fuel and call depth, guards `memory.grow` and canonicalizes NaNs, so this host only
// sets the limit globals, provides WASI, and reads the globals back after the run.

const WASI = 'wasi_snapshot_preview1';
const FUEL_GLOBAL = '__runegrid_fuel';
const DEPTH_GLOBAL = '__runegrid_depth';
const MEMORY_LIMIT_GLOBAL = '__runegrid_memory_limit_pages';
const MEMORY_DENIED_GLOBAL = '__runegrid_memory_denied';

/** Most stderr bytes kept per run (wasi.rs STDERR_CAP). */
export const STDERR_CAP = 64 << 10;
/** Nanoseconds between the Unix epoch and the virtual realtime clock's zero. */
const REALTIME_BASE_NS = 1_700_000_000_000_000_000n;
/** Nanoseconds the virtual clock advances on every successful clock_time_get. */
const CLOCK_STEP_NS = 1000n;
const PAGE = 65536;
const I64_MAX = (1n << 63n) - 1n;

// WASI errno values (wasi_snapshot_preview1).
const SUCCESS = 0;
const EBADF = 8;
const EFAULT = 21;
const EINVAL = 28;
const ENOTDIR = 54;
const ENOTSUP = 58;
const ESPIPE = 70;
const ENOTCAPABLE = 76;

const FILETYPE_CHARACTER_DEVICE = 2;
const RIGHTS_FD_READ = 2n;
const RIGHTS_FD_WRITE = 64n;

/** An error that must not be reported as a result (the attempt is lost, not compared). */
function internal(message, cause) {
  const err = new Error(message, cause === undefined ? undefined : { cause });
  err.kind = 'internal';
  return err;
}

/** How the guest asked the run to end (proc_exit, stdout cap), thrown through the wasm. */
class Stop {
  constructor(status) {
    this.status = status;
  }
}

/** SplitMix64, the generator behind random_get (wrapping u64 arithmetic on BigInts). */
export class SplitMix64 {
  constructor(seed) {
    this.state = BigInt.asUintN(64, BigInt(seed));
  }

  next() {
    this.state = BigInt.asUintN(64, this.state + 0x9e3779b97f4a7c15n);
    let z = this.state;
    z = BigInt.asUintN(64, (z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n);
    z = BigInt.asUintN(64, (z ^ (z >> 27n)) * 0x94d049bb133111ebn);
    return z ^ (z >> 31n);
  }

  /** Fills `buf` as random_get does: ceil(len / 8) outputs, little-endian, the last cut. */
  fill(buf) {
    const word = new DataView(new ArrayBuffer(8));
    const bytes = new Uint8Array(word.buffer);
    for (let at = 0; at < buf.length; at += 8) {
      word.setBigUint64(0, this.next(), true);
      buf.set(bytes.subarray(0, Math.min(8, buf.length - at)), at);
    }
  }
}

/** A bounds failure inside a WASI function: becomes EFAULT (mirrors `Err(errno::FAULT)`). */
const FAULT = Symbol('EFAULT');

/**
 * The deterministic WASI host of one run (wasi.rs `Host` plus its functions). Every check is
 * made in the same order as in wasi.rs, so the same guest sees the same errno and the same
 * memory whatever the engine.
 */
class Host {
  constructor(task, onStdout) {
    const utf8 = new TextEncoder();
    const nul = (s) => {
      const b = utf8.encode(s);
      const out = new Uint8Array(b.length + 1);
      out.set(b);
      return out;
    };
    this.args = ['main', ...task.args].map(nul);
    this.env = task.env.map(([k, v]) => nul(`${k}=${v}`));
    this.stdin = task.stdin ?? new Uint8Array(0);
    this.stdinPos = 0;
    this.stdoutChunks = [];
    this.stdoutLen = 0;
    this.stdoutCap = Number(task.limits.stdout_bytes);
    this.onStdout = onStdout;
    this.stderr = new Uint8Array(STDERR_CAP);
    this.stderrLen = 0;
    this.clockNs = 0n;
    this.rng = new SplitMix64(task.seed);
    this.memory = null;
  }

  // --- memory access (views are made per call: memory.grow detaches the old buffer) ---

  mem() {
    return new Uint8Array(this.memory.buffer);
  }

  /** wasi.rs `range`: [ptr, ptr + len) as unsigned offsets, or throws FAULT. */
  static range(mem, ptr, len) {
    const start = ptr >>> 0;
    const end = start + len; // exact: both well below 2^53
    if (end > mem.length) throw FAULT;
    return [start, end];
  }

  static readU32(mem, ptr) {
    const [s] = Host.range(mem, ptr, 4);
    return (mem[s] | (mem[s + 1] << 8) | (mem[s + 2] << 16) | (mem[s + 3] << 24)) >>> 0;
  }

  static writeU32(mem, ptr, v) {
    const [s] = Host.range(mem, ptr, 4);
    new DataView(mem.buffer).setUint32(s, v >>> 0, true);
  }

  static writeU64(mem, ptr, v /* BigInt */) {
    const [s] = Host.range(mem, ptr, 8);
    new DataView(mem.buffer).setBigUint64(s, BigInt.asUintN(64, v), true);
  }

  /** wasi.rs `iovecs`: every iovec's [start, end), all checked before any is used. */
  static iovecs(mem, iovs, count) {
    count = count >>> 0;
    Host.range(mem, iovs, count * 8);
    const out = [];
    for (let i = 0; i < count; i++) {
      const at = ((iovs >>> 0) + i * 8) >>> 0;
      const ptr = Host.readU32(mem, at);
      const len = Host.readU32(mem, (at + 4) >>> 0);
      out.push(Host.range(mem, ptr, len));
    }
    return out;
  }

  // --- the WASI functions; each returns an errno, or throws a Stop ---

  /** args_sizes_get / environ_sizes_get. */
  sizesGet(list, countPtr, sizePtr) {
    const mem = this.mem();
    const size = list.reduce((n, item) => n + item.length, 0);
    Host.range(mem, countPtr, 4);
    Host.range(mem, sizePtr, 4);
    Host.writeU32(mem, countPtr, list.length);
    Host.writeU32(mem, sizePtr, size);
    return SUCCESS;
  }

  /** args_get / environ_get: the pointer table and the strings, interleaved as in wasi.rs. */
  listGet(list, ptrs, buf) {
    const mem = this.mem();
    const size = list.reduce((n, item) => n + item.length, 0);
    Host.range(mem, ptrs, 4 * list.length);
    Host.range(mem, buf, size);
    let offset = buf >>> 0;
    list.forEach((item, i) => {
      Host.writeU32(mem, ((ptrs >>> 0) + 4 * i) >>> 0, offset);
      const [s] = Host.range(mem, offset, item.length);
      mem.set(item, s);
      offset = (offset + item.length) >>> 0;
    });
    return SUCCESS;
  }

  fdWrite(fd, iovsPtr, count, outPtr) {
    if (fd !== 1 && fd !== 2) return EBADF;
    const mem = this.mem();
    const iovs = Host.iovecs(mem, iovsPtr, count);
    Host.range(mem, outPtr, 4);
    // The total may pass 2^53 only with absurd overlapping iovecs; its low 32 bits (what
    // the guest is told) are kept exactly apart.
    let total = 0;
    let total32 = 0;
    for (const [s, e] of iovs) {
      total += e - s;
      total32 = (total32 + (e - s)) >>> 0;
    }
    if (fd === 1) {
      const room = Math.max(this.stdoutCap - this.stdoutLen, 0);
      const keep = Math.min(total, room);
      if (keep > 0) {
        const chunk = new Uint8Array(keep);
        let filled = 0;
        for (const [s, e] of iovs) {
          const want = Math.min(keep - filled, e - s);
          chunk.set(mem.subarray(s, s + want), filled);
          filled += want;
        }
        this.onStdout(chunk);
        this.stdoutChunks.push(chunk);
        this.stdoutLen += keep;
      }
      if (total > room) throw new Stop({ kind: 'stdout_limit' });
    } else {
      for (const [s, e] of iovs) {
        const take = Math.min(STDERR_CAP - this.stderrLen, e - s);
        this.stderr.set(mem.subarray(s, s + take), this.stderrLen);
        this.stderrLen += take;
      }
    }
    Host.writeU32(mem, outPtr, total32);
    return SUCCESS;
  }

  fdRead(fd, iovsPtr, count, outPtr) {
    if (fd !== 0) return EBADF;
    const mem = this.mem();
    const iovs = Host.iovecs(mem, iovsPtr, count);
    Host.range(mem, outPtr, 4);
    let read = 0;
    for (const [s, e] of iovs) {
      const n = Math.min(this.stdin.length - this.stdinPos, e - s);
      mem.set(this.stdin.subarray(this.stdinPos, this.stdinPos + n), s);
      this.stdinPos += n;
      read += n;
      if (n < e - s) break;
    }
    Host.writeU32(mem, outPtr, read);
    return SUCCESS;
  }

  clockTimeGet(id, outPtr) {
    if (!(id >= 0 && id <= 3)) return EINVAL;
    const mem = this.mem();
    Host.range(mem, outPtr, 8);
    this.clockNs += CLOCK_STEP_NS;
    Host.writeU64(mem, outPtr, id === 0 ? REALTIME_BASE_NS + this.clockNs : this.clockNs);
    return SUCCESS;
  }

  clockResGet(id, outPtr) {
    if (!(id >= 0 && id <= 3)) return EINVAL;
    Host.writeU64(this.mem(), outPtr, CLOCK_STEP_NS);
    return SUCCESS;
  }

  randomGet(buf, len) {
    const mem = this.mem();
    const [s, e] = Host.range(mem, buf, len >>> 0);
    this.rng.fill(mem.subarray(s, e));
    return SUCCESS;
  }

  fdstatGet(fd, outPtr) {
    if (!isStdio(fd)) return EBADF;
    const mem = this.mem();
    const [s] = Host.range(mem, outPtr, 24);
    const stat = new DataView(new ArrayBuffer(24));
    stat.setUint8(0, FILETYPE_CHARACTER_DEVICE);
    stat.setBigUint64(8, fd === 0 ? RIGHTS_FD_READ : RIGHTS_FD_WRITE, true);
    mem.set(new Uint8Array(stat.buffer), s);
    return SUCCESS;
  }

  filestatGet(fd, outPtr) {
    if (!isStdio(fd)) return EBADF;
    const mem = this.mem();
    const [s] = Host.range(mem, outPtr, 64);
    const stat = new Uint8Array(64);
    stat[16] = FILETYPE_CHARACTER_DEVICE;
    mem.set(stat, s);
    return SUCCESS;
  }

  /** The import object: every function of runegrid_instrument::ALLOWED_WASI_IMPORTS. */
  imports() {
    // Functions that touch memory turn a FAULT into EFAULT; a Stop passes through.
    const m = (f) => (...a) => {
      try {
        return f(...a);
      } catch (e) {
        if (e === FAULT) return EFAULT;
        throw e;
      }
    };
    const stdio = (errno) => (fd) => (isStdio(fd) ? errno : EBADF);
    const notCapable = () => ENOTCAPABLE;
    return {
      args_sizes_get: m((n, s) => this.sizesGet(this.args, n, s)),
      args_get: m((p, b) => this.listGet(this.args, p, b)),
      environ_sizes_get: m((n, s) => this.sizesGet(this.env, n, s)),
      environ_get: m((p, b) => this.listGet(this.env, p, b)),
      clock_res_get: m((id, out) => this.clockResGet(id, out)),
      clock_time_get: m((id, _precision, out) => this.clockTimeGet(id, out)),
      random_get: m((buf, len) => this.randomGet(buf, len)),
      fd_write: m((fd, iovs, n, out) => this.fdWrite(fd, iovs, n, out)),
      fd_read: m((fd, iovs, n, out) => this.fdRead(fd, iovs, n, out)),
      fd_close: stdio(SUCCESS),
      fd_seek: stdio(ESPIPE),
      fd_tell: stdio(ESPIPE),
      fd_fdstat_get: m((fd, out) => this.fdstatGet(fd, out)),
      fd_fdstat_set_flags: stdio(ENOTSUP),
      fd_filestat_get: m((fd, out) => this.filestatGet(fd, out)),
      fd_prestat_get: () => EBADF,
      fd_prestat_dir_name: () => EBADF,
      fd_sync: stdio(EINVAL),
      fd_datasync: stdio(EINVAL),
      fd_advise: stdio(ESPIPE),
      fd_allocate: stdio(ESPIPE),
      fd_pread: stdio(ESPIPE),
      fd_pwrite: stdio(ESPIPE),
      fd_readdir: stdio(ENOTDIR),
      fd_renumber: (from, to) => (isStdio(from) && isStdio(to) ? ENOTSUP : EBADF),
      fd_filestat_set_size: stdio(EINVAL),
      fd_filestat_set_times: stdio(EINVAL),
      path_open: notCapable,
      path_filestat_get: notCapable,
      path_create_directory: notCapable,
      path_remove_directory: notCapable,
      path_unlink_file: notCapable,
      path_rename: notCapable,
      path_readlink: notCapable,
      path_symlink: notCapable,
      path_link: notCapable,
      path_filestat_set_times: notCapable,
      proc_exit: (code) => {
        throw new Stop({ kind: 'exited', code });
      },
      proc_raise: () => ENOTSUP,
      sched_yield: () => SUCCESS,
      poll_oneoff: () => ENOTSUP,
    };
  }

  stdout() {
    const out = new Uint8Array(this.stdoutLen);
    let at = 0;
    for (const c of this.stdoutChunks) {
      out.set(c, at);
      at += c.length;
    }
    return out;
  }
}

function isStdio(fd) {
  return fd >= 0 && fd <= 2;
}

/**
 * V8's exact `WebAssembly.RuntimeError` messages → runegrid trap kinds, matching what
 * wasmtime reports for the same trap (crates/sandbox/src/lib.rs `classify`). Only traps the
 * allowed feature set (MVP, bulk memory, funcref tables) can raise are listed.
 */
const V8_TRAPS = new Map([
  ['unreachable', 'unreachable'],
  ['memory access out of bounds', 'memory_out_of_bounds'],
  // memory.init reading past its (possibly dropped) data segment; wasmtime: MemoryOutOfBounds.
  ['data segment out of bounds', 'memory_out_of_bounds'],
  ['data segment has been dropped', 'memory_out_of_bounds'], // older V8
  ['divide by zero', 'integer_division_by_zero'],
  ['remainder by zero', 'integer_division_by_zero'],
  ['divide result unrepresentable', 'integer_overflow'],
  // Not listed: 'float unrepresentable in integer range'. V8 says it for a NaN operand
  // (wasmtime: bad_conversion_to_integer) and for one out of range (wasmtime:
  // integer_overflow) alike, so it cannot be mapped and the attempt is lost instead.

  // wasmtime: TableOutOfBounds, IndirectCallToNull, BadSignature are all `indirect_call`.
  ['table index is out of bounds', 'indirect_call'],
  ['element segment out of bounds', 'indirect_call'],
  ['element segment has been dropped', 'indirect_call'], // older V8
  ['null function or function signature mismatch', 'indirect_call'],
  ['function signature mismatch', 'indirect_call'],
  ['null function', 'indirect_call'],
]);

/**
 * How a run that did not return from `_start` ended: lib.rs `classify`, same order. Throws an
 * internal error for anything that is not a deterministic outcome.
 */
function classify(error, fuelRemaining, depth, memoryDenied) {
  if (error instanceof Stop) return error.status;
  if (fuelRemaining < 0n) return { kind: 'out_of_fuel' };
  if (depth < 0) return { kind: 'stack_overflow' };
  if (memoryDenied) return { kind: 'memory_limit' };
  // V8 ran out of native stack before the injected depth limit. Unlike wasmtime's backstop
  // (16 MiB, only reached by frames above 4 KiB at the default depth), V8's ~1 MB stack can
  // run out first with ordinary frames, at a depth that depends on the V8 version, the tier
  // the code runs in and the thread: the fuel used would differ from native, so this is not
  // a result.
  if (error instanceof RangeError && error.message === 'Maximum call stack size exceeded') {
    throw internal('the engine ran out of native stack before the call-depth limit', error);
  }
  if (error instanceof WebAssembly.RuntimeError) {
    const trap = V8_TRAPS.get(error.message);
    if (trap !== undefined) return { kind: 'trap', trap };
    // An ambiguous or unknown wording (another engine, a V8 change): reporting `other` could
    // be a wrong result, so the attempt is lost instead (the traps wasmtime calls `other`
    // need features the instrumentation refuses).
    throw internal(`wasm trap with no deterministic kind: ${error.message}`, error);
  }
  throw internal(`run failed: ${error}`, error);
}

/** ExecStatus::code: the status's canonical text, part of the digest. */
export function statusCode(status) {
  switch (status.kind) {
    case 'exited':
      return `exit:${status.code}`;
    case 'trap':
      return `trap:${status.trap}`;
    default:
      return status.kind;
  }
}

/**
 * Runs `_start` of an instrumented module for one task (lib.rs `spawn` + `execute`).
 *
 * task = { args: string[], env: [string, string][], stdin: Uint8Array, seed: number,
 *          limits: { fuel, memory_bytes, wall_time_ms, stdout_bytes } }
 * Returns { status (ExecStatus as serde JSON), code ("exit:0"…), fuel (Number), stdout, stderr };
 * `onStdout(Uint8Array)` receives stdout as it is written. Throws an Error with
 * `.kind === 'internal'` when the outcome is not deterministic and must not be reported.
 */
export function runTask(module, task, onStdout = () => {}) {
  if (typeof task.seed === 'number' && !Number.isSafeInteger(task.seed)) {
    throw internal(`seed ${task.seed} is not an exact integer`);
  }
  const fuelLimit = bigMin(BigInt(task.limits.fuel), I64_MAX);
  const limitPages = Math.min(Math.floor(Number(task.limits.memory_bytes) / PAGE), 0xffffffff);
  const host = new Host(task, onStdout);

  let instance;
  try {
    instance = new WebAssembly.Instance(module, { [WASI]: host.imports() });
  } catch (e) {
    throw internal(`cannot instantiate module: ${e}`, e);
  }
  const ex = instance.exports;
  const globals = [FUEL_GLOBAL, DEPTH_GLOBAL, MEMORY_LIMIT_GLOBAL, MEMORY_DENIED_GLOBAL];
  if (
    !(ex.memory instanceof WebAssembly.Memory) ||
    typeof ex._start !== 'function' ||
    !globals.every((g) => ex[g] instanceof WebAssembly.Global)
  ) {
    throw internal('module is not instrumented for runegrid (run it through runegrid-instrument)');
  }
  const result = (status, fuel) => ({
    status,
    code: statusCode(status),
    fuel: Number(fuel),
    stdout: host.stdout(),
    stderr: host.stderr.slice(0, host.stderrLen),
  });
  // Native checks the declared initial memory before instantiating; the JS API cannot read
  // it without instantiating, so the size of the fresh memory is checked instead.
  if (ex.memory.buffer.byteLength / PAGE > limitPages) {
    return result({ kind: 'memory_limit' }, 0n);
  }
  host.memory = ex.memory;
  const fuel = ex[FUEL_GLOBAL];
  fuel.value = fuelLimit;
  ex[MEMORY_LIMIT_GLOBAL].value = limitPages | 0; // read as unsigned by the module

  let error = null;
  try {
    ex._start();
  } catch (e) {
    error = e;
  }

  const remaining = fuel.value;
  const used = remaining < 0n ? fuelLimit : fuelLimit - remaining;
  const status =
    error === null
      ? { kind: 'exited', code: 0 }
      : classify(error, remaining, ex[DEPTH_GLOBAL].value, ex[MEMORY_DENIED_GLOBAL].value !== 0);
  return result(status, used);
}

function bigMin(a, b) {
  return a < b ? a : b;
}

/** Lowercase hex of bytes. */
export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * The digest replicas compare (runegrid_core::digest):
 * sha256("runegrid-digest-v1\n" + code + "\n" + decimal fuel + "\n" + stdout), hex.
 */
export async function digestHex(code, fuel, stdout) {
  const head = new TextEncoder().encode(`runegrid-digest-v1\n${code}\n${BigInt(fuel)}\n`);
  const data = new Uint8Array(head.length + stdout.length);
  data.set(head);
  data.set(stdout, head.length);
  return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', data)));
}
