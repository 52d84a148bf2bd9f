// runegrid's browser execution engine: runs one instrumented WASI preview-1 task and reports
// the same (status, fuel, stdout) as the native sandbox, byte for byte.
//
// This file MIRRORS crates/sandbox/src/wasi.rs (the WASI host) and `execute` / `classify` in
// crates/sandbox/src/lib.rs (limits, how a run ends), and must be changed together with them;
// its file system is exec_fs.js (wasi/fs.rs), what the two share is in exec_memory.js.
// crates/sandbox/tests/browser_conformance runs both engines on the same tasks and compares
// them.
//
// No DOM: it runs unchanged in a (Chromium) Web Worker and in Node 20. Instantiation is
// synchronous, which is fine in a worker. The wall-time limit is NOT enforced here: a run is
// synchronous, so the caller enforces `limits.wall_time_ms` by terminating the worker (the
// attempt is then lost, like a native `Timeout`).
//
// Modules given to `runTask` are always the output of runegrid-instrument: the module counts
// its own fuel and call depth, guards `memory.grow` and canonicalizes NaNs, so this host only
// sets the limit globals, provides WASI and `runegrid.refuel`, and reads the globals back after
// the run. Native hands the fuel out in slices so that `refuel` can check the wall-time
// deadline (crates/sandbox/src/fuel.rs); here the whole limit goes into the global at once and
// the refill threshold is 0 (the caller enforces wall time by terminating the worker), so the
// module only calls `refuel` once the fuel is spent, and that ends the run. Slices are not
// observable: the fuel used is the same either way.

import {
  EBADF,
  EFAULT,
  EINVAL,
  ENOTCAPABLE,
  ENOTDIR,
  ENOTSOCK,
  ENOTSUP,
  ESPIPE,
  FAULT,
  internal,
  iovecs,
  range,
  SUCCESS,
  U64_MAX,
  writeU32,
  writeU64,
} from './exec_memory.js';
import {
  checkBlobs,
  DEFAULT_SCRATCH_BYTES,
  FILETYPE_CHARACTER_DEVICE,
  Fs,
  isStdio,
  RIGHTS_FD_READ,
  RIGHTS_FD_WRITE,
} from './exec_fs.js';

const WASI = 'wasi_snapshot_preview1';
const FUEL_GLOBAL = '__runegrid_fuel';
const DEPTH_GLOBAL = '__runegrid_depth';
const MEMORY_LIMIT_GLOBAL = '__runegrid_memory_limit_pages';
const MEMORY_DENIED_GLOBAL = '__runegrid_memory_denied';
const REFILL_GLOBAL = '__runegrid_refill_at';
const HOST_MODULE = 'runegrid';

/** Thrown by `runegrid.refuel` when the fuel is spent (the fuel global is left negative). */
class OutOfFuel extends Error {}

/**
 * `runegrid.refuel` for an instance whose fuel global holds the whole limit: nothing to add;
 * the run ends when the fuel is spent.
 */
function refueler(instance) {
  return () => {
    if (instance.current.exports[FUEL_GLOBAL].value < 0n) throw new OutOfFuel('out of fuel');
  };
}

