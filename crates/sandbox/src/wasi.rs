//! The deterministic WASI preview-1 host: exactly the functions of
//! [`runegrid_instrument::ALLOWED_WASI_IMPORTS`], each a pure function of the task (arguments,
//! environment, stdin, seed) and of what the guest did before.
//!
//! What a browser host must reproduce, bit for bit:
//!
//! - **argv** is `["main", args...]`; **environ** is `"KEY=VALUE"` for each pair, in order.
//! - **fd 0** reads the task's stdin, then end of file. **fd 1** is stdout (captured, capped by
//!   `Limits::stdout_bytes`: the write that would pass the cap stores only the bytes up to it
//!   and ends the run with `StdoutLimit`). **fd 2** is stderr (kept up to 64 KiB, the rest
//!   silently dropped, never compared). Writes report every byte as written.
//! - **Clocks** are virtual. A counter starts at 0 and every successful `clock_time_get`
//!   first adds 1000 (ns) to it, then returns it; for `REALTIME` (id 0) the result is
//!   `1_700_000_000_000_000_000 + counter`, for `MONOTONIC`, `PROCESS_CPUTIME` and
//!   `THREAD_CPUTIME` (ids 1-3) the counter itself (all u64 arithmetic wrapping).
//!   `clock_res_get` returns 1000 for ids 0-3. Other ids return `EINVAL` and do not advance
//!   the counter.
//! - **`poll_oneoff(in, out, n, nevents)`** waits on the virtual clock: a sleep costs no wall
//!   time. `n == 0` is `EINVAL`; `[in, in + 48n)`, `[out, out + 32n)` or `[nevents, +4)`
//!   leaving memory is `EFAULT`; a subscription tag other than clock (0), fd_read (1) and
//!   fd_write (2) is `EINVAL` — each with nothing written and the clock unchanged. All
//!   subscriptions are read before any event is written. Ready at once: every fd
//!   subscription (error `SUCCESS` for fd_read on fd 0 or on an open file, `nbytes` the
//!   bytes left to read; for fd_write on fds 1-2 or a file open for writing, `nbytes` 0;
//!   `EBADF` for any other fd or direction), a clock subscription with an id outside 0-3 (error `EINVAL`), and a clock
//!   subscription already due. A clock subscription's deadline, on the counter: `counter +
//!   timeout` (saturating), or with the `ABSTIME` flag (bit 0 of its flags) `timeout`
//!   (`timeout − 1_700_000_000_000_000_000`, saturating at 0, for `REALTIME`); it is due when
//!   the deadline ≤ the counter. When something is ready at once, only those events are
//!   reported and the counter does not move; otherwise the counter jumps to the earliest
//!   deadline and every clock subscription due then is reported. Events follow the
//!   subscriptions' order, each 32 bytes: userdata (u64), error (u16), type (u8), then for fd
//!   events `nbytes` (u64 at offset 16) and flags 0, the rest zero; `*nevents` is their count.
//! - **Sockets**: no fd is one. `sock_accept`, `sock_recv`, `sock_send` and `sock_shutdown`
//!   return `ENOTSOCK` for an open fd (0-2, or one open on the file system) and `EBADF` for
//!   any other, writing nothing.
//! - **`random_get(buf, len)`** draws `ceil(len / 8)` outputs of SplitMix64 seeded with the
//!   task's seed (`state += 0x9e3779b97f4a7c15; z = state; z = (z ^ z >> 30) *
//!   0xbf58476d1ce4e5b9; z = (z ^ z >> 27) * 0x94d049bb133111eb; z ^ z >> 31`, wrapping), writes
//!   them little-endian one after the other and keeps the first `len` bytes. The generator state
//!   carries over between calls.
//! - Unless the run has a file system (read-only blobs or writable scratch space; see [`fs`]
//!   for everything that changes then), there are **no preopened directories** (`fd_prestat_get` is `EBADF` for every fd)
//!   and every `path_*` function returns `ENOTCAPABLE`. On fds 0-2: `fd_fdstat_get` and
//!   `fd_filestat_get` describe a character device (zeros elsewhere; rights `FD_READ` on 0,
//!   `FD_WRITE` on 1 and 2); `fd_close` succeeds and does nothing; `fd_seek`, `fd_tell`,
//!   `fd_pread`, `fd_pwrite`, `fd_advise`, `fd_allocate` return `ESPIPE`; `fd_sync`,
//!   `fd_datasync`, `fd_filestat_set_size`, `fd_filestat_set_times` return `EINVAL`;
//!   `fd_readdir` returns `ENOTDIR`; `fd_fdstat_set_flags` and `fd_renumber` return `ENOTSUP`.
//!   Any fd above 2 gives `EBADF`. `sched_yield` succeeds; `proc_raise` returns `ENOTSUP`;
//!   `proc_exit(code)` ends the run with that code.
//! - A pointer or length that leaves linear memory gives `EFAULT` and changes nothing (no
//!   bytes written, no clock tick, no random output consumed).

