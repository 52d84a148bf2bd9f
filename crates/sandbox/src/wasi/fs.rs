//! The task's file system: a tree in memory, built fresh for every attempt and discarded after
//! it. Read-only blobs are mounted under [`MOUNT_DIR`] (a plain name) or at their own absolute
//! path (a name starting with `/`, see [`runegrid_core::mounts`]); with
//! `Limits::scratch_bytes > 0`, or any blob mounted at a path, the whole tree is rooted at `/`
//! holding `blobs` (when any blob has a plain name), `tmp` and `out` (writable within the
//! scratch space; with none every creation is `ENOSPC`). With no blob and no scratch nothing
//! here is reachable and the host answers exactly as without a file system (no preopens,
//! `path_*` → `ENOTCAPABLE`, every fd above 2 → `EBADF`).
//!
//! What a browser host must reproduce, bit for bit:
//!
//! - **Nodes** are numbered (`ino`) from 1 in creation order and never reused in a run. At
//!   start, in this order: with plain-named blobs, the directory `/blobs` (read-only), then
//!   each of them in mount order (read-only files); with a root, the root `/`, then `tmp` and
//!   `out` (empty, writable), then for each blob mounted at a path, in mount order, the
//!   directories of its path not made yet (writable) and its file (read-only). The root's
//!   entries are `blobs` (when mounted), `tmp`, `out`, then the path mounts' first components.
//!   Nodes present at start have all timestamps 0 and cost nothing.
//! - **Preopens**: fd 3 is `/blobs` when plain-named blobs are mounted; the next fd (3 or 4) is
//!   `/` when there is a root. `fd_prestat_get(fd, out)` writes the 8-byte prestat (tag 0, 3 zero bytes,
//!   `u32` name length) for an fd that is still its preopen (closed or renumbered away: it is
//!   not), `EBADF` otherwise; `fd_prestat_dir_name(fd, buf, len)` writes the name (no NUL),
//!   `ENAMETOOLONG` when `len` is shorter.
//! - **Open fds** are numbered from 3 up; `path_open` takes the lowest free number ≥ 3, at most
//!   [`MAX_OPEN`] open at once (`EMFILE`).
//! - **Errno precedence** everywhere: the fds first (not open → `EBADF`; a directory operation
//!   on a file or stdio → `ENOTDIR`; a file operation on a directory → `EBADF`), then memory
//!   (`EFAULT`, nothing written or changed), then a path's UTF-8 (`EILSEQ`), then the rest in
//!   the order each function lists.
//! - **Paths** are resolved from the fd's directory by [`Fs::lookup`]: a path starting with `/`
//!   gives `ENOTCAPABLE` (paths are relative to a directory fd); components split at `/`;
//!   empty components and `.` stay; `..` goes back one component and gives `ENOTCAPABLE` at the
//!   fd's directory; a component longer than [`MAX_NAME`] bytes gives `ENAMETOOLONG`, a missing
//!   name `ENOENT`; any component (even empty) after a file gives `ENOTDIR`. A symbolic link
//!   met before the last component (a trailing `/` counts as one more) is followed: its
//!   target's components take its place, from its directory (`..` still cannot leave the fd's
//!   directory); the last component too where the call follows links (`path_open`,
//!   `path_filestat_get`, `path_filestat_set_times` with `LOOKUPFLAGS_SYMLINK_FOLLOW`); more
//!   than [`MAX_SYMLINK_HOPS`] links in one lookup give `ELOOP`. The empty path is
//!   `ENOENT`. Functions that name an entry to create, remove or rename split the path with
//!   [`Fs::parent`]: trailing `/`s are dropped (noting that there was one), the part before
//!   the last `/` is looked up (it must be a directory: `ENOTDIR`) and the last component is
//!   the name (`.` when nothing is left: a path of slashes names the fd's directory itself).
//! - **Writable** means: not a mounted node and not removed. Creating in a read-only directory
//!   or changing a read-only node gives `EROFS`; creating in a removed directory `ENOENT`.
//! - **Scratch**: `used` counts, for every node the task created and that still exists (in a
//!   directory, or removed but still open), 64 bytes ([`NODE_COST`]) + its name's length + (a
//!   file) its size. An operation that would take `used` above the limit gives `ENOSPC` and
//!   changes nothing, except a write, which writes as many bytes as fit (0 bytes fit and more
//!   asked: `ENOSPC`). A node removed while open keeps its cost until its last fd closes.
//! - **Time**: "now" is the virtual realtime clock's current value (`REALTIME_BASE_NS` +
//!   counter, the counter not advanced). Creating sets a node's three timestamps to now and
//!   the parent's mtime and ctime; writing (≥ 1 byte), truncating or growing sets mtime and
//!   ctime; removing or renaming sets the parents' mtime and ctime (and a renamed node's
//!   ctime). Reads change nothing.
//! - **filestat** (64 bytes): `dev` 0, `ino`, `filetype` (directory 3, regular file 4),
//!   `nlink` (1, or 0 once removed), `size` (a file's length, a directory 0), atim, mtim, ctim.
//!   **fdstat** (24 bytes): filetype, flags (a file's fdflags: those it was opened with, masked
//!   to `0x1f`, or set since by `fd_fdstat_set_flags`; 0 for a directory), rights base and
//!   inheriting: a file opened for reading and writing [`FILE_WRITE_RIGHTS`], 0; for writing
//!   only the same without `FD_READ`; for reading [`FILE_RIGHTS`], 0; a writable directory
//!   [`DIR_WRITE_RIGHTS`], both those and [`FILE_WRITE_RIGHTS`]; a read-only one [`DIR_RIGHTS`],
//!   [`FILE_RIGHTS`].
//! - **`path_open(dirfd, _, path, len, oflags, rights_base, _, fdflags, out)`**: the fd, path
//!   memory, `out` (4 bytes), UTF-8. The fd is for writing when `rights_base` has `FD_WRITE`,
//!   `FD_ALLOCATE` or `FD_FILESTAT_SET_SIZE`, or `fdflags` has `APPEND` (the fd then appends);
//!   for reading when `rights_base` has `FD_READ` or the fd is not for writing. With `CREAT`: the path is split; a name `.` or `..` is looked
//!   up as a whole path; an existing node with `EXCL` gives `EEXIST`, an existing file named
//!   with a trailing `/` `ENOTDIR`; a missing one with a
//!   trailing `/` or `DIRECTORY` gives `EISDIR`, in a directory not writable `EROFS`/`ENOENT`.
//!   Without `CREAT` the path is looked up. Then, for an existing node: `DIRECTORY` on a file
//!   `ENOTDIR`; a directory for writing or with `TRUNC` `EISDIR`; a read-only file for writing
//!   or with `TRUNC` `EROFS`. Then `EMFILE`; then creating costs ([`NODE_COST`] + name length,
//!   `ENOSPC`); `TRUNC` empties the file. The fd starts at position 0.
//! - **Files**: `fd_read`/`fd_pread` read from the position (`pread`: from `offset`, the
//!   position unchanged), iovec by iovec, stopping at the first one not filled. `fd_write` /
//!   `fd_pwrite` (an fd not for writing: `EBADF`) write the iovecs' bytes at the position (an
//!   appending fd: at the end; `pwrite`: at `offset`, even when appending), zero-filling any
//!   gap, and advance the position (not for `pwrite`); the count goes to `out`.
//!   `fd_seek(fd, offset, whence, out)`: whence 0/1/2 from start/position/end, another whence
//!   or a negative result `EINVAL`, past the end allowed. `fd_tell`. `fd_filestat_set_size`
//!   and `fd_allocate(offset, len)` (grow to `offset + len` if longer; overflow `EINVAL`): a
//!   read-only file `EROFS`, an fd not for writing `EBADF`, new bytes are zeros and cost.
//!   `fd_advise`, `fd_sync`, `fd_datasync` succeed. On a directory all of these give `EBADF`
//!   except `fd_sync`/`fd_datasync` (succeed). `fd_read`/`fd_pread` on an fd not for reading
//!   give `EBADF`. `fd_fdstat_set_flags(fd, flags)` sets a file fd's fdflags (`flags & 0x1f`;
//!   `APPEND` obeyed from then on); on a directory `ENOTSUP`.
//! - **Times**: `fd_filestat_set_times(fd, atim, mtim, flags)` and
//!   `path_filestat_set_times(dirfd, _, path, len, atim, mtim, flags)`: flags `ATIM` (1),
//!   `ATIM_NOW` (2), `MTIM` (4), `MTIM_NOW` (8); both of a pair `EINVAL`; then a read-only
//!   node `EROFS`; then the times are set and ctime becomes now.
//! - **Directories**: `fd_readdir(fd, buf, len, cookie, out)` lists the entries (no `.` or
//!   `..`) in the order they were made, each keeping its place for its life (a rename onto an
//!   existing name keeps that name's place; a new name goes last). Entry `k` (counting every
//!   entry ever made in that directory from 0) is a 24-byte dirent (`d_next` = k + 1, `d_ino`,
//!   `d_namlen`, `d_type`, 3 zero bytes) followed by the name; the entries with `k ≥ cookie`
//!   are concatenated and the first `len` bytes written (the last entry may be cut).
//!   `path_create_directory(fd, path, len)`: name `.`/`..` or existing `EEXIST`, not writable
//!   `EROFS`/`ENOENT`, cost `ENOSPC`. `path_remove_directory`: name `.`/`..` `EINVAL`,
//!   missing `ENOENT`, a file `ENOTDIR`, read-only `EROFS`, not empty `ENOTEMPTY`.
//!   `path_unlink_file`: name `.`/`..` `EISDIR`, missing `ENOENT`, a directory `EISDIR`, a
//!   trailing `/` `ENOTDIR`, read-only `EROFS`.
//!   `path_rename(fd, old, old_len, new_fd, new, new_len)`: both fds, both paths' memory,
//!   both UTF-8, both splits; a name `.`/`..` `EINVAL`; old missing `ENOENT`; read-only node
//!   or directories `EROFS` (a removed target directory `ENOENT`); a file with a trailing `/`
//!   `ENOTDIR`; onto itself: nothing happens; a directory into itself or below `EINVAL`; onto
//!   an existing node: read-only `EROFS`, a directory onto a file `ENOTDIR`, onto a non-empty
//!   directory `ENOTEMPTY`, a file onto a directory `EISDIR`; then `ENOSPC` (the name's length
//!   changes the cost; a replaced node not open frees its own).
//! - **Symbolic links**: `path_symlink(target, len, fd, path, len)` (see [`Fs::symlink`] for
//!   its errnos; targets are relative) makes a link costing [`NODE_COST`] + name + target; its
//!   filestat has filetype 7 (`SYMBOLIC_LINK`) and the target's length as size, and so has its
//!   listing entry; `path_readlink(fd, path, len, buf, buf_len, out)` (the last component not
//!   followed) writes the first `buf_len` bytes of the target and their count, `EINVAL` for a
//!   node that is no link. `path_open` on a link not followed gives `ELOOP`; with `CREAT` an
//!   existing link is followed when the call follows links (a dangling one: `ENOENT`). Unlink
//!   and rename act on the link itself; links under `/out` are not outputs. `path_link` (hard
//!   links) gives `ENOTSUP` after its fd and memory checks.
//! - **`fd_close`** frees the number; a removed node's cost goes with its last fd.
//!   **`fd_renumber(from, to)`**: both above 2 and open: `to` is closed and gets `from`'s
//!   description (a preopen stays a preopen), `from` is freed (`from == to`: nothing); stdio
//!   and open: `ENOTSUP`; otherwise `EBADF`.

