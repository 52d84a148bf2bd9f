// runegrid's browser execution engine: runs one instrumented WASI preview-1 task and reports
// the same (status, fuel, stdout) as the native sandbox, byte for byte.
//
// This file MIRRORS crates/sandbox/src/wasi.rs (the WASI host), crates/sandbox/src/wasi/fs.rs
// (its file system) and `execute` / `classify` in crates/sandbox/src/lib.rs (limits, how a run
// ends) and must be changed together with them. crates/sandbox/tests/browser_conformance runs
// both on the same tasks and compares them.
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
// the refill threshold is set to its minimum (the caller enforces wall time by terminating the
// worker), so the module only calls `refuel` when a bulk instruction's charge spent the fuel.
// Slices are not observable: the fuel used is the same either way.

const WASI = 'wasi_snapshot_preview1';
const FUEL_GLOBAL = '__runegrid_fuel';
const DEPTH_GLOBAL = '__runegrid_depth';
const MEMORY_LIMIT_GLOBAL = '__runegrid_memory_limit_pages';
const MEMORY_DENIED_GLOBAL = '__runegrid_memory_denied';
const REFILL_GLOBAL = '__runegrid_refill_at';
const HOST_MODULE = 'runegrid';
const I64_MIN = -(2n ** 63n);

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
const U64_MAX = (1n << 64n) - 1n;

// WASI errno values (wasi_snapshot_preview1).
const SUCCESS = 0;
const EBADF = 8;
const EEXIST = 20;
const EFAULT = 21;
const EILSEQ = 25;
const EINVAL = 28;
const EISDIR = 31;
const ELOOP = 32;
const EMFILE = 33;
const ENAMETOOLONG = 37;
const ENOENT = 44;
const ENOSPC = 51;
const ENOTDIR = 54;
const ENOTEMPTY = 55;
const ENOTSOCK = 57;
const ENOTSUP = 58;
const EROFS = 69;
const ESPIPE = 70;
const ENOTCAPABLE = 76;

const FILETYPE_CHARACTER_DEVICE = 2;
const RIGHTS_FD_READ = 2n;
const RIGHTS_FD_WRITE = 64n;

// --- the file system (crates/sandbox/src/wasi/fs.rs, whose module documentation is the spec) ---
//
// A tree in memory, built fresh for every run and discarded after it: the read-only blobs
// under /blobs and, when `limits.scratch_bytes > 0`, a writable root `/` holding `blobs` (when
// mounted), `tmp` and `out`, with fs.rs's scratch-space accounting (ENOSPC), entry order,
// inode numbers and virtual-clock timestamps.

/** Where blobs appear in the guest's file system (fs.rs MOUNT_DIR). */
export const MOUNT_DIR = '/blobs';
/** The writable root, preopened when the task has scratch space (fs.rs ROOT_DIR). */
export const ROOT_DIR = '/';
const UTF8_ENCODER = new TextEncoder();
const MOUNT_DIR_BYTES = UTF8_ENCODER.encode(MOUNT_DIR);
const ROOT_DIR_BYTES = UTF8_ENCODER.encode(ROOT_DIR);
/** Most fds open at once above stdio, the preopens included (fs.rs MAX_OPEN). */
export const MAX_OPEN = 128;
/** Longest name of a directory entry, in UTF-8 bytes (fs.rs MAX_NAME). */
export const MAX_NAME = 255;
/** Scratch bytes each node a task creates costs, besides its name and data (fs.rs NODE_COST). */
export const NODE_COST = 64;
/** `limits.scratch_bytes` when the task does not say (runegrid_core `Limits::default`). */
const DEFAULT_SCRATCH_BYTES = 64 << 20;
const FILETYPE_DIRECTORY = 3;
const FILETYPE_REGULAR_FILE = 4;
const FILETYPE_SYMBOLIC_LINK = 7;
const LOOKUPFLAGS_SYMLINK_FOLLOW = 1;
/** Most symbolic links one lookup follows (fs.rs MAX_SYMLINK_HOPS). */
export const MAX_SYMLINK_HOPS = 40;
const OFLAGS_CREAT = 1;
const OFLAGS_DIRECTORY = 2;
const OFLAGS_EXCL = 4;
const OFLAGS_TRUNC = 8;
const FDFLAGS_APPEND = 1;
/** APPEND, DSYNC, NONBLOCK, RSYNC, SYNC (fs.rs FDFLAGS_ALL). */
const FDFLAGS_ALL = 0x1f;
const FSTFLAGS_ATIM = 1;
const FSTFLAGS_ATIM_NOW = 2;
const FSTFLAGS_MTIM = 4;
const FSTFLAGS_MTIM_NOW = 8;
const RIGHTS_FD_DATASYNC = 1n;
const RIGHTS_FD_SEEK = 1n << 2n;
const RIGHTS_FD_FDSTAT_SET_FLAGS = 1n << 3n;
const RIGHTS_FD_SYNC = 1n << 4n;
const RIGHTS_FD_TELL = 1n << 5n;
const RIGHTS_FD_ADVISE = 1n << 7n;
const RIGHTS_FD_ALLOCATE = 1n << 8n;
const RIGHTS_PATH_CREATE_DIRECTORY = 1n << 9n;
const RIGHTS_PATH_CREATE_FILE = 1n << 10n;
const RIGHTS_PATH_LINK_SOURCE = 1n << 11n;
const RIGHTS_PATH_LINK_TARGET = 1n << 12n;
const RIGHTS_PATH_OPEN = 1n << 13n;
const RIGHTS_FD_READDIR = 1n << 14n;
const RIGHTS_PATH_READLINK = 1n << 15n;
const RIGHTS_PATH_RENAME_SOURCE = 1n << 16n;
const RIGHTS_PATH_RENAME_TARGET = 1n << 17n;
const RIGHTS_PATH_FILESTAT_GET = 1n << 18n;
const RIGHTS_PATH_FILESTAT_SET_TIMES = 1n << 20n;
const RIGHTS_FD_FILESTAT_GET = 1n << 21n;
const RIGHTS_FD_FILESTAT_SET_SIZE = 1n << 22n;
const RIGHTS_FD_FILESTAT_SET_TIMES = 1n << 23n;
const RIGHTS_PATH_SYMLINK = 1n << 24n;
const RIGHTS_PATH_REMOVE_DIRECTORY = 1n << 25n;
const RIGHTS_PATH_UNLINK_FILE = 1n << 26n;
const RIGHTS_POLL_FD_READWRITE = 1n << 27n;
/** Rights of a file fd not open for writing (fs.rs FILE_RIGHTS). */
export const FILE_RIGHTS =
  RIGHTS_FD_READ | RIGHTS_FD_SEEK | RIGHTS_FD_TELL | RIGHTS_FD_ADVISE | RIGHTS_FD_FILESTAT_GET;
