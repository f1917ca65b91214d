// Tests plant the links and owners the agent must refuse.
#![allow(clippy::disallowed_methods)]

use std::{
    fs,
    os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink},
};

use super::*;

/// A release root in a temp dir, with an "outside" dir beside it.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("release");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret"), "ROOT_ONLY_KEY=1\n").unwrap();
    Fixture {
        _tmp: tmp,
        root,
        outside,
    }
}

fn release(f: &Fixture) -> Dir {
    Dir::open_trusted(f.root.parent().unwrap())
        .unwrap()
        .open_root("release", Root::Release)
        .unwrap()
}

/// Runs `body` with openat2 and again with the per-component walk.
fn both(body: impl Fn()) {
    body();
    WALK_ONLY.with(|w| w.set(true));
    body();
    WALK_ONLY.with(|w| w.set(false));
}

#[test]
fn reads_refuse_links_and_hard_links_without_quoting_content() {
    both(|| {
        let f = fixture();
        fs::write(f.root.join("plain"), "A=1\n").unwrap();
        symlink(f.outside.join("secret"), f.root.join(".env.example")).unwrap();
        fs::hard_link(f.outside.join("secret"), f.root.join("hard")).unwrap();
        fs::create_dir(f.root.join("sub")).unwrap();
        symlink(&f.outside, f.root.join("sub/out")).unwrap();
        let dir = release(&f);

        assert_eq!(dir.read("plain", 100).unwrap().unwrap(), b"A=1\n");
        assert!(dir.read("missing", 100).unwrap().is_none());
        let err = dir.read(".env.example", 100).unwrap_err().to_string();
        assert!(
            err.contains("`.env.example` in the release is a symbolic link"),
            "{err}"
        );
        assert!(
            !err.contains("ROOT_ONLY_KEY") && !err.contains("outside"),
            "{err}"
        );
        let err = dir.read("hard", 100).unwrap_err().to_string();
        assert!(
            err.contains("`hard` in the release has 2 hard links"),
            "{err}"
        );
        let err = dir.read("sub/out/secret", 100).unwrap_err().to_string();
        assert!(
            err.contains("`sub/out` in the release is a symbolic link"),
            "{err}"
        );
        assert!(matches!(
            dir.read("plain", 2),
            Err(BeneathError::TooLarge { .. })
        ));
        assert!(matches!(
            dir.read("../outside/secret", 100),
            Err(BeneathError::BadPath { .. })
        ));
        assert!(matches!(
            dir.read("/etc/passwd", 100),
            Err(BeneathError::BadPath { .. })
        ));
        assert!(matches!(
            dir.read("sub", 100),
            Err(BeneathError::NotFile { .. })
        ));
    });
}

#[test]
fn a_fifo_is_refused_not_waited_on() {
    let f = fixture();
    nix::unistd::mkfifo(&f.root.join("REVISION"), Mode::from_bits_truncate(0o644)).unwrap();
    let err = release(&f).read("REVISION", 100).unwrap_err();
    assert!(matches!(err, BeneathError::NotFile { .. }), "{err}");
}