mod calls;

use super::{bytes_mut, errno, errno_of, iovecs, range, write_u32, write_u64};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where plain-named blobs appear, and the longest name of a directory entry, in bytes.
pub use runegrid_core::mounts::{MAX_NAME, MOUNT_DIR};
/// The writable root, preopened when the task has scratch space.
pub const ROOT_DIR: &str = "/";
/// Most fds open at once above stdio (the preopens included).
pub const MAX_OPEN: usize = 128;
/// What each node a task creates costs of its scratch space, besides its name and data.
pub const NODE_COST: u64 = 64;

const FILETYPE_DIRECTORY: u8 = 3;
const FILETYPE_REGULAR_FILE: u8 = 4;
const FILETYPE_SYMBOLIC_LINK: u8 = 7;

const LOOKUPFLAGS_SYMLINK_FOLLOW: i32 = 1;
/// Most symbolic links one lookup follows (`ELOOP` past it).
pub const MAX_SYMLINK_HOPS: u32 = 40;

const OFLAGS_CREAT: i32 = 1;
const OFLAGS_DIRECTORY: i32 = 2;
const OFLAGS_EXCL: i32 = 4;
const OFLAGS_TRUNC: i32 = 8;
const FDFLAGS_APPEND: i32 = 1;
/// `APPEND`, `DSYNC`, `NONBLOCK`, `RSYNC`, `SYNC`.
const FDFLAGS_ALL: i32 = 0x1f;

