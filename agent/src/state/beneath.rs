//! Paths inside an app's roots — a release, `shared/`, `backups/` — opened by the agent
//! (root) without ever following a link. Release content comes from whoever can push to
//! the repository, and `shared/` and `backups/` are writable by the app's user: any of
//! them may hold a symlink (or a hard link to a file elsewhere) planted to make root
//! read, write, chown or remove something outside the app.
//!
//! A [`Dir`] is an open directory; every path given to it is relative, and resolved
//! beneath it with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or, where the kernel
//! lacks `openat2`, one `openat(O_NOFOLLOW)` per component). Operations on the last
//! component use the `*at` calls with `AT_SYMLINK_NOFOLLOW`. A link where the agent must
//! go is an error naming the path relative to its root, found before anything changes;
//! files are written as a new file (`O_EXCL|O_NOFOLLOW`) renamed over the old, so a hard
//! link to an outside file is replaced, never written through.

use std::{
    ffi::{OsStr, OsString},
    fs::File,
    io::{self, Read as _, Write as _},
    os::{
        fd::{AsFd, OwnedFd},
        unix::ffi::OsStrExt as _,
    },
    path::{Component, Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use nix::{
    errno::Errno,
    fcntl::{AtFlags, OFlag},
    sys::stat::{FileStat, Mode, SFlag},
    unistd::{Gid, Uid, UnlinkatFlags},
};

/// How deep [`Dir::remove`], [`Dir::chown_tree`] and [`Dir::tree_size`] descend (each
/// level holds one open directory).
const MAX_DEPTH: usize = 128;

/// Which of an app's roots a [`Dir`] is in: how its paths are named in errors, and what
/// the fix is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Root {
    /// A release: its content comes from the repository.
    Release,
    /// `deploy_to/shared`: writable by the app's user.
    Shared,
    /// `deploy_to/backups`: writable by the app's user.
    Backups,
    /// `deploy_to/releases`.
    Releases,
    /// A directory named by the agent's config (e.g. `deploy_to`).
    Trusted(PathBuf),
}

impl Root {
    fn name(&self, rel: &Path) -> String {
        let shown = rel.display();
        match self {
            Root::Release if rel.as_os_str().is_empty() => "the release".into(),
            Root::Release => format!("`{shown}` in the release"),
            Root::Shared => format!("`{}`", Path::new("shared").join(rel).display()),
            Root::Backups => format!("`{}`", Path::new("backups").join(rel).display()),
            Root::Releases => format!("`{}`", Path::new("releases").join(rel).display()),
            Root::Trusted(dir) => format!("`{}`", dir.join(rel).display()),
        }
    }

    fn fix(&self) -> &'static str {
        match self {
            Root::Release => {
                "release content is untrusted: commit a regular file or directory there instead"
            }
            Root::Shared | Root::Backups => {
                "the app's user can plant links there; replace it with a regular file or directory"
            }
            Root::Releases | Root::Trusted(_) => {
                "replace it with a regular directory (mount a volume there if it must live elsewhere)"
            }
        }
    }
}

/// Why a path beneath a root cannot be used. Never says where a link points, and never
/// quotes a file's content.
#[derive(Debug, thiserror::Error)]
pub enum BeneathError {
    #[error(
        "{name} is a symbolic link; hoist runs as root and does not follow links there ({fix})"
    )]
    Link { name: String, fix: &'static str },
    #[error(
        "{name} has {links} hard links (it may be a file from outside the app); hoist runs as root and does not read or write it: replace it with a copy"
    )]
    HardLink { name: String, links: u64 },
    #[error("{name} is not a directory")]
    NotDir { name: String },
    #[error("{name} is not a regular file")]
    NotFile { name: String },
    #[error("{name} already exists; hoist creates it itself (remove it)")]
    Exists { name: String },
    #[error("{name} is larger than {max} bytes")]
    TooLarge { name: String, max: u64 },
    #[error("{path:?} is not a relative path without `..`")]
    BadPath { path: PathBuf },
    #[error("cannot {op} {name}: {source}")]
    Io {
        op: &'static str,
        name: String,
        source: io::Error,
    },
}

