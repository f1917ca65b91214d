// Tests plant the links and owners the agent must refuse.
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};

use super::*;
use crate::state::beneath::Root;

const LARAVEL: &str = "\
APP_NAME=Laravel
APP_ENV=local
APP_KEY=base64:2fl+Ktvkfl+Fuz4Qp/A75G2RTiWVA/ZoKZvp6fiiM10=
APP_DEBUG=true
APP_URL=http://localhost

# Logging
LOG_CHANNEL=stack
LOG_LEVEL=debug   # verbose while we debug

DB_CONNECTION=pgsql
DB_HOST=127.0.0.1
DB_PORT=5432
DB_DATABASE=carbex
DB_USERNAME=carbex
DB_PASSWORD=\"s3cr3t \\\"quoted\\\" \\$HOME\"
export REDIS_PASSWORD='p@ss $word # not a comment'
MAIL_FROM_NAME=\"${APP_NAME}\"
EMPTY=
SPACED = value
  INDENTED=yes
JWT_KEY=\"-----BEGIN KEY-----
abc
-----END KEY-----\"
not an assignment
1BAD=x
";

#[test]
fn realistic_laravel_env_round_trips_and_parses() {
    let env = EnvFile::parse(LARAVEL);
    assert_eq!(env.render(), LARAVEL);
    assert_eq!(env.get("APP_NAME").as_deref(), Some("Laravel"));
    assert_eq!(
        env.get("APP_KEY").as_deref(),
        Some("base64:2fl+Ktvkfl+Fuz4Qp/A75G2RTiWVA/ZoKZvp6fiiM10=")
    );
    assert_eq!(env.get("LOG_LEVEL").as_deref(), Some("debug"));
    assert_eq!(
        env.get("DB_PASSWORD").as_deref(),
        Some("s3cr3t \"quoted\" $HOME")
    );
    assert_eq!(
        env.get("REDIS_PASSWORD").as_deref(),
        Some("p@ss $word # not a comment")
    );
    assert_eq!(env.get("MAIL_FROM_NAME").as_deref(), Some("${APP_NAME}"));
    assert_eq!(env.get("EMPTY").as_deref(), Some(""));
    assert_eq!(env.get("SPACED").as_deref(), Some("value"));
    assert_eq!(env.get("INDENTED").as_deref(), Some("yes"));
    assert_eq!(
        env.get("JWT_KEY").as_deref(),
        Some("-----BEGIN KEY-----\nabc\n-----END KEY-----")
    );
    assert_eq!(env.get("1BAD"), None);
    assert_eq!(env.get("MISSING"), None);
    let keys = env.keys();
    assert_eq!(keys.first().map(String::as_str), Some("APP_NAME"));
    assert_eq!(keys.last().map(String::as_str), Some("JWT_KEY"));
    assert_eq!(keys.len(), 19, "{keys:?}");
}

#[test]
fn set_replaces_in_place_and_keeps_every_other_byte() {
    let mut env = EnvFile::parse(LARAVEL);
    env.set("DB_HOST", "db.internal").unwrap();
    env.set("LOG_LEVEL", "info").unwrap();
    env.set("REDIS_PASSWORD", "new").unwrap();
    let expected = LARAVEL
        .replace("DB_HOST=127.0.0.1\n", "DB_HOST=db.internal\n")
        .replace(
            "LOG_LEVEL=debug   # verbose while we debug\n",
            "LOG_LEVEL=info   # verbose while we debug\n",
        )
        .replace(
            "export REDIS_PASSWORD='p@ss $word # not a comment'\n",
            "export REDIS_PASSWORD=new\n",
        );
    assert_eq!(env.render(), expected);
    assert_eq!(env.get("DB_HOST").as_deref(), Some("db.internal"));
}

#[test]
fn set_new_key_appends_and_fixes_a_missing_final_newline() {
    let mut env = EnvFile::parse("# top\nA=1");
    env.set("B", "two words").unwrap();
    assert_eq!(env.render(), "# top\nA=1\nB='two words'\n");
    assert_eq!(env.keys(), ["A", "B"]);

    let mut empty = EnvFile::parse("");
    empty.set("ONLY", "x").unwrap();
    assert_eq!(empty.render(), "ONLY=x\n");
}

#[test]
fn set_keeps_crlf_and_drops_later_duplicates() {
    let mut env = EnvFile::parse("A=1\r\nB=2\r\nA=3\r\n");
    assert_eq!(env.get("A").as_deref(), Some("1"), "first wins");
    env.set("A", "9").unwrap();
    assert_eq!(env.render(), "A=9\r\nB=2\r\n");
}