/** Most stderr bytes kept per run (wasi.rs STDERR_CAP). */
export const STDERR_CAP = 64 << 10;
/** Nanoseconds between the Unix epoch and the virtual realtime clock's zero. */
const REALTIME_BASE_NS = 1_700_000_000_000_000_000n;
/** Nanoseconds the virtual clock advances on every successful clock_time_get. */
const CLOCK_STEP_NS = 1000n;
const PAGE = 65536;
const I64_MAX = (1n << 63n) - 1n;

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
    /** The file tree (blobs and scratch space) and the fds open on it (none: every answer as without one). */
    this.fs = new Fs(task.blobs ?? [], BigInt(task.limits.scratch_bytes ?? DEFAULT_SCRATCH_BYTES));
  }

  /** "Now" for file timestamps (wasi.rs `Host::now`): the virtual realtime clock, not advanced. */
  now() {
    return BigInt.asUintN(64, REALTIME_BASE_NS + this.clockNs);
  }

  // --- memory access (views are made per call: memory.grow detaches the old buffer) ---

  mem() {
    return new Uint8Array(this.memory.buffer);
  }


  // --- the WASI functions; each returns an errno, or throws a Stop ---

  /** args_sizes_get / environ_sizes_get. */
  sizesGet(list, countPtr, sizePtr) {
    const mem = this.mem();
    const size = list.reduce((n, item) => n + item.length, 0);
    range(mem, countPtr, 4);
    range(mem, sizePtr, 4);
    writeU32(mem, countPtr, list.length);
    writeU32(mem, sizePtr, size);
    return SUCCESS;
  }

  /** args_get / environ_get: the pointer table and the strings, interleaved as in wasi.rs. */
  listGet(list, ptrs, buf) {
    const mem = this.mem();
    const size = list.reduce((n, item) => n + item.length, 0);
    range(mem, ptrs, 4 * list.length);
    range(mem, buf, size);
    let offset = buf >>> 0;
    list.forEach((item, i) => {
      writeU32(mem, ((ptrs >>> 0) + 4 * i) >>> 0, offset);
      const [s] = range(mem, offset, item.length);
      mem.set(item, s);
      offset = (offset + item.length) >>> 0;
    });
    return SUCCESS;
  }

  fdWrite(fd, iovsPtr, count, outPtr) {
    const mem = this.mem();
    // A file, or EBADF (stdin, anything not open for writing).
    if (fd !== 1 && fd !== 2) return this.fs.write(mem, fd, iovsPtr, count, null, outPtr, this.now()) ?? EBADF;
    const iovs = iovecs(mem, iovsPtr, count);
    range(mem, outPtr, 4);
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
    writeU32(mem, outPtr, total32);
    return SUCCESS;
  }

  fdRead(fd, iovsPtr, count, outPtr) {
    const mem = this.mem();
    // A file, or EBADF (stdout, stderr, anything not open).
    if (fd !== 0) return this.fs.read(mem, fd, iovsPtr, count, null, outPtr) ?? EBADF;
    const iovs = iovecs(mem, iovsPtr, count);
    range(mem, outPtr, 4);
    let read = 0;
    for (const [s, e] of iovs) {
      const n = Math.min(this.stdin.length - this.stdinPos, e - s);
      mem.set(this.stdin.subarray(this.stdinPos, this.stdinPos + n), s);
      this.stdinPos += n;
      read += n;
      if (n < e - s) break;
    }
    writeU32(mem, outPtr, read);
    return SUCCESS;
  }

  clockTimeGet(id, outPtr) {
    if (!(id >= 0 && id <= 3)) return EINVAL;
    const mem = this.mem();
    range(mem, outPtr, 8);
    this.clockNs = BigInt.asUintN(64, this.clockNs + CLOCK_STEP_NS);
    writeU64(mem, outPtr, id === 0 ? REALTIME_BASE_NS + this.clockNs : this.clockNs);
    return SUCCESS;
  }

  /** poll_oneoff on the virtual clock (wasi.rs `poll_oneoff`, whose documentation is the spec). */
  pollOneoff(inPtr, outPtr, n, neventsPtr) {
    n = n >>> 0;
    if (n === 0) return EINVAL;
    const mem = this.mem();
    const [subsAt] = range(mem, inPtr, n * 48);
    const [eventsAt] = range(mem, outPtr, n * 32);
    range(mem, neventsPtr, 4);
    const v = new DataView(mem.buffer);
    const now = this.clockNs;
    const subs = [];
    for (let i = 0; i < n; i++) {
      const s = subsAt + i * 48;
      const userdata = v.getBigUint64(s, true);
      const tag = mem[s + 8];
      if (tag === 0) {
        const id = v.getUint32(s + 16, true);
        const timeout = v.getBigUint64(s + 24, true);
        const abstime = (v.getUint16(s + 40, true) & 1) !== 0;
        let deadline = null;
        if (id <= 3) {
          if (!abstime) deadline = bigMin(now + timeout, U64_MAX);
          else if (id === 0) deadline = timeout > REALTIME_BASE_NS ? timeout - REALTIME_BASE_NS : 0n;
          else deadline = timeout;
        }
        subs.push({ clock: true, userdata, deadline });
      } else if (tag === 1 || tag === 2) {
        subs.push({ clock: false, userdata, kind: tag, fd: v.getInt32(s + 16, true) });
      } else {
        return EINVAL;
      }
    }
    let ready = [];
    for (const s of subs) {
      if (!s.clock) {
        let error = EBADF;
        let nbytes = 0n;
        if (s.kind === 1 && s.fd === 0) {
          error = SUCCESS;
          nbytes = BigInt(Math.max(this.stdin.length - this.stdinPos, 0));
        } else if (s.kind === 2 && (s.fd === 1 || s.fd === 2)) {
          error = SUCCESS;
        } else if (s.kind === 2 && this.fs.isWritable(s.fd)) {
          error = SUCCESS;
        } else if (s.kind === 1) {
          const left = this.fs.leftToRead(s.fd);
          if (left !== null) {
            error = SUCCESS;
            nbytes = left;
          }
        }
        ready.push({ userdata: s.userdata, error, kind: s.kind, nbytes });
      } else if (s.deadline === null) {
        ready.push({ userdata: s.userdata, error: EINVAL, kind: 0, nbytes: 0n });
      } else if (s.deadline <= now) {
        ready.push({ userdata: s.userdata, error: SUCCESS, kind: 0, nbytes: 0n });
      }
    }
    if (ready.length === 0) {
      // Only clocks, none due: the virtual clock moves to the earliest deadline.
      let earliest = null;
      for (const s of subs) {
        if (s.clock && s.deadline !== null && (earliest === null || s.deadline < earliest)) earliest = s.deadline;
      }
      if (earliest === null) earliest = now;
      this.clockNs = earliest;
      ready = subs
        .filter((s) => s.clock && s.deadline !== null && s.deadline <= earliest)
        .map((s) => ({ userdata: s.userdata, error: SUCCESS, kind: 0, nbytes: 0n }));
    }
    ready.forEach((e, i) => {
      const at = eventsAt + i * 32;
      mem.fill(0, at, at + 32);
      v.setBigUint64(at, e.userdata, true);
      v.setUint16(at + 8, e.error, true);
      mem[at + 10] = e.kind;
      if (e.kind !== 0) v.setBigUint64(at + 16, e.nbytes, true);
    });
    writeU32(mem, neventsPtr, ready.length);
    return SUCCESS;
  }

  clockResGet(id, outPtr) {
    if (!(id >= 0 && id <= 3)) return EINVAL;
    writeU64(this.mem(), outPtr, CLOCK_STEP_NS);
    return SUCCESS;
  }

  randomGet(buf, len) {
    const mem = this.mem();
    const [s, e] = range(mem, buf, len >>> 0);
    this.rng.fill(mem.subarray(s, e));
    return SUCCESS;
  }

  fdstatGet(fd, outPtr) {
    if (!isStdio(fd)) return EBADF;
    const mem = this.mem();
    const [s] = range(mem, outPtr, 24);
    const stat = new DataView(new ArrayBuffer(24));
    stat.setUint8(0, FILETYPE_CHARACTER_DEVICE);
    stat.setBigUint64(8, fd === 0 ? RIGHTS_FD_READ : RIGHTS_FD_WRITE, true);
    mem.set(new Uint8Array(stat.buffer), s);
    return SUCCESS;
  }

  filestatGet(fd, outPtr) {
    if (!isStdio(fd)) return EBADF;
    const mem = this.mem();
    const [s] = range(mem, outPtr, 64);
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
    // Stdio answers as without a file system; fds above 2 are the file system's (`Fs`),
    // which answers EBADF for every fd when there is none.
    const fs = this.fs;
    const simple = (onFile, onDir, onStdio) => (fd) => fs.simple(fd, onFile, onDir) ?? onStdio;
    const open = (fd) => isStdio(fd) || fs.isOpen(fd);
    // wasi.rs `path_call`: ENOTCAPABLE without a file system, else `f(mem, now, ...args)`.
    const path = (f) => m((...a) => (fs.mounted() ? f(this.mem(), this.now(), ...a) : ENOTCAPABLE));
    // i64 arguments (BigInts) as Rust's `as u64`.
    const u64 = (v) => BigInt.asUintN(64, BigInt(v));
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
      fd_close: (fd) => fs.close(fd) ?? SUCCESS,
      fd_seek: m((fd, off, whence, out) => fs.seek(this.mem(), fd, off, whence, out) ?? ESPIPE),
      fd_tell: m((fd, out) => fs.tell(this.mem(), fd, out) ?? ESPIPE),
      fd_fdstat_get: m((fd, out) => fs.fdstatGet(this.mem(), fd, out) ?? this.fdstatGet(fd, out)),
      fd_fdstat_set_flags: (fd, flags) => fs.setFlags(fd, flags) ?? ENOTSUP,
      fd_filestat_get: m((fd, out) => fs.filestatGet(this.mem(), fd, out) ?? this.filestatGet(fd, out)),
      fd_prestat_get: m((fd, out) => fs.prestatGet(this.mem(), fd, out)),
      fd_prestat_dir_name: m((fd, buf, len) => fs.prestatDirName(this.mem(), fd, buf, len)),
      fd_sync: simple(SUCCESS, SUCCESS, EINVAL),
      fd_datasync: simple(SUCCESS, SUCCESS, EINVAL),
      fd_advise: simple(SUCCESS, EBADF, ESPIPE),
      fd_allocate: (fd, offset, len) => fs.allocate(fd, u64(offset), u64(len), this.now()) ?? ESPIPE,
      fd_pread: m((fd, iovs, n, offset, out) => fs.read(this.mem(), fd, iovs, n, u64(offset), out) ?? ESPIPE),
      fd_pwrite: m(
        (fd, iovs, n, offset, out) => fs.write(this.mem(), fd, iovs, n, u64(offset), out, this.now()) ?? ESPIPE,
      ),
      fd_readdir: m((fd, buf, len, cookie, out) => fs.readdir(this.mem(), fd, buf, len, cookie, out) ?? ENOTDIR),
      fd_renumber: (from, to) => fs.renumber(from, to),
      fd_filestat_set_size: (fd, size) => fs.setSize(fd, u64(size), this.now()) ?? EINVAL,
      fd_filestat_set_times: (fd, atim, mtim, flags) => fs.fdSetTimes(fd, atim, mtim, flags, this.now()) ?? EINVAL,
      path_open: path((mem, now, dirfd, dirflags, p, pLen, oflags, rightsBase, _rightsInheriting, fdflags, out) =>
        fs.pathOpen(mem, dirfd, dirflags, p, pLen, oflags, rightsBase, fdflags, out, now),
      ),
      path_filestat_get: path((mem, _now, dirfd, flags, p, pLen, out) => fs.pathFilestatGet(mem, dirfd, flags, p, pLen, out)),
      path_create_directory: path((mem, now, fd, p, pLen) => fs.createDirectory(mem, fd, p, pLen, now)),
      path_remove_directory: path((mem, now, fd, p, pLen) => fs.removeDirectory(mem, fd, p, pLen, now)),
      path_unlink_file: path((mem, now, fd, p, pLen) => fs.unlinkFile(mem, fd, p, pLen, now)),
      path_rename: path((mem, now, fd, old, oldLen, newFd, neu, newLen) =>
        fs.rename(mem, fd, old, oldLen, newFd, neu, newLen, now),
      ),
      path_readlink: path((mem, _now, fd, p, pLen, buf, bufLen, out) =>
        fs.readlink(mem, fd, p, pLen, buf, bufLen, out),
      ),
      path_symlink: path((mem, now, old, oldLen, fd, neu, newLen) => fs.symlink(mem, old, oldLen, fd, neu, newLen, now)),
      path_link: path((mem, _now, oldFd, _flags, old, oldLen, newFd, neu, newLen) =>
        fs.noLinks(mem, [oldFd, newFd], [[old, oldLen], [neu, newLen]]),
      ),
      path_filestat_set_times: path((mem, now, fd, lookupFlags, p, pLen, atim, mtim, fst) =>
        fs.pathSetTimes(mem, fd, lookupFlags, p, pLen, atim, mtim, fst, now),
      ),
      proc_exit: (code) => {
        throw new Stop({ kind: 'exited', code });
      },
      proc_raise: () => ENOTSUP,
      sched_yield: () => SUCCESS,
      poll_oneoff: m((input, out, n, nevents) => this.pollOneoff(input, out, n, nevents)),
      // No fd is a socket.
      sock_accept: (fd) => (open(fd) ? ENOTSOCK : EBADF),
      sock_recv: (fd) => (open(fd) ? ENOTSOCK : EBADF),
      sock_send: (fd) => (open(fd) ? ENOTSOCK : EBADF),
      sock_shutdown: (fd) => (open(fd) ? ENOTSOCK : EBADF),
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
 *          limits: { fuel, memory_bytes, wall_time_ms, stdout_bytes, scratch_bytes? },
 *          blobs?: [{ name: string, bytes: Uint8Array }] }
 * `blobs` (optional, in mount order) are mounted read-only under /blobs (fs.rs); the bytes are
 * only read, so one Uint8Array may serve many runs. `limits.scratch_bytes` (Number or BigInt;
 * missing: the Limits default, 64 MiB) is the task's writable in-memory file system: a
 * preopened `/` holding `tmp` and `out` (and `blobs` when mounted), ENOSPC past it; 0: none.
 * Every run starts from a fresh tree (fs.rs).
 * The files left under /out come back as `files` ([{ path, bytes }], byte-wise path order),
 * unless they add up to more than `limits.output_bytes` (missing: 16 MiB): then the status is
 * `output_limit` and `files` is empty (lib.rs `execute`).
 * Returns { status (ExecStatus as serde JSON), code ("exit:0"…), fuel (Number), stdout, stderr,
 * files };
 * `onStdout(Uint8Array)` receives stdout as it is written. Throws an Error with
 * `.kind === 'internal'` when the outcome is not deterministic and must not be reported.
 */
