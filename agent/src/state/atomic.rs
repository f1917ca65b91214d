//! Durable state files: written to a temp file, fsynced, renamed over the target, and
//! the directory fsynced, so a crash leaves either the old or the new file, never a
//! torn one.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
    sync::atomic::{AtomicU32, Ordering},
};

/// How far a replacement is on disk when the write returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// The rename is made durable too (the directory is fsynced): the new file
    /// survives a power loss.
    Durable,
    /// The new file's content is fsynced before the rename (a crash, even a power loss,
    /// leaves the old or the new file, never a torn one), but the rename itself becomes
    /// durable only with the next fsync of the directory: for a record that another
    /// durable write of the same file always follows (saves one fsync on the path of
    /// every deploy).
    Ordered,
}

/// Atomically replaces `path` with `bytes` (mode 0644).
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_file(path, bytes, Durability::Durable)
}

/// Atomically replaces `path` with `bytes` (mode 0644), as durable as `durability`.
pub fn replace_file(path: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    replace(path, bytes, durability, |file| {
        file.set_permissions(fs::Permissions::from_mode(0o644))
    })
}

/// Atomically replaces `path` with `bytes`. The temp file is created 0600 with
/// `O_EXCL|O_NOFOLLOW` (never readable by others, never through a planted symlink);
/// `finish` gives it its owner and mode before it is fsynced and renamed over `path`,
/// then the directory is fsynced. On any error the temp file is removed.
pub fn write_with(
    path: &Path,
    bytes: &[u8],
    finish: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<()> {
    replace(path, bytes, Durability::Durable, finish)
}

fn replace(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
    finish: impl FnOnce(&File) -> io::Result<()>,
) -> io::Result<()> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&tmp)?;
        file.write_all(bytes)?;
        finish(&file)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        match durability {
            Durability::Durable => File::open(dir)?.sync_all(),
            Durability::Ordered => Ok(()),
        }
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        super::write_file(&path, b"one").unwrap();
        super::write_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