#[test]
fn writes_replace_never_write_through() {
    both(|| {
        let f = fixture();
        let dir = release(&f);
        dir.write_atomic("REVISION", b"abc\n", |_| Ok(())).unwrap();
        assert_eq!(fs::read(f.root.join("REVISION")).unwrap(), b"abc\n");
        dir.write_atomic("REVISION", b"def\n", |_| Ok(())).unwrap();
        assert_eq!(fs::read(f.root.join("REVISION")).unwrap(), b"def\n");

        symlink(f.outside.join("secret"), f.root.join("LINKED")).unwrap();
        let err = dir.write_atomic("LINKED", b"x", |_| Ok(())).unwrap_err();
        assert!(matches!(err, BeneathError::Link { .. }), "{err}");
        fs::hard_link(f.outside.join("secret"), f.root.join("HARD")).unwrap();
        let err = dir.write_atomic("HARD", b"x", |_| Ok(())).unwrap_err();
        assert!(matches!(err, BeneathError::HardLink { .. }), "{err}");
        assert_eq!(
            fs::read_to_string(f.outside.join("secret")).unwrap(),
            "ROOT_ONLY_KEY=1\n"
        );

        let created = dir.create_new("new.backup", 0o600, None).unwrap();
        assert_eq!(created.metadata().unwrap().mode() & 0o7777, 0o600);
        assert!(matches!(
            dir.create_new("new.backup", 0o600, None),
            Err(BeneathError::Exists { .. })
        ));
        assert!(matches!(
            dir.create_new("LINKED", 0o600, None),
            Err(BeneathError::Link { .. })
        ));
        // No temp file is left.
        let names: Vec<_> = fs::read_dir(&f.root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("tmp"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    });
}

#[test]
fn dirs_links_and_removal_stay_beneath() {
    both(|| {
        let f = fixture();
        fs::create_dir_all(f.outside.join("logs")).unwrap();
        fs::write(f.outside.join("logs/keep"), "x").unwrap();
        symlink(&f.outside, f.root.join("storage")).unwrap();
        let dir = release(&f);

        // mkdir and remove through a linked parent are refused; the outside is intact.
        let err = dir.mkdir_all("storage/logs", 0o755, None).unwrap_err();
        assert!(matches!(err, BeneathError::Link { .. }), "{err}");
        let err = dir.remove("storage/logs").unwrap_err();
        assert!(
            err.to_string()
                .contains("`storage` in the release is a symbolic link"),
            "{err}"
        );
        assert!(dir.lstat("storage/logs").is_err());
        assert!(f.outside.join("logs/keep").is_file());

        // Removing the link itself removes the link, not its target.
        assert_eq!(dir.lstat("storage").unwrap().unwrap().kind, Kind::Link);
        dir.remove("storage").unwrap();
        assert!(f.outside.join("logs/keep").is_file());
        assert!(dir.lstat("storage").unwrap().is_none());

        let made = dir.mkdir_all("storage/logs", 0o750, None).unwrap();
        assert_eq!(
            fs::metadata(f.root.join("storage/logs"))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o750
        );
        made.write_atomic("a.log", b"1", |_| Ok(())).unwrap();
        dir.symlink(Path::new("/nowhere"), "storage/logs/link")
            .unwrap();
        symlink(&f.outside, f.root.join("storage/logs/out")).unwrap();
        assert!(dir.tree_size() >= 1);
        dir.remove("storage").unwrap();
        assert!(!f.root.join("storage").exists());
        assert!(
            f.outside.join("logs/keep").is_file(),
            "removal followed a link"
        );
        // Nothing there is fine.
        dir.remove("storage/logs").unwrap();
    });
}

#[test]
fn chown_tree_does_not_follow_links() {
    if !Uid::effective().is_root() {
        return;
    }
    let f = fixture();
    fs::create_dir_all(f.root.join("a/b")).unwrap();
    fs::write(f.root.join("a/b/file"), "x").unwrap();
    symlink(&f.outside, f.root.join("a/out")).unwrap();
    release(&f)
        .chown_tree(Uid::from_raw(4242), Gid::from_raw(4343))
        .unwrap();
    let meta = fs::metadata(f.root.join("a/b/file")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
    let link = fs::symlink_metadata(f.root.join("a/out")).unwrap();
    assert_eq!(link.uid(), 4242);
    let outside = fs::metadata(&f.outside).unwrap();
    assert_eq!(outside.uid(), 0, "chown followed the link out");
    assert_eq!(fs::metadata(f.outside.join("secret")).unwrap().uid(), 0);
}

#[test]
fn a_linked_root_is_refused() {
    let f = fixture();
    let parent = f.root.parent().unwrap().to_path_buf();
    symlink(&f.outside, parent.join("shared")).unwrap();
    let err = Dir::open_trusted(&parent)
        .unwrap()
        .open_root("shared", Root::Shared)
        .unwrap_err();
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
}