export function runTask(module, task, onStdout = () => {}) {
  if (typeof task.seed === 'number' && !Number.isSafeInteger(task.seed)) {
    throw internal(`seed ${task.seed} is not an exact integer`);
  }
  checkBlobs(task.blobs ?? []);
  const fuelLimit = bigMin(BigInt(task.limits.fuel), I64_MAX);
  const limitPages = Math.min(Math.floor(Number(task.limits.memory_bytes) / PAGE), 0xffffffff);
  const host = new Host(task, onStdout);

  let instance;
  try {
    const cell = { current: null };
    instance = new WebAssembly.Instance(module, { [WASI]: host.imports(), [HOST_MODULE]: { refuel: refueler(cell) } });
    cell.current = instance;
  } catch (e) {
    throw internal(`cannot instantiate module: ${e}`, e);
  }
  const ex = instance.exports;
  const globals = [FUEL_GLOBAL, DEPTH_GLOBAL, MEMORY_LIMIT_GLOBAL, MEMORY_DENIED_GLOBAL, REFILL_GLOBAL];
  if (
    !(ex.memory instanceof WebAssembly.Memory) ||
    typeof ex._start !== 'function' ||
    !globals.every((g) => ex[g] instanceof WebAssembly.Global)
  ) {
    throw internal('module is not instrumented for runegrid (run it through runegrid-instrument)');
  }
  const result = (status, fuel) => {
    let [files, total] = host.fs.outputs();
    const outputCap = task.limits.output_bytes ?? 16 * 1024 * 1024;
    if (BigInt(total) > BigInt(outputCap)) {
      files = [];
      status = { kind: 'output_limit' };
    }
    return {
      status,
      code: statusCode(status),
      fuel: Number(fuel),
      stdout: host.stdout(),
      stderr: host.stderr.slice(0, host.stderrLen),
      files: files.map((f) => ({ path: f.path, bytes: f.bytes })),
    };
  };
  // Native checks the declared initial memory before instantiating; the JS API cannot read
  // it without instantiating, so the size of the fresh memory is checked instead.
  if (ex.memory.buffer.byteLength / PAGE > limitPages) {
    return result({ kind: 'memory_limit' }, 0n);
  }
  host.memory = ex.memory;
  const fuel = ex[FUEL_GLOBAL];
  fuel.value = fuelLimit;
  ex[REFILL_GLOBAL].value = 0n;
  ex[MEMORY_LIMIT_GLOBAL].value = limitPages | 0; // read as unsigned by the module

  let error = null;
  try {
    ex._start();
  } catch (e) {
    error = e;
  }

  const remaining = fuel.value;
  const used = remaining < 0n ? fuelLimit : fuelLimit - remaining;
  // A run whose last charges before `_start` returned spent the fuel is out of fuel too.
  const status =
    error === null
      ? remaining < 0n
        ? { kind: 'out_of_fuel' }
        : { kind: 'exited', code: 0 }
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

/** Lowercase hex SHA-256 of bytes. */
export async function sha256Hex(bytes) {
  return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)));
}

