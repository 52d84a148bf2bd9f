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
const U64_MAX = (1n << 64n) - 1n;

// WASI errno values (wasi_snapshot_preview1).
const SUCCESS = 0;
const EBADF = 8;
const EFAULT = 21;
const EILSEQ = 25;
const EINVAL = 28;
const EMFILE = 33;
const ENAMETOOLONG = 37;
const ENOENT = 44;
const ENOTDIR = 54;
const ENOTSOCK = 57;
const ENOTSUP = 58;
const EROFS = 69;
const ESPIPE = 70;
const ENOTCAPABLE = 76;

const FILETYPE_CHARACTER_DEVICE = 2;
const RIGHTS_FD_READ = 2n;
const RIGHTS_FD_WRITE = 64n;

// --- blob mounts (crates/sandbox/src/wasi/fs.rs, whose module documentation is the spec) ---

/** Where blobs appear in the guest's file system (fs.rs MOUNT_DIR). */
export const MOUNT_DIR = '/blobs';
const MOUNT_DIR_BYTES = new TextEncoder().encode(MOUNT_DIR);
/** Most fds open at once above stdio, the directory included (fs.rs MAX_OPEN). */
export const MAX_OPEN = 128;
const FILETYPE_DIRECTORY = 3;
const FILETYPE_REGULAR_FILE = 4;
const OFLAGS_CREAT = 1;
const OFLAGS_DIRECTORY = 2;
const OFLAGS_EXCL = 4;
const OFLAGS_TRUNC = 8;
const FDFLAGS_APPEND = 1;
const RIGHTS_FD_SEEK = 1n << 2n;
const RIGHTS_FD_TELL = 1n << 5n;
const RIGHTS_FD_ADVISE = 1n << 7n;
const RIGHTS_FD_ALLOCATE = 1n << 8n;
const RIGHTS_PATH_OPEN = 1n << 13n;
const RIGHTS_FD_READDIR = 1n << 14n;
const RIGHTS_PATH_FILESTAT_GET = 1n << 18n;
const RIGHTS_FD_FILESTAT_GET = 1n << 21n;
const RIGHTS_FD_FILESTAT_SET_SIZE = 1n << 22n;
/** Rights of an open blob (fs.rs FILE_RIGHTS). */
export const FILE_RIGHTS =
  RIGHTS_FD_READ | RIGHTS_FD_SEEK | RIGHTS_FD_TELL | RIGHTS_FD_ADVISE | RIGHTS_FD_FILESTAT_GET;
/** Rights of the blob directory (fs.rs DIR_RIGHTS). */
export const DIR_RIGHTS =
  RIGHTS_PATH_OPEN | RIGHTS_FD_READDIR | RIGHTS_PATH_FILESTAT_GET | RIGHTS_FD_FILESTAT_GET;
const WRITE_RIGHTS = RIGHTS_FD_WRITE | RIGHTS_FD_ALLOCATE | RIGHTS_FD_FILESTAT_SET_SIZE;
const U64_LIMIT = 1n << 64n;
// fatal: invalid UTF-8 is EILSEQ (Rust's from_utf8); ignoreBOM: a leading U+FEFF stays part
// of the name, as in Rust.
const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** fs.rs `check_blobs`: valid, distinct names. Throws an internal error otherwise. */
export function checkBlobs(blobs) {
  const seen = new Set();
  for (const b of blobs) {
    const n = b.name;
    if (typeof n !== 'string' || n === '' || n === '.' || n === '..' || n.includes('/') || n.includes('\0')) {
      throw internal(`invalid blob name ${JSON.stringify(n)}`);
    }
    if (seen.has(n)) throw internal(`blob ${JSON.stringify(n)} is mounted twice`);
    if (!(b.bytes instanceof Uint8Array)) throw internal(`blob ${JSON.stringify(n)} has no bytes`);
    seen.add(n);
  }
}

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

/** What `Fs.entry` answers for fds 0-2: the caller keeps its stdio answer. */
const STDIO = Symbol('stdio');

