//! File operations on folders a sandboxed agent could have written (checkouts, session
//! repositories): everything is relative to an opened folder, one name at a time, refuses symbolic
//! links and never blocks on a FIFO, socket or device. It decides nothing about what to keep;
//! that is the `worktree` module's job.

use std::ffi::{OsStr, OsString};
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// How deep [`Dir::remove_tree`] (and the callers' walks) go before giving up: one open folder
/// per level, well below the usual limit of 1024 open files.
pub const MAX_DEPTH: usize = 400;

/// What a name in a folder is, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    Device,
}

impl Kind {
    fn of(ft: FileType) -> Kind {
        match ft {
            FileType::Directory => Kind::Dir,
            FileType::RegularFile => Kind::File,
            FileType::Symlink => Kind::Symlink,
            FileType::Fifo => Kind::Fifo,
            FileType::Socket => Kind::Socket,
            _ => Kind::Device,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::Dir => "folder",
            Kind::File => "file",
            Kind::Symlink => "symbolic link",
            Kind::Fifo => "FIFO",
            Kind::Socket => "socket",
            Kind::Device => "device node",
        }
    }

    /// FIFOs, sockets and devices: git cannot track them, and opening one can block forever.
    pub fn is_special(self) -> bool {
        matches!(self, Kind::Fifo | Kind::Socket | Kind::Device)
    }
}

/// The `lstat` facts sbx needs.
#[derive(Debug, Clone, Copy)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits, with set-user-id, set-group-id and sticky (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub dev: u64,
    pub ino: u64,
    pub size: u64,
}

// `st_mode`, `st_dev` and `st_size` have different integer types on Linux and macOS.
#[allow(clippy::unnecessary_cast)]
fn meta_of(st: &rustix::fs::Stat) -> Meta {
    let raw = st.st_mode as u32;
    Meta {
        kind: Kind::of(FileType::from_raw_mode(st.st_mode as _)),
        mode: raw & 0o7777,
        uid: st.st_uid as u32,
        dev: st.st_dev as u64,
        ino: st.st_ino as u64,
        size: u64::try_from(st.st_size).unwrap_or(0),
    }
}

/// Why an operation was refused (carried inside the `io::Error` it returns).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("`{0}` is not a plain name inside its folder")]
    BadName(String),
    #[error("it is a symbolic link")]
    Symlink,
    #[error("it is a {0}, not a regular file")]
    NotAFile(&'static str),
    #[error("it is a {0}, not a folder")]
    NotADir(&'static str),
    #[error("it is larger than {0} bytes")]
    TooLarge(u64),
    #[error("it changed while sbx was looking at it")]
    Changed,
    #[error("its folders are nested deeper than {0} levels")]
    TooDeep(usize),
}

fn refuse(r: Refused) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, r)
}

/// One name inside a folder: not empty, no `/`, not `.` or `..`. Everything here moves one
/// level at a time so that no path the agent wrote is ever resolved by the kernel in one go.
fn check_name(name: &OsStr) -> io::Result<()> {
    let b = name.as_bytes();
    if b.is_empty() || b == b"." || b == b".." || b.contains(&b'/') || b.contains(&0) {
        return Err(refuse(Refused::BadName(
            name.to_string_lossy().into_owned(),
        )));
    }
    Ok(())
}

const READ: OFlags = OFlags::RDONLY
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NONBLOCK)
    .union(OFlags::CLOEXEC)
    .union(OFlags::NOCTTY);

/// An opened folder. Operations name entries of this folder only.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
}

