// runegrid's browser engine, what its WASI host (exec.js) and its file system (exec_fs.js)
// share: WASI errno values, the guest's memory read and written with the bounds checks of
// crates/sandbox/src/wasi.rs, and the error that loses an attempt instead of reporting a result.

/** The largest u64 (file sizes and offsets are u64 in WASI). */
export const U64_MAX = (1n << 64n) - 1n;

// WASI errno values (wasi_snapshot_preview1).
export const SUCCESS = 0;
export const EBADF = 8;
export const EEXIST = 20;
export const EFAULT = 21;
export const EILSEQ = 25;
export const EINVAL = 28;
export const EISDIR = 31;
export const ELOOP = 32;
export const EMFILE = 33;
export const ENAMETOOLONG = 37;
export const ENOENT = 44;
export const ENOSPC = 51;
export const ENOTDIR = 54;
export const ENOTEMPTY = 55;
export const ENOTSOCK = 57;
export const ENOTSUP = 58;
export const EROFS = 69;
export const ESPIPE = 70;
export const ENOTCAPABLE = 76;

/** An error that must not be reported as a result (the attempt is lost, not compared). */
export function internal(message, cause) {
  const err = new Error(message, cause === undefined ? undefined : { cause });
  err.kind = 'internal';
  return err;
}

/** A bounds failure inside a WASI function: becomes EFAULT (mirrors `Err(errno::FAULT)`). */
export const FAULT = Symbol('EFAULT');

/** wasi.rs `range`: [ptr, ptr + len) as unsigned offsets, or throws FAULT. */
export function range(mem, ptr, len) {
  const start = ptr >>> 0;
  const end = start + len; // exact: both well below 2^53
  if (end > mem.length) throw FAULT;
  return [start, end];
}

export function readU32(mem, ptr) {
  const [s] = range(mem, ptr, 4);
  return (mem[s] | (mem[s + 1] << 8) | (mem[s + 2] << 16) | (mem[s + 3] << 24)) >>> 0;
}

export function writeU32(mem, ptr, v) {
  const [s] = range(mem, ptr, 4);
  new DataView(mem.buffer).setUint32(s, v >>> 0, true);
}

export function writeU64(mem, ptr, v /* BigInt */) {
  const [s] = range(mem, ptr, 8);
  new DataView(mem.buffer).setBigUint64(s, BigInt.asUintN(64, v), true);
}

/** wasi.rs `iovecs`: every iovec's [start, end), all checked before any is used. */
export function iovecs(mem, iovs, count) {
  count = count >>> 0;
  range(mem, iovs, count * 8);
  const out = [];
  for (let i = 0; i < count; i++) {
    const at = ((iovs >>> 0) + i * 8) >>> 0;
    const ptr = readU32(mem, at);
    const len = readU32(mem, (at + 4) >>> 0);
    out.push(range(mem, ptr, len));
  }
  return out;
}