/** Rights of a file fd open for writing (fs.rs FILE_WRITE_RIGHTS). */
export const FILE_WRITE_RIGHTS =
  FILE_RIGHTS |
  RIGHTS_POLL_FD_READWRITE |
  RIGHTS_FD_FDSTAT_SET_FLAGS |
  RIGHTS_FD_DATASYNC |
  RIGHTS_FD_SYNC |
  RIGHTS_FD_WRITE |
  RIGHTS_FD_ALLOCATE |
  RIGHTS_FD_FILESTAT_SET_SIZE |
  RIGHTS_FD_FILESTAT_SET_TIMES;
/** Rights of a read-only directory, the blob mount (fs.rs DIR_RIGHTS). */
export const DIR_RIGHTS =
  RIGHTS_PATH_OPEN | RIGHTS_FD_READDIR | RIGHTS_PATH_FILESTAT_GET | RIGHTS_FD_FILESTAT_GET;
/** Rights of a writable directory (fs.rs DIR_WRITE_RIGHTS). */
export const DIR_WRITE_RIGHTS =
  DIR_RIGHTS |
  RIGHTS_PATH_LINK_SOURCE |
  RIGHTS_PATH_LINK_TARGET |
  RIGHTS_PATH_READLINK |
  RIGHTS_PATH_SYMLINK |
  RIGHTS_PATH_CREATE_DIRECTORY |
  RIGHTS_PATH_CREATE_FILE |
  RIGHTS_PATH_RENAME_SOURCE |
  RIGHTS_PATH_RENAME_TARGET |
  RIGHTS_PATH_FILESTAT_SET_TIMES |
  RIGHTS_FD_FILESTAT_SET_TIMES |
  RIGHTS_PATH_REMOVE_DIRECTORY |
  RIGHTS_PATH_UNLINK_FILE;
const WRITE_RIGHTS = RIGHTS_FD_WRITE | RIGHTS_FD_ALLOCATE | RIGHTS_FD_FILESTAT_SET_SIZE;
// fatal: invalid UTF-8 is EILSEQ (Rust's from_utf8); ignoreBOM: a leading U+FEFF stays part
// of the name, as in Rust.
const UTF8_STRICT = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** fs.rs `check_blobs`: valid, distinct names. Throws an internal error otherwise. */
export function checkBlobs(blobs) {
  for (const b of blobs) {
    if (typeof b.name !== 'string') throw internal(`invalid blob name ${JSON.stringify(b.name)}`);
    if (!(b.bytes instanceof Uint8Array)) throw internal(`blob ${JSON.stringify(b.name)} has no bytes`);
  }
  const why = checkMounts(blobs.map((b) => b.name));
  if (why !== null) throw internal(why);
}

/**
 * runegrid_core::mounts::check_mounts: each name a plain file name (under /blobs) or an
 * absolute path of such names, no two the same, none under /blobs or on /tmp or /out, none
 * inside another. Returns why not, or null.
 */
function checkMounts(names) {
  const component = (c) =>
    c !== '' && c !== '.' && c !== '..' && !c.includes('/') && !c.includes('\0') && utf8Length(c) <= MAX_NAME;
  const plain = new Set();
  const paths = [];
  for (const name of names) {
    if (!name.startsWith('/')) {
      if (!component(name)) return `${JSON.stringify(name)} is not a valid mount`;
      if (plain.has(name)) return `${JSON.stringify(name)} is mounted twice`;
      plain.add(name);
      continue;
    }
    if (utf8Length(name) > 4096) return 'a mount path is longer than 4096 bytes';
    const parts = name.slice(1).split('/');
    if (!parts.every(component)) return `${JSON.stringify(name)} is not a valid mount`;
    if (parts[0] === 'blobs') return `${JSON.stringify(name)}: mount files under /blobs by their plain name`;
    if (parts.length === 1 && (parts[0] === 'tmp' || parts[0] === 'out')) {
      return `${JSON.stringify(name)} is a directory of every task's root`;
    }
    for (const q of paths) {
      const n = Math.min(q.length, parts.length);
      if (q.slice(0, n).every((c, i) => c === parts[i])) return `${JSON.stringify(name)} collides with /${q.join('/')}`;
    }
    paths.push(parts);
  }
  return null;
}

/** A string's length in UTF-8 bytes (Rust `str::len`); the names here are well-formed. */
function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4; // a surrogate pair: one code point beyond U+FFFF
      i++;
    } else n += 3;
  }
  return n;
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

/** What `Fs.fd` answers for fds 0-2: the caller keeps its stdio answer. */
const STDIO = Symbol('stdio');

/**
 * An errno raised inside a file-system function (fs.rs `Err(e)?`), answered by `attempt`.
 * Memory failures are not: they throw FAULT, which the import wrapper turns into EFAULT.
 */
class Errno {
  constructor(errno) {
    this.errno = errno;
  }
}

/** Raises `errno` (see `attempt`). */
function fail(errno) {
  throw new Errno(errno);
}

/** fs.rs `errno_of((|| …)())`: runs `f`, answering SUCCESS or the errno it raised. */
function attempt(f) {
  try {
    f();
    return SUCCESS;
  } catch (e) {
    if (e instanceof Errno) return e.errno;
    throw e;
  }
}

/**
 * A directory's entries, in the order they were made (fs.rs `Dir`). Entry `k` counts every
 * entry ever made in this directory from 0; `put` onto an existing name keeps its number.
 */
class Dir {
  constructor(parent) {
    /** Name → its entry { k, name, nameBytes, ino, live }. */
    this.names = new Map();
    /** The entries by ascending `k` (removed ones stay, not `live`, until compacted). */
    this.list = [];
    this.dead = 0;
    /** The number the next new entry gets. */
    this.next = 0;
    /** The directory holding this one (the root's and a mount's own: itself). */
    this.parent = parent;
  }

