//! Read-only file mounts ("blobs"): named byte strings under one preopened directory.
//!
//! With no blobs nothing here is reachable and the host answers exactly as before (no
//! preopens, `path_*` → `ENOTCAPABLE`, every fd above 2 → `EBADF`). With at least one blob,
//! what a browser host must reproduce, bit for bit:
//!
//! - **fd 3** is a preopened directory named [`MOUNT_DIR`] (`/blobs`). `fd_prestat_get(3)`
//!   writes the 8-byte prestat (tag 0 = directory, 3 zero bytes, `u32` name length 6);
//!   `fd_prestat_dir_name(3, buf, len)` writes the 6 bytes `/blobs` (no NUL), `ENAMETOOLONG`
//!   when `len < 6`. Any other fd, or fd 3 once closed, gives `EBADF` for both.
//! - Open fds are numbered from 3 up; `path_open` takes the lowest free number ≥ 3, at most
//!   [`MAX_OPEN`] open at once (`EMFILE` past that).
//! - **Errno precedence** in every function below: the fd first (not open → `EBADF`; a
//!   directory operation on a file or stdio → `ENOTDIR`; a file operation on the directory →
//!   `EBADF`), then memory (`EFAULT`, nothing written), then the rest.
//! - **`path_open(dirfd, dirflags, path, path_len, oflags, rights_base, rights_inheriting,
//!   fdflags, out)`**: `dirfd` must be the directory (`EBADF` if not open, `ENOTDIR` for
//!   stdio or a file); `path` and `out` (4 bytes) must be in memory (`EFAULT`); `path` must be
//!   UTF-8 (`EILSEQ`); `oflags` with `CREAT`, `EXCL` or `TRUNC`, `rights_base` with `FD_WRITE`,
//!   `FD_ALLOCATE` or `FD_FILESTAT_SET_SIZE`, or `fdflags` with `APPEND` give `EROFS`. The
//!   path is resolved as in [`resolve`] (`dirflags` ignored). The directory itself opens as a
//!   new directory fd; a blob opens as a file fd at position 0 (`ENOTDIR` if `oflags` has
//!   `DIRECTORY`). Other rights and flags are ignored.
//! - **`path_filestat_get(dirfd, flags, path, path_len, out)`**: the same fd, memory (64
//!   bytes at `out`), UTF-8 and path rules, then the filestat below. The other `path_*`
//!   functions keep answering `ENOTCAPABLE`.
//! - **filestat** (64 bytes): `dev` 0, `ino` (the directory 1, blob `i` in mount order
//!   `i + 2`), `filetype` (directory 3, regular file 4), `nlink` 1, `size` (the directory 0, a
//!   blob its length), the three timestamps 0. **fdstat** (24 bytes): `filetype`, flags 0,
//!   `rights_base` ([`DIR_RIGHTS`] or [`FILE_RIGHTS`]), `rights_inheriting` ([`FILE_RIGHTS`]
//!   for the directory, 0 for a file).
//! - **Files**: `fd_read` reads from the position and advances it (iovec by iovec, stopping at
//!   the first one not filled); `fd_pread(fd, iovs, n, offset, out)` reads the same way from
//!   `offset` and leaves the position alone; `fd_seek(fd, offset, whence, out)` with whence 0
//!   (set), 1 (current) or 2 (end) sets the position to base + offset and writes it (8 bytes);
//!   another whence or a negative result gives `EINVAL`; past the end is allowed (reads then
//!   give 0 bytes). `fd_tell` writes the position. `fd_advise`, `fd_sync`, `fd_datasync`
//!   succeed and do nothing. `fd_write` and `fd_pwrite` give `EBADF`; `fd_allocate`,
//!   `fd_filestat_set_size` and `fd_filestat_set_times` give `EROFS`; `fd_fdstat_set_flags`
//!   `ENOTSUP`; `fd_readdir` `ENOTDIR`.
//! - **The directory**: `fd_readdir(fd, buf, len, cookie, out)` lists the blobs in mount order
//!   (no `.` or `..`), entry `i` being a 24-byte dirent (`d_next` = i + 1, `d_ino` = i + 2,
//!   `d_namlen`, `d_type` 4, 3 zero bytes) followed by the name; the entries from index
//!   `cookie` on are concatenated and the first `len` bytes written (the last entry may be cut,
//!   as WASI specifies), and the number of bytes written goes to `out`. Every file operation
//!   above gives `EBADF` on it, except `fd_sync` and `fd_datasync` (succeed) and
//!   `fd_fdstat_set_flags` (`ENOTSUP`).
//! - **`fd_close`** of the directory or a file frees its number (closing fd 3 removes the
//!   preopen). **`fd_renumber`** gives `ENOTSUP` when both fds are open, `EBADF` otherwise.