const FSTFLAGS_ATIM: i32 = 1;
const FSTFLAGS_ATIM_NOW: i32 = 2;
const FSTFLAGS_MTIM: i32 = 4;
const FSTFLAGS_MTIM_NOW: i32 = 8;

const RIGHTS_FD_DATASYNC: u64 = 1;
const RIGHTS_FD_READ: u64 = 1 << 1;
const RIGHTS_FD_SEEK: u64 = 1 << 2;
const RIGHTS_FD_FDSTAT_SET_FLAGS: u64 = 1 << 3;
const RIGHTS_FD_SYNC: u64 = 1 << 4;
const RIGHTS_FD_TELL: u64 = 1 << 5;
const RIGHTS_FD_WRITE: u64 = 1 << 6;
const RIGHTS_FD_ADVISE: u64 = 1 << 7;
const RIGHTS_FD_ALLOCATE: u64 = 1 << 8;
const RIGHTS_PATH_CREATE_DIRECTORY: u64 = 1 << 9;
const RIGHTS_PATH_CREATE_FILE: u64 = 1 << 10;
const RIGHTS_PATH_LINK_SOURCE: u64 = 1 << 11;
const RIGHTS_PATH_LINK_TARGET: u64 = 1 << 12;
const RIGHTS_PATH_OPEN: u64 = 1 << 13;
const RIGHTS_FD_READDIR: u64 = 1 << 14;
const RIGHTS_PATH_READLINK: u64 = 1 << 15;
const RIGHTS_PATH_RENAME_SOURCE: u64 = 1 << 16;
const RIGHTS_PATH_RENAME_TARGET: u64 = 1 << 17;
const RIGHTS_PATH_FILESTAT_GET: u64 = 1 << 18;
const RIGHTS_PATH_FILESTAT_SET_TIMES: u64 = 1 << 20;
const RIGHTS_FD_FILESTAT_GET: u64 = 1 << 21;
const RIGHTS_FD_FILESTAT_SET_SIZE: u64 = 1 << 22;
const RIGHTS_FD_FILESTAT_SET_TIMES: u64 = 1 << 23;
const RIGHTS_PATH_SYMLINK: u64 = 1 << 24;
const RIGHTS_PATH_REMOVE_DIRECTORY: u64 = 1 << 25;
const RIGHTS_PATH_UNLINK_FILE: u64 = 1 << 26;
const RIGHTS_POLL_FD_READWRITE: u64 = 1 << 27;