  /** How many entries it holds. */
  get size() {
    return this.names.size;
  }

  /** The node named `name`, or undefined. */
  get(name) {
    return this.names.get(name)?.ino;
  }

  /** Adds `name` last, or points an existing `name` (keeping its place) at `ino`. */
  put(name, ino) {
    const e = this.names.get(name);
    if (e !== undefined) {
      e.ino = ino;
      return;
    }
    const entry = { k: this.next, name, nameBytes: UTF8_ENCODER.encode(name), ino, live: true };
    this.next += 1;
    this.names.set(name, entry);
    this.list.push(entry);
  }

  remove(name) {
    const e = this.names.get(name);
    if (e === undefined) return;
    this.names.delete(name);
    e.live = false;
    this.dead += 1;
    if (this.dead > 64 && this.dead * 2 > this.list.length) {
      this.list = this.list.filter((x) => x.live);
      this.dead = 0;
    }
  }

  /** The entries with `k ≥ cookie` (a u64 BigInt), in order (fs.rs `entries.range(cookie..)`). */
  *from(cookie) {
    if (cookie >= BigInt(this.next)) return;
    const first = Number(cookie);
    let lo = 0;
    let hi = this.list.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.list[mid].k < first) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < this.list.length; i++) {
      if (this.list[i].live) yield this.list[i];
    }
  }
}

/**
 * A node of the tree (fs.rs `Node`): a directory (`dir`) or a file (`bytes`, of which the
 * first `size` are its content: a blob's own array, or the task's, grown by doubling).
 */
class Node {
  constructor(dir, bytes, now, link = null) {
    this.dir = dir;
    this.bytes = bytes;
    this.size = bytes === null ? 0 : bytes.length;
    /** A symbolic link's target (a string), else null. */
    this.link = link;
    /** Mounted: never changed. */
    this.readOnly = false;
    /** Still in a directory (or a preopened root). */
    this.linked = true;
    /** Created by the task: counted in `used`. */
    this.charged = false;
    /** The length of its name in bytes, for its cost. */
    this.nameLen = 0;
    /** Timestamps (u64 BigInt nanoseconds). */
    this.atim = now;
    this.mtim = now;
    this.ctim = now;
  }

  isDir() {
    return this.dir !== null;
  }

  /** fs.rs `Node::filetype`. */
  filetype() {
    if (this.dir !== null) return FILETYPE_DIRECTORY;
    return this.link !== null ? FILETYPE_SYMBOLIC_LINK : FILETYPE_REGULAR_FILE;
  }

  /** A file's length, a link's target length, a directory 0 (fs.rs `Node::len`). */
  len() {
    if (this.dir !== null) return 0;
    return this.link !== null ? utf8Length(this.link) : this.size;
  }

  /** What it counts in `used` (BigInt). */
  cost() {
    return this.charged ? BigInt(NODE_COST + this.nameLen + this.len()) : 0n;
  }

  /**
   * Sets a task file's length to `n` (Vec::resize: new bytes are zeros), reserving at least
   * `room` bytes (≥ n) when it has to reallocate.
   */
  resize(n, room) {
    if (n > this.bytes.length) {
      const grown = new Uint8Array(Math.max(n, Math.min(this.bytes.length * 2, room)));
      grown.set(this.bytes.subarray(0, this.size));
      this.bytes = grown;
    } else if (n > this.size) {
      this.bytes.fill(0, this.size, n);
    }
    this.size = n;
  }
}

/**
 * The task's file tree and the fds open on it (fs.rs `Fs`, same checks in the same order).
 * With no blob and no scratch space every fd above 2 is EBADF and `mounted()` is false. A
 * method answering `null` leaves stdio to the caller; memory failures throw FAULT (EFAULT,
 * nothing written or changed). Node numbers are Numbers, every 64-bit value a BigInt.
 */
export class Fs {
  /** The tree of a run mounting `blobs`, with `scratchBytes` (BigInt) of writable space. */
  constructor(blobs, scratchBytes) {
    /** ino → Node; numbered from 1 in creation order, never reused. */
    this.nodes = new Map();
    this.nextIno = 1;
    /**
     * fds[i] is fd i + 3: null (free) or { ino, preopen (the name's bytes while it is one,
     * else null), file (null for a directory, else { pos (BigInt), read, write, flags }) }.
     */
    this.fds = [];
    this.limit = BigInt.asUintN(64, BigInt(scratchBytes));
    this.used = 0n;
    let mount = null;
    const plain = blobs.filter((b) => !b.name.startsWith('/'));
    const paths = blobs.filter((b) => b.name.startsWith('/'));
    if (plain.length > 0) {
      mount = this.add(new Node(new Dir(0), null, 0n));
      const dir = this.dirOf(mount);
      dir.parent = mount;
      for (const b of plain) {
        const ino = this.add(new Node(null, b.bytes, 0n));
        this.node(ino).readOnly = true;
        dir.put(b.name, ino);
      }
      this.node(mount).readOnly = true;
      this.fds.push({ ino: mount, preopen: MOUNT_DIR_BYTES, file: null });
    }
    if (this.limit > 0n || paths.length > 0) {
      const root = this.add(new Node(new Dir(0), null, 0n));
      const dir = this.dirOf(root);
      dir.parent = root;
      if (mount !== null) {
        dir.put('blobs', mount);
        this.dirOf(mount).parent = root;
      }
      for (const name of ['tmp', 'out']) {
        dir.put(name, this.add(new Node(new Dir(root), null, 0n)));
      }
      this.fds.push({ ino: root, preopen: ROOT_DIR_BYTES, file: null });
      this.root = root;
      for (const b of paths) this.mountAt(root, b);
    }
    /** Whether anything was preopened (otherwise every function keeps its unmounted answer). */
    this.active = this.fds.length > 0;
  }