use super::{bytes_mut, errno, errno_of, iovecs, range, write_u32, write_u64};
use std::sync::Arc;

/// Where blobs appear in the guest's file system.
pub const MOUNT_DIR: &str = "/blobs";
/// Most fds open at once above stdio (the directory included).
pub const MAX_OPEN: usize = 128;

const FILETYPE_DIRECTORY: u8 = 3;
const FILETYPE_REGULAR_FILE: u8 = 4;

const OFLAGS_CREAT: i32 = 1;
const OFLAGS_DIRECTORY: i32 = 2;
const OFLAGS_EXCL: i32 = 4;
const OFLAGS_TRUNC: i32 = 8;
const FDFLAGS_APPEND: i32 = 1;

const RIGHTS_FD_READ: u64 = 1 << 1;
const RIGHTS_FD_SEEK: u64 = 1 << 2;
const RIGHTS_FD_TELL: u64 = 1 << 5;
const RIGHTS_FD_WRITE: u64 = 1 << 6;
const RIGHTS_FD_ADVISE: u64 = 1 << 7;
const RIGHTS_FD_ALLOCATE: u64 = 1 << 8;
const RIGHTS_PATH_OPEN: u64 = 1 << 13;
const RIGHTS_FD_READDIR: u64 = 1 << 14;
const RIGHTS_PATH_FILESTAT_GET: u64 = 1 << 18;
const RIGHTS_FD_FILESTAT_GET: u64 = 1 << 21;
const RIGHTS_FD_FILESTAT_SET_SIZE: u64 = 1 << 22;

/// Rights of an open blob.
pub const FILE_RIGHTS: u64 =
    RIGHTS_FD_READ | RIGHTS_FD_SEEK | RIGHTS_FD_TELL | RIGHTS_FD_ADVISE | RIGHTS_FD_FILESTAT_GET;
/// Rights of the blob directory.
pub const DIR_RIGHTS: u64 =
    RIGHTS_PATH_OPEN | RIGHTS_FD_READDIR | RIGHTS_PATH_FILESTAT_GET | RIGHTS_FD_FILESTAT_GET;
const WRITE_RIGHTS: u64 = RIGHTS_FD_WRITE | RIGHTS_FD_ALLOCATE | RIGHTS_FD_FILESTAT_SET_SIZE;

/// A named read-only file mounted into a run as `/blobs/<name>`. Cloning is cheap: the bytes
/// are shared between runs.
#[derive(Clone, PartialEq, Eq)]
pub struct Blob {
    /// File name: not empty, not `.` or `..`, no `/` and no NUL.
    pub name: String,
    /// The file's content.
    pub bytes: Arc<[u8]>,
}