mod fs;

pub use fs::{
    Blob, DIR_RIGHTS, DIR_WRITE_RIGHTS, FILE_RIGHTS, FILE_WRITE_RIGHTS, MAX_NAME, MAX_OPEN,
    MOUNT_DIR, NODE_COST, ROOT_DIR,
};
pub(crate) use fs::{Fs, check_blobs};

use wasmtime::{Caller, Linker, Memory, StoreLimits};

/// Most stderr bytes kept per run.
pub const STDERR_CAP: usize = 64 << 10;
/// Nanoseconds between the Unix epoch and the virtual realtime clock's zero.
pub const REALTIME_BASE_NS: u64 = 1_700_000_000_000_000_000;
/// Nanoseconds the virtual clock advances on every `clock_time_get`.
pub const CLOCK_STEP_NS: u64 = 1000;

const WASI: &str = "wasi_snapshot_preview1";

/// WASI errno values (wasi_snapshot_preview1).
mod errno {
    pub const SUCCESS: i32 = 0;
    pub const BADF: i32 = 8;
    pub const FAULT: i32 = 21;
    pub const ILSEQ: i32 = 25;
    pub const INVAL: i32 = 28;
    pub const MFILE: i32 = 33;
    pub const EXIST: i32 = 20;
    pub const ISDIR: i32 = 31;
    pub const LOOP: i32 = 32;
    pub const NOSPC: i32 = 51;
    pub const NOTEMPTY: i32 = 55;
    pub const NAMETOOLONG: i32 = 37;
    pub const NOENT: i32 = 44;
    pub const NOTDIR: i32 = 54;
    pub const NOTSOCK: i32 = 57;
    pub const NOTSUP: i32 = 58;
    pub const ROFS: i32 = 69;
    pub const SPIPE: i32 = 70;
    pub const NOTCAPABLE: i32 = 76;
}

const FILETYPE_CHARACTER_DEVICE: u8 = 2;
const RIGHTS_FD_READ: u64 = 2;
const RIGHTS_FD_WRITE: u64 = 64;

/// SplitMix64, the generator behind `random_get`.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next output.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Fills `buf` as `random_get` does: `ceil(len / 8)` outputs, little-endian.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// How the guest asked the run to end, carried through wasmtime as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Stop {
    #[error("proc_exit({0})")]
    Exit(i32),
    #[error("stdout limit reached")]
    StdoutLimit,
}

/// The state of one run, kept in the wasmtime store.
pub(crate) struct Host {
    /// `argv`, each entry NUL-terminated.
    pub args: Vec<Vec<u8>>,
    /// `environ`, each entry `KEY=VALUE` NUL-terminated.
    pub env: Vec<Vec<u8>>,
    pub stdin: Vec<u8>,
    pub stdin_pos: usize,
    /// Stdout written so far (capped), also handed to `on_stdout` as it is written.
    pub stdout: Vec<u8>,
    pub stdout_cap: u64,
    pub on_stdout: crate::StdoutSink,
    pub stderr: Vec<u8>,
    pub clock_ns: u64,
    pub rng: SplitMix64,
    pub memory: Option<Memory>,
    pub limits: StoreLimits,
    /// The file tree (blobs and scratch space) and the fds open on it.
    pub fs: Fs,
    /// The fuel not yet handed to the module, and the wall-time deadline.
    pub tank: crate::fuel::Tank,
}

impl Host {
    /// "Now" for file timestamps: the virtual realtime clock, not advanced.
    fn now(&self) -> u64 {
        REALTIME_BASE_NS.wrapping_add(self.clock_ns)
    }
}

/// Result of a WASI function: an errno, or a reason to stop the run.
type Ret = wasmtime::Result<i32>;

fn errno_of(r: Result<(), i32>) -> i32 {
    match r {
        Ok(()) => errno::SUCCESS,
        Err(e) => e,
    }
}

/// Runs `f` with the guest memory and the host state.
fn with_mem<R>(
    caller: &mut Caller<'_, Host>,
    f: impl FnOnce(&mut [u8], &mut Host) -> R,
) -> wasmtime::Result<R> {
    let Some(memory) = caller.data().memory else {
        wasmtime::bail!("the module has no memory");
    };
    let (mem, host) = memory.data_and_store_mut(caller);
    Ok(f(mem, host))
}