#[test]
fn set_replaces_a_multiline_value_whole() {
    let mut env = EnvFile::parse("K=\"line1\nline2\"\nAFTER=1\n");
    env.set("K", "flat").unwrap();
    assert_eq!(env.render(), "K=flat\nAFTER=1\n");
}

#[test]
fn unset_removes_every_assignment() {
    let mut env = EnvFile::parse("# c\nA=1\nB=2\nA=3\n");
    assert!(env.unset("A"));
    assert_eq!(env.render(), "# c\nB=2\n");
    assert!(!env.unset("A"));
    assert!(!env.unset("NOPE"));
}

#[test]
fn quoting_rule() {
    let cases = [
        ("plain", "plain"),
        ("base64:ab+/=", "base64:ab+/="),
        ("", "''"),
        ("two words", "'two words'"),
        ("a#b", "'a#b'"),
        ("$HOME", "'$HOME'"),
        ("${APP_NAME}", "'${APP_NAME}'"),
        ("say \"hi\"", "'say \"hi\"'"),
        ("it's", "\"it's\""),
        ("it's $5", "\"it's \\$5\""),
        ("back\\slash", "\"back\\\\slash\""),
        ("tab\there", "'tab\there'"),
    ];
    for (value, written) in cases {
        assert_eq!(quote(value), written, "{value:?}");
        // Whatever is written reads back as the same value.
        let mut env = EnvFile::default();
        env.set("K", value).unwrap();
        let reread = EnvFile::parse(&env.render());
        assert_eq!(reread.get("K").as_deref(), Some(value), "{written}");
    }
}

#[test]
fn bad_keys_and_values_are_refused_without_echoing_the_value() {
    let mut env = EnvFile::default();
    for key in ["", "1ABC", "A-B", "A B", "A=B", "ÄB", "export A"] {
        assert_eq!(
            env.set(key, "v"),
            Err(EnvError::InvalidKey(key.into())),
            "{key:?}"
        );
    }
    assert!(env.set("_OK_1", "v").is_ok());
    let err = env.set("SECRET", "top\nsecret").unwrap_err();
    assert_eq!(
        err,
        EnvError::InvalidValue {
            key: "SECRET".into(),
            what: "newline"
        }
    );
    assert!(!err.to_string().contains("top"), "{err}");
    assert!(env.set("SECRET", "a\rb").is_err());
    assert_eq!(env.render(), "_OK_1=v\n");
}

#[test]
fn unparsable_lines_are_kept() {
    let text = "=x\nA=\"never closed\nB=2\njunk\n";
    let env = EnvFile::parse(text);
    assert_eq!(env.render(), text);
    assert_eq!(env.keys(), ["B"]);
}

#[test]
fn comments_after_values() {
    let env = EnvFile::parse("A=x # note\nB=pa#ss\nC='q' # c\nD= # only a comment\n");
    assert_eq!(env.get("A").as_deref(), Some("x"));
    assert_eq!(env.get("B").as_deref(), Some("pa#ss"));
    assert_eq!(env.get("C").as_deref(), Some("q"));
    assert_eq!(env.get("D").as_deref(), Some(""));
}

#[test]
fn missing_keys_are_in_example_order() {
    let example = EnvFile::parse("# example\nAPP_KEY=\nDB_HOST=\nDB_PASSWORD=\nREDIS=\n");
    let actual = EnvFile::parse("DB_HOST=x\nAPP_KEY=\nOTHER=1\n");
    assert_eq!(missing_keys(&example, &actual), ["DB_PASSWORD", "REDIS"]);
    assert!(missing_keys(&actual, &actual).is_empty());
}

#[test]
fn redaction() {
    assert_eq!(redact("hunter2hunter"), "•••• (13 chars)");
    assert_eq!(redact("x"), "•••• (1 char)");
    assert_eq!(redact(""), "(empty)");
    assert_eq!(redact("héllo"), "•••• (5 chars)");
}

fn shared(dir: &tempfile::TempDir) -> Dir {
    Dir::open_trusted(dir.path()).unwrap().rooted(Root::Shared)
}