impl Dir {
    /// Opens `path`. Its last component must be a real folder (not a symbolic link); the
    /// components above it are sbx's own folders (the session folder and its parents).
    pub fn open(path: &Path) -> io::Result<Dir> {
        match (path.parent(), path.file_name()) {
            (Some(parent), Some(name)) if !parent.as_os_str().is_empty() => {
                let fd = rustix::fs::open(
                    parent,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                Dir { fd }.open_dir(name)
            }
            _ => {
                let fd = rustix::fs::open(path, READ | OFlags::DIRECTORY, Mode::empty())?;
                Ok(Dir { fd })
            }
        }
    }

    /// The folder `name` in this one, never through a symbolic link. A folder its owner made
    /// unreadable or read-only (as an agent with the user's uid can) gets its owner's `rwx` back.
    pub fn open_dir(&self, name: &OsStr) -> io::Result<Dir> {
        check_name(name)?;
        let fd = match rustix::fs::openat(&self.fd, name, READ | OFlags::DIRECTORY, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ACCESS) => {
                let m = self
                    .meta(name)?
                    .ok_or_else(|| io::Error::from(Errno::NOENT))?;
                if m.kind != Kind::Dir {
                    return Err(refuse(Refused::NotADir(m.kind.describe())));
                }
                self.set_mode(name, m.mode | 0o700)?;
                rustix::fs::openat(&self.fd, name, READ | OFlags::DIRECTORY, Mode::empty())?
            }
            Err(Errno::LOOP | Errno::NOTDIR | Errno::MLINK) => {
                let kind = self.meta(name)?.map(|m| m.kind);
                return Err(match kind {
                    Some(Kind::Symlink) => refuse(Refused::Symlink),
                    Some(k) => refuse(Refused::NotADir(k.describe())),
                    None => io::Error::from(Errno::NOENT),
                });
            }
            Err(e) => return Err(e.into()),
        };
        let dir = Dir { fd };
        let m = dir.self_meta()?;
        if m.kind != Kind::Dir {
            return Err(refuse(Refused::NotADir(m.kind.describe())));
        }
        if m.mode & 0o700 != 0o700 {
            // Needed to list, enter and change it; fails harmlessly on a folder of another user.
            let _ = rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode((m.mode | 0o700) as _));
        }
        Ok(dir)
    }

    /// `lstat` of `name`; `None` when it does not exist.
    pub fn meta(&self, name: &OsStr) -> io::Result<Option<Meta>> {
        check_name(name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(meta_of(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// What `name` leads to when followed, found with `stat` (which never opens it).
    pub fn target_kind(&self, name: &OsStr) -> io::Result<Option<Kind>> {
        check_name(name)?;
        match rustix::fs::statat(&self.fd, name, AtFlags::empty()) {
            Ok(st) => Ok(Some(meta_of(&st).kind)),
            Err(Errno::NOENT | Errno::LOOP | Errno::NOTDIR | Errno::ACCESS) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub fn self_meta(&self) -> io::Result<Meta> {
        Ok(meta_of(&rustix::fs::fstat(&self.fd)?))
    }

    /// The names in this folder (without `.` and `..`), in no particular order.
    pub fn names(&self) -> io::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd)? {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                out.push(OsStr::from_bytes(name).to_owned());
            }
        }
        Ok(out)
    }

    /// The contents of the regular file `name`, at most `cap` bytes. Refuses symbolic links,
    /// FIFOs, sockets and devices (opened non-blocking, checked before any read).
    pub fn read_file(&self, name: &OsStr, cap: u64) -> io::Result<Vec<u8>> {
        check_name(name)?;
        let fd = match rustix::fs::openat(&self.fd, name, READ, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::MLINK) => return Err(refuse(Refused::Symlink)),
            Err(Errno::ACCESS) => {
                let m = self
                    .meta(name)?
                    .ok_or_else(|| io::Error::from(Errno::NOENT))?;
                if m.kind != Kind::File {
                    return Err(refuse(Refused::NotAFile(m.kind.describe())));
                }
                self.set_mode(name, m.mode | 0o400)?;
                rustix::fs::openat(&self.fd, name, READ, Mode::empty())?
            }
            Err(e) => return Err(e.into()),
        };
        let m = meta_of(&rustix::fs::fstat(&fd)?);
        if m.kind != Kind::File {
            return Err(refuse(Refused::NotAFile(m.kind.describe())));
        }
        if m.size > cap {
            return Err(refuse(Refused::TooLarge(cap)));
        }
        let mut out = Vec::new();
        std::fs::File::from(fd)
            .take(cap.saturating_add(1))
            .read_to_end(&mut out)?;
        if out.len() as u64 > cap {
            return Err(refuse(Refused::TooLarge(cap)));
        }
        Ok(out)
    }

    /// Replaces `name` with a file holding `bytes`: written under a fresh name made with
    /// `O_CREAT|O_EXCL|O_NOFOLLOW`, then renamed over `name`, which replaces a planted symbolic
    /// link instead of writing through it.
    pub fn write_file(&self, name: &OsStr, bytes: &[u8], mode: u32) -> io::Result<()> {
        check_name(name)?;
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let mut attempt = 0u32;
        let (tmp, fd) = loop {
            // Unique enough; `O_EXCL` makes a clash (or a name planted in advance) a retry.
            let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let tmp = OsString::from(format!(".sbx-tmp-{}-{n}-{nanos}", std::process::id()));
            match rustix::fs::openat(
                &self.fd,
                &tmp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode as _),
            ) {
                Ok(fd) => break (tmp, fd),
                Err(Errno::EXIST) if attempt < 16 => attempt += 1,
                Err(e) => return Err(e.into()),
            }
        };
        let written = std::fs::File::from(fd).write_all(bytes).and_then(|()| {
            rustix::fs::renameat(&self.fd, &tmp, &self.fd, name).map_err(io::Error::from)
        });
        if written.is_err() {
            let _ = rustix::fs::unlinkat(&self.fd, &tmp, AtFlags::empty());
        }
        written
    }

    /// Makes the folder `name` (which must not exist) and opens it.
    pub fn create_dir(&self, name: &OsStr, mode: u32) -> io::Result<Dir> {
        check_name(name)?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode as _))?;
        self.open_dir(name)
    }

    /// Removes the non-folder `name` (a file, a symbolic link itself, a FIFO...).
    pub fn remove(&self, name: &OsStr) -> io::Result<()> {
        check_name(name)?;
        Ok(rustix::fs::unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// Removes `name` and, when it is a folder, everything in it, without following any
    /// symbolic link, restoring the owner's permissions where the agent took them away. Gone
    /// already is success. Any depth: a folder [`MAX_DEPTH`] levels down is first moved up
    /// into this folder (under a temporary name) and removed from there, so neither the open
    /// folders nor the recursion grow with the depth the agent chose.
    pub fn remove_tree(&self, name: &OsStr) -> io::Result<()> {
        let mut todo = vec![name.to_owned()];
        let mut hoisted = 0u64;
        while let Some(n) = todo.pop() {
            self.remove_tree_at(self, &n, 0, &mut todo, &mut hoisted)?;
        }
        Ok(())
    }

    fn remove_tree_at(
        &self,
        top: &Dir,
        name: &OsStr,
        depth: usize,
        todo: &mut Vec<OsString>,
        hoisted: &mut u64,
    ) -> io::Result<()> {
        let Some(m) = self.meta(name)? else {
            return Ok(());
        };
        if m.kind != Kind::Dir {
            return match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        if depth >= MAX_DEPTH {
            *hoisted += 1;
            let up = OsString::from(format!(".sbx-removing-{}-{hoisted}", std::process::id()));
            self.rename(name, top, &up)?;
            todo.push(up);
            return Ok(());
        }
        let dir = self.open_dir(name)?;
        for child in dir.names()? {
            dir.remove_tree_at(top, &child, depth + 1, todo, hoisted)?;
        }
        drop(dir);
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Renames `from` (in this folder) to `to` in `dest`, replacing a non-folder `to`.
    pub fn rename(&self, from: &OsStr, dest: &Dir, to: &OsStr) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        Ok(rustix::fs::renameat(&self.fd, from, &dest.fd, to)?)
    }

    /// A hard link `to` in `dest` to the regular file `from`. `linkat` without
    /// `AT_SYMLINK_FOLLOW` links a symbolic link itself, never its target; the result is checked
    /// to be a regular file anyway.
    pub fn hard_link(&self, from: &OsStr, dest: &Dir, to: &OsStr) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        rustix::fs::linkat(&self.fd, from, &dest.fd, to, AtFlags::empty())?;
        match dest.meta(to)? {
            Some(m) if m.kind == Kind::File => Ok(()),
            _ => {
                let _ = dest.remove(to);
                Err(refuse(Refused::Changed))
            }
        }
    }

    /// Copies the regular file `from` to a new file `to` in `dest` (never through a symbolic
    /// link, never opening a FIFO or device, whatever its size).
    pub fn copy_file(&self, from: &OsStr, dest: &Dir, to: &OsStr, mode: u32) -> io::Result<()> {
        check_name(from)?;
        check_name(to)?;
        let src = match rustix::fs::openat(&self.fd, from, READ, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::MLINK) => return Err(refuse(Refused::Symlink)),
            Err(e) => return Err(e.into()),
        };
        let m = meta_of(&rustix::fs::fstat(&src)?);
        if m.kind != Kind::File {
            return Err(refuse(Refused::NotAFile(m.kind.describe())));
        }
        let dst = rustix::fs::openat(
            &dest.fd,
            to,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode as _),
        )?;
        let copied = io::copy(&mut std::fs::File::from(src), &mut std::fs::File::from(dst));
        if copied.is_err() {
            let _ = dest.remove(to);
        }
        copied.map(|_| ())
    }

    /// `lchown`: changes the owner of `name` itself, never of what a symbolic link points at.
    pub fn chown(&self, name: &OsStr, uid: u32, gid: u32) -> io::Result<()> {
        check_name(name)?;
        let (u, g) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        Ok(rustix::fs::chownat(
            &self.fd,
            name,
            Some(u),
            Some(g),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// `fchown` of this folder.
    pub fn chown_self(&self, uid: u32, gid: u32) -> io::Result<()> {
        let (u, g) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(gid),
        );
        Ok(rustix::fs::fchown(&self.fd, Some(u), Some(g))?)
    }

    /// `chmod` of `name` itself; refuses a symbolic link. Works on files and folders their owner
    /// cannot open any more (mode 000).
    pub fn set_mode(&self, name: &OsStr, mode: u32) -> io::Result<()> {
        check_name(name)?;
        set_mode_nofollow(&self.fd, name, mode)
    }
}

/// Linux has no `lchmod`: open the entry with `O_PATH|O_NOFOLLOW` (which needs no permission on
/// it), check it is not a symbolic link, and change the mode of exactly that inode through its
/// `/proc/self/fd` entry (what glibc's `fchmodat(AT_SYMLINK_NOFOLLOW)` does).
#[cfg(target_os = "linux")]
fn set_mode_nofollow(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    use std::os::fd::{AsFd, AsRawFd};
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let m = meta_of(&rustix::fs::fstat(&fd)?);
    if m.kind == Kind::Symlink {
        return Err(refuse(Refused::Symlink));
    }
    let proc = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    match rustix::fs::chmod(proc.as_str(), Mode::from_raw_mode(mode as _)) {
        Ok(()) => Ok(()),
        // No /proc (an unusual container): the entry was just seen not to be a symbolic link,
        // and nothing else writes this folder any more (the agent is gone).
        Err(Errno::NOENT) => Ok(rustix::fs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(mode as _),
            AtFlags::empty(),
        )?),
        Err(e) => Err(e.into()),
    }
}

