// runegrid's browser engine, its file system: MIRRORS crates/sandbox/src/wasi/fs.rs (the tree,
// path resolution, costs, fds) and crates/sandbox/src/wasi/fs/calls.rs (the WASI calls on it),
// and must be changed together with them. crates/sandbox/tests/browser_conformance runs both
// on the same file operations and compares them.

import {
  EBADF,
  EEXIST,
  EILSEQ,
  EINVAL,
  EISDIR,
  ELOOP,
  EMFILE,
  ENAMETOOLONG,
  ENOENT,
  ENOSPC,
  ENOTCAPABLE,
  ENOTDIR,
  ENOTEMPTY,
  ENOTSUP,
  EROFS,
  internal,
  iovecs,
  range,
  SUCCESS,
  U64_MAX,
  writeU32,
  writeU64,
} from './exec_memory.js';

export const FILETYPE_CHARACTER_DEVICE = 2;
export const RIGHTS_FD_READ = 2n;
export const RIGHTS_FD_WRITE = 64n;

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
export const DEFAULT_SCRATCH_BYTES = 64 << 20;
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
    const [s, e] = range(mem, ptr, len >>> 0);
    try {
      return UTF8_STRICT.decode(mem.subarray(s, e));
    } catch {
      return fail(EILSEQ);
    }
  }

  prestatGet(mem, fd, out) {
    const name = this.desc(fd)?.preopen ?? null;
    if (name === null) return EBADF;
    const [s] = range(mem, out, 8);
    const prestat = new Uint8Array(8);
    new DataView(prestat.buffer).setUint32(4, name.length, true);
    mem.set(prestat, s);
    return SUCCESS;
  }

  prestatDirName(mem, fd, buf, len) {
    const name = this.desc(fd)?.preopen ?? null;
    if (name === null) return EBADF;
    range(mem, buf, len >>> 0);
    if (len >>> 0 < name.length) return ENAMETOOLONG;
    const [s] = range(mem, buf, name.length);
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
      range(mem, pathPtr, pathLen >>> 0);
      range(mem, out, 4);
      const path = Fs.path(mem, pathPtr, pathLen);
      const follow = (dirflags & LOOKUPFLAGS_SYMLINK_FOLLOW) !== 0;
      const fd = this.open(start, path, follow, oflags, BigInt.asUintN(64, BigInt(rightsBase)), fdflags, now);
      writeU32(mem, out, fd);
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
      range(mem, pathPtr, pathLen >>> 0);
      const [s] = range(mem, out, 64);
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
      range(mem, oldPtr, oldLen >>> 0);
      range(mem, newPtr, newLen >>> 0);
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
      range(mem, pathPtr, pathLen >>> 0);
      range(mem, buf, bufLen >>> 0);
      range(mem, out, 4);
      const link = this.node(this.lookup(start, Fs.path(mem, pathPtr, pathLen), false)).link;
      if (link === null) fail(EINVAL);
      const bytes = UTF8_ENCODER.encode(link);
      const n = Math.min(bytes.length, bufLen >>> 0);
      mem.set(bytes.subarray(0, n), buf >>> 0);
      writeU32(mem, out, n);
    });
  }

  /** fs.rs `symlink` (path_symlink): same checks in the same order. */
  symlink(mem, targetPtr, targetLen, dirfd, pathPtr, pathLen, now) {
    return attempt(() => {
      const start = this.dir(dirfd);
      range(mem, targetPtr, targetLen >>> 0);
      range(mem, pathPtr, pathLen >>> 0);
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
    for (const [ptr, len] of paths) range(mem, ptr, len >>> 0);
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
    const [s] = range(mem, out, 24);
    mem.set(stat, s);
    return SUCCESS;
  }

  /** fd_filestat_get above stdio (null: stdio). */
  filestatGet(mem, fd, out) {
    const d = this.fd(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    const stat = this.filestat(d.ino);
    const [s] = range(mem, out, 64);
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
    const iovs = iovecs(mem, iovsPtr, count);
    range(mem, out, 4);
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
    writeU32(mem, out, read);
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
    const iovs = iovecs(mem, iovsPtr, count);
    range(mem, out, 4);
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
    writeU32(mem, out, Number(BigInt.asUintN(32, n)));
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
    range(mem, out, 8);
    let base;
    if (whence === 0) base = 0n;
    else if (whence === 1) base = d.file.pos;
    else if (whence === 2) base = BigInt(this.node(d.ino).len());
    else return EINVAL;
    const pos = base + BigInt(offset);
    if (pos < 0n || pos > U64_MAX) return EINVAL;
    d.file.pos = pos;
    writeU64(mem, out, pos);
    return SUCCESS;
  }

  /** fd_tell above stdio (null: stdio). */
  tell(mem, fd, out) {
    const d = this.file(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    writeU64(mem, out, d.file.pos);
    return SUCCESS;
  }

  /** fd_readdir above stdio (null: stdio); `cookie` is the i64 BigInt. */
  readdir(mem, fd, buf, len, cookie, out) {
    const d = this.fd(fd);
    if (d === STDIO) return null;
    if (d === EBADF) return EBADF;
    if (d.file !== null) return ENOTDIR;
    len = len >>> 0;
    const [s] = range(mem, buf, len);
    range(mem, out, 4);
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
    writeU32(mem, out, n);
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


export function isStdio(fd) {
  return fd >= 0 && fd <= 2;
}

/** Orders byte strings as Rust compares `[u8]`. */
function compareBytes(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}