#[test]
fn write_atomic_keeps_mode_and_owner() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    fs::write(&path, "A=1\n").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    // As root, hand the file to another owner to prove it is kept; otherwise the
    // file stays ours and the mode is what is checked.
    let owner = if nix::unistd::Uid::effective().is_root() {
        std::os::unix::fs::chown(&path, Some(4242), Some(4343)).unwrap();
        (4242, 4343)
    } else {
        let meta = fs::metadata(&path).unwrap();
        (meta.uid(), meta.gid())
    };
    let shared = shared(&dir);
    let mut env = EnvFile::read_from(&shared, ".env").unwrap().unwrap();
    env.set("B", "two").unwrap();
    write_atomic(&shared, ".env", &env, None).unwrap();

    assert_eq!(fs::read_to_string(&path).unwrap(), "A=1\nB=two\n");
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), owner);
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, [".env"], "no temp file left behind");
}

#[test]
fn write_atomic_new_file_is_not_world_readable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    let mut env = EnvFile::default();
    env.set("K", "v").unwrap();
    write_atomic(&shared(&dir), ".env", &env, None).unwrap();
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.mode() & 0o7777, NEW_FILE_MODE);
    assert_eq!(meta.gid(), fs::metadata(dir.path()).unwrap().gid());
    if nix::unistd::Uid::effective().is_root() {
        fs::remove_file(&path).unwrap();
        write_atomic(&shared(&dir), ".env", &env, Some(Gid::from_raw(4343))).unwrap();
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(
            (meta.uid(), meta.gid()),
            (0, 4343),
            "root's, readable by the app's group"
        );
    }
}

#[test]
fn links_are_refused_and_never_quoted() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("elsewhere");
    fs::write(&target, "ROOT_ONLY_KEY=1\n").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join(".env")).unwrap();
    fs::hard_link(&target, dir.path().join(".env.example")).unwrap();
    let shared = shared(&dir);
    let err = write_atomic(&shared, ".env", &EnvFile::parse("Y=2\n"), None).unwrap_err();
    assert!(
        err.to_string().contains("`shared/.env` is a symbolic link"),
        "{err}"
    );
    let err = edit(&shared, ".env", &[("Y".into(), "2".into())], &[], None).unwrap_err();
    assert!(err.to_string().contains("symbolic link"), "{err}");
    let err = list(&shared, ".env", true).unwrap_err().to_string();
    assert!(!err.contains("ROOT_ONLY_KEY"), "{err}");
    let err = missing_keys_beneath(&shared, ".env.example", &shared, "absent")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hard links") && !err.contains("ROOT_ONLY_KEY"),
        "{err}"
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "ROOT_ONLY_KEY=1\n");
}

#[test]
fn edit_and_list_name_keys_never_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    fs::write(&path, "# keep me\nDB_PASSWORD=old-secret\n").unwrap();
    let shared = shared(&dir);
    let report = edit(
        &shared,
        ".env",
        &[
            ("DB_PASSWORD".into(), "new-secret".into()),
            ("APP_ENV".into(), "production".into()),
        ],
        &["GONE".into()],
        None,
    )
    .unwrap();
    let text = report.join("\n");
    assert!(!text.contains("secret"), "{text}");
    assert!(!text.contains("production"), "{text}");
    assert!(text.contains("set DB_PASSWORD: changed"), "{text}");
    assert!(text.contains("set APP_ENV: added"), "{text}");
    assert!(text.contains("unset GONE: was not set"), "{text}");
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "# keep me\nDB_PASSWORD=new-secret\nAPP_ENV=production\n"
    );

    let hidden = list(&shared, ".env", false).unwrap();
    assert_eq!(hidden[0].key, "DB_PASSWORD");
    assert_eq!(hidden[0].value, "•••• (10 chars)");
    assert!(hidden[0].redacted);
    let shown = list(&shared, ".env", true).unwrap();
    assert_eq!(shown[1].value, "production");
    assert!(!shown[1].redacted);

    assert!(
        edit(
            &shared,
            ".env",
            &[("BAD KEY".into(), "v".into())],
            &[],
            None
        )
        .is_err()
    );
    fs::write(
        dir.path().join(".env.example"),
        "APP_ENV=\nDB_PASSWORD=\nMAIL_HOST=\n",
    )
    .unwrap();
    assert_eq!(
        missing_keys_beneath(&shared, ".env.example", &shared, ".env").unwrap(),
        ["MAIL_HOST"]
    );
    assert_eq!(
        missing_keys_beneath(&shared, ".env.example", &shared, "absent").unwrap(),
        ["APP_ENV", "DB_PASSWORD", "MAIL_HOST"]
    );
    assert!(
        missing_keys_beneath(&shared, "no-example", &shared, ".env")
            .unwrap()
            .is_empty()
    );
}