  /**
   * fs.rs `outputs`: the regular files under `/out` when the run ends (whatever `/out` names
   * then) as [{ path, pathBytes, bytes }], paths below it joined by `/`, in byte-wise path
   * order, and the sum of their sizes (a Number).
   */
  outputs() {
    const files = [];
    const walk = (dir, prefix) => {
      for (const e of dir.list) {
        if (!e.live) continue;
        const path = prefix + e.name;
        const node = this.node(e.ino);
        if (node.isDir()) walk(node.dir, `${path}/`);
        else if (node.link === null) files.push({ path, pathBytes: UTF8_ENCODER.encode(path), bytes: node.bytes.slice(0, node.size) });
      }
    };
    const out = this.root === undefined ? undefined : this.dirOf(this.root).get('out');
    if (out !== undefined && this.node(out).isDir()) walk(this.node(out).dir, '');
    files.sort((a, b) => compareBytes(a.pathBytes, b.pathBytes));
    return [files, files.reduce((n, f) => n + f.bytes.length, 0)];
  }

  /**
   * fs.rs `mount_at`: mounts blob `b` at its absolute path below `root`, making the
   * directories on the way (writable, free, timestamps 0).
   */
  mountAt(root, b) {
    const parts = b.name.slice(1).split('/');
    const file = parts.pop();
    let dir = root;
    for (const name of parts) {
      let next = this.dirOf(dir).get(name);
      if (next === undefined) {
        next = this.add(new Node(new Dir(dir), null, 0n));
        this.dirOf(dir).put(name, next);
      }
      dir = next;
    }
    const ino = this.add(new Node(null, b.bytes, 0n));
    this.node(ino).readOnly = true;
    this.dirOf(dir).put(file, ino);
  }

  /** Whether anything is preopened (otherwise every function keeps its unmounted answer). */
  mounted() {
    return this.active;
  }

  add(node) {
    const ino = this.nextIno;
    this.nextIno += 1;
    this.nodes.set(ino, node);
    return ino;
  }

  node(ino) {
    const n = this.nodes.get(ino);
    if (n === undefined) throw internal(`file system: no node ${ino}`);
    return n;
  }

  dirOf(ino) {
    const d = this.node(ino).dir;
    if (d === null) throw internal(`file system: node ${ino} is not a directory`);
    return d;
  }

  /** fd `fd`'s description above stdio, or null (not open). */
  desc(fd) {
    return fd >= 3 ? (this.fds[fd - 3] ?? null) : null;
  }

  /** fs.rs `Fs::fd`: STDIO, the open description (`file` null: a directory), or EBADF. */
  fd(fd) {
    if (isStdio(fd)) return STDIO;
    return this.desc(fd) ?? EBADF;
  }

  /** Whether `fd` is open above stdio. */
  isOpen(fd) {
    return this.desc(fd) !== null;
  }

  /** The directory fd of `path_*` (fs.rs `Fs::dir`): its node; raises EBADF or ENOTDIR. */
  dir(fd) {
    const d = this.fd(fd);
    if (d === EBADF) fail(EBADF);
    if (d === STDIO || d.file !== null) fail(ENOTDIR);
    return d.ino;
  }

  /**
   * fs.rs `lookup`: resolves `path` from the directory `start` (raises its errno); a symbolic
   * link is followed where it is not the last component, and there when `follow`.
   */
  lookup(start, path, follow) {
    if (path === '') fail(ENOENT);
    if (path.startsWith('/')) fail(ENOTCAPABLE);
    // The components left, last first: a followed link's target is pushed in front.
    const parts = path.split('/').reverse();
    const stack = [start];
    let hops = 0;
    while (parts.length > 0) {
      const part = parts.pop();
      const dir = this.node(stack[stack.length - 1]).dir;
      if (dir === null) fail(ENOTDIR);
      if (part === '' || part === '.') continue;
      if (part === '..') {
        if (stack.length === 1) fail(ENOTCAPABLE);
        stack.pop();
        continue;
      }
      if (utf8Length(part) > MAX_NAME) fail(ENAMETOOLONG);
      const child = dir.get(part) ?? fail(ENOENT);
      const link = this.node(child).link;
      if (link !== null && (follow || parts.length > 0)) {
        hops += 1;
        if (hops > MAX_SYMLINK_HOPS) fail(ELOOP);
        parts.push(...link.split('/').reverse());
      } else {
        stack.push(child);
      }
    }
    return stack[stack.length - 1];
  }

  /**
   * fs.rs `parent`: [the directory holding the path's last component, that name, whether the
   * path ended in `/`].
   */
  parent(start, path) {
    if (path === '') fail(ENOENT);
    if (path.startsWith('/')) fail(ENOTCAPABLE);
    let end = path.length;
    while (end > 0 && path[end - 1] === '/') end--;
    const trimmed = path.slice(0, end);
    const trailing = end < path.length;
    if (trimmed === '') return [start, '.', trailing];
    const i = trimmed.lastIndexOf('/');
    const dirPath = i >= 0 ? trimmed.slice(0, i) : '';
    const name = i >= 0 ? trimmed.slice(i + 1) : trimmed;
    const dir = dirPath === '' ? start : this.lookup(start, dirPath, true);
    if (!this.node(dir).isDir()) fail(ENOTDIR);
    if (utf8Length(name) > MAX_NAME) fail(ENAMETOOLONG);
    return [dir, name, trailing];
  }

  /** fs.rs `can_change`: raises EROFS for a read-only directory, ENOENT for a removed one. */
  canChange(dir) {
    const node = this.node(dir);
    if (node.readOnly) fail(EROFS);
    if (!node.linked) fail(ENOENT);
  }

  /** fs.rs `room`: raises ENOSPC unless `used - freed + more` stays within the limit. */
  room(more, freed) {
    if (this.used - freed + more > this.limit) fail(ENOSPC);
  }

  /** Whether some fd refers to `ino`. */
  isReferenced(ino) {
    return this.fds.some((d) => d !== null && d.ino === ino);
  }

  /** fs.rs `release`: forgets a node that is neither in a directory nor open. */
  release(ino) {
    const node = this.node(ino);
    if (!node.linked && !this.isReferenced(ino)) {
      this.used -= node.cost();
      this.nodes.delete(ino);
    }
  }

  /** fs.rs `unlink`: takes `name` out of `dir`, marking its node removed (forgotten unless open). */
  unlink(dir, name, ino, now) {
    this.dirOf(dir).remove(name);
    this.node(ino).linked = false;
    this.touch(dir, now);
    this.release(ino);
  }

