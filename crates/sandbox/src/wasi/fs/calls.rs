//! The WASI functions on the file tree of [`super`]: `path_*` (open, stat, times, create,
//! remove, rename, links) and the fd calls (read, write, seek, sizes, listings, close,
//! renumber). Each checks its arguments in the order the parent module's documentation gives.

use super::*;

impl Fs {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_open(
        &mut self,
        mem: &mut [u8],
        dirfd: i32,
        dirflags: i32,
        path: i32,
        path_len: i32,
        oflags: i32,
        rights_base: i64,
        fdflags: i32,
        out: i32,
        now: u64,
    ) -> i32 {
        let start = match self.dir(dirfd) {
            Ok(s) => s,
            Err(e) => return e,
        };
        if let Err(e) = range(mem.len(), path, u64::from(path_len as u32))
            .and_then(|_| range(mem.len(), out, 4))
        {
            return e;
        }
        let path = match Self::owned_path(mem, path, path_len) {
            Ok(p) => p,
            Err(e) => return e,
        };
        let follow = dirflags & LOOKUPFLAGS_SYMLINK_FOLLOW != 0;
        match self.open(
            start,
            &path,
            follow,
            oflags,
            rights_base as u64,
            fdflags,
            now,
        ) {
            Ok(fd) => errno_of(write_u32(mem, out, fd)),
            Err(e) => e,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn open(
        &mut self,
        start: Ino,
        path: &str,
        follow: bool,
        oflags: i32,
        rights: u64,
        fdflags: i32,
        now: u64,
    ) -> Result<u32, i32> {
        let write = rights & WRITE_RIGHTS != 0 || fdflags & FDFLAGS_APPEND != 0;
        let trunc = oflags & OFLAGS_TRUNC != 0;
        let want_dir = oflags & OFLAGS_DIRECTORY != 0;
        // `Ok(node)` opens a node that exists; `Err((dir, name))` creates `name` in `dir`.
        let target: Result<Ino, (Ino, &str)> = if oflags & OFLAGS_CREAT != 0 {
            let (dir, name, trailing) = self.parent(start, path)?;
            let existing = match self.dir_of(dir).get(name) {
                _ if name == "." || name == ".." => Some(self.lookup(start, path, true)?),
                Some(l) if follow && matches!(self.node(l).kind, Kind::Symlink(_)) => {
                    Some(self.lookup(start, path, true)?)
                }
                other => other,
            };
            match existing {
                Some(_) if oflags & OFLAGS_EXCL != 0 => return Err(errno::EXIST),
                Some(ino) if trailing && !self.node(ino).is_dir() => return Err(errno::NOTDIR),
                Some(ino) => Ok(ino),
                None if trailing || want_dir => return Err(errno::ISDIR),
                None => {
                    self.can_change(dir)?;
                    Err((dir, name))
                }
            }
        } else {
            Ok(self.lookup(start, path, follow)?)
        };
        if let Ok(ino) = target {
            let node = self.node(ino);
            if matches!(node.kind, Kind::Symlink(_)) {
                return Err(errno::LOOP);
            }
            if want_dir && !node.is_dir() {
                return Err(errno::NOTDIR);
            }
            if node.is_dir() && (write || trunc) {
                return Err(errno::ISDIR);
            }
            if node.read_only && (write || trunc) {
                return Err(errno::ROFS);
            }
        }
        let slot = self.free_slot()?;
        let ino = match target {
            Ok(ino) => {
                if trunc {
                    let node = self.node_mut(ino);
                    let freed = node.len();
                    if let Kind::File(data) = &mut node.kind {
                        *data = Data::Owned(Vec::new());
                    }
                    if node.charged {
                        self.used -= freed;
                    }
                    self.touch(ino, now);
                }
                ino
            }
            Err((dir, name)) => {
                self.room(NODE_COST + name.len() as u64, 0)?;
                self.create(dir, name, Kind::File(Data::Owned(Vec::new())), now)
            }
        };
        let file = (!self.node(ino).is_dir()).then_some(FileFd {
            pos: 0,
            write,
            read: rights & RIGHTS_FD_READ != 0 || !write,
            flags: (fdflags & FDFLAGS_ALL) as u16,
        });
        self.install(
            slot,
            Desc {
                ino,
                preopen: None,
                file,
            },
        );
        Ok(slot as u32 + 3)
    }

    pub(crate) fn path_filestat_get(
        &mut self,
        mem: &mut [u8],
        dirfd: i32,
        flags: i32,
        path: i32,
        path_len: i32,
        out: i32,
    ) -> i32 {
        let start = match self.dir(dirfd) {
            Ok(s) => s,
            Err(e) => return e,
        };
        if let Err(e) = range(mem.len(), path, u64::from(path_len as u32))
            .and_then(|_| range(mem.len(), out, 64))
        {
            return e;
        }
        let follow = flags & LOOKUPFLAGS_SYMLINK_FOLLOW != 0;
        let node = match Self::path(mem, path, path_len).and_then(|p| self.lookup(start, p, follow))
        {
            Ok(n) => n,
            Err(e) => return e,
        };
        let stat = self.filestat(node);
        errno_of(bytes_mut(mem, out, 64).map(|b| b.copy_from_slice(&stat)))
    }

    /// Which times `flags` set, or `EINVAL`.
    fn times(atim: i64, mtim: i64, flags: i32, now: u64) -> Result<Times, i32> {
        let pick =
            |set: i32, set_now: i32, value: i64| match (flags & set != 0, flags & set_now != 0) {
                (true, true) => Err(errno::INVAL),
                (true, false) => Ok(Some(value as u64)),
                (false, true) => Ok(Some(now)),
                (false, false) => Ok(None),
            };
        Ok(Times {
            atim: pick(FSTFLAGS_ATIM, FSTFLAGS_ATIM_NOW, atim)?,
            mtim: pick(FSTFLAGS_MTIM, FSTFLAGS_MTIM_NOW, mtim)?,
        })
    }

    fn set_times(&mut self, ino: Ino, times: Times, now: u64) -> Result<(), i32> {
        let node = self.node_mut(ino);
        if node.read_only {
            return Err(errno::ROFS);
        }
        if let Some(a) = times.atim {
            node.atim = a;
        }
        if let Some(m) = times.mtim {
            node.mtim = m;
        }
        node.ctim = now;
        Ok(())
    }

    /// `fd_filestat_set_times` for fds above 2 (`None`: stdio).
    pub(crate) fn fd_set_times(
        &mut self,
        fd: i32,
        atim: i64,
        mtim: i64,
        flags: i32,
        now: u64,
    ) -> Option<i32> {
        let ino = match self.fd(fd) {
            Err(e) => return Some(e),
            Ok(Fd::Stdio) => return None,
            Ok(Fd::Dir(ino) | Fd::File(ino, _)) => ino,
        };
        Some(errno_of(
            Self::times(atim, mtim, flags, now).and_then(|t| self.set_times(ino, t, now)),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn path_set_times(
        &mut self,
        mem: &[u8],
        dirfd: i32,
        lookup_flags: i32,
        path: i32,
        path_len: i32,
        atim: i64,
        mtim: i64,
        flags: i32,
        now: u64,
    ) -> i32 {
        let start = match self.dir(dirfd) {
            Ok(s) => s,
            Err(e) => return e,
        };
        errno_of((|| {
            let path = Self::path(mem, path, path_len)?;
            let times = Self::times(atim, mtim, flags, now)?;
            let follow = lookup_flags & LOOKUPFLAGS_SYMLINK_FOLLOW != 0;
            let ino = self.lookup(start, path, follow)?;
            self.set_times(ino, times, now)
        })())
    }

    pub(crate) fn create_directory(
        &mut self,
        mem: &[u8],
        dirfd: i32,
        path: i32,
        path_len: i32,
        now: u64,
    ) -> i32 {
        let start = match self.dir(dirfd) {
            Ok(s) => s,
            Err(e) => return e,
        };
        errno_of((|| {
            let path = Self::path(mem, path, path_len)?;
            let (dir, name, _) = self.parent(start, path)?;
            if name == "." || name == ".." || self.dir_of(dir).get(name).is_some() {
                return Err(errno::EXIST);
            }
            self.can_change(dir)?;
            self.room(NODE_COST + name.len() as u64, 0)?;
            let name = name.to_owned();
            let kind = Kind::Dir(Dir {
                parent: dir,
                ..Dir::default()
            });
            self.create(dir, &name, kind, now);
            Ok(())
        })())
    }

    pub(crate) fn remove_directory(
        &mut self,
        mem: &[u8],
        dirfd: i32,
        path: i32,
        path_len: i32,
        now: u64,
    ) -> i32 {
        let start = match self.dir(dirfd) {
            Ok(s) => s,
            Err(e) => return e,
        };
        errno_of((|| {
            let path = Self::path(mem, path, path_len)?;
            let (dir, name, _) = self.parent(start, path)?;
            if name == "." || name == ".." {
                return Err(errno::INVAL);
            }
            let ino = self.dir_of(dir).get(name).ok_or(errno::NOENT)?;
            let node = self.node(ino);
            let Some(d) = node.dir() else {
                return Err(errno::NOTDIR);
            };
            if node.read_only || self.node(dir).read_only {
                return Err(errno::ROFS);
            }
            if !d.entries.is_empty() {
                return Err(errno::NOTEMPTY);
            }
            let name = name.to_owned();
            self.unlink(dir, &name, ino, now);
            Ok(())
        })())
    }

    pub(crate) fn unlink_file(
        &mut self,
        mem: &[u8],
        dirfd: i32,
        path: i32,
        path_len: i32,
        now: u64,
    ) -> i32 {
        let start = match self.dir(dirfd) {
            Ok(s) => s,
            Err(e) => return e,
        };
        errno_of((|| {
            let path = Self::path(mem, path, path_len)?;
            let (dir, name, trailing) = self.parent(start, path)?;
            if name == "." || name == ".." {
                return Err(errno::ISDIR);
            }
            let ino = self.dir_of(dir).get(name).ok_or(errno::NOENT)?;
            let node = self.node(ino);
            if node.is_dir() {
                return Err(errno::ISDIR);
            }
            if trailing {
                return Err(errno::NOTDIR);
            }
            if node.read_only || self.node(dir).read_only {
                return Err(errno::ROFS);
            }
            let name = name.to_owned();
            self.unlink(dir, &name, ino, now);
            Ok(())
        })())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn rename(
        &mut self,
        mem: &[u8],
        old_fd: i32,
        old_path: i32,
        old_len: i32,
        new_fd: i32,
        new_path: i32,
        new_len: i32,
        now: u64,
    ) -> i32 {
        let (old_start, new_start) = match self.dir(old_fd).and_then(|o| Ok((o, self.dir(new_fd)?)))
        {
            Ok(s) => s,
            Err(e) => return e,
        };
        if let Err(e) = range(mem.len(), old_path, u64::from(old_len as u32))
            .and_then(|_| range(mem.len(), new_path, u64::from(new_len as u32)))
        {
            return e;
        }
        errno_of((|| {
            let old = Self::path(mem, old_path, old_len)?;
            let new = Self::path(mem, new_path, new_len)?;
            let (odir, oname, otrailing) = self.parent(old_start, old)?;
            let (ndir, nname, ntrailing) = self.parent(new_start, new)?;
            if [oname, nname].iter().any(|n| *n == "." || *n == "..") {
                return Err(errno::INVAL);
            }
            let ino = self.dir_of(odir).get(oname).ok_or(errno::NOENT)?;
            let node = self.node(ino);
            if node.read_only || self.node(odir).read_only {
                return Err(errno::ROFS);
            }
            self.can_change(ndir)?;
            let is_dir = node.is_dir();
            if !is_dir && (otrailing || ntrailing) {
                return Err(errno::NOTDIR);
            }
            let existing = self.dir_of(ndir).get(nname);
            if existing == Some(ino) {
                return Ok(());
            }
            if is_dir {
                // Not into itself or below it.
                let mut at = ndir;
                loop {
                    if at == ino {
                        return Err(errno::INVAL);
                    }
                    let up = self.dir_of(at).parent;
                    if up == at {
                        break;
                    }
                    at = up;
                }
            }
            let mut freed = 0;
            if let Some(t) = existing {
                let target = self.node(t);
                if target.read_only {
                    return Err(errno::ROFS);
                }
                match (is_dir, target.dir()) {
                    (true, None) => return Err(errno::NOTDIR),
                    (true, Some(d)) if !d.entries.is_empty() => return Err(errno::NOTEMPTY),
                    (false, Some(_)) => return Err(errno::ISDIR),
                    _ => {}
                }
                if !self.is_referenced(t) {
                    freed = target.cost();
                }
            }
            let node = self.node(ino);
            let (more, less) = if node.charged {
                (nname.len() as u64, oname.len() as u64)
            } else {
                (0, 0)
            };
            self.room(more, freed + less)?;
            let (oname, nname) = (oname.to_owned(), nname.to_owned());
            if let Some(t) = existing {
                self.node_mut(t).linked = false;
            }
            self.dir_mut(odir).remove(&oname);
            self.dir_mut(ndir).put(&nname, ino);
            if let Some(t) = existing {
                self.release(t);
            }
            self.used = self.used + more - less;
            let node = self.node_mut(ino);
            node.name_len = nname.len() as u64;
            node.ctim = now;
            if is_dir {
                self.dir_mut(ino).parent = ndir;
            }
            self.touch(odir, now);
            self.touch(ndir, now);
            Ok(())
        })())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn readlink(
        &self,
        mem: &mut [u8],
        dirfd: i32,
        path: i32,
        path_len: i32,
        buf: i32,
        buf_len: i32,
        out: i32,
    ) -> i32 {
        let start = match self.dir(dirfd) {
            Ok(s) => s,
            Err(e) => return e,
        };
        errno_of((|| {
            range(mem.len(), path, u64::from(path_len as u32))?;
            range(mem.len(), buf, u64::from(buf_len as u32))?;
            range(mem.len(), out, 4)?;
            let path = Self::path(mem, path, path_len)?;
            let Kind::Symlink(target) = &self.node(self.lookup(start, path, false)?).kind else {
                return Err(errno::INVAL);
            };
            let n = target.len().min(buf_len as u32 as usize);
            mem[buf as u32 as usize..][..n].copy_from_slice(&target.as_bytes()[..n]);
            write_u32(mem, out, n as u32)
        })())
    }

    /// `path_symlink(target, target_len, dirfd, path, path_len)`: the fd, both paths' memory,
    /// both UTF-8, the split of `path`; an absolute or empty target `ENOTCAPABLE`/`ENOENT`; a
    /// name `.`/`..` or an existing one `EEXIST` (an existing file named with a trailing `/`
    /// `ENOTDIR`); a missing one with a trailing `/` `ENOENT`; then `EROFS`/`ENOENT` for the
    /// directory and `ENOSPC` ([`NODE_COST`] + name + target).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn symlink(
        &mut self,
        mem: &[u8],
        target: i32,
        target_len: i32,
        dirfd: i32,
        path: i32,
        path_len: i32,
        now: u64,
    ) -> i32 {
        let start = match self.dir(dirfd) {
            Ok(s) => s,
            Err(e) => return e,
        };
        errno_of((|| {
            range(mem.len(), target, u64::from(target_len as u32))?;
            range(mem.len(), path, u64::from(path_len as u32))?;
            let target = Self::path(mem, target, target_len)?;
            let path = Self::path(mem, path, path_len)?;
            if target.starts_with('/') {
                return Err(errno::NOTCAPABLE);
            }
            if target.is_empty() {
                return Err(errno::NOENT);
            }
            let (dir, name, trailing) = self.parent(start, path)?;
            if name == "." || name == ".." {
                return Err(errno::EXIST);
            }
            match self.dir_of(dir).get(name) {
                Some(n) if trailing && !self.node(n).is_dir() => return Err(errno::NOTDIR),
                Some(_) => return Err(errno::EXIST),
                None if trailing => return Err(errno::NOENT),
                None => {}
            }
            self.can_change(dir)?;
            self.room(NODE_COST + name.len() as u64 + target.len() as u64, 0)?;
            let (name, target) = (name.to_owned(), target.to_owned());
            self.create(dir, &name, Kind::Symlink(target), now);
            Ok(())
        })())
    }

    /// `path_link`: no hard links here.
    pub(crate) fn no_links(&self, mem: &[u8], fds: &[i32], paths: &[(i32, i32)]) -> i32 {
        for &fd in fds {
            if let Err(e) = self.dir(fd) {
                return e;
            }
        }
        for &(ptr, len) in paths {
            if let Err(e) = range(mem.len(), ptr, u64::from(len as u32)) {
                return e;
            }
        }
        errno::NOTSUP
    }

    /// `fd_fdstat_get` for fds above 2 (`None`: stdio).
    pub(crate) fn fdstat_get(&mut self, mem: &mut [u8], fd: i32, out: i32) -> Option<i32> {
        let (ty, flags, base, inheriting) = match self.fd(fd) {
            Err(e) => return Some(e),
            Ok(Fd::Stdio) => return None,
            Ok(Fd::Dir(ino)) if self.node(ino).read_only => {
                (FILETYPE_DIRECTORY, 0, DIR_RIGHTS, FILE_RIGHTS)
            }
            Ok(Fd::Dir(_)) => (
                FILETYPE_DIRECTORY,
                0,
                DIR_WRITE_RIGHTS,
                DIR_WRITE_RIGHTS | FILE_WRITE_RIGHTS,
            ),
            Ok(Fd::File(_, f)) => (
                FILETYPE_REGULAR_FILE,
                f.flags,
                match (f.read, f.write) {
                    (_, false) => FILE_RIGHTS,
                    (true, true) => FILE_WRITE_RIGHTS,
                    (false, true) => FILE_WRITE_RIGHTS & !RIGHTS_FD_READ,
                },
                0,
            ),
        };
        let mut stat = [0u8; 24];
        stat[0] = ty;
        stat[2..4].copy_from_slice(&flags.to_le_bytes());
        stat[8..16].copy_from_slice(&base.to_le_bytes());
        stat[16..24].copy_from_slice(&inheriting.to_le_bytes());
        Some(errno_of(
            bytes_mut(mem, out, 24).map(|b| b.copy_from_slice(&stat)),
        ))
    }

    /// `fd_filestat_get` for fds above 2 (`None`: stdio).
    pub(crate) fn filestat_get(&mut self, mem: &mut [u8], fd: i32, out: i32) -> Option<i32> {
        let ino = match self.fd(fd) {
            Err(e) => return Some(e),
            Ok(Fd::Stdio) => return None,
            Ok(Fd::Dir(ino) | Fd::File(ino, _)) => ino,
        };
        let stat = self.filestat(ino);
        Some(errno_of(
            bytes_mut(mem, out, 64).map(|b| b.copy_from_slice(&stat)),
        ))
    }

    /// The bytes left to read from an open file (`None`: not a file open here).
    pub(crate) fn left_to_read(&self, fd: i32) -> Option<u64> {
        match self.fd(fd) {
            Ok(Fd::File(ino, f)) => Some(self.node(ino).len().saturating_sub(f.pos)),
            _ => None,
        }
    }

    /// Whether `fd` is a file open for writing.
    pub(crate) fn is_writable(&self, fd: i32) -> bool {
        matches!(self.fd(fd), Ok(Fd::File(_, f)) if f.write)
    }

    /// The checks `fd_read`/`fd_write` and their positioned forms share, in order: the fd
    /// (`None`: stdio; a directory, or a file not open for this way, `EBADF`), the iovecs and
    /// `out` (4 bytes) in memory. Gives the file, its fd state and the iovecs' ranges.
    #[allow(clippy::type_complexity)]
    fn io_fd(
        &self,
        mem: &[u8],
        fd: i32,
        iovs: i32,
        count: i32,
        out: i32,
        allowed: impl Fn(&FileFd) -> bool,
    ) -> Option<Result<(Ino, FileFd, Vec<std::ops::Range<usize>>), i32>> {
        let (ino, f) = match self.fd(fd) {
            Err(e) => return Some(Err(e)),
            Ok(Fd::Stdio) => return None,
            Ok(Fd::File(ino, f)) if allowed(&f) => (ino, f),
            Ok(Fd::Dir(_) | Fd::File(..)) => return Some(Err(errno::BADF)),
        };
        Some(iovecs(mem, iovs, count).and_then(|v| range(mem.len(), out, 4).map(|_| (ino, f, v))))
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
        let (ino, f, iovs) = match self.io_fd(mem, fd, iovs, count, out, |f| f.read)? {
            Ok(x) => x,
            Err(e) => return Some(e),
        };
        let Kind::File(data) = &self.node(ino).kind else {
            unreachable!("a file fd names a file");
        };
        let bytes = data.bytes();
        let mut at = offset.unwrap_or(f.pos);
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
            self.file_fd_mut(fd).pos = at;
        }
        Some(errno_of(write_u32(mem, out, read as u32)))
    }

    /// `fd_write` (`offset: None`) and `fd_pwrite` for fds above 2 (`None`: stdio).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write(
        &mut self,
        mem: &mut [u8],
        fd: i32,
        iovs: i32,
        count: i32,
        offset: Option<u64>,
        out: i32,
        now: u64,
    ) -> Option<i32> {
        let (ino, f, iovs) = match self.io_fd(mem, fd, iovs, count, out, |f| f.write)? {
            Ok(x) => x,
            Err(e) => return Some(e),
        };
        let total: u64 = iovs.iter().map(|r| r.len() as u64).sum();
        let len = self.node(ino).len();
        let at = match offset {
            Some(o) => o,
            None if f.append() => len,
            None => f.pos,
        };
        // The file may grow to `limit_end` within the scratch space.
        let limit_end = len + (self.scratch_limit - self.used);
        let n = total.min(limit_end.saturating_sub(at));
        if total > 0 && n == 0 {
            return Some(errno::NOSPC);
        }
        if n > 0 {
            let Kind::File(Data::Owned(data)) = &mut self.node_mut(ino).kind else {
                unreachable!("a file open for writing is the task's own");
            };
            let end = (at + n) as usize;
            if data.len() < end {
                data.resize(end, 0);
            }
            let mut pos = at as usize;
            for r in &iovs {
                let take = (end - pos).min(r.len());
                data[pos..pos + take].copy_from_slice(&mem[r.start..r.start + take]);
                pos += take;
                if pos == end {
                    break;
                }
            }
            let grown = (end as u64).saturating_sub(len);
            self.used += grown;
            self.touch(ino, now);
        }
        if offset.is_none() {
            self.file_fd_mut(fd).pos = at + n;
        }
        Some(errno_of(write_u32(mem, out, n as u32)))
    }

    /// Sets a file's length to `size` (zeros when growing), for `fd_filestat_set_size` and
    /// `fd_allocate`: a read-only file `EROFS`, an fd not for writing `EBADF`, then `ENOSPC`.
    fn resize(&mut self, ino: Ino, f: FileFd, size: u64, now: u64) -> Result<(), i32> {
        if self.node(ino).read_only {
            return Err(errno::ROFS);
        }
        if !f.write {
            return Err(errno::BADF);
        }
        let len = self.node(ino).len();
        if size > len {
            self.room(size - len, 0)?;
        }
        let Kind::File(Data::Owned(data)) = &mut self.node_mut(ino).kind else {
            unreachable!("a writable file is the task's own");
        };
        data.resize(size as usize, 0);
        self.used = self.used + size - len;
        self.touch(ino, now);
        Ok(())
    }

    /// `fd_filestat_set_size` for fds above 2 (`None`: stdio).
    pub(crate) fn set_size(&mut self, fd: i32, size: u64, now: u64) -> Option<i32> {
        match self.fd(fd) {
            Err(e) => Some(e),
            Ok(Fd::Stdio) => None,
            Ok(Fd::Dir(_)) => Some(errno::BADF),
            Ok(Fd::File(ino, f)) => Some(errno_of(self.resize(ino, f, size, now))),
        }
    }

    /// `fd_allocate` for fds above 2 (`None`: stdio).
    pub(crate) fn allocate(&mut self, fd: i32, offset: u64, len: u64, now: u64) -> Option<i32> {
        match self.fd(fd) {
            Err(e) => Some(e),
            Ok(Fd::Stdio) => None,
            Ok(Fd::Dir(_)) => Some(errno::BADF),
            Ok(Fd::File(ino, f)) => Some(errno_of((|| {
                let end = offset.checked_add(len).ok_or(errno::INVAL)?;
                if self.node(ino).read_only {
                    return Err(errno::ROFS);
                }
                if !f.write {
                    return Err(errno::BADF);
                }
                if end > self.node(ino).len() {
                    self.resize(ino, f, end, now)?;
                }
                Ok(())
            })())),
        }
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
        let (ino, f) = match self.fd(fd) {
            Err(e) => return Some(e),
            Ok(Fd::Stdio) => return None,
            Ok(Fd::Dir(_)) => return Some(errno::BADF),
            Ok(Fd::File(ino, f)) => (ino, f),
        };
        if let Err(e) = range(mem.len(), out, 8) {
            return Some(e);
        }
        let base = match whence {
            0 => 0i128,
            1 => i128::from(f.pos),
            2 => i128::from(self.node(ino).len()),
            _ => return Some(errno::INVAL),
        };
        let Ok(new) = u64::try_from(base + i128::from(offset)) else {
            return Some(errno::INVAL);
        };
        self.file_fd_mut(fd).pos = new;
        Some(errno_of(write_u64(mem, out, new)))
    }

    /// `fd_tell` for fds above 2 (`None`: stdio).
    pub(crate) fn tell(&mut self, mem: &mut [u8], fd: i32, out: i32) -> Option<i32> {
        let pos = match self.fd(fd) {
            Err(e) => return Some(e),
            Ok(Fd::Stdio) => return None,
            Ok(Fd::Dir(_)) => return Some(errno::BADF),
            Ok(Fd::File(_, f)) => f.pos,
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
        let ino = match self.fd(fd) {
            Err(e) => return Some(e),
            Ok(Fd::Stdio) => return None,
            Ok(Fd::File(..)) => return Some(errno::NOTDIR),
            Ok(Fd::Dir(ino)) => ino,
        };
        let len = len as u32 as usize;
        if let Err(e) = range(mem.len(), buf, len as u64).and(range(mem.len(), out, 4)) {
            return Some(e);
        }
        let mut listing = Vec::new();
        for (k, (name, child)) in self.dir_of(ino).entries.range(cookie as u64..) {
            if listing.len() >= len {
                break;
            }
            let ty = self.node(*child).filetype();
            listing.extend_from_slice(&(k + 1).to_le_bytes());
            listing.extend_from_slice(&child.to_le_bytes());
            listing.extend_from_slice(&(name.len() as u32).to_le_bytes());
            listing.extend_from_slice(&[ty, 0, 0, 0]);
            listing.extend_from_slice(name.as_bytes());
        }
        let n = listing.len().min(len);
        let start = buf as u32 as usize;
        mem[start..start + n].copy_from_slice(&listing[..n]);
        Some(errno_of(write_u32(mem, out, n as u32)))
    }

    /// `fd_fdstat_set_flags`: a file takes the new fdflags (`APPEND` obeyed from then on);
    /// a directory `ENOTSUP`; not open `EBADF` (`None`: stdio).
    pub(crate) fn set_flags(&mut self, fd: i32, flags: i32) -> Option<i32> {
        match self.fd(fd) {
            Err(e) => Some(e),
            Ok(Fd::Stdio) => None,
            Ok(Fd::Dir(_)) => Some(errno::NOTSUP),
            Ok(Fd::File(..)) => {
                self.file_fd_mut(fd).flags = (flags & FDFLAGS_ALL) as u16;
                Some(errno::SUCCESS)
            }
        }
    }

    /// `fd_close` for fds above 2 (`None`: stdio).
    pub(crate) fn close(&mut self, fd: i32) -> Option<i32> {
        if (0..=2).contains(&fd) {
            return None;
        }
        let Some(desc) = self.desc(fd).copied() else {
            return Some(errno::BADF);
        };
        self.fds[fd as usize - 3] = None;
        while matches!(self.fds.last(), Some(None)) {
            self.fds.pop();
        }
        self.release(desc.ino);
        Some(errno::SUCCESS)
    }

    /// `fd_renumber`.
    pub(crate) fn renumber(&mut self, from: i32, to: i32) -> i32 {
        let open = |fd: i32| (0..=2).contains(&fd) || self.is_open(fd);
        if !open(from) || !open(to) {
            return errno::BADF;
        }
        if from < 3 || to < 3 {
            return errno::NOTSUP;
        }
        if from == to {
            return errno::SUCCESS;
        }
        let desc = self.fds[from as usize - 3].take();
        let replaced = std::mem::replace(&mut self.fds[to as usize - 3], desc);
        while matches!(self.fds.last(), Some(None)) {
            self.fds.pop();
        }
        if let Some(r) = replaced {
            self.release(r.ino);
        }
        errno::SUCCESS
    }

    /// The answer of a file operation with no memory arguments, for fds above 2: `on_file` for
    /// a file, `on_dir` for a directory, `EBADF` if not open (`None`: stdio).
    pub(crate) fn simple(&self, fd: i32, on_file: i32, on_dir: i32) -> Option<i32> {
        match self.fd(fd) {
            Err(e) => Some(e),
            Ok(Fd::Stdio) => None,
            Ok(Fd::Dir(_)) => Some(on_dir),
            Ok(Fd::File(..)) => Some(on_file),
        }
    }
}