#[cfg(not(target_os = "linux"))]
fn set_mode_nofollow(dir: &OwnedFd, name: &OsStr, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::chmodat(
        dir,
        name,
        Mode::from_raw_mode(mode as _),
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Gives the tree at `path` to `uid:gid`, never following a symbolic link (for trees sbx made
/// and hands to the agent's ids before the agent runs).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    fn below(dir: &Dir, uid: u32, gid: u32) -> io::Result<()> {
        for name in dir.names()? {
            dir.chown(&name, uid, gid)?;
            if dir.meta(&name)?.is_some_and(|m| m.kind == Kind::Dir) {
                below(&dir.open_dir(&name)?, uid, gid)?;
            }
        }
        Ok(())
    }
    let dir = Dir::open(path)?;
    dir.chown_self(uid, gid)?;
    below(&dir, uid, gid)
}

/// The refusal inside an error from this module, if that is what it is.
pub fn refusal(e: &io::Error) -> Option<&Refused> {
    e.get_ref().and_then(|r| r.downcast_ref::<Refused>())
}

/// Makes a FIFO at `path`, for tests (rustix has no `mkfifoat` on macOS).
#[cfg(test)]
pub(crate) fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(
        r,
        0,
        "mkfifo {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn os(s: &str) -> &OsStr {
        OsStr::new(s)
    }

    #[test]
    fn reads_refuse_links_and_special_files_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("f"), "hello").unwrap();
        std::fs::write(p.join("outside"), "secret").unwrap();
        std::os::unix::fs::symlink(p.join("outside"), p.join("link")).unwrap();
        mkfifo(&p.join("fifo"));
        let dir = Dir::open(p).unwrap();
        assert_eq!(dir.read_file(os("f"), 100).unwrap(), b"hello");
        let e = dir.read_file(os("link"), 100).unwrap_err();
        assert!(matches!(refusal(&e), Some(Refused::Symlink)), "{e}");
        // Would block forever in a plain open().
        let e = dir.read_file(os("fifo"), 100).unwrap_err();
        assert!(
            matches!(refusal(&e), Some(Refused::NotAFile("FIFO"))),
            "{e}"
        );
        let e = dir.read_file(os("f"), 3).unwrap_err();
        assert!(matches!(refusal(&e), Some(Refused::TooLarge(3))), "{e}");
        assert!(dir.read_file(os("../f"), 100).is_err());
        assert_eq!(dir.meta(os("fifo")).unwrap().unwrap().kind, Kind::Fifo);
        assert_eq!(dir.target_kind(os("link")).unwrap(), Some(Kind::File));
        let e = dir.open_dir(os("link")).unwrap_err();
        assert!(matches!(refusal(&e), Some(Refused::Symlink)), "{e}");
    }

    #[test]
    fn writes_replace_a_planted_link_instead_of_following_it() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("victim"), "untouched").unwrap();
        std::os::unix::fs::symlink(p.join("victim"), p.join("alternates")).unwrap();
        let dir = Dir::open(p).unwrap();
        dir.write_file(os("alternates"), b"/objects\n", 0o644)
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(p.join("victim")).unwrap(),
            "untouched"
        );
        assert_eq!(
            std::fs::read_to_string(p.join("alternates")).unwrap(),
            "/objects\n"
        );
        assert!(!p.join("alternates").is_symlink());
        // No temporary file is left behind.
        assert_eq!(dir.names().unwrap().len(), 2);
    }

    #[test]
    fn copies_and_links_are_of_regular_files_only() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir(p.join("to")).unwrap();
        std::fs::write(p.join("f"), "data").unwrap();
        std::os::unix::fs::symlink(p.join("f"), p.join("link")).unwrap();
        mkfifo(&p.join("fifo"));
        let dir = Dir::open(p).unwrap();
        let to = dir.open_dir(os("to")).unwrap();
        dir.copy_file(os("f"), &to, os("c"), 0o444).unwrap();
        assert_eq!(std::fs::read(p.join("to/c")).unwrap(), b"data");
        assert!(dir.copy_file(os("fifo"), &to, os("x"), 0o444).is_err());
        assert!(dir.copy_file(os("link"), &to, os("y"), 0o444).is_err());
        dir.hard_link(os("f"), &to, os("h")).unwrap();
        // A link of a symbolic link is a symbolic link: refused and undone.
        assert!(dir.hard_link(os("link"), &to, os("l")).is_err());
        let mut names = to.names().unwrap();
        names.sort();
        assert_eq!(names, [os("c"), os("h")]);
    }

    #[test]
    fn remove_tree_removes_any_depth() {
        let d = tempfile::tempdir().unwrap();
        // Made relative to the folder: the path is longer than the kernel takes at once.
        let dir = Dir::open(d.path()).unwrap();
        let mut at = dir.create_dir(os("t"), 0o755).unwrap();
        for _ in 0..(MAX_DEPTH * 3 + 7) {
            at = at.create_dir(os("d"), 0o755).unwrap();
        }
        at.write_file(os("f"), b"x", 0o644).unwrap();
        at.set_mode(os("f"), 0).unwrap();
        drop(at);
        dir.remove_tree(os("t")).unwrap();
        assert_eq!(dir.names().unwrap(), Vec::<OsString>::new());
    }

    #[test]
    fn remove_tree_stays_inside_and_restores_permissions() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        let keep = p.join("keep");
        std::fs::create_dir(&keep).unwrap();
        std::fs::write(keep.join("precious"), "x").unwrap();
        let t = p.join("t");
        std::fs::create_dir_all(t.join("a/b")).unwrap();
        std::fs::write(t.join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink(&keep, t.join("a/link")).unwrap();
        mkfifo(&t.join("a/fifo"));
        // What an agent with the user's uid can do to slow the cleanup down.
        std::fs::set_permissions(t.join("a/b"), std::fs::Permissions::from_mode(0o000)).unwrap();
        std::fs::set_permissions(t.join("a"), std::fs::Permissions::from_mode(0o500)).unwrap();
        let dir = Dir::open(p).unwrap();
        dir.remove_tree(os("t")).unwrap();
        assert!(!t.exists());
        assert!(keep.join("precious").exists());
        dir.remove_tree(os("t")).unwrap();
    }

    #[test]
    fn set_mode_reaches_unreadable_entries_and_refuses_links() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::write(p.join("f"), "x").unwrap();
        std::fs::set_permissions(p.join("f"), std::fs::Permissions::from_mode(0o000)).unwrap();
        std::os::unix::fs::symlink(p.join("f"), p.join("l")).unwrap();
        let dir = Dir::open(p).unwrap();
        let e = dir.set_mode(os("l"), 0o777).unwrap_err();
        assert!(matches!(refusal(&e), Some(Refused::Symlink)), "{e}");
        assert_eq!(dir.meta(os("f")).unwrap().unwrap().mode, 0o000);
        assert_eq!(dir.read_file(os("f"), 10).unwrap(), b"x");
        dir.set_mode(os("f"), 0o640).unwrap();
        assert_eq!(dir.meta(os("f")).unwrap().unwrap().mode, 0o640);
    }
}