  /** Sets mtime and ctime to now. */
  touch(ino, now) {
    const n = this.node(ino);
    n.mtim = now;
    n.ctim = now;
  }

  /** fs.rs `create`: adds `node` as `name` in `dir` (checked by the caller), charged. */
  create(dir, name, node, now) {
    const ino = this.add(node);
    node.charged = true;
    node.nameLen = utf8Length(name);
    this.used += node.cost();
    this.dirOf(dir).put(name, ino);
    this.touch(dir, now);
    return ino;
  }

  /** The 64-byte filestat of node `ino`. */
  filestat(ino) {
    const node = this.node(ino);
    const stat = new Uint8Array(64);
    const v = new DataView(stat.buffer);
    v.setBigUint64(8, BigInt(ino), true);
    stat[16] = node.filetype();
    v.setBigUint64(24, node.linked ? 1n : 0n, true);
    v.setBigUint64(32, BigInt(node.len()), true);
    v.setBigUint64(40, node.atim, true);
    v.setBigUint64(48, node.mtim, true);
    v.setBigUint64(56, node.ctim, true);
    return stat;
  }

  /** The path argument (fs.rs `Fs::path`): throws FAULT outside memory, raises EILSEQ. */
  static path(mem, ptr, len) {
    const [s, e] = Host.range(mem, ptr, len >>> 0);
    try {
      return UTF8_STRICT.decode(mem.subarray(s, e));
    } catch {
      return fail(EILSEQ);
    }
  }

  prestatGet(mem, fd, out) {
    const name = this.desc(fd)?.preopen ?? null;
    if (name === null) return EBADF;
    const [s] = Host.range(mem, out, 8);
    const prestat = new Uint8Array(8);
    new DataView(prestat.buffer).setUint32(4, name.length, true);
    mem.set(prestat, s);
    return SUCCESS;
  }

  prestatDirName(mem, fd, buf, len) {
    const name = this.desc(fd)?.preopen ?? null;
    if (name === null) return EBADF;
    Host.range(mem, buf, len >>> 0);
    if (len >>> 0 < name.length) return ENAMETOOLONG;
    const [s] = Host.range(mem, buf, name.length);
    mem.set(name, s);
    return SUCCESS;
  }

  /** fs.rs `free_slot`: the lowest free fd slot; raises EMFILE. */
  freeSlot() {
    const s = this.fds.indexOf(null);
    if (s >= 0) return s;
    if (this.fds.length < MAX_OPEN) return this.fds.length;
    return fail(EMFILE);
  }

  install(slot, desc) {
    if (slot === this.fds.length) this.fds.push(null);
    this.fds[slot] = desc;
  }

  /** Drops the free slots at the end of the fd table. */
  trim() {
    while (this.fds.length > 0 && this.fds[this.fds.length - 1] === null) this.fds.pop();
  }

  /** path_open; `rightsBase` is the i64 BigInt, `now` the u64 BigInt. */
  pathOpen(mem, dirfd, dirflags, pathPtr, pathLen, oflags, rightsBase, fdflags, out, now) {
    return attempt(() => {
      const start = this.dir(dirfd);
      Host.range(mem, pathPtr, pathLen >>> 0);
      Host.range(mem, out, 4);
      const path = Fs.path(mem, pathPtr, pathLen);
      const follow = (dirflags & LOOKUPFLAGS_SYMLINK_FOLLOW) !== 0;
      const fd = this.open(start, path, follow, oflags, BigInt.asUintN(64, BigInt(rightsBase)), fdflags, now);
      Host.writeU32(mem, out, fd);
    });
  }

  /** fs.rs `open`: the new fd; raises the errno. */
  open(start, path, follow, oflags, rights, fdflags, now) {
    const write = (rights & WRITE_RIGHTS) !== 0n || (fdflags & FDFLAGS_APPEND) !== 0;
    const trunc = (oflags & OFLAGS_TRUNC) !== 0;
    const wantDir = (oflags & OFLAGS_DIRECTORY) !== 0;
    // `ino` opens a node that exists; otherwise `create` = [dir, name] to make.
    let ino = null;
    let create = null;
    if ((oflags & OFLAGS_CREAT) !== 0) {
      const [dir, name, trailing] = this.parent(start, path);
      let existing = this.dirOf(dir).get(name);
      if (name === '.' || name === '..') existing = this.lookup(start, path, true);
      else if (existing !== undefined && follow && this.node(existing).link !== null) {
        existing = this.lookup(start, path, true);
      }
      if (existing !== undefined) {
        if ((oflags & OFLAGS_EXCL) !== 0) fail(EEXIST);
        if (trailing && !this.node(existing).isDir()) fail(ENOTDIR);
        ino = existing;
      } else {
        if (trailing || wantDir) fail(EISDIR);
        this.canChange(dir);
        create = [dir, name];
      }
    } else {
      ino = this.lookup(start, path, follow);
    }
    if (ino !== null) {
      const node = this.node(ino);
      if (node.link !== null) fail(ELOOP);
      if (wantDir && !node.isDir()) fail(ENOTDIR);
      if (node.isDir() && (write || trunc)) fail(EISDIR);
      if (node.readOnly && (write || trunc)) fail(EROFS);
    }
    const slot = this.freeSlot();
    if (ino !== null) {
      if (trunc) {
        const node = this.node(ino);
        const freed = node.len();
        if (!node.isDir()) {
          node.bytes = new Uint8Array(0);
          node.size = 0;
        }
        if (node.charged) this.used -= BigInt(freed);
        this.touch(ino, now);
      }
    } else {
      const [dir, name] = create;
      this.room(BigInt(NODE_COST + utf8Length(name)), 0n);
      ino = this.create(dir, name, new Node(null, new Uint8Array(0), now), now);
    }
    const file = this.node(ino).isDir()
      ? null
      : { pos: 0n, read: (rights & RIGHTS_FD_READ) !== 0n || !write, write, flags: fdflags & FDFLAGS_ALL };
    this.install(slot, { ino, preopen: null, file });
    return slot + 3;
  }