/**
 * The records of output files ([{ path, bytes }] as runTask returns them) that results carry
 * and digests cover (runegrid_core::OutputFile): [{ path, size, sha256 }].
 */
export async function fileRecords(files) {
  return Promise.all(files.map(async (f) => ({ path: f.path, size: f.bytes.length, sha256: await sha256Hex(f.bytes) })));
}

/**
 * The digest replicas compare (runegrid_core::digest_with_files), hex. Without files:
 * sha256("runegrid-digest-v1\n" + code + "\n" + decimal fuel + "\n" + stdout). With files
 * (records from `fileRecords`): sha256("runegrid-digest-v2\n" + code + "\n" + fuel + "\n" +
 * len(stdout) + "\n" + stdout, then per file "\n" + len(path) + "\n" + path + "\n" + size +
 * "\n" + sha256), lengths in UTF-8 bytes.
 */
export async function digestHex(code, fuel, stdout, records = []) {
  const utf8 = new TextEncoder();
  const parts = [];
  if (records.length === 0) {
    parts.push(utf8.encode(`runegrid-digest-v1\n${code}\n${BigInt(fuel)}\n`), stdout);
  } else {
    parts.push(utf8.encode(`runegrid-digest-v2\n${code}\n${BigInt(fuel)}\n${stdout.length}\n`), stdout);
    for (const f of records) {
      const path = utf8.encode(f.path);
      parts.push(utf8.encode(`\n${path.length}\n`), path, utf8.encode(`\n${f.size}\n${f.sha256}`));
    }
  }
  const data = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    data.set(p, at);
    at += p.length;
  }
  return sha256Hex(data);
}