impl Blob {
    /// A blob named `name` holding `bytes`.
    pub fn new(name: impl Into<String>, bytes: impl Into<Arc<[u8]>>) -> Blob {
        Blob {
            name: name.into(),
            bytes: bytes.into(),
        }
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("name", &self.name)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// Checks a run's blobs: valid, distinct names.
pub fn check_blobs(blobs: &[Blob]) -> Result<(), String> {
    for (i, b) in blobs.iter().enumerate() {
        let n = &b.name;
        if n.is_empty() || n == "." || n == ".." || n.contains('/') || n.contains('\0') {
            return Err(format!("invalid blob name {n:?}"));
        }
        if blobs[..i].iter().any(|o| &o.name == n) {
            return Err(format!("blob {n:?} is mounted twice"));
        }
    }
    Ok(())
}

/// What an fd above 2 refers to.
#[derive(Debug, Clone)]
enum Open {
    Dir,
    File { blob: usize, pos: u64 },
}

/// The mounted blobs and the fds open on them.
#[derive(Debug, Default)]
pub(crate) struct Fs {
    blobs: Vec<Blob>,
    /// Whether fd 3 is still the preopened directory.
    preopen: bool,
    /// `fds[i]` is fd `i + 3`.
    fds: Vec<Option<Open>>,
}

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    Dir,
    Blob(usize),
}

/// How an fd argument resolved.
enum Fd<'a> {
    Stdio,
    Dir,
    File(usize, &'a Blob, &'a mut u64),
}

impl Fs {
    pub(crate) fn new(blobs: Vec<Blob>) -> Fs {
        let fds = if blobs.is_empty() {
            Vec::new()
        } else {
            vec![Some(Open::Dir)]
        };
        let preopen = !blobs.is_empty();
        Fs {
            blobs,
            preopen,
            fds,
        }
    }

    /// Whether any blob is mounted (otherwise every function keeps its unmounted answer).
    pub(crate) fn mounted(&self) -> bool {
        !self.blobs.is_empty()
    }