impl BeneathError {
    /// Whether the error is "it does not exist".
    pub fn not_found(&self) -> bool {
        matches!(self, BeneathError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

type Result<T, E = BeneathError> = std::result::Result<T, E>;

/// What is at a path, not following a link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
    Other,
}

/// `lstat` of a path beneath a [`Dir`].
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    pub kind: Kind,
    pub len: u64,
    pub links: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Device and inode: which file it is (a log rotated under its name is another).
    pub dev: u64,
    pub ino: u64,
    /// Last modification, seconds since the epoch.
    pub mtime: i64,
}

impl From<FileStat> for Stat {
    fn from(st: FileStat) -> Stat {
        let kind = match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Link,
            _ => Kind::Other,
        };
        Stat {
            kind,
            len: st.st_size as u64,
            links: st.st_nlink,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            dev: st.st_dev,
            ino: st.st_ino,
            mtime: st.st_mtime,
        }
    }
}

/// An open directory of an app's roots; see the module docs.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    root: Root,
    /// This directory's path relative to its root (for error messages).
    prefix: PathBuf,
}

#[cfg(test)]
thread_local! {
    /// Tests force the per-component walk, as on kernels without `openat2`.
    static WALK_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

impl Dir {
    /// Opens a directory the agent's config names (its path is trusted and followed as
    /// written); paths beneath it are not.
    pub fn open_trusted(path: &Path) -> Result<Dir> {
        let fd =
            nix::fcntl::open(path, dir_flags(), Mode::empty()).map_err(|e| BeneathError::Io {
                op: "open",
                name: format!("`{}`", path.display()),
                source: e.into(),
            })?;
        Ok(Dir {
            fd,
            root: Root::Trusted(path.to_path_buf()),
            prefix: PathBuf::new(),
        })
    }

    /// The same directory, its paths named as in `root` (e.g. a release opened by path).
    pub fn rooted(mut self, root: Root) -> Dir {
        self.root = root;
        self.prefix = PathBuf::new();
        self
    }

    /// Opens the directory at `rel` as a root of its own (e.g. `shared` beneath
    /// `deploy_to`): paths beneath it are named relative to it.
    pub fn open_root(&self, rel: &str, root: Root) -> Result<Dir> {
        let mut dir = self.open_dir(rel)?;
        dir.root = root;
        dir.prefix = PathBuf::new();
        Ok(dir)
    }

    /// Opens the directory at `rel`.
    pub fn open_dir(&self, rel: &str) -> Result<Dir> {
        let fd = self.resolve(rel, dir_flags(), Mode::empty(), "open")?;
        Ok(Dir {
            fd,
            root: self.root.clone(),
            prefix: self.prefix.join(rel),
        })
    }

    /// How `rel` is named in errors.
    pub fn name(&self, rel: &str) -> String {
        self.root.name(&self.prefix.join(rel))
    }

    /// What is at `rel`, not following a link at its end (`None`: nothing). A link
    /// among its parents is an error.
    pub fn lstat(&self, rel: &str) -> Result<Option<Stat>> {
        let (parent, name) = match self.parent_of(rel) {
            Ok(p) => p,
            Err(e) if e.not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        match nix::sys::stat::fstatat(&parent, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(st.into())),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(self.io("stat", rel, e)),
        }
    }

    /// Checks that the agent may put a file at `rel`: nothing is there, or a regular
    /// file with one link; no link among its parents.
    pub fn check_writable(&self, rel: &str) -> Result<Option<Stat>> {
        let stat = self.lstat(rel)?;
        if let Some(st) = stat {
            self.expect_file(rel, &st)?;
        }
        Ok(stat)
    }

    /// Reads the regular file at `rel` (at most `max` bytes); `None` when it does not
    /// exist. A link, a hard-linked file or anything but a regular file is an error.
    pub fn read(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let Some((file, st)) = self.open_read(rel)? else {
            return Ok(None);
        };
        if st.len > max {
            return Err(BeneathError::TooLarge {
                name: self.name(rel),
                max,
            });
        }
        let mut bytes = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| BeneathError::Io {
                op: "read",
                name: self.name(rel),
                source,
            })?;
        if bytes.len() as u64 > max {
            return Err(BeneathError::TooLarge {
                name: self.name(rel),
                max,
            });
        }
        Ok(Some(bytes))
    }

    /// Opens the regular file at `rel` for reading, with its `fstat`; `None` when it does
    /// not exist. A link, a hard-linked file or anything but a regular file is an error.
    pub fn open_read(&self, rel: &str) -> Result<Option<(File, Stat)>> {
        let flags = OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY;
        let fd = match self.resolve(rel, flags, Mode::empty(), "open") {
            Ok(fd) => fd,
            Err(e) if e.not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        let st = self.fstat(&file, rel)?;
        self.expect_file(rel, &st)?;
        Ok(Some((file, st)))
    }

    /// `fstat` of a file opened beneath this directory at `rel`.
    pub fn fstat(&self, file: &File, rel: &str) -> Result<Stat> {
        Ok(nix::sys::stat::fstat(file)
            .map_err(|e| self.io("stat", rel, e))?
            .into())
    }

    /// Creates a new regular file at `rel` (`O_EXCL|O_NOFOLLOW`: never an existing file
    /// or link) with `mode` and, when given, `owner`.
    pub fn create_new(&self, rel: &str, mode: u32, owner: Option<(Uid, Gid)>) -> Result<File> {
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = match self.resolve(rel, flags, Mode::from_bits_truncate(0o600), "create") {
            Ok(fd) => fd,
            Err(BeneathError::Io { source, .. })
                if source.raw_os_error() == Some(Errno::EEXIST as i32) =>
            {
                return Err(match self.lstat(rel) {
                    Ok(Some(st)) if st.kind == Kind::Link => self.link_error(rel),
                    _ => BeneathError::Exists {
                        name: self.name(rel),
                    },
                });
            }
            Err(e) => return Err(e),
        };
        let file = File::from(fd);
        self.give(&file, rel, mode, owner)?;
        Ok(file)
    }

    /// Atomically replaces (or creates) the file at `rel` with `bytes`: a temp file made
    /// `O_EXCL|O_NOFOLLOW` mode 0600 beside it, `finish` (owner and mode), fsync, rename
    /// over `rel`, fsync of the directory. A link or a hard-linked file at `rel` is an
    /// error before anything is written.
    pub fn write_atomic(
        &self,
        rel: &str,
        bytes: &[u8],
        finish: impl FnOnce(&File) -> io::Result<()>,
    ) -> Result<()> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        self.check_writable(rel)?;
        let (parent, name) = self.parent_of(rel)?;
        let mut tmp = OsString::from(".");
        tmp.push(&name);
        tmp.push(format!(
            ".tmp-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let io = |op, e: io::Error| BeneathError::Io {
            op,
            name: self.name(rel),
            source: e,
        };
        let fd = nix::fcntl::openat(
            &parent,
            tmp.as_os_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io("create a temp file for", e.into()))?;
        let mut file = File::from(fd);
        let written = (|| {
            file.write_all(bytes)?;
            finish(&file)?;
            file.sync_all()?;
            nix::fcntl::renameat(&parent, tmp.as_os_str(), &parent, name.as_os_str())?;
            nix::unistd::fsync(&parent)?;
            Ok::<(), io::Error>(())
        })();
        if let Err(e) = written {
            let _ = nix::unistd::unlinkat(&parent, tmp.as_os_str(), UnlinkatFlags::NoRemoveDir);
            return Err(io("write", e));
        }
        Ok(())
    }

    /// Creates the directories of `rel` that are missing (`mode`, and `owner` when
    /// given, for the ones created) and opens it. An existing component that is a link
    /// or not a directory is an error.
    pub fn mkdir_all(&self, rel: &str, mode: u32, owner: Option<(Uid, Gid)>) -> Result<Dir> {
        let parts = components(rel)?;
        let mut cur = self
            .fd
            .try_clone()
            .map_err(|e| self.io_err("open", "", e))?;
        let mut at = PathBuf::new();
        for part in parts {
            at.push(part);
            let shown = at.to_string_lossy().into_owned();
            let opened = match nix::fcntl::openat(&cur, part, dir_flags(), Mode::empty()) {
                Err(Errno::ENOENT) => {
                    match nix::sys::stat::mkdirat(&cur, part, Mode::from_bits_truncate(mode)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => return Err(self.io("create", &shown, e)),
                    }
                    let fd = nix::fcntl::openat(&cur, part, dir_flags(), Mode::empty())
                        .map_err(|e| self.classify(&cur, part, &shown, e, "open"))?;
                    self.give(&fd, &shown, mode, owner)?;
                    fd
                }
                Err(e) => return Err(self.classify(&cur, part, &shown, e, "open")),
                Ok(fd) => fd,
            };
            cur = opened;
        }
        Ok(Dir {
            fd: cur,
            root: self.root.clone(),
            prefix: self.prefix.join(rel),
        })
    }

    /// Makes a symbolic link at `rel` pointing to `target` (nothing may be there yet).
    pub fn symlink(&self, target: &Path, rel: &str) -> Result<()> {
        let (parent, name) = self.parent_of(rel)?;
        nix::unistd::symlinkat(target, &parent, name.as_os_str())
            .map_err(|e| self.io("create the link", rel, e))
    }

    /// Removes whatever is at `rel` (a whole tree for a directory), never following a
    /// link; nothing there is fine.
    pub fn remove(&self, rel: &str) -> Result<()> {
        let (parent, name) = match self.parent_of(rel) {
            Ok(p) => p,
            Err(e) if e.not_found() => return Ok(()),
            Err(e) => return Err(e),
        };
        remove_entry(&parent, &name, 0).map_err(|e| self.io_err("remove", rel, e))
    }

    /// Gives this directory and everything beneath it to `uid:gid` (links themselves,
    /// never what they point to).
    pub fn chown_tree(&self, uid: Uid, gid: Gid) -> Result<()> {
        nix::unistd::fchown(&self.fd, Some(uid), Some(gid))
            .map_err(|e| self.io("change the owner of", "", e))?;
        chown_below(&self.fd, uid, gid, 0).map_err(|e| self.io_err("change the owner of", "", e))
    }

    /// Bytes of the regular files beneath this directory (links not followed).
    pub fn tree_size(&self) -> u64 {
        size_below(&self.fd, 0)
    }

    /// The names in this directory with what they are (links not followed).
    pub fn entries(&self) -> Result<Vec<(OsString, Kind)>> {
        let names = list(&self.fd).map_err(|e| self.io_err("list", "", e))?;
        Ok(names
            .into_iter()
            .filter_map(|name| {
                let st = nix::sys::stat::fstatat(
                    &self.fd,
                    name.as_os_str(),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .ok()?;
                Some((name, Stat::from(st).kind))
            })
            .collect())
    }

    /// Sets this directory's owner and mode.
    pub fn set_owner_and_mode(&self, owner: Option<(Uid, Gid)>, mode: u32) -> Result<()> {
        self.give(&self.fd, "", mode, owner)
    }

    /// The open directory, for `*at` calls of callers.
    pub fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    // --- internals ---

    fn give(&self, fd: &impl AsFd, rel: &str, mode: u32, owner: Option<(Uid, Gid)>) -> Result<()> {
        if let Some((uid, gid)) = owner {
            nix::unistd::fchown(fd.as_fd(), Some(uid), Some(gid))
                .map_err(|e| self.io("change the owner of", rel, e))?;
        }
        // After chown, which clears set-id bits; and whatever the umask took away.
        nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(mode))
            .map_err(|e| self.io("change the mode of", rel, e))
    }

    /// Checks that `st` (of `rel`) is a regular file with one link.
    pub fn expect_file(&self, rel: &str, st: &Stat) -> Result<()> {
        match st.kind {
            Kind::Link => Err(self.link_error(rel)),
            Kind::File if st.links > 1 => Err(BeneathError::HardLink {
                name: self.name(rel),
                links: st.links,
            }),
            Kind::File => Ok(()),
            _ => Err(BeneathError::NotFile {
                name: self.name(rel),
            }),
        }
    }

    /// The error for a link found at `rel`.
    pub fn link_error(&self, rel: &str) -> BeneathError {
        BeneathError::Link {
            name: self.name(rel),
            fix: self.root.fix(),
        }
    }

    fn io(&self, op: &'static str, rel: &str, e: Errno) -> BeneathError {
        self.io_err(op, rel, e.into())
    }

    fn io_err(&self, op: &'static str, rel: &str, source: io::Error) -> BeneathError {
        BeneathError::Io {
            op,
            name: self.name(rel),
            source,
        }
    }

    /// The open parent directory of `rel` and its last component.
    fn parent_of(&self, rel: &str) -> Result<(OwnedFd, OsString)> {
        let parts = components(rel)?;
        let (last, parents) = parts.split_last().expect("components() is never empty");
        let parent = if parents.is_empty() {
            self.fd
                .try_clone()
                .map_err(|e| self.io_err("open", "", e))?
        } else {
            let parent: PathBuf = parents.iter().collect();
            self.resolve(
                &parent.to_string_lossy(),
                dir_flags(),
                Mode::empty(),
                "open",
            )?
        };
        Ok((parent, last.to_os_string()))
    }

    /// Opens `rel` beneath this directory with `flags`, following no link.
    fn resolve(&self, rel: &str, flags: OFlag, mode: Mode, op: &'static str) -> Result<OwnedFd> {
        let parts = components(rel)?;
        let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        #[cfg(test)]
        let walk_only = WALK_ONLY.with(|w| w.get());
        #[cfg(not(test))]
        let walk_only = false;
        if !walk_only {
            use nix::fcntl::{OpenHow, ResolveFlag};
            let how = OpenHow::new().flags(flags).mode(mode).resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS,
            );
            match nix::fcntl::openat2(&self.fd, rel, how) {
                Ok(fd) => return Ok(fd),
                // No openat2 (old kernel, or a seccomp filter): walk instead.
                Err(Errno::ENOSYS | Errno::EPERM | Errno::EINVAL | Errno::E2BIG) => {}
                // A link or an escape on the way: the walk names the component.
                Err(Errno::ELOOP | Errno::EXDEV | Errno::ENOTDIR) => {}
                Err(e) => return Err(self.io(op, rel, e)),
            }
        }
        self.walk(&parts, flags, mode, op)
    }

    /// `resolve` one `openat(O_NOFOLLOW)` per component.
    fn walk(
        &self,
        parts: &[&OsStr],
        flags: OFlag,
        mode: Mode,
        op: &'static str,
    ) -> Result<OwnedFd> {
        let (last, parents) = parts.split_last().expect("components() is never empty");
        let mut cur = self
            .fd
            .try_clone()
            .map_err(|e| self.io_err("open", "", e))?;
        let mut at = PathBuf::new();
        for part in parents {
            at.push(part);
            let shown = at.to_string_lossy().into_owned();
            cur = nix::fcntl::openat(&cur, *part, dir_flags(), Mode::empty())
                .map_err(|e| self.classify(&cur, part, &shown, e, "open"))?;
        }
        at.push(last);
        let shown = at.to_string_lossy().into_owned();
        nix::fcntl::openat(&cur, *last, flags, mode)
            .map_err(|e| self.classify(&cur, last, &shown, e, op))
    }

    /// Turns a failed `openat` of `part` in `dir` into a link / not-a-directory error
    /// when that is what is there.
    fn classify(
        &self,
        dir: &OwnedFd,
        part: &OsStr,
        shown: &str,
        e: Errno,
        op: &'static str,
    ) -> BeneathError {
        if matches!(e, Errno::ELOOP | Errno::ENOTDIR | Errno::EMLINK) {
            match nix::sys::stat::fstatat(dir, part, AtFlags::AT_SYMLINK_NOFOLLOW).map(Stat::from) {
                Ok(st) if st.kind == Kind::Link => return self.link_error(shown),
                Ok(st) if st.kind != Kind::Dir && e == Errno::ENOTDIR => {
                    return BeneathError::NotDir {
                        name: self.name(shown),
                    };
                }
                _ => {}
            }
        }
        self.io(op, shown, e)
    }
}