  pathFilestatGet(mem, dirfd, flags, pathPtr, pathLen, out) {
    return attempt(() => {
      const start = this.dir(dirfd);
      Host.range(mem, pathPtr, pathLen >>> 0);
      const [s] = Host.range(mem, out, 64);
      const follow = (flags & LOOKUPFLAGS_SYMLINK_FOLLOW) !== 0;
      const stat = this.filestat(this.lookup(start, Fs.path(mem, pathPtr, pathLen), follow));
      mem.set(stat, s);
    });
  }

  /** fs.rs `times`: which times `flags` set ({atim, mtim}: BigInt or null); raises EINVAL. */
  static times(atim, mtim, flags, now) {
    const pick = (set, setNow, value) => {
      const a = (flags & set) !== 0;
      const b = (flags & setNow) !== 0;
      if (a && b) fail(EINVAL);
      if (a) return BigInt.asUintN(64, BigInt(value));
      return b ? now : null;
    };
    const a = pick(FSTFLAGS_ATIM, FSTFLAGS_ATIM_NOW, atim);
    const m = pick(FSTFLAGS_MTIM, FSTFLAGS_MTIM_NOW, mtim);
    return { atim: a, mtim: m };
  }

  /** fs.rs `set_times`: raises EROFS for a read-only node. */
  setTimes(ino, times, now) {
    const node = this.node(ino);
    if (node.readOnly) fail(EROFS);
    if (times.atim !== null) node.atim = times.atim;
    if (times.mtim !== null) node.mtim = times.mtim;
    node.ctim = now;
  }