/// Rights of a file fd not open for writing.
pub const FILE_RIGHTS: u64 =
    RIGHTS_FD_READ | RIGHTS_FD_SEEK | RIGHTS_FD_TELL | RIGHTS_FD_ADVISE | RIGHTS_FD_FILESTAT_GET;
/// Rights of a file fd open for reading and writing (for writing only: without `FD_READ`).
pub const FILE_WRITE_RIGHTS: u64 = FILE_RIGHTS
    | RIGHTS_POLL_FD_READWRITE
    | RIGHTS_FD_FDSTAT_SET_FLAGS
    | RIGHTS_FD_DATASYNC
    | RIGHTS_FD_SYNC
    | RIGHTS_FD_WRITE
    | RIGHTS_FD_ALLOCATE
    | RIGHTS_FD_FILESTAT_SET_SIZE
    | RIGHTS_FD_FILESTAT_SET_TIMES;
/// Rights of a read-only directory (the blob mount).
pub const DIR_RIGHTS: u64 =
    RIGHTS_PATH_OPEN | RIGHTS_FD_READDIR | RIGHTS_PATH_FILESTAT_GET | RIGHTS_FD_FILESTAT_GET;
/// Rights of a writable directory (the link rights included, though links are not supported:
/// programs expect directories to have them).
pub const DIR_WRITE_RIGHTS: u64 = DIR_RIGHTS
    | RIGHTS_PATH_LINK_SOURCE
    | RIGHTS_PATH_LINK_TARGET
    | RIGHTS_PATH_READLINK
    | RIGHTS_PATH_SYMLINK
    | RIGHTS_PATH_CREATE_DIRECTORY
    | RIGHTS_PATH_CREATE_FILE
    | RIGHTS_PATH_RENAME_SOURCE
    | RIGHTS_PATH_RENAME_TARGET
    | RIGHTS_PATH_FILESTAT_SET_TIMES
    | RIGHTS_FD_FILESTAT_SET_TIMES
    | RIGHTS_PATH_REMOVE_DIRECTORY
    | RIGHTS_PATH_UNLINK_FILE;
const WRITE_RIGHTS: u64 = RIGHTS_FD_WRITE | RIGHTS_FD_ALLOCATE | RIGHTS_FD_FILESTAT_SET_SIZE;