/**
 * The mounted blobs and the fds open on them (fs.rs `Fs`, same checks in the same order). With
 * no blobs every fd above 2 is EBADF and `mounted()` is false. A method answering `null` leaves
 * stdio to the caller; memory failures throw FAULT (EFAULT, nothing written).
 */
class Fs {
  constructor(blobs) {
    const utf8 = new TextEncoder();
    this.blobs = blobs.map((b) => ({ name: b.name, bytes: b.bytes, nameBytes: utf8.encode(b.name) }));
    /** Whether fd 3 is still the preopened directory. */
    this.preopen = blobs.length > 0;
    /** fds[i] is fd i + 3: null (free), {dir: true} or {blob, pos (BigInt)}. */
    this.fds = blobs.length > 0 ? [{ dir: true }] : [];
  }

  mounted() {
    return this.blobs.length > 0;
  }

  /** STDIO, the open entry, or null (not open). */
  entry(fd) {
    if (fd >= 0 && fd <= 2) return STDIO;
    if (fd < 3) return null;
    return this.fds[fd - 3] ?? null;
  }

  isOpen(fd) {
    return fd >= 3 && (this.fds[fd - 3] ?? null) !== null;
  }

  /** The directory fd of `path_*`: 0, EBADF (not open) or ENOTDIR (stdio or a file). */
  dirErrno(fd) {
    const e = this.entry(fd);
    if (e === null) return EBADF;
    return e !== STDIO && e.dir ? SUCCESS : ENOTDIR;
  }

  /** A file operation's fd: the entry, or an errno (EBADF for the directory or not open). */
  file(fd) {
    const e = this.entry(fd);
    if (e === STDIO) return STDIO;
    if (e === null || e.dir) return EBADF;
    return e;
  }

  /** The 64-byte filestat of the directory (node -1) or blob `node`. */
  filestat(node) {
    const stat = new Uint8Array(64);
    const v = new DataView(stat.buffer);
    v.setBigUint64(8, BigInt(node < 0 ? 1 : node + 2), true);
    stat[16] = node < 0 ? FILETYPE_DIRECTORY : FILETYPE_REGULAR_FILE;
    v.setBigUint64(24, 1n, true);
    v.setBigUint64(32, BigInt(node < 0 ? 0 : this.blobs[node].bytes.length), true);
    return stat;
  }