  /** fd_filestat_set_times above stdio (null: stdio); times are the i64 BigInts. */
  fdSetTimes(fd, atim, mtim, flags, now) {
    const d = this.fd(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    return attempt(() => this.setTimes(d.ino, Fs.times(atim, mtim, flags, now), now));
  }

  pathSetTimes(mem, dirfd, lookupFlags, pathPtr, pathLen, atim, mtim, flags, now) {
    return attempt(() => {
      const start = this.dir(dirfd);
      const path = Fs.path(mem, pathPtr, pathLen);
      const times = Fs.times(atim, mtim, flags, now);
      const ino = this.lookup(start, path, (lookupFlags & LOOKUPFLAGS_SYMLINK_FOLLOW) !== 0);
      this.setTimes(ino, times, now);
    });
  }

  createDirectory(mem, dirfd, pathPtr, pathLen, now) {
    return attempt(() => {
      const start = this.dir(dirfd);
      const path = Fs.path(mem, pathPtr, pathLen);
      const [dir, name] = this.parent(start, path);
      if (name === '.' || name === '..' || this.dirOf(dir).get(name) !== undefined) fail(EEXIST);
      this.canChange(dir);
      this.room(BigInt(NODE_COST + utf8Length(name)), 0n);
      this.create(dir, name, new Node(new Dir(dir), null, now), now);
    });
  }

  removeDirectory(mem, dirfd, pathPtr, pathLen, now) {
    return attempt(() => {
      const start = this.dir(dirfd);
      const path = Fs.path(mem, pathPtr, pathLen);
      const [dir, name] = this.parent(start, path);
      if (name === '.' || name === '..') fail(EINVAL);
      const ino = this.dirOf(dir).get(name) ?? fail(ENOENT);
      const node = this.node(ino);
      if (!node.isDir()) fail(ENOTDIR);
      if (node.readOnly || this.node(dir).readOnly) fail(EROFS);
      if (node.dir.size > 0) fail(ENOTEMPTY);
      this.unlink(dir, name, ino, now);
    });
  }

  unlinkFile(mem, dirfd, pathPtr, pathLen, now) {
    return attempt(() => {
      const start = this.dir(dirfd);
      const path = Fs.path(mem, pathPtr, pathLen);
      const [dir, name, trailing] = this.parent(start, path);
      if (name === '.' || name === '..') fail(EISDIR);
      const ino = this.dirOf(dir).get(name) ?? fail(ENOENT);
      const node = this.node(ino);
      if (node.isDir()) fail(EISDIR);
      if (trailing) fail(ENOTDIR);
      if (node.readOnly || this.node(dir).readOnly) fail(EROFS);
      this.unlink(dir, name, ino, now);
    });
  }

  rename(mem, oldFd, oldPtr, oldLen, newFd, newPtr, newLen, now) {
    return attempt(() => {
      const oldStart = this.dir(oldFd);
      const newStart = this.dir(newFd);
      Host.range(mem, oldPtr, oldLen >>> 0);
      Host.range(mem, newPtr, newLen >>> 0);
      const oldPath = Fs.path(mem, oldPtr, oldLen);
      const newPath = Fs.path(mem, newPtr, newLen);
      const [odir, oname, otrailing] = this.parent(oldStart, oldPath);
      const [ndir, nname, ntrailing] = this.parent(newStart, newPath);
      if ([oname, nname].some((n) => n === '.' || n === '..')) fail(EINVAL);
      const ino = this.dirOf(odir).get(oname) ?? fail(ENOENT);
      const node = this.node(ino);
      if (node.readOnly || this.node(odir).readOnly) fail(EROFS);
      this.canChange(ndir);
      const isDir = node.isDir();
      if (!isDir && (otrailing || ntrailing)) fail(ENOTDIR);
      const existing = this.dirOf(ndir).get(nname);
      if (existing === ino) return;
      if (isDir) {
        // Not into itself or below it.
        let at = ndir;
        for (;;) {
          if (at === ino) fail(EINVAL);
          const up = this.dirOf(at).parent;
          if (up === at) break;
          at = up;
        }
      }
      let freed = 0n;
      if (existing !== undefined) {
        const target = this.node(existing);
        if (target.readOnly) fail(EROFS);
        if (isDir && !target.isDir()) fail(ENOTDIR);
        if (isDir && target.dir.size > 0) fail(ENOTEMPTY);
        if (!isDir && target.isDir()) fail(EISDIR);
        if (!this.isReferenced(existing)) freed = target.cost();
      }
      const more = node.charged ? BigInt(utf8Length(nname)) : 0n;
      const less = node.charged ? BigInt(utf8Length(oname)) : 0n;
      this.room(more, freed + less);
      if (existing !== undefined) this.node(existing).linked = false;
      this.dirOf(odir).remove(oname);
      this.dirOf(ndir).put(nname, ino);
      if (existing !== undefined) this.release(existing);
      this.used = this.used + more - less;
      node.nameLen = utf8Length(nname);
      node.ctim = now;
      if (isDir) node.dir.parent = ndir;
      this.touch(odir, now);
      this.touch(ndir, now);
    });
  }

  readlink(mem, dirfd, pathPtr, pathLen, buf, bufLen, out) {
    return attempt(() => {
      const start = this.dir(dirfd);
      Host.range(mem, pathPtr, pathLen >>> 0);
      Host.range(mem, buf, bufLen >>> 0);
      Host.range(mem, out, 4);
      const link = this.node(this.lookup(start, Fs.path(mem, pathPtr, pathLen), false)).link;
      if (link === null) fail(EINVAL);
      const bytes = UTF8_ENCODER.encode(link);
      const n = Math.min(bytes.length, bufLen >>> 0);
      mem.set(bytes.subarray(0, n), buf >>> 0);
      Host.writeU32(mem, out, n);
    });
  }

  /** fs.rs `symlink` (path_symlink): same checks in the same order. */
  symlink(mem, targetPtr, targetLen, dirfd, pathPtr, pathLen, now) {
    return attempt(() => {
      const start = this.dir(dirfd);
      Host.range(mem, targetPtr, targetLen >>> 0);
      Host.range(mem, pathPtr, pathLen >>> 0);
      const target = Fs.path(mem, targetPtr, targetLen);
      const path = Fs.path(mem, pathPtr, pathLen);
      if (target.startsWith('/')) fail(ENOTCAPABLE);
      if (target === '') fail(ENOENT);
      const [dir, name, trailing] = this.parent(start, path);
      if (name === '.' || name === '..') fail(EEXIST);
      const existing = this.dirOf(dir).get(name);
      if (existing !== undefined) {
        if (trailing && !this.node(existing).isDir()) fail(ENOTDIR);
        fail(EEXIST);
      }
      if (trailing) fail(ENOENT);
      this.canChange(dir);
      this.room(BigInt(NODE_COST + utf8Length(name) + utf8Length(target)), 0n);
      this.create(dir, name, new Node(null, null, now, target), now);
    });
  }

  /** path_link: no hard links here (`paths`: [ptr, len] pairs). */
  noLinks(mem, fds, paths) {
    for (const fd of fds) {
      const e = attempt(() => this.dir(fd));
      if (e !== SUCCESS) return e;
    }
    for (const [ptr, len] of paths) Host.range(mem, ptr, len >>> 0);
    return ENOTSUP;
  }

  /** fd_fdstat_get above stdio (null: stdio). */
  fdstatGet(mem, fd, out) {
    const d = this.fd(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    const stat = new Uint8Array(24);
    const v = new DataView(stat.buffer);
    if (d.file === null) {
      const readOnly = this.node(d.ino).readOnly;
      stat[0] = FILETYPE_DIRECTORY;
      v.setBigUint64(8, readOnly ? DIR_RIGHTS : DIR_WRITE_RIGHTS, true);
      v.setBigUint64(16, readOnly ? FILE_RIGHTS : DIR_WRITE_RIGHTS | FILE_WRITE_RIGHTS, true);
    } else {
      stat[0] = FILETYPE_REGULAR_FILE;
      v.setUint16(2, d.file.flags, true);
      const base = !d.file.write ? FILE_RIGHTS : d.file.read ? FILE_WRITE_RIGHTS : FILE_WRITE_RIGHTS & ~RIGHTS_FD_READ;
      v.setBigUint64(8, base, true);
    }
    const [s] = Host.range(mem, out, 24);
    mem.set(stat, s);
    return SUCCESS;
  }

  /** fd_filestat_get above stdio (null: stdio). */
  filestatGet(mem, fd, out) {
    const d = this.fd(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    const stat = this.filestat(d.ino);
    const [s] = Host.range(mem, out, 64);
    mem.set(stat, s);
    return SUCCESS;
  }

  /** The bytes left to read from an open file (BigInt), or null (not a file open here). */
  leftToRead(fd) {
    const d = this.fd(fd);
    if (d === STDIO || d === EBADF || d.file === null) return null;
    const len = BigInt(this.node(d.ino).len());
    return d.file.pos >= len ? 0n : len - d.file.pos;
  }

  /** Whether `fd` is a file open for writing. */
  isWritable(fd) {
    const d = this.desc(fd);
    return d !== null && d.file !== null && d.file.write;
  }

  /** A file operation's fd: its description, STDIO, or an errno (EBADF: a directory or not open). */
  file(fd) {
    const d = this.fd(fd);
    if (d === STDIO || d === EBADF) return d;
    return d.file === null ? EBADF : d;
  }

  /** fd_read (offset null) and fd_pread (offset a u64 BigInt) above stdio (null: stdio). */
  read(mem, fd, iovsPtr, count, offset, out) {
    const d = this.file(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    if (!d.file.read) return EBADF;
    const iovs = Host.iovecs(mem, iovsPtr, count);
    Host.range(mem, out, 4);
    const node = this.node(d.ino);
    const bytes = node.bytes;
    const size = node.len();
    const bigSize = BigInt(size);
    let at = offset === null ? d.file.pos : offset;
    let read = 0;
    for (const [s, e] of iovs) {
      const start = at >= bigSize ? size : Number(at);
      const n = Math.min(size - start, e - s);
      mem.set(bytes.subarray(start, start + n), s);
      at += BigInt(n);
      read += n;
      if (n < e - s) break;
    }
    if (offset === null) d.file.pos = at;
    Host.writeU32(mem, out, read);
    return SUCCESS;
  }

  /**
   * fd_write (offset null) and fd_pwrite (offset a u64 BigInt) above stdio (null: stdio):
   * as many bytes as the scratch space holds, ENOSPC when none does.
   */
  write(mem, fd, iovsPtr, count, offset, out, now) {
    const d = this.file(fd);
    if (d === STDIO) return null;
    if (d === EBADF || !d.file.write) return EBADF;
    const iovs = Host.iovecs(mem, iovsPtr, count);
    Host.range(mem, out, 4);
    let total = 0n;
    for (const [s, e] of iovs) total += BigInt(e - s);
    const node = this.node(d.ino);
    const size = node.len();
    const len = BigInt(size);
    let at;
    if (offset !== null) at = offset;
    else if ((d.file.flags & FDFLAGS_APPEND) !== 0) at = len;
    else at = d.file.pos;
    // The file may grow to `limitEnd` within the scratch space.
    const limitEnd = len + (this.limit - this.used);
    const fits = limitEnd > at ? limitEnd - at : 0n;
    const n = total < fits ? total : fits;
    if (total > 0n && n === 0n) return ENOSPC;
    if (n > 0n) {
      const end = Number(at + n);
      if (size < end) node.resize(end, Number(limitEnd));
      let pos = Number(at);
      for (const [s, e] of iovs) {
        const take = Math.min(end - pos, e - s);
        node.bytes.set(mem.subarray(s, s + take), pos);
        pos += take;
        if (pos === end) break;
      }
      this.used += BigInt(Math.max(end - size, 0));
      this.touch(d.ino, now);
    }
    if (offset === null) d.file.pos = at + n;
    Host.writeU32(mem, out, Number(BigInt.asUintN(32, n)));
    return SUCCESS;
  }

  /**
   * fs.rs `resize`: sets a file's length to `size` (u64 BigInt; zeros when growing), for
   * fd_filestat_set_size and fd_allocate; raises EROFS, EBADF (not for writing), ENOSPC.
   */
  resize(ino, f, size, now) {
    const node = this.node(ino);
    if (node.readOnly) fail(EROFS);
    if (!f.write) fail(EBADF);
    const len = BigInt(node.len());
    if (size > len) this.room(size - len, 0n);
    node.resize(Number(size), Number(len + (this.limit - this.used)));
    this.used = this.used + size - len;
    this.touch(ino, now);
  }

  /** fd_filestat_set_size above stdio (null: stdio); `size` is the u64 BigInt. */
  setSize(fd, size, now) {
    const d = this.file(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    return attempt(() => this.resize(d.ino, d.file, size, now));
  }

  /** fd_allocate above stdio (null: stdio); `offset` and `len` are u64 BigInts. */
  allocate(fd, offset, len, now) {
    const d = this.file(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    return attempt(() => {
      const end = offset + len;
      if (end > U64_MAX) fail(EINVAL);
      if (this.node(d.ino).readOnly) fail(EROFS);
      if (!d.file.write) fail(EBADF);
      if (end > BigInt(this.node(d.ino).len())) this.resize(d.ino, d.file, end, now);
    });
  }

  /** fd_seek above stdio (null: stdio); `offset` is the i64 BigInt. */
  seek(mem, fd, offset, whence, out) {
    const d = this.file(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    Host.range(mem, out, 8);
    let base;
    if (whence === 0) base = 0n;
    else if (whence === 1) base = d.file.pos;
    else if (whence === 2) base = BigInt(this.node(d.ino).len());
    else return EINVAL;
    const pos = base + BigInt(offset);
    if (pos < 0n || pos > U64_MAX) return EINVAL;
    d.file.pos = pos;
    Host.writeU64(mem, out, pos);
    return SUCCESS;
  }

  /** fd_tell above stdio (null: stdio). */
  tell(mem, fd, out) {
    const d = this.file(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    Host.writeU64(mem, out, d.file.pos);
    return SUCCESS;
  }

  /** fd_readdir above stdio (null: stdio); `cookie` is the i64 BigInt. */
  readdir(mem, fd, buf, len, cookie, out) {
    const d = this.fd(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    if (d.file !== null) return ENOTDIR;
    len = len >>> 0;
    const [s] = Host.range(mem, buf, len);
    Host.range(mem, out, 4);
    const parts = [];
    let total = 0;
    for (const entry of this.dirOf(d.ino).from(BigInt.asUintN(64, BigInt(cookie)))) {
      if (total >= len) break;
      const name = entry.nameBytes;
      const ent = new Uint8Array(24 + name.length);
      const v = new DataView(ent.buffer);
      v.setBigUint64(0, BigInt(entry.k + 1), true);
      v.setBigUint64(8, BigInt(entry.ino), true);
      v.setUint32(16, name.length, true);
      ent[20] = this.node(entry.ino).filetype();
      ent.set(name, 24);
      parts.push(ent);
      total += ent.length;
    }
    const n = Math.min(total, len);
    let at = s;
    let left = n;
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

  /**
   * fs.rs `set_flags` (fd_fdstat_set_flags above stdio; null: stdio): a file takes the new
   * fdflags (`flags & 0x1f`), a directory ENOTSUP, not open EBADF.
   */
  setFlags(fd, flags) {
    const d = this.fd(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    if (d.file === null) return ENOTSUP;
    d.file.flags = flags & FDFLAGS_ALL;
    return SUCCESS;
  }

  /** fd_close above stdio (null: stdio): a removed node's cost goes with its last fd. */
  close(fd) {
    if (isStdio(fd)) return null;
    const d = this.desc(fd);
    if (d === null) return EBADF;
    this.fds[fd - 3] = null;
    this.trim();
    this.release(d.ino);
    return SUCCESS;
  }

  /** fd_renumber: `to` closed and given `from`'s description (a preopen stays one). */
  renumber(from, to) {
    const open = (fd) => isStdio(fd) || this.isOpen(fd);
    if (!open(from) || !open(to)) return EBADF;
    if (from < 3 || to < 3) return ENOTSUP;
    if (from === to) return SUCCESS;
    const desc = this.fds[from - 3];
    this.fds[from - 3] = null;
    const replaced = this.fds[to - 3];
    this.fds[to - 3] = desc;
    this.trim();
    if (replaced !== null) this.release(replaced.ino);
    return SUCCESS;
  }

  /** An fd operation with no memory arguments: `onFile`, `onDir`, EBADF (null: stdio). */
  simple(fd, onFile, onDir) {
    const d = this.fd(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    return d.file === null ? onDir : onFile;
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
    const mem = this.mem();
    // A file, or EBADF (stdin, anything not open for writing).
    if (fd !== 1 && fd !== 2) return this.fs.write(mem, fd, iovsPtr, count, null, outPtr, this.now()) ?? EBADF;
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
    // A file, or EBADF (stdout, stderr, anything not open).
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

/** Orders byte strings as Rust compares `[u8]`. */
function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
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
  ex[REFILL_GLOBAL].value = I64_MIN;
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