/// A read-only file mounted into a run as `/blobs/<name>`, or at `name` when it is an absolute
/// path. Cloning is cheap: the bytes are shared between runs.
#[derive(Clone, PartialEq, Eq)]
pub struct Blob {
    /// A file name (not empty, not `.` or `..`, no `/` or NUL), or an absolute path of such
    /// names ([`runegrid_core::mounts::check_mounts`]).
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

/// Checks a run's blobs: valid, distinct names or paths, none inside another
/// ([`runegrid_core::mounts::check_mounts`]).
pub fn check_blobs(blobs: &[Blob]) -> Result<(), String> {
    runegrid_core::mounts::check_mounts(blobs.iter().map(|b| b.name.as_str()))
}

type Ino = u64;

/// A file's bytes: a mounted blob's (shared, read-only) or the task's own.
#[derive(Debug)]
enum Data {
    Blob(Arc<[u8]>),
    Owned(Vec<u8>),
}

impl Data {
    fn bytes(&self) -> &[u8] {
        match self {
            Data::Blob(b) => b,
            Data::Owned(v) => v,
        }
    }
}

/// A directory's entries, in the order they were made.
#[derive(Debug, Default)]
struct Dir {
    /// Entry number → (name, node).
    entries: BTreeMap<u64, (String, Ino)>,
    /// Name → entry number.
    names: BTreeMap<String, u64>,
    /// The number the next new entry gets.
    next: u64,
    /// The directory holding this one (the root's and a mount's own: itself).
    parent: Ino,
}

impl Dir {
    fn get(&self, name: &str) -> Option<Ino> {
        self.names.get(name).map(|k| self.entries[k].1)
    }

    /// Adds `name` last, or points an existing `name` (keeping its place) at `ino`.
    fn put(&mut self, name: &str, ino: Ino) {
        if let Some(k) = self.names.get(name) {
            self.entries.get_mut(k).expect("named entry").1 = ino;
        } else {
            self.names.insert(name.to_owned(), self.next);
            self.entries.insert(self.next, (name.to_owned(), ino));
            self.next += 1;
        }
    }

    fn remove(&mut self, name: &str) {
        if let Some(k) = self.names.remove(name) {
            self.entries.remove(&k);
        }
    }
}

#[derive(Debug)]
enum Kind {
    Dir(Dir),
    File(Data),
    /// A symbolic link and its target (relative, not empty).
    Symlink(String),
}

#[derive(Debug)]
struct Node {
    kind: Kind,
    /// Mounted: never changed.
    read_only: bool,
    /// Still in a directory (or a preopened root).
    linked: bool,
    /// Created by the task: counted in `used`.
    charged: bool,
    /// The length of its name, for its cost.
    name_len: u64,
    atim: u64,
    mtim: u64,
    ctim: u64,
}

impl Node {
    fn new(kind: Kind, now: u64) -> Node {
        Node {
            kind,
            read_only: false,
            linked: true,
            charged: false,
            name_len: 0,
            atim: now,
            mtim: now,
            ctim: now,
        }
    }

    fn dir(&self) -> Option<&Dir> {
        match &self.kind {
            Kind::Dir(d) => Some(d),
            Kind::File(_) | Kind::Symlink(_) => None,
        }
    }

    fn filetype(&self) -> u8 {
        match &self.kind {
            Kind::Dir(_) => FILETYPE_DIRECTORY,
            Kind::File(_) => FILETYPE_REGULAR_FILE,
            Kind::Symlink(_) => FILETYPE_SYMBOLIC_LINK,
        }
    }

    fn is_dir(&self) -> bool {
        self.dir().is_some()
    }

    fn len(&self) -> u64 {
        match &self.kind {
            Kind::Dir(_) => 0,
            Kind::File(d) => d.bytes().len() as u64,
            Kind::Symlink(t) => t.len() as u64,
        }
    }