  /**
   * fs.rs `resolve`: [errno, node] with node -1 for the directory, else the blob's index.
   * Empty components and `.` are skipped; `..` → ENOTCAPABLE; an unknown name → ENOENT;
   * anything after a blob's name → ENOTDIR; the empty path → ENOENT.
   */
  resolve(path) {
    if (path === '') return [ENOENT, 0];
    const parts = path.split('/');
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (part === '' || part === '.') continue;
      if (part === '..') return [ENOTCAPABLE, 0];
      const blob = this.blobs.findIndex((b) => b.name === part);
      if (blob < 0) return [ENOENT, 0];
      return i + 1 < parts.length ? [ENOTDIR, 0] : [SUCCESS, blob];
    }
    return [SUCCESS, -1];
  }

  /** The path argument: [errno, string]; throws FAULT outside memory, EILSEQ if not UTF-8. */
  static path(mem, ptr, len) {
    const [s, e] = Host.range(mem, ptr, len >>> 0);
    try {
      return [SUCCESS, UTF8_STRICT.decode(mem.subarray(s, e))];
    } catch {
      return [EILSEQ, ''];
    }
  }

  prestatGet(mem, fd, out) {
    if (fd !== 3 || !this.preopen) return EBADF;
    const [s] = Host.range(mem, out, 8);
    const prestat = new Uint8Array(8);
    new DataView(prestat.buffer).setUint32(4, MOUNT_DIR_BYTES.length, true);
    mem.set(prestat, s);
    return SUCCESS;
  }

  prestatDirName(mem, fd, buf, len) {
    if (fd !== 3 || !this.preopen) return EBADF;
    Host.range(mem, buf, len >>> 0);
    if (len >>> 0 < MOUNT_DIR_BYTES.length) return ENAMETOOLONG;
    const [s] = Host.range(mem, buf, MOUNT_DIR_BYTES.length);
    mem.set(MOUNT_DIR_BYTES, s);
    return SUCCESS;
  }

  pathOpen(mem, dirfd, pathPtr, pathLen, oflags, rightsBase, fdflags, out) {
    const d = this.dirErrno(dirfd);
    if (d !== SUCCESS) return d;
    const [pe, path] = Fs.path(mem, pathPtr, pathLen);
    if (pe !== SUCCESS) return pe;
    Host.range(mem, out, 4);
    if (
      (oflags & (OFLAGS_CREAT | OFLAGS_EXCL | OFLAGS_TRUNC)) !== 0 ||
      (BigInt.asUintN(64, BigInt(rightsBase)) & WRITE_RIGHTS) !== 0n ||
      (fdflags & FDFLAGS_APPEND) !== 0
    ) {
      return EROFS;
    }
    const [re, node] = this.resolve(path);
    if (re !== SUCCESS) return re;
    let open;
    if (node < 0) open = { dir: true };
    else if ((oflags & OFLAGS_DIRECTORY) !== 0) return ENOTDIR;
    else open = { blob: node, pos: 0n };
    let slot = this.fds.indexOf(null);
    if (slot < 0) {
      if (this.fds.length >= MAX_OPEN) return EMFILE;
      this.fds.push(null);
      slot = this.fds.length - 1;
    }
    this.fds[slot] = open;
    Host.writeU32(mem, out, slot + 3);
    return SUCCESS;
  }

  pathFilestatGet(mem, dirfd, pathPtr, pathLen, out) {
    const d = this.dirErrno(dirfd);
    if (d !== SUCCESS) return d;
    const [pe, path] = Fs.path(mem, pathPtr, pathLen);
    if (pe !== SUCCESS) return pe;
    const [s] = Host.range(mem, out, 64);
    const [re, node] = this.resolve(path);
    if (re !== SUCCESS) return re;
    mem.set(this.filestat(node), s);
    return SUCCESS;
  }

  /** fd_fdstat_get above stdio (null: stdio). */
  fdstatGet(mem, fd, out) {
    const e = this.entry(fd);
    if (e === STDIO) return null;
    if (e === null) return EBADF;
    const [s] = Host.range(mem, out, 24);
    const stat = new Uint8Array(24);
    const v = new DataView(stat.buffer);
    stat[0] = e.dir ? FILETYPE_DIRECTORY : FILETYPE_REGULAR_FILE;
    v.setBigUint64(8, e.dir ? DIR_RIGHTS : FILE_RIGHTS, true);
    v.setBigUint64(16, e.dir ? FILE_RIGHTS : 0n, true);
    mem.set(stat, s);
    return SUCCESS;
  }

  /** fd_filestat_get above stdio (null: stdio). */
  filestatGet(mem, fd, out) {
    const e = this.entry(fd);
    if (e === STDIO) return null;
    if (e === null) return EBADF;
    const [s] = Host.range(mem, out, 64);
    mem.set(this.filestat(e.dir ? -1 : e.blob), s);
    return SUCCESS;
  }

  /** fd_read (offset null) and fd_pread (offset a u64 BigInt) above stdio (null: stdio). */
  /** The bytes left to read from an open blob file (BigInt), or null (not a file open here). */
  leftToRead(fd) {
    if (fd >= 0 && fd <= 2) return null;
    const f = this.file(fd);
    if (f === STDIO || typeof f === 'number') return null;
    const size = BigInt(this.blobs[f.blob].bytes.length);
    return f.pos >= size ? 0n : size - f.pos;
  }

  read(mem, fd, iovsPtr, count, offset, out) {
    const f = this.file(fd);
    if (f === STDIO) return null;
    if (typeof f === 'number') return f;
    const iovs = Host.iovecs(mem, iovsPtr, count);
    Host.range(mem, out, 4);
    const bytes = this.blobs[f.blob].bytes;
    const size = BigInt(bytes.length);
    let at = offset === null ? f.pos : offset;
    let read = 0;
    for (const [s, e] of iovs) {
      const start = at >= size ? bytes.length : Number(at);
      const n = Math.min(bytes.length - start, e - s);
      mem.set(bytes.subarray(start, start + n), s);
      at += BigInt(n);
      read += n;
      if (n < e - s) break;
    }
    if (offset === null) f.pos = at;
    Host.writeU32(mem, out, read);
    return SUCCESS;
  }

  /** fd_seek above stdio (null: stdio); `offset` is the i64 BigInt. */
  seek(mem, fd, offset, whence, out) {
    const f = this.file(fd);
    if (f === STDIO) return null;
    if (typeof f === 'number') return f;
    Host.range(mem, out, 8);
    let base;
    if (whence === 0) base = 0n;
    else if (whence === 1) base = f.pos;
    else if (whence === 2) base = BigInt(this.blobs[f.blob].bytes.length);
    else return EINVAL;
    const pos = base + BigInt(offset);
    if (pos < 0n || pos >= U64_LIMIT) return EINVAL;
    f.pos = pos;
    Host.writeU64(mem, out, pos);
    return SUCCESS;
  }

  /** fd_tell above stdio (null: stdio). */
  tell(mem, fd, out) {
    const f = this.file(fd);
    if (f === STDIO) return null;
    if (typeof f === 'number') return f;
    Host.writeU64(mem, out, f.pos);
    return SUCCESS;
  }

  /** fd_readdir above stdio (null: stdio); `cookie` is the i64 BigInt. */
  readdir(mem, fd, buf, len, cookie, out) {
    const e = this.entry(fd);
    if (e === STDIO) return null;
    if (e === null) return EBADF;
    if (!e.dir) return ENOTDIR;
    len = len >>> 0;
    const [s] = Host.range(mem, buf, len);
    Host.range(mem, out, 4);
    const first = BigInt.asUintN(64, BigInt(cookie));
    const parts = [];
    let total = 0;
    for (let i = first < BigInt(this.blobs.length) ? Number(first) : this.blobs.length; i < this.blobs.length; i++) {
      if (total >= len) break;
      const name = this.blobs[i].nameBytes;
      const ent = new Uint8Array(24 + name.length);
      const v = new DataView(ent.buffer);
      v.setBigUint64(0, BigInt(i + 1), true);
      v.setBigUint64(8, BigInt(i + 2), true);
      v.setUint32(16, name.length, true);
      ent[20] = FILETYPE_REGULAR_FILE;
      ent.set(name, 24);
      parts.push(ent);
      total += ent.length;
    }
    let at = s;
    let left = Math.min(total, len);
    const n = left;
    for (const p of parts) {
      if (left === 0) break;
      const take = Math.min(left, p.length);
      mem.set(p.subarray(0, take), at);
      at += take;
      left -= take;
    }
    Host.writeU32(mem, out, n);
    return SUCCESS;
  }

  /** fd_close above stdio (null: stdio). */
  close(fd) {
    if (fd >= 0 && fd <= 2) return null;
    if (!this.isOpen(fd)) return EBADF;
    this.fds[fd - 3] = null;
    if (fd === 3) this.preopen = false;
    while (this.fds.length > 0 && this.fds[this.fds.length - 1] === null) this.fds.pop();
    return SUCCESS;
  }

  /** An fd operation with no memory arguments: `onFile`, `onDir`, EBADF (null: stdio). */
  simple(fd, onFile, onDir) {
    const e = this.entry(fd);
    if (e === STDIO) return null;
    if (e === null) return EBADF;
    return e.dir ? onDir : onFile;
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
    /** Mounted blobs and the fds open on them (none: every answer as without mounts). */
    this.fs = new Fs(task.blobs ?? []);
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
    const mem = this.mem();
    // A blob, or EBADF (stdout, stderr, anything not open).
    if (fd !== 0) return this.fs.read(mem, fd, iovsPtr, count, null, outPtr) ?? EBADF;
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
    this.clockNs = BigInt.asUintN(64, this.clockNs + CLOCK_STEP_NS);
    Host.writeU64(mem, outPtr, id === 0 ? REALTIME_BASE_NS + this.clockNs : this.clockNs);
    return SUCCESS;
  }

  /** poll_oneoff on the virtual clock (wasi.rs `poll_oneoff`, whose documentation is the spec). */
  pollOneoff(inPtr, outPtr, n, neventsPtr) {
    n = n >>> 0;
    if (n === 0) return EINVAL;
    const mem = this.mem();
    const [subsAt] = Host.range(mem, inPtr, n * 48);
    const [eventsAt] = Host.range(mem, outPtr, n * 32);
    Host.range(mem, neventsPtr, 4);
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
    Host.writeU32(mem, neventsPtr, ready.length);
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
    // Stdio answers as without mounts; fds above 2 are the mounts' (`Fs`), which answer
    // EBADF for every fd when nothing is mounted.
    const fs = this.fs;
    const simple = (onFile, onDir, onStdio) => (fd) => fs.simple(fd, onFile, onDir) ?? onStdio;
    const notCapable = () => ENOTCAPABLE;
    const open = (fd) => isStdio(fd) || fs.isOpen(fd);
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
      fd_fdstat_set_flags: simple(ENOTSUP, ENOTSUP, ENOTSUP),
      fd_filestat_get: m((fd, out) => fs.filestatGet(this.mem(), fd, out) ?? this.filestatGet(fd, out)),
      fd_prestat_get: m((fd, out) => fs.prestatGet(this.mem(), fd, out)),
      fd_prestat_dir_name: m((fd, buf, len) => fs.prestatDirName(this.mem(), fd, buf, len)),
      fd_sync: simple(SUCCESS, SUCCESS, EINVAL),
      fd_datasync: simple(SUCCESS, SUCCESS, EINVAL),
      fd_advise: simple(SUCCESS, EBADF, ESPIPE),
      fd_allocate: simple(EROFS, EBADF, ESPIPE),
      fd_pread: m(
        (fd, iovs, n, offset, out) =>
          fs.read(this.mem(), fd, iovs, n, BigInt.asUintN(64, BigInt(offset)), out) ?? ESPIPE,
      ),
      fd_pwrite: simple(EBADF, EBADF, ESPIPE),
      fd_readdir: m((fd, buf, len, cookie, out) => fs.readdir(this.mem(), fd, buf, len, cookie, out) ?? ENOTDIR),
      fd_renumber: (from, to) => (open(from) && open(to) ? ENOTSUP : EBADF),
      fd_filestat_set_size: simple(EROFS, EBADF, EINVAL),
      fd_filestat_set_times: simple(EROFS, EBADF, EINVAL),
      path_open: m((dirfd, _dirflags, path, pathLen, oflags, rightsBase, _rightsInheriting, fdflags, out) =>
        fs.mounted()
          ? fs.pathOpen(this.mem(), dirfd, path, pathLen, oflags, rightsBase, fdflags, out)
          : ENOTCAPABLE,
      ),
      path_filestat_get: m((dirfd, _flags, path, pathLen, out) =>
        fs.mounted() ? fs.pathFilestatGet(this.mem(), dirfd, path, pathLen, out) : ENOTCAPABLE,
      ),
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
 *          limits: { fuel, memory_bytes, wall_time_ms, stdout_bytes },
 *          blobs?: [{ name: string, bytes: Uint8Array }] }
 * `blobs` (optional, in mount order) are mounted read-only under /blobs (fs.rs); the bytes are
 * only read, so one Uint8Array may serve many runs.
 * Returns { status (ExecStatus as serde JSON), code ("exit:0"…), fuel (Number), stdout, stderr };
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