/// Flags every directory is opened with.
fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// The components of a relative path without `..`, `.` or a root; never empty.
fn components(rel: &str) -> Result<Vec<&OsStr>> {
    let bad = || BeneathError::BadPath { path: rel.into() };
    let mut parts = Vec::new();
    for c in Path::new(rel).components() {
        match c {
            Component::Normal(p) => parts.push(p),
            Component::CurDir => {}
            _ => return Err(bad()),
        }
    }
    if parts.is_empty() {
        return Err(bad());
    }
    Ok(parts)
}

/// The names in the directory `fd` (without `.` and `..`).
fn list(fd: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut dir = nix::dir::Dir::from_fd(fd.try_clone()?)?;
    let mut names = Vec::new();
    for entry in dir.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

fn too_deep() -> io::Error {
    io::Error::other(format!("the tree is deeper than {MAX_DEPTH} levels"))
}

fn remove_entry(parent: &OwnedFd, name: &OsStr, depth: usize) -> io::Result<()> {
    match nix::unistd::unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => return Ok(()),
        Err(Errno::EISDIR | Errno::EPERM) => {}
        Err(e) => return Err(e.into()),
    }
    if depth >= MAX_DEPTH {
        return Err(too_deep());
    }
    let dir = match nix::fcntl::openat(parent, name, dir_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    for child in list(&dir)? {
        remove_entry(&dir, &child, depth + 1)?;
    }
    match nix::unistd::unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn chown_below(dir: &OwnedFd, uid: Uid, gid: Gid, depth: usize) -> io::Result<()> {
    if depth >= MAX_DEPTH {
        return Err(too_deep());
    }
    for name in list(dir)? {
        nix::unistd::fchownat(
            dir,
            name.as_os_str(),
            Some(uid),
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
        let st = Stat::from(nix::sys::stat::fstatat(
            dir,
            name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )?);
        if st.kind == Kind::Dir {
            let sub = nix::fcntl::openat(dir, name.as_os_str(), dir_flags(), Mode::empty())?;
            chown_below(&sub, uid, gid, depth + 1)?;
        }
    }
    Ok(())
}

fn size_below(dir: &OwnedFd, depth: usize) -> u64 {
    let Ok(names) = list(dir) else { return 0 };
    let mut total = 0;
    for name in names {
        let Ok(st) = nix::sys::stat::fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
        else {
            continue;
        };
        let st = Stat::from(st);
        match st.kind {
            Kind::Dir if depth < MAX_DEPTH => {
                if let Ok(sub) =
                    nix::fcntl::openat(dir, name.as_os_str(), dir_flags(), Mode::empty())
                {
                    total += size_below(&sub, depth + 1);
                }
            }
            Kind::File => total += st.len,
            _ => {}
        }
    }
    total
}

#[cfg(test)]
mod tests;