    /// What it counts in `used`.
    fn cost(&self) -> u64 {
        if self.charged {
            NODE_COST + self.name_len + self.len()
        } else {
            0
        }
    }
}

/// An open file's state.
#[derive(Debug, Clone, Copy)]
struct FileFd {
    pos: u64,
    read: bool,
    write: bool,
    /// Its fdflags (`APPEND`, `DSYNC`, `NONBLOCK`, `RSYNC`, `SYNC`): reported, and `APPEND`
    /// obeyed.
    flags: u16,
}

impl FileFd {
    fn append(&self) -> bool {
        self.flags & FDFLAGS_APPEND as u16 != 0
    }
}

/// What an fd above 2 refers to.
#[derive(Debug, Clone, Copy)]
struct Desc {
    ino: Ino,
    /// The preopen's name, while this fd is one.
    preopen: Option<&'static str>,
    /// `None` for a directory.
    file: Option<FileFd>,
}

/// The task's file tree and the fds open on it.
#[derive(Debug, Default)]
pub(crate) struct Fs {
    nodes: BTreeMap<Ino, Node>,
    next_ino: Ino,
    /// `fds[i]` is fd `i + 3`.
    fds: Vec<Option<Desc>>,
    /// Whether anything was preopened (otherwise every function keeps its unmounted answer).
    active: bool,
    scratch_limit: u64,
    used: u64,
    /// The writable root, when there is scratch space.
    root: Option<Ino>,
}

/// How an fd argument resolved.
enum Fd {
    Stdio,
    Dir(Ino),
    File(Ino, FileFd),
}

/// Which side a time flag pair sets.
struct Times {
    atim: Option<u64>,
    mtim: Option<u64>,
}

impl Fs {
    /// The tree of a run mounting `blobs`, with `scratch_bytes` of writable space (0: none,
    /// and no writable root).
    pub(crate) fn new(blobs: Vec<Blob>, scratch_bytes: u64) -> Fs {
        let mut fs = Fs {
            next_ino: 1,
            scratch_limit: scratch_bytes,
            ..Fs::default()
        };
        let (blobs, paths): (Vec<Blob>, Vec<Blob>) =
            blobs.into_iter().partition(|b| !b.name.starts_with('/'));
        let mount = (!blobs.is_empty()).then(|| {
            let mount = fs.add(Kind::Dir(Dir::default()), 0);
            let mut dir = Dir {
                parent: mount,
                ..Dir::default()
            };
            for b in blobs {
                let ino = fs.add(Kind::File(Data::Blob(b.bytes)), 0);
                fs.nodes.get_mut(&ino).expect("blob").read_only = true;
                dir.put(&b.name, ino);
            }
            let node = fs.nodes.get_mut(&mount).expect("mount");
            node.kind = Kind::Dir(dir);
            node.read_only = true;
            fs.fds.push(Some(Desc {
                ino: mount,
                preopen: Some(MOUNT_DIR),
                file: None,
            }));
            mount
        });
        if scratch_bytes > 0 || !paths.is_empty() {
            let root = fs.add(Kind::Dir(Dir::default()), 0);
            let mut dir = Dir {
                parent: root,
                ..Dir::default()
            };
            if let Some(mount) = mount {
                dir.put("blobs", mount);
                fs.dir_mut(mount).parent = root;
            }
            for name in ["tmp", "out"] {
                let ino = fs.add(
                    Kind::Dir(Dir {
                        parent: root,
                        ..Dir::default()
                    }),
                    0,
                );
                dir.put(name, ino);
            }
            fs.nodes.get_mut(&root).expect("root").kind = Kind::Dir(dir);
            fs.root = Some(root);
            for b in paths {
                fs.mount_at(root, &b);
            }
            fs.fds.push(Some(Desc {
                ino: root,
                preopen: Some(ROOT_DIR),
                file: None,
            }));
        }
        fs.active = !fs.fds.is_empty();
        fs
    }

    /// The regular files under `/out` when the run ends (whatever `/out` names then), with
    /// their paths below it (components joined by `/`), in byte-wise path order, and the sum of
    /// their sizes.
    pub(crate) fn outputs(&self) -> (Vec<(String, Vec<u8>)>, u64) {
        fn walk(fs: &Fs, dir: &Dir, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
            for (name, ino) in dir.entries.values() {
                let path = format!("{prefix}{name}");
                match &fs.node(*ino).kind {
                    Kind::Dir(d) => walk(fs, d, &format!("{path}/"), out),
                    Kind::File(data) => out.push((path, data.bytes().to_vec())),
                    Kind::Symlink(_) => {}
                }
            }
        }
        let mut files = Vec::new();
        let out_dir = self
            .root
            .and_then(|r| self.dir_of(r).get("out"))
            .and_then(|o| self.node(o).dir());
        if let Some(dir) = out_dir {
            walk(self, dir, "", &mut files);
        }
        files.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        let total = files.iter().map(|(_, b)| b.len() as u64).sum();
        (files, total)
    }

    /// Whether anything is preopened (otherwise every function keeps its unmounted answer).
    pub(crate) fn mounted(&self) -> bool {
        self.active
    }

    /// Mounts `b` at its absolute path below `root`, making the directories on the way
    /// (writable, free, timestamps 0); the names were checked by [`check_blobs`].
    fn mount_at(&mut self, root: Ino, b: &Blob) {
        let mut dir = root;
        let parts: Vec<&str> = b.name[1..].split('/').collect();
        let (file, dirs) = parts.split_last().expect("a path has a name");
        for name in dirs {
            dir = match self.dir_of(dir).get(name) {
                Some(d) => d,
                None => {
                    let d = self.add(
                        Kind::Dir(Dir {
                            parent: dir,
                            ..Dir::default()
                        }),
                        0,
                    );
                    self.dir_mut(dir).put(name, d);
                    d
                }
            };
        }
        let ino = self.add(Kind::File(Data::Blob(b.bytes.clone())), 0);
        self.node_mut(ino).read_only = true;
        self.dir_mut(dir).put(file, ino);
    }