    fn fd(&mut self, fd: i32) -> Result<Fd<'_>, i32> {
        if (0..=2).contains(&fd) {
            return Ok(Fd::Stdio);
        }
        let slot = usize::try_from(fd).ok().and_then(|f| f.checked_sub(3));
        match slot
            .and_then(|s| self.fds.get_mut(s))
            .and_then(Option::as_mut)
        {
            None => Err(errno::BADF),
            Some(Open::Dir) => Ok(Fd::Dir),
            Some(Open::File { blob, pos }) => Ok(Fd::File(*blob, &self.blobs[*blob], pos)),
        }
    }

    /// Whether `fd` is open above stdio.
    pub(crate) fn is_open(&self, fd: i32) -> bool {
        usize::try_from(fd)
            .ok()
            .and_then(|f| f.checked_sub(3))
            .and_then(|s| self.fds.get(s))
            .is_some_and(Option::is_some)
    }

    /// The directory fd for `path_*`: `EBADF` if not open, `ENOTDIR` if not the directory.
    fn dir(&mut self, fd: i32) -> Result<(), i32> {
        match self.fd(fd)? {
            Fd::Dir => Ok(()),
            Fd::Stdio | Fd::File(..) => Err(errno::NOTDIR),
        }
    }

    /// A file fd for file operations: `EBADF` for the directory or a closed fd. `None` for
    /// stdio (the caller keeps its stdio answer).
    fn file(&mut self, fd: i32) -> Result<Option<(&Blob, &mut u64)>, i32> {
        match self.fd(fd)? {
            Fd::Stdio => Ok(None),
            Fd::Dir => Err(errno::BADF),
            Fd::File(_, b, p) => Ok(Some((b, p))),
        }
    }

    fn ino(node: Node) -> u64 {
        match node {
            Node::Dir => 1,
            Node::Blob(i) => i as u64 + 2,
        }
    }

    fn filestat(&self, node: Node) -> [u8; 64] {
        let mut stat = [0u8; 64];
        stat[8..16].copy_from_slice(&Self::ino(node).to_le_bytes());
        let (ty, size) = match node {
            Node::Dir => (FILETYPE_DIRECTORY, 0),
            Node::Blob(i) => (FILETYPE_REGULAR_FILE, self.blobs[i].bytes.len() as u64),
        };
        stat[16] = ty;
        stat[24..32].copy_from_slice(&1u64.to_le_bytes());
        stat[32..40].copy_from_slice(&size.to_le_bytes());
        stat
    }

    /// Resolves `path` (relative to the directory): components split at `/`; empty
    /// components and `.` are skipped while at the directory; `..` there gives
    /// `ENOTCAPABLE`; a name that is no blob gives `ENOENT`; anything after a blob's name
    /// (even a trailing `/`) gives `ENOTDIR`. The empty path gives `ENOENT`.
    fn resolve(&self, path: &str) -> Result<Node, i32> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        let mut parts = path.split('/');
        while let Some(part) = parts.next() {
            match part {
                "" | "." => continue,
                ".." => return Err(errno::NOTCAPABLE),
                name => {
                    let i = self
                        .blobs
                        .iter()
                        .position(|b| b.name == name)
                        .ok_or(errno::NOENT)?;
                    return if parts.next().is_some() {
                        Err(errno::NOTDIR)
                    } else {
                        Ok(Node::Blob(i))
                    };
                }
            }
        }
        Ok(Node::Dir)
    }

    fn path(mem: &[u8], ptr: i32, len: i32) -> Result<&str, i32> {
        let r = range(mem.len(), ptr, u64::from(len as u32))?;
        std::str::from_utf8(&mem[r]).map_err(|_| errno::ILSEQ)
    }

    pub(crate) fn prestat_get(&self, mem: &mut [u8], fd: i32, out: i32) -> i32 {
        if fd != 3 || !self.preopen {
            return errno::BADF;
        }
        let mut prestat = [0u8; 8];
        prestat[4..8].copy_from_slice(&(MOUNT_DIR.len() as u32).to_le_bytes());
        match bytes_mut(mem, out, 8) {
            Ok(b) => {
                b.copy_from_slice(&prestat);
                errno::SUCCESS
            }
            Err(e) => e,
        }
    }

    pub(crate) fn prestat_dir_name(&self, mem: &mut [u8], fd: i32, buf: i32, len: i32) -> i32 {
        if fd != 3 || !self.preopen {
            return errno::BADF;
        }
        if let Err(e) = range(mem.len(), buf, u64::from(len as u32)) {
            return e;
        }
        if (len as u32 as usize) < MOUNT_DIR.len() {
            return errno::NAMETOOLONG;
        }
        errno_of(bytes_mut(mem, buf, MOUNT_DIR.len() as u64).map(|b| {
            b.copy_from_slice(MOUNT_DIR.as_bytes());
        }))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_open(
        &mut self,
        mem: &mut [u8],
        dirfd: i32,
        path: i32,
        path_len: i32,
        oflags: i32,
        rights_base: i64,
        fdflags: i32,
        out: i32,
    ) -> i32 {
        if let Err(e) = self.dir(dirfd) {
            return e;
        }
        let node = {
            let path = match Self::path(mem, path, path_len) {
                Ok(p) => p,
                Err(e) => return e,
            };
            if let Err(e) = range(mem.len(), out, 4) {
                return e;
            }
            if oflags & (OFLAGS_CREAT | OFLAGS_EXCL | OFLAGS_TRUNC) != 0
                || (rights_base as u64) & WRITE_RIGHTS != 0
                || fdflags & FDFLAGS_APPEND != 0
            {
                return errno::ROFS;
            }
            match self.resolve(path) {
                Ok(n) => n,
                Err(e) => return e,
            }
        };
        let open = match node {
            Node::Dir => Open::Dir,
            Node::Blob(_) if oflags & OFLAGS_DIRECTORY != 0 => return errno::NOTDIR,
            Node::Blob(blob) => Open::File { blob, pos: 0 },
        };
        let slot = match self.fds.iter().position(Option::is_none) {
            Some(s) => s,
            None if self.fds.len() < MAX_OPEN => {
                self.fds.push(None);
                self.fds.len() - 1
            }
            None => return errno::MFILE,
        };
        self.fds[slot] = Some(open);
        errno_of(write_u32(mem, out, slot as u32 + 3))
    }

    pub(crate) fn path_filestat_get(
        &mut self,
        mem: &mut [u8],
        dirfd: i32,
        path: i32,
        path_len: i32,
        out: i32,
    ) -> i32 {
        if let Err(e) = self.dir(dirfd) {
            return e;
        }
        let node = {
            let path = match Self::path(mem, path, path_len) {
                Ok(p) => p,
                Err(e) => return e,
            };
            if let Err(e) = range(mem.len(), out, 64) {
                return e;
            }
            match self.resolve(path) {
                Ok(n) => n,
                Err(e) => return e,
            }
        };
        let stat = self.filestat(node);
        errno_of(bytes_mut(mem, out, 64).map(|b| b.copy_from_slice(&stat)))
    }

    /// `fd_fdstat_get` for fds above 2 (`None`: stdio, the caller answers).
    pub(crate) fn fdstat_get(&mut self, mem: &mut [u8], fd: i32, out: i32) -> Option<i32> {
        let (ty, base, inheriting) = match self.fd(fd) {
            Err(e) => return Some(e),
            Ok(Fd::Stdio) => return None,
            Ok(Fd::Dir) => (FILETYPE_DIRECTORY, DIR_RIGHTS, FILE_RIGHTS),
            Ok(Fd::File(..)) => (FILETYPE_REGULAR_FILE, FILE_RIGHTS, 0),
        };
        let mut stat = [0u8; 24];
        stat[0] = ty;
        stat[8..16].copy_from_slice(&base.to_le_bytes());
        stat[16..24].copy_from_slice(&inheriting.to_le_bytes());
        Some(errno_of(
            bytes_mut(mem, out, 24).map(|b| b.copy_from_slice(&stat)),
        ))
    }

    /// `fd_filestat_get` for fds above 2 (`None`: stdio).
    pub(crate) fn filestat_get(&mut self, mem: &mut [u8], fd: i32, out: i32) -> Option<i32> {
        let node = match self.fd(fd) {
            Err(e) => return Some(e),
            Ok(Fd::Stdio) => return None,
            Ok(Fd::Dir) => Node::Dir,
            Ok(Fd::File(i, ..)) => Node::Blob(i),
        };
        let stat = self.filestat(node);
        Some(errno_of(
            bytes_mut(mem, out, 64).map(|b| b.copy_from_slice(&stat)),
        ))
    }

    /// The bytes left to read from an open blob file (`None`: not a file open here).
    pub(crate) fn left_to_read(&mut self, fd: i32) -> Option<u64> {
        if (0..=2).contains(&fd) {
            return None;
        }
        match self.file(fd) {
            Ok(Some((blob, pos))) => Some((blob.bytes.len() as u64).saturating_sub(*pos)),
            _ => None,
        }
    }

    /// `fd_read` (`offset: None`) and `fd_pread` for fds above 2 (`None`: stdio).
    pub(crate) fn read(
        &mut self,
        mem: &mut [u8],
        fd: i32,
        iovs: i32,
        count: i32,
        offset: Option<u64>,
        out: i32,
    ) -> Option<i32> {
        let (blob, pos) = match self.file(fd) {
            Err(e) => return Some(e),
            Ok(None) => return None,
            Ok(Some(f)) => f,
        };
        let iovs = match iovecs(mem, iovs, count) {
            Ok(v) => v,
            Err(e) => return Some(e),
        };
        if let Err(e) = range(mem.len(), out, 4) {
            return Some(e);
        }
        let bytes = &blob.bytes[..];
        let mut at = offset.unwrap_or(*pos);
        let mut read = 0usize;
        for r in iovs {
            let start = usize::try_from(at).unwrap_or(usize::MAX).min(bytes.len());
            let rest = &bytes[start..];
            let n = rest.len().min(r.len());
            mem[r.start..r.start + n].copy_from_slice(&rest[..n]);
            at += n as u64;
            read += n;
            if n < r.len() {
                break;
            }
        }
        if offset.is_none() {
            *pos = at;
        }
        Some(errno_of(write_u32(mem, out, read as u32)))
    }

    /// `fd_seek` for fds above 2 (`None`: stdio).
    pub(crate) fn seek(
        &mut self,
        mem: &mut [u8],
        fd: i32,
        offset: i64,
        whence: i32,
        out: i32,
    ) -> Option<i32> {
        let (blob, pos) = match self.file(fd) {
            Err(e) => return Some(e),
            Ok(None) => return None,
            Ok(Some(f)) => f,
        };
        if let Err(e) = range(mem.len(), out, 8) {
            return Some(e);
        }
        let base = match whence {
            0 => 0i128,
            1 => i128::from(*pos),
            2 => blob.bytes.len() as i128,
            _ => return Some(errno::INVAL),
        };
        let new = base + i128::from(offset);
        let Ok(new) = u64::try_from(new) else {
            return Some(errno::INVAL);
        };
        *pos = new;
        Some(errno_of(write_u64(mem, out, new)))
    }

    /// `fd_tell` for fds above 2 (`None`: stdio).
    pub(crate) fn tell(&mut self, mem: &mut [u8], fd: i32, out: i32) -> Option<i32> {
        let pos = match self.file(fd) {
            Err(e) => return Some(e),
            Ok(None) => return None,
            Ok(Some((_, pos))) => *pos,
        };
        Some(errno_of(write_u64(mem, out, pos)))
    }

    /// `fd_readdir` for fds above 2 (`None`: stdio).
    pub(crate) fn readdir(
        &mut self,
        mem: &mut [u8],
        fd: i32,
        buf: i32,
        len: i32,
        cookie: i64,
        out: i32,
    ) -> Option<i32> {
        match self.fd(fd) {
            Err(e) => return Some(e),
            Ok(Fd::Stdio) => return None,
            Ok(Fd::File(..)) => return Some(errno::NOTDIR),
            Ok(Fd::Dir) => {}
        }
        let len = len as u32 as usize;
        if let Err(e) = range(mem.len(), buf, len as u64).and(range(mem.len(), out, 4)) {
            return Some(e);
        }
        let mut listing = Vec::new();
        let first = usize::try_from(cookie as u64).unwrap_or(usize::MAX);
        for (i, b) in self.blobs.iter().enumerate().skip(first) {
            if listing.len() >= len {
                break;
            }
            listing.extend_from_slice(&(i as u64 + 1).to_le_bytes());
            listing.extend_from_slice(&(i as u64 + 2).to_le_bytes());
            listing.extend_from_slice(&(b.name.len() as u32).to_le_bytes());
            listing.extend_from_slice(&[FILETYPE_REGULAR_FILE, 0, 0, 0]);
            listing.extend_from_slice(b.name.as_bytes());
        }
        let n = listing.len().min(len);
        let start = buf as u32 as usize;
        mem[start..start + n].copy_from_slice(&listing[..n]);
        Some(errno_of(write_u32(mem, out, n as u32)))
    }

    /// `fd_close` for fds above 2 (`None`: stdio).
    pub(crate) fn close(&mut self, fd: i32) -> Option<i32> {
        if (0..=2).contains(&fd) {
            return None;
        }
        if !self.is_open(fd) {
            return Some(errno::BADF);
        }
        self.fds[fd as usize - 3] = None;
        if fd == 3 {
            self.preopen = false;
        }
        while matches!(self.fds.last(), Some(None)) {
            self.fds.pop();
        }
        Some(errno::SUCCESS)
    }

    /// The answer of a file operation with no memory arguments, for fds above 2: `on_file` for
    /// a file, `on_dir` for the directory, `EBADF` if not open (`None`: stdio).
    pub(crate) fn simple(&mut self, fd: i32, on_file: i32, on_dir: i32) -> Option<i32> {
        match self.fd(fd) {
            Err(e) => Some(e),
            Ok(Fd::Stdio) => None,
            Ok(Fd::Dir) => Some(on_dir),
            Ok(Fd::File(..)) => Some(on_file),
        }
    }
}