fn range(mem_len: usize, ptr: i32, len: u64) -> Result<std::ops::Range<usize>, i32> {
    let start = ptr as u32 as u64;
    let end = start.checked_add(len).ok_or(errno::FAULT)?;
    if end > mem_len as u64 {
        return Err(errno::FAULT);
    }
    Ok(start as usize..end as usize)
}

fn bytes_mut(mem: &mut [u8], ptr: i32, len: u64) -> Result<&mut [u8], i32> {
    let r = range(mem.len(), ptr, len)?;
    Ok(&mut mem[r])
}

fn read_u32(mem: &[u8], ptr: i32) -> Result<u32, i32> {
    let r = range(mem.len(), ptr, 4)?;
    let mut b = [0; 4];
    b.copy_from_slice(&mem[r]);
    Ok(u32::from_le_bytes(b))
}

fn write_u32(mem: &mut [u8], ptr: i32, v: u32) -> Result<(), i32> {
    bytes_mut(mem, ptr, 4)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

fn write_u64(mem: &mut [u8], ptr: i32, v: u64) -> Result<(), i32> {
    bytes_mut(mem, ptr, 8)?.copy_from_slice(&v.to_le_bytes());
    Ok(())
}

/// The `(ptr, len)` of each iovec in `[iovs, iovs + 8 * count)`, checked against memory.
fn iovecs(mem: &[u8], iovs: i32, count: i32) -> Result<Vec<std::ops::Range<usize>>, i32> {
    let count = count as u32;
    range(mem.len(), iovs, u64::from(count) * 8)?;
    let mut out = Vec::with_capacity(count.min(1024) as usize);
    for i in 0..count {
        let at = (iovs as u32).wrapping_add(i * 8) as i32;
        let ptr = read_u32(mem, at)?;
        let len = read_u32(mem, (at as u32).wrapping_add(4) as i32)?;
        out.push(range(mem.len(), ptr as i32, u64::from(len))?);
    }
    Ok(out)
}

fn is_stdio(fd: i32) -> bool {
    (0..=2).contains(&fd)
}

/// `args_sizes_get` / `environ_sizes_get`.
fn sizes_get(mem: &mut [u8], list: &[Vec<u8>], count_ptr: i32, size_ptr: i32) -> Result<(), i32> {
    let size: usize = list.iter().map(Vec::len).sum();
    range(mem.len(), count_ptr, 4)?;
    range(mem.len(), size_ptr, 4)?;
    write_u32(mem, count_ptr, list.len() as u32)?;
    write_u32(mem, size_ptr, size as u32)
}

/// `args_get` / `environ_get`.
fn list_get(mem: &mut [u8], list: &[Vec<u8>], ptrs: i32, buf: i32) -> Result<(), i32> {
    let size: usize = list.iter().map(Vec::len).sum();
    range(mem.len(), ptrs, 4 * list.len() as u64)?;
    range(mem.len(), buf, size as u64)?;
    let mut offset = buf as u32;
    for (i, item) in list.iter().enumerate() {
        write_u32(mem, (ptrs as u32).wrapping_add(4 * i as u32) as i32, offset)?;
        bytes_mut(mem, offset as i32, item.len() as u64)?.copy_from_slice(item);
        offset = offset.wrapping_add(item.len() as u32);
    }
    Ok(())
}

fn fd_write(mem: &mut [u8], host: &mut Host, fd: i32, iovs: i32, count: i32, out: i32) -> Ret {
    if fd != 1 && fd != 2 {
        // A file, or `EBADF` (stdin, anything not open for writing).
        let now = host.now();
        return Ok(host
            .fs
            .write(mem, fd, iovs, count, None, out, now)
            .unwrap_or(errno::BADF));
    }
    let iovs = match iovecs(mem, iovs, count) {
        Ok(v) => v,
        Err(e) => return Ok(e),
    };
    if let Err(e) = range(mem.len(), out, 4) {
        return Ok(e);
    }
    let total: u64 = iovs.iter().map(|r| r.len() as u64).sum();
    if fd == 1 {
        let room = host.stdout_cap.saturating_sub(host.stdout.len() as u64);
        let keep = total.min(room);
        if keep > 0 {
            let mut chunk = Vec::with_capacity(keep as usize);
            for r in &iovs {
                let want = (keep as usize - chunk.len()).min(r.len());
                chunk.extend_from_slice(&mem[r.start..r.start + want]);
            }
            (host.on_stdout)(&chunk);
            host.stdout.extend_from_slice(&chunk);
        }
        if total > room {
            return Err(wasmtime::Error::new(Stop::StdoutLimit));
        }
    } else {
        for r in &iovs {
            let room = STDERR_CAP - host.stderr.len();
            let take = room.min(r.len());
            host.stderr.extend_from_slice(&mem[r.start..r.start + take]);
        }
    }
    Ok(errno_of(write_u32(mem, out, total as u32)))
}

fn fd_read(mem: &mut [u8], host: &mut Host, fd: i32, iovs: i32, count: i32, out: i32) -> i32 {
    if fd != 0 {
        // A blob, or `EBADF` (stdout, stderr, anything not open).
        return host
            .fs
            .read(mem, fd, iovs, count, None, out)
            .unwrap_or(errno::BADF);
    }
    let iovs = match iovecs(mem, iovs, count) {
        Ok(v) => v,
        Err(e) => return e,
    };
    if let Err(e) = range(mem.len(), out, 4) {
        return e;
    }
    let mut read = 0usize;
    for r in iovs {
        let rest = &host.stdin[host.stdin_pos..];
        let n = rest.len().min(r.len());
        mem[r.start..r.start + n].copy_from_slice(&rest[..n]);
        host.stdin_pos += n;
        read += n;
        if n < r.len() {
            break;
        }
    }
    errno_of(write_u32(mem, out, read as u32))
}

fn clock_time_get(mem: &mut [u8], host: &mut Host, id: i32, out: i32) -> i32 {
    if !(0..=3).contains(&id) {
        return errno::INVAL;
    }
    if let Err(e) = range(mem.len(), out, 8) {
        return e;
    }
    host.clock_ns = host.clock_ns.wrapping_add(CLOCK_STEP_NS);
    let now = if id == 0 {
        REALTIME_BASE_NS.wrapping_add(host.clock_ns)
    } else {
        host.clock_ns
    };
    errno_of(write_u64(mem, out, now))
}

/// Sizes of a `subscription` and an `event` (wasi_snapshot_preview1).
const SUBSCRIPTION_SIZE: u64 = 48;
const EVENT_SIZE: u64 = 32;
const EVENTTYPE_CLOCK: u8 = 0;
const EVENTTYPE_FD_READ: u8 = 1;
const EVENTTYPE_FD_WRITE: u8 = 2;
const SUBCLOCKFLAGS_ABSTIME: u16 = 1;

/// One subscription of `poll_oneoff`.
enum Subscription {
    /// `deadline` on the virtual counter, `None` for an unknown clock id.
    Clock {
        userdata: u64,
        deadline: Option<u64>,
    },
    Fd {
        userdata: u64,
        kind: u8,
        fd: i32,
    },
}

/// One event of `poll_oneoff`.
struct Event {
    userdata: u64,
    error: i32,
    kind: u8,
    nbytes: u64,
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn poll_oneoff(mem: &mut [u8], host: &mut Host, input: i32, out: i32, n: i32, nevents: i32) -> i32 {
    let n = u64::from(n as u32);
    if n == 0 {
        return errno::INVAL;
    }
    let subs_at = match range(mem.len(), input, n * SUBSCRIPTION_SIZE) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let events_at = match range(mem.len(), out, n * EVENT_SIZE) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if let Err(e) = range(mem.len(), nevents, 4) {
        return e;
    }
    let now = host.clock_ns;
    let mut subs = Vec::with_capacity(n.min(1024) as usize);
    for s in mem[subs_at].chunks_exact(SUBSCRIPTION_SIZE as usize) {
        let userdata = le_u64(s, 0);
        subs.push(match s[8] {
            EVENTTYPE_CLOCK => {
                let id = u32::from_le_bytes(s[16..20].try_into().expect("4 bytes"));
                let timeout = le_u64(s, 24);
                let flags = u16::from_le_bytes([s[40], s[41]]);
                let deadline = (id <= 3).then(|| {
                    if flags & SUBCLOCKFLAGS_ABSTIME == 0 {
                        now.saturating_add(timeout)
                    } else if id == 0 {
                        timeout.saturating_sub(REALTIME_BASE_NS)
                    } else {
                        timeout
                    }
                });
                Subscription::Clock { userdata, deadline }
            }
            kind @ (EVENTTYPE_FD_READ | EVENTTYPE_FD_WRITE) => Subscription::Fd {
                userdata,
                kind,
                fd: i32::from_le_bytes(s[16..20].try_into().expect("4 bytes")),
            },
            _ => return errno::INVAL,
        });
    }
    let mut ready = Vec::new();
    for s in &subs {
        match *s {
            Subscription::Fd { userdata, kind, fd } => {
                let (error, nbytes) = match (kind, fd) {
                    (EVENTTYPE_FD_READ, 0) => (
                        errno::SUCCESS,
                        host.stdin.len().saturating_sub(host.stdin_pos) as u64,
                    ),
                    (EVENTTYPE_FD_WRITE, 1 | 2) => (errno::SUCCESS, 0),
                    (EVENTTYPE_FD_WRITE, _) if host.fs.is_writable(fd) => (errno::SUCCESS, 0),
                    (EVENTTYPE_FD_READ, _) => match host.fs.left_to_read(fd) {
                        Some(left) => (errno::SUCCESS, left),
                        None => (errno::BADF, 0),
                    },
                    _ => (errno::BADF, 0),
                };
                ready.push(Event {
                    userdata,
                    error,
                    kind,
                    nbytes,
                });
            }
            Subscription::Clock { userdata, deadline } => match deadline {
                None => ready.push(Event {
                    userdata,
                    error: errno::INVAL,
                    kind: EVENTTYPE_CLOCK,
                    nbytes: 0,
                }),
                Some(d) if d <= now => ready.push(Event {
                    userdata,
                    error: errno::SUCCESS,
                    kind: EVENTTYPE_CLOCK,
                    nbytes: 0,
                }),
                Some(_) => {}
            },
        }
    }
    if ready.is_empty() {
        // Only clocks, none due: the virtual clock moves to the earliest deadline.
        let earliest = subs
            .iter()
            .filter_map(|s| match s {
                Subscription::Clock { deadline, .. } => *deadline,
                Subscription::Fd { .. } => None,
            })
            .min()
            .unwrap_or(now);
        host.clock_ns = earliest;
        for s in &subs {
            if let Subscription::Clock {
                userdata,
                deadline: Some(d),
            } = *s
                && d <= earliest
            {
                ready.push(Event {
                    userdata,
                    error: errno::SUCCESS,
                    kind: EVENTTYPE_CLOCK,
                    nbytes: 0,
                });
            }
        }
    }
    let events = &mut mem[events_at];
    for (e, slot) in ready
        .iter()
        .zip(events.chunks_exact_mut(EVENT_SIZE as usize))
    {
        slot.fill(0);
        slot[0..8].copy_from_slice(&e.userdata.to_le_bytes());
        slot[8..10].copy_from_slice(&(e.error as u16).to_le_bytes());
        slot[10] = e.kind;
        if e.kind != EVENTTYPE_CLOCK {
            slot[16..24].copy_from_slice(&e.nbytes.to_le_bytes());
        }
    }
    errno_of(write_u32(mem, nevents, ready.len() as u32))
}

/// What a socket function answers: no fd is a socket.
fn not_a_socket(host: &Host, fd: i32) -> i32 {
    if is_stdio(fd) || host.fs.is_open(fd) {
        errno::NOTSOCK
    } else {
        errno::BADF
    }
}

fn fdstat_get(mem: &mut [u8], fd: i32, out: i32) -> i32 {
    if !is_stdio(fd) {
        return errno::BADF;
    }
    let rights = if fd == 0 {
        RIGHTS_FD_READ
    } else {
        RIGHTS_FD_WRITE
    };
    let mut stat = [0u8; 24];
    stat[0] = FILETYPE_CHARACTER_DEVICE;
    stat[8..16].copy_from_slice(&rights.to_le_bytes());
    match bytes_mut(mem, out, 24) {
        Ok(b) => {
            b.copy_from_slice(&stat);
            errno::SUCCESS
        }
        Err(e) => e,
    }
}

fn filestat_get(mem: &mut [u8], fd: i32, out: i32) -> i32 {
    if !is_stdio(fd) {
        return errno::BADF;
    }
    let mut stat = [0u8; 64];
    stat[16] = FILETYPE_CHARACTER_DEVICE;
    match bytes_mut(mem, out, 64) {
        Ok(b) => {
            b.copy_from_slice(&stat);
            errno::SUCCESS
        }
        Err(e) => e,
    }
}

/// Runs a `path_*` function: `ENOTCAPABLE` without a file system.
fn path_call(
    caller: &mut Caller<'_, Host>,
    f: impl FnOnce(&mut [u8], &mut Host, u64) -> i32,
) -> Ret {
    if !caller.data().fs.mounted() {
        return Ok(errno::NOTCAPABLE);
    }
    with_mem(caller, |m, h| {
        let now = h.now();
        f(m, h, now)
    })
}

/// Registers every function of the runegrid WASI subset.
pub(crate) fn add_to_linker(linker: &mut Linker<Host>) -> wasmtime::Result<()> {
    linker.func_wrap(
        WASI,
        "args_sizes_get",
        |mut c: Caller<'_, Host>, n: i32, s: i32| {
            with_mem(&mut c, |m, h| errno_of(sizes_get(m, &h.args, n, s)))
        },
    )?;
    linker.func_wrap(
        WASI,
        "args_get",
        |mut c: Caller<'_, Host>, p: i32, b: i32| {
            with_mem(&mut c, |m, h| errno_of(list_get(m, &h.args, p, b)))
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_sizes_get",
        |mut c: Caller<'_, Host>, n: i32, s: i32| {
            with_mem(&mut c, |m, h| errno_of(sizes_get(m, &h.env, n, s)))
        },
    )?;
    linker.func_wrap(
        WASI,
        "environ_get",
        |mut c: Caller<'_, Host>, p: i32, b: i32| {
            with_mem(&mut c, |m, h| errno_of(list_get(m, &h.env, p, b)))
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_res_get",
        |mut c: Caller<'_, Host>, id: i32, out: i32| {
            if !(0..=3).contains(&id) {
                return Ok(errno::INVAL);
            }
            with_mem(&mut c, |m, _| errno_of(write_u64(m, out, CLOCK_STEP_NS)))
        },
    )?;
    linker.func_wrap(
        WASI,
        "clock_time_get",
        |mut c: Caller<'_, Host>, id: i32, _precision: i64, out: i32| {
            with_mem(&mut c, |m, h| clock_time_get(m, h, id, out))
        },
    )?;
    linker.func_wrap(
        WASI,
        "random_get",
        |mut c: Caller<'_, Host>, buf: i32, len: i32| {
            with_mem(&mut c, |m, h| {
                match bytes_mut(m, buf, u64::from(len as u32)) {
                    Ok(b) => {
                        h.rng.fill(b);
                        errno::SUCCESS
                    }
                    Err(e) => e,
                }
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_write",
        |mut c: Caller<'_, Host>, fd: i32, iovs: i32, n: i32, out: i32| {
            with_mem(&mut c, |m, h| fd_write(m, h, fd, iovs, n, out))?
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_read",
        |mut c: Caller<'_, Host>, fd: i32, iovs: i32, n: i32, out: i32| {
            with_mem(&mut c, |m, h| fd_read(m, h, fd, iovs, n, out))
        },
    )?;
    // Stdio answers as documented above; fds above 2 are the file system's (`fs`), which
    // answers `EBADF` for every fd when there is none.
    linker.func_wrap(WASI, "fd_close", |mut c: Caller<'_, Host>, fd: i32| {
        c.data_mut().fs.close(fd).unwrap_or(errno::SUCCESS)
    })?;
    linker.func_wrap(
        WASI,
        "fd_seek",
        |mut c: Caller<'_, Host>, fd: i32, off: i64, whence: i32, out: i32| {
            with_mem(&mut c, |m, h| {
                h.fs.seek(m, fd, off, whence, out).unwrap_or(errno::SPIPE)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_tell",
        |mut c: Caller<'_, Host>, fd: i32, out: i32| {
            with_mem(&mut c, |m, h| h.fs.tell(m, fd, out).unwrap_or(errno::SPIPE))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_get",
        |mut c: Caller<'_, Host>, fd: i32, out: i32| {
            with_mem(&mut c, |m, h| {
                h.fs.fdstat_get(m, fd, out)
                    .unwrap_or_else(|| fdstat_get(m, fd, out))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_fdstat_set_flags",
        |mut c: Caller<'_, Host>, fd: i32, flags: i32| {
            let fs = &mut c.data_mut().fs;
            fs.set_flags(fd, flags).unwrap_or(errno::NOTSUP)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_filestat_get",
        |mut c: Caller<'_, Host>, fd: i32, out: i32| {
            with_mem(&mut c, |m, h| {
                h.fs.filestat_get(m, fd, out)
                    .unwrap_or_else(|| filestat_get(m, fd, out))
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_get",
        |mut c: Caller<'_, Host>, fd: i32, out: i32| {
            with_mem(&mut c, |m, h| h.fs.prestat_get(m, fd, out))
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_prestat_dir_name",
        |mut c: Caller<'_, Host>, fd: i32, p: i32, l: i32| {
            with_mem(&mut c, |m, h| h.fs.prestat_dir_name(m, fd, p, l))
        },
    )?;
    linker.func_wrap(WASI, "fd_sync", |mut c: Caller<'_, Host>, fd: i32| {
        let fs = &mut c.data_mut().fs;
        fs.simple(fd, errno::SUCCESS, errno::SUCCESS)
            .unwrap_or(errno::INVAL)
    })?;
    linker.func_wrap(WASI, "fd_datasync", |mut c: Caller<'_, Host>, fd: i32| {
        let fs = &mut c.data_mut().fs;
        fs.simple(fd, errno::SUCCESS, errno::SUCCESS)
            .unwrap_or(errno::INVAL)
    })?;
    linker.func_wrap(
        WASI,
        "fd_advise",
        |mut c: Caller<'_, Host>, fd: i32, _o: i64, _l: i64, _a: i32| {
            let fs = &mut c.data_mut().fs;
            fs.simple(fd, errno::SUCCESS, errno::BADF)
                .unwrap_or(errno::SPIPE)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_allocate",
        |mut c: Caller<'_, Host>, fd: i32, offset: i64, len: i64| {
            let now = c.data().now();
            let fs = &mut c.data_mut().fs;
            fs.allocate(fd, offset as u64, len as u64, now)
                .unwrap_or(errno::SPIPE)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_pread",
        |mut c: Caller<'_, Host>, fd: i32, iovs: i32, n: i32, offset: i64, out: i32| {
            with_mem(&mut c, |m, h| {
                h.fs.read(m, fd, iovs, n, Some(offset as u64), out)
                    .unwrap_or(errno::SPIPE)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_pwrite",
        |mut c: Caller<'_, Host>, fd: i32, iovs: i32, n: i32, offset: i64, out: i32| {
            with_mem(&mut c, |m, h| {
                let now = h.now();
                h.fs.write(m, fd, iovs, n, Some(offset as u64), out, now)
                    .unwrap_or(errno::SPIPE)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_readdir",
        |mut c: Caller<'_, Host>, fd: i32, buf: i32, len: i32, cookie: i64, out: i32| {
            with_mem(&mut c, |m, h| {
                h.fs.readdir(m, fd, buf, len, cookie, out)
                    .unwrap_or(errno::NOTDIR)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_renumber",
        |mut c: Caller<'_, Host>, from: i32, to: i32| c.data_mut().fs.renumber(from, to),
    )?;
    linker.func_wrap(
        WASI,
        "fd_filestat_set_size",
        |mut c: Caller<'_, Host>, fd: i32, size: i64| {
            let now = c.data().now();
            let fs = &mut c.data_mut().fs;
            fs.set_size(fd, size as u64, now).unwrap_or(errno::INVAL)
        },
    )?;
    linker.func_wrap(
        WASI,
        "fd_filestat_set_times",
        |mut c: Caller<'_, Host>, fd: i32, atim: i64, mtim: i64, flags: i32| {
            let now = c.data().now();
            let fs = &mut c.data_mut().fs;
            fs.fd_set_times(fd, atim, mtim, flags, now)
                .unwrap_or(errno::INVAL)
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_open",
        |mut c: Caller<'_, Host>,
         dirfd: i32,
         dirflags: i32,
         path: i32,
         path_len: i32,
         oflags: i32,
         rights_base: i64,
         _rights_inheriting: i64,
         fdflags: i32,
         out: i32| {
            if !c.data().fs.mounted() {
                return Ok(errno::NOTCAPABLE);
            }
            with_mem(&mut c, |m, h| {
                let now = h.now();
                h.fs.path_open(
                    m,
                    dirfd,
                    dirflags,
                    path,
                    path_len,
                    oflags,
                    rights_base,
                    fdflags,
                    out,
                    now,
                )
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_filestat_get",
        |mut c: Caller<'_, Host>, dirfd: i32, flags: i32, path: i32, len: i32, out: i32| {
            if !c.data().fs.mounted() {
                return Ok(errno::NOTCAPABLE);
            }
            with_mem(&mut c, |m, h| {
                h.fs.path_filestat_get(m, dirfd, flags, path, len, out)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_create_directory",
        |mut c: Caller<'_, Host>, fd: i32, path: i32, len: i32| {
            path_call(&mut c, |m, h, now| {
                h.fs.create_directory(m, fd, path, len, now)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_remove_directory",
        |mut c: Caller<'_, Host>, fd: i32, path: i32, len: i32| {
            path_call(&mut c, |m, h, now| {
                h.fs.remove_directory(m, fd, path, len, now)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_unlink_file",
        |mut c: Caller<'_, Host>, fd: i32, path: i32, len: i32| {
            path_call(&mut c, |m, h, now| h.fs.unlink_file(m, fd, path, len, now))
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_rename",
        |mut c: Caller<'_, Host>,
         fd: i32,
         old: i32,
         old_len: i32,
         nfd: i32,
         new: i32,
         new_len: i32| {
            path_call(&mut c, |m, h, now| {
                h.fs.rename(m, fd, old, old_len, nfd, new, new_len, now)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_readlink",
        |mut c: Caller<'_, Host>,
         fd: i32,
         path: i32,
         len: i32,
         buf: i32,
         buf_len: i32,
         out: i32| {
            path_call(&mut c, |m, h, _| {
                h.fs.readlink(m, fd, path, len, buf, buf_len, out)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_symlink",
        |mut c: Caller<'_, Host>, old: i32, old_len: i32, fd: i32, new: i32, new_len: i32| {
            path_call(&mut c, |m, h, now| {
                h.fs.symlink(m, old, old_len, fd, new, new_len, now)
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_link",
        |mut c: Caller<'_, Host>,
         ofd: i32,
         _flags: i32,
         old: i32,
         old_len: i32,
         nfd: i32,
         new: i32,
         new_len: i32| {
            path_call(&mut c, |m, h, _| {
                h.fs.no_links(m, &[ofd, nfd], &[(old, old_len), (new, new_len)])
            })
        },
    )?;
    linker.func_wrap(
        WASI,
        "path_filestat_set_times",
        |mut c: Caller<'_, Host>,
         fd: i32,
         lookup_flags: i32,
         path: i32,
         len: i32,
         atim: i64,
         mtim: i64,
         fst: i32| {
            path_call(&mut c, |m, h, now| {
                h.fs.path_set_times(m, fd, lookup_flags, path, len, atim, mtim, fst, now)
            })
        },
    )?;
    linker.func_wrap(WASI, "proc_exit", |code: i32| -> wasmtime::Result<()> {
        Err(wasmtime::Error::new(Stop::Exit(code)))
    })?;
    linker.func_wrap(WASI, "proc_raise", |_sig: i32| errno::NOTSUP)?;
    linker.func_wrap(WASI, "sched_yield", || errno::SUCCESS)?;
    linker.func_wrap(
        WASI,
        "poll_oneoff",
        |mut c: Caller<'_, Host>, input: i32, out: i32, n: i32, nevents: i32| {
            with_mem(&mut c, |m, h| poll_oneoff(m, h, input, out, n, nevents))
        },
    )?;
    linker.func_wrap(
        WASI,
        "sock_accept",
        |c: Caller<'_, Host>, fd: i32, _flags: i32, _out: i32| not_a_socket(c.data(), fd),
    )?;
    linker.func_wrap(
        WASI,
        "sock_recv",
        |c: Caller<'_, Host>, fd: i32, _: i32, _: i32, _: i32, _: i32, _: i32| {
            not_a_socket(c.data(), fd)
        },
    )?;
    linker.func_wrap(
        WASI,
        "sock_send",
        |c: Caller<'_, Host>, fd: i32, _: i32, _: i32, _: i32, _: i32| not_a_socket(c.data(), fd),
    )?;
    linker.func_wrap(
        WASI,
        "sock_shutdown",
        |c: Caller<'_, Host>, fd: i32, _how: i32| not_a_socket(c.data(), fd),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_matches_the_reference() {
        // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
        let mut r = SplitMix64::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(r.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn fill_takes_whole_outputs() {
        let mut a = SplitMix64::new(7);
        let mut buf = [0u8; 10];
        a.fill(&mut buf);
        let mut b = SplitMix64::new(7);
        let first = b.next_u64().to_le_bytes();
        let second = b.next_u64().to_le_bytes();
        assert_eq!(&buf[..8], &first);
        assert_eq!(&buf[8..], &second[..2]);
        // Both generators consumed two outputs.
        assert_eq!(a.next_u64(), b.next_u64());
    }

    #[test]
    fn ranges_are_checked() {
        assert_eq!(range(10, 8, 2), Ok(8..10));
        assert_eq!(range(10, 8, 3), Err(errno::FAULT));
        assert_eq!(range(10, -1, 1), Err(errno::FAULT));
        assert_eq!(range(10, 0, u64::MAX), Err(errno::FAULT));
    }
}