    fn add(&mut self, kind: Kind, now: u64) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, Node::new(kind, now));
        ino
    }

    fn node(&self, ino: Ino) -> &Node {
        &self.nodes[&ino]
    }

    fn node_mut(&mut self, ino: Ino) -> &mut Node {
        self.nodes.get_mut(&ino).expect("live node")
    }

    fn dir_of(&self, ino: Ino) -> &Dir {
        self.node(ino).dir().expect("a directory")
    }

    fn dir_mut(&mut self, ino: Ino) -> &mut Dir {
        match &mut self.node_mut(ino).kind {
            Kind::Dir(d) => d,
            Kind::File(_) | Kind::Symlink(_) => panic!("not a directory"),
        }
    }

    fn fd(&self, fd: i32) -> Result<Fd, i32> {
        if (0..=2).contains(&fd) {
            return Ok(Fd::Stdio);
        }
        match self.desc(fd) {
            None => Err(errno::BADF),
            Some(Desc {
                ino, file: None, ..
            }) => Ok(Fd::Dir(*ino)),
            Some(Desc {
                ino, file: Some(f), ..
            }) => Ok(Fd::File(*ino, *f)),
        }
    }

    fn desc(&self, fd: i32) -> Option<&Desc> {
        usize::try_from(fd)
            .ok()
            .and_then(|f| f.checked_sub(3))
            .and_then(|s| self.fds.get(s))
            .and_then(Option::as_ref)
    }

    fn file_fd_mut(&mut self, fd: i32) -> &mut FileFd {
        self.fds[fd as usize - 3]
            .as_mut()
            .and_then(|d| d.file.as_mut())
            .expect("an open file")
    }

    /// Whether `fd` is open above stdio.
    pub(crate) fn is_open(&self, fd: i32) -> bool {
        self.desc(fd).is_some()
    }

    /// The directory fd of `path_*`: `EBADF` if not open, `ENOTDIR` if not a directory.
    fn dir(&self, fd: i32) -> Result<Ino, i32> {
        match self.fd(fd)? {
            Fd::Dir(ino) => Ok(ino),
            Fd::Stdio | Fd::File(..) => Err(errno::NOTDIR),
        }
    }

    /// Resolves `path` from the directory `start` (see the module documentation); a symbolic
    /// link is followed where it is not the last component, and there when `follow`.
    fn lookup(&self, start: Ino, path: &str, follow: bool) -> Result<Ino, i32> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        if path.starts_with('/') {
            return Err(errno::NOTCAPABLE);
        }
        // The components left, last first: a followed link's target is pushed in front.
        let mut parts: Vec<&str> = path.split('/').rev().collect();
        let mut stack = vec![start];
        let mut hops = 0;
        while let Some(part) = parts.pop() {
            let cur = *stack.last().expect("start");
            let Some(dir) = self.node(cur).dir() else {
                return Err(errno::NOTDIR);
            };
            match part {
                "" | "." => {}
                ".." => {
                    if stack.len() == 1 {
                        return Err(errno::NOTCAPABLE);
                    }
                    stack.pop();
                }
                name if name.len() > MAX_NAME => return Err(errno::NAMETOOLONG),
                name => {
                    let child = dir.get(name).ok_or(errno::NOENT)?;
                    match &self.node(child).kind {
                        Kind::Symlink(target) if follow || !parts.is_empty() => {
                            hops += 1;
                            if hops > MAX_SYMLINK_HOPS {
                                return Err(errno::LOOP);
                            }
                            parts.extend(target.split('/').rev());
                        }
                        _ => stack.push(child),
                    }
                }
            }
        }
        Ok(*stack.last().expect("start"))
    }

    /// Splits `path` into the directory holding its last component, that name, and whether
    /// the path ended in `/`.
    fn parent<'p>(&self, start: Ino, path: &'p str) -> Result<(Ino, &'p str, bool), i32> {
        if path.is_empty() {
            return Err(errno::NOENT);
        }
        if path.starts_with('/') {
            return Err(errno::NOTCAPABLE);
        }
        let trimmed = path.trim_end_matches('/');
        let trailing = trimmed.len() < path.len();
        if trimmed.is_empty() {
            return Ok((start, ".", trailing));
        }
        let (dir, name) = match trimmed.rfind('/') {
            Some(i) => (&trimmed[..i], &trimmed[i + 1..]),
            None => ("", trimmed),
        };
        let dir = if dir.is_empty() {
            start
        } else {
            self.lookup(start, dir, true)?
        };
        if !self.node(dir).is_dir() {
            return Err(errno::NOTDIR);
        }
        if name.len() > MAX_NAME {
            return Err(errno::NAMETOOLONG);
        }
        Ok((dir, name, trailing))
    }

    /// `EROFS` for a read-only directory, `ENOENT` for a removed one.
    fn can_change(&self, dir: Ino) -> Result<(), i32> {
        let node = self.node(dir);
        if node.read_only {
            Err(errno::ROFS)
        } else if !node.linked {
            Err(errno::NOENT)
        } else {
            Ok(())
        }
    }

    /// `ENOSPC` unless `used - freed + more` stays within the limit.
    fn room(&self, more: u64, freed: u64) -> Result<(), i32> {
        if more > self.scratch_limit.saturating_sub(self.used - freed) {
            Err(errno::NOSPC)
        } else {
            Ok(())
        }
    }

    /// Whether some fd refers to `ino`.
    fn is_referenced(&self, ino: Ino) -> bool {
        self.fds.iter().flatten().any(|d| d.ino == ino)
    }

    /// Forgets a node that is neither in a directory nor open.
    fn release(&mut self, ino: Ino) {
        let node = self.node(ino);
        if !node.linked && !self.is_referenced(ino) {
            self.used -= node.cost();
            self.nodes.remove(&ino);
        }
    }

    /// Takes `name` out of `dir`, marking its node removed (and forgetting it unless open).
    fn unlink(&mut self, dir: Ino, name: &str, ino: Ino, now: u64) {
        self.dir_mut(dir).remove(name);
        self.node_mut(ino).linked = false;
        self.touch(dir, now);
        self.release(ino);
    }

    /// Sets mtime and ctime to now.
    fn touch(&mut self, ino: Ino, now: u64) {
        let n = self.node_mut(ino);
        n.mtim = now;
        n.ctim = now;
    }

    /// Creates `name` in `dir` (checked by the caller), charged to the scratch space.
    fn create(&mut self, dir: Ino, name: &str, kind: Kind, now: u64) -> Ino {
        let ino = self.add(kind, now);
        let node = self.node_mut(ino);
        node.charged = true;
        node.name_len = name.len() as u64;
        self.used += node.cost();
        self.dir_mut(dir).put(name, ino);
        self.touch(dir, now);
        ino
    }

    fn filestat(&self, ino: Ino) -> [u8; 64] {
        let node = self.node(ino);
        let mut stat = [0u8; 64];
        stat[8..16].copy_from_slice(&ino.to_le_bytes());
        stat[16] = node.filetype();
        stat[24..32].copy_from_slice(&u64::from(node.linked).to_le_bytes());
        stat[32..40].copy_from_slice(&node.len().to_le_bytes());
        stat[40..48].copy_from_slice(&node.atim.to_le_bytes());
        stat[48..56].copy_from_slice(&node.mtim.to_le_bytes());
        stat[56..64].copy_from_slice(&node.ctim.to_le_bytes());
        stat
    }

    fn path(mem: &[u8], ptr: i32, len: i32) -> Result<&str, i32> {
        let r = range(mem.len(), ptr, u64::from(len as u32))?;
        std::str::from_utf8(&mem[r]).map_err(|_| errno::ILSEQ)
    }

    /// Copies a path out of memory (`EFAULT` / `EILSEQ`).
    fn owned_path(mem: &[u8], ptr: i32, len: i32) -> Result<String, i32> {
        Self::path(mem, ptr, len).map(str::to_owned)
    }

    pub(crate) fn prestat_get(&self, mem: &mut [u8], fd: i32, out: i32) -> i32 {
        let Some(name) = self.desc(fd).and_then(|d| d.preopen) else {
            return errno::BADF;
        };
        let mut prestat = [0u8; 8];
        prestat[4..8].copy_from_slice(&(name.len() as u32).to_le_bytes());
        match bytes_mut(mem, out, 8) {
            Ok(b) => {
                b.copy_from_slice(&prestat);
                errno::SUCCESS
            }
            Err(e) => e,
        }
    }

    pub(crate) fn prestat_dir_name(&self, mem: &mut [u8], fd: i32, buf: i32, len: i32) -> i32 {
        let Some(name) = self.desc(fd).and_then(|d| d.preopen) else {
            return errno::BADF;
        };
        if let Err(e) = range(mem.len(), buf, u64::from(len as u32)) {
            return e;
        }
        if (len as u32 as usize) < name.len() {
            return errno::NAMETOOLONG;
        }
        errno_of(bytes_mut(mem, buf, name.len() as u64).map(|b| {
            b.copy_from_slice(name.as_bytes());
        }))
    }

    /// The lowest free fd slot, or `EMFILE`.
    fn free_slot(&self) -> Result<usize, i32> {
        match self.fds.iter().position(Option::is_none) {
            Some(s) => Ok(s),
            None if self.fds.len() < MAX_OPEN => Ok(self.fds.len()),
            None => Err(errno::MFILE),
        }
    }

    fn install(&mut self, slot: usize, desc: Desc) {
        if slot == self.fds.len() {
            self.fds.push(None);
        }
        self.fds[slot] = Some(desc);
    }
}
