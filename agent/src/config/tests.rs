use std::path::Path;

use super::*;

const MINIMAL: &str = r#"
[tls]
ca = "ca.pem"
cert = "/etc/hoist/agent.pem"
key = "agent.key"
"#;

fn parse_ok(text: &str) -> Config {
    match parse(text, Path::new("/etc/hoist/agent.toml")) {
        Ok(config) => config,
        Err(err) => panic!("expected a valid config, got:\n{err}"),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match parse(text, Path::new("agent.toml")) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(ConfigError::Invalid { errors }) => errors,
        Err(err) => panic!("unexpected error {err}"),
    }
}

fn app(body: &str) -> String {
    format!(
        "{MINIMAL}\n[[app]]\nname = \"shop\"\nrepo = \"/srv/shop.git\"\ndeploy_to = \"/var/www/shop\"\n{body}"
    )
}

#[test]
fn defaults_and_relative_paths() {
    let config = parse_ok(MINIMAL);
    assert_eq!(config.agent, AgentSection::default());
    assert_eq!(config.tls.ca, Path::new("/etc/hoist/ca.pem"));
    assert_eq!(config.tls.cert, Path::new("/etc/hoist/agent.pem"));
    assert_eq!(config.thresholds, Thresholds::default());
    assert!(config.apps.is_empty());

    let config = parse_ok(&format!(
        "[agent]\nstate_dir = \"state\"\nmetrics_listen = \"\"\n{MINIMAL}"
    ));
    assert_eq!(config.agent.state_dir, Path::new("/etc/hoist/state"));
    assert_eq!(config.agent.metrics_listen, None);
}

#[test]
fn app_defaults() {
    let config = parse_ok(&app(""));
    let app = &config.apps[0];
    assert_eq!(app.strategy, Strategy::Symlink);
    assert_eq!(app.keep_releases, 5);
    assert_eq!(app.step_timeout, Duration::from_secs(600));
    assert_eq!(app.steps, Steps::default());
    assert!(app.services.is_empty() && app.checks.is_empty());
}

#[test]
fn services_and_checks() {
    let config = parse_ok(&app(r#"
[[app.services]]
kind = "systemd"
name = "php8.2-fpm"
action = "reload"
[[app.services]]
kind = "signal"
pidfile = "run/fpm.pid"
signal = "usr2"
timeout = "5s"
[[app.checks]]
kind = "http"
url = "http://127.0.0.1:8080/api/health?deep=1"
expect_json = { status = "healthy", "checks.db" = true }
[[app.checks]]
kind = "command"
command = ["php artisan about --only=environment --json | grep -q production"]
retries = 1
interval = "0s"
"#));
    let app = &config.apps[0];
    assert_eq!(
        app.services[0],
        Service::Systemd {
            name: "php8.2-fpm".into(),
            action: SystemdAction::Reload,
            timeout: Duration::from_secs(60)
        }
    );
    assert_eq!(
        app.services[1],
        Service::Signal {
            name: None,
            pidfile: "/etc/hoist/run/fpm.pid".into(),
            signal: "SIGUSR2".into(),
            timeout: Duration::from_secs(5)
        }
    );
    assert_eq!(app.services[1].display_name(), "/etc/hoist/run/fpm.pid");
    assert_eq!(app.checks[0].name(), "http GET /api/health?deep=1");
    assert_eq!(app.checks[0].retries(), 3);
    let Probe::Http { expect_json, .. } = &app.checks[0].probe else {
        panic!("expected an http check");
    };
    assert_eq!(expect_json["checks.db"], serde_json::Value::Bool(true));
    assert_eq!(
        app.checks[1].name(),
        "command php artisan about --only=environment --j…"
    );
    assert_eq!(app.checks[1].interval(), Duration::ZERO);
}

#[test]
fn threshold_levels() {
    let t = Threshold::new(80.0, 95.0);
    assert_eq!(t.level(10.0), Level::Ok);
    assert_eq!(t.level(80.0), Level::Warn);
    assert_eq!(t.level(95.0), Level::Critical);
    assert_eq!(t.level(100.0), Level::Critical);
}

#[test]
fn tagged_entries_reject_other_kinds_keys() {
    let errs = errors(&app(
        "[[app.services]]\nkind = \"systemd\"\nname = \"x\"\npidfile = \"/run/x.pid\"\n",
    ));
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].line, errs[0].column), (14, 11));
    assert_eq!(
        errs[0].message,
        "`pidfile` is not a key of systemd services"
    );
    assert_eq!(
        errs[0].hint.as_deref(),
        Some("systemd services take: kind, name, action, timeout")
    );

    let errs = errors(&app(
        "[[app.checks]]\nkind = \"tcp\"\nurl = \"http://x/\"\n",
    ));
    let messages: Vec<&str> = errs.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "tcp checks need `address`",
            "`url` is not a key of tcp checks"
        ]
    );
}

#[test]
fn reports_every_semantic_error_at_once() {
    let text = format!(
        "{MINIMAL}
[[app]]
name = \"a\"
repo = \"r\"
deploy_to = \"/srv/a\"
strategy = \"compose\"
activate = \"x\"
[[app.checks]]
kind = \"tcp\"
address = \"127.0.0.1:1\"
[[app.checks]]
kind = \"tcp\"
address = \"127.0.0.1:1\"
[[app]]
name = \"a\"
repo = \"r\"
deploy_to = \"/srv/a\"
"
    );
    let rendered: Vec<String> = errors(&text).iter().map(ToString::to_string).collect();
    assert_eq!(
        rendered,
        [
            "agent.toml:11:12: strategy = \"compose\" needs `compose_file` and `project`\n  \
                 hint: e.g. compose_file = \"compose.yaml\", project = \"shop\"",
            "agent.toml:12:12: `activate` only applies to strategy = \"command\"\n  \
                 hint: this app's strategy is \"compose\"; remove `activate` or change the strategy",
            "agent.toml:17:8: duplicate check `tcp 127.0.0.1:1` in app `a`\n  \
                 hint: the first is at line 14; give each check a distinct `name`",
            "agent.toml:20:8: duplicate app `a`\n  \
                 hint: the first `a` is at line 8; app names are unique",
            "agent.toml:22:13: deploy_to /srv/a is already app `a`'s\n  \
                 hint: every app needs its own deploy_to",
        ]
    );
}

#[test]
fn io_error_names_the_file() {
    let err = load(Path::new("/nonexistent/hoist/agent.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(
        err.to_string()
            .starts_with("cannot read /nonexistent/hoist/agent.toml: ")
    );
}

#[test]
fn packaged_example_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
    let config = match load(&path) {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    let app = &config.apps[0];
    assert_eq!(app.name, "carbex");
    let steps = &app.steps;
    let all = [
        &steps.build,
        &steps.backup,
        &steps.maintenance_on,
        &steps.migrate,
        &steps.migrate_status,
        &steps.migrate_rollback,
        &steps.restore,
        &steps.after_switch,
        &steps.maintenance_off,
    ];
    assert!(all.iter().all(|s| s.is_some()), "every step is shown");
    let kinds: Vec<&str> = app.services.iter().map(Service::kind).collect();
    assert_eq!(kinds, ["systemd", "supervisor", "signal"]);
    let kinds: Vec<&str> = app.checks.iter().map(Check::kind).collect();
    assert_eq!(kinds, ["http", "tcp", "command"]);
}

/// Every file under tests/fixtures/config/valid parses; every file under
/// .../invalid fails with its first line's `# expect: LINE:COL text`.
#[test]
fn fixtures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/config");
    let files = |dir: &str| {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        assert!(!paths.is_empty(), "no fixtures in {dir}");
        paths
    };
    for path in files("valid") {
        if let Err(err) = load(&path) {
            panic!("{} should be valid:\n{err}", path.display());
        }
    }
    for path in files("invalid") {
        let text = std::fs::read_to_string(&path).expect("fixture");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| {
                panic!(
                    "{}: first line must be `# expect: LINE:COL text`",
                    path.display()
                )
            });
        let (position, needle) = expect.split_once(' ').expect("`LINE:COL text`");
        let errs = match parse(&text, &path) {
            Ok(_) => panic!("{} should be invalid", path.display()),
            Err(ConfigError::Invalid { errors }) => errors,
            Err(err) => panic!("{}: {err}", path.display()),
        };
        let first = &errs[0];
        let rendered = first.to_string();
        assert_eq!(
            format!("{}:{}", first.line, first.column),
            position,
            "{rendered}"
        );
        assert!(
            rendered.contains(needle),
            "{}: {rendered:?} lacks {needle:?}",
            path.display()
        );
        assert!(rendered.starts_with(&format!("{}:{position}: ", path.display())));
    }
}

#[test]
fn tasks_take_a_command_or_a_table_with_a_role() {
    let config = parse_ok(&app(
        "[app.steps]\non_env_change = \"php artisan config:cache\"\n[app.tasks]\n\
         migrate_status = { command = \"php artisan migrate:status\", role = \"viewer\" }\n\
         cache_clear = \"php artisan cache:clear\"\noptimize = [\"a\", \"b\"]\n",
    ));
    let shop = &config.apps[0];
    let t = &shop.tasks["migrate_status"];
    assert_eq!(t.role, TaskRole::Viewer);
    assert_eq!(t.command.0, ["php artisan migrate:status"]);
    assert_eq!(shop.tasks["cache_clear"].role, TaskRole::Deployer);
    assert_eq!(shop.tasks["optimize"].command.0, ["a", "b"]);
    assert!(shop.steps.on_env_change.is_some());

    for bad in [
        "[app.tasks]\nx = { command = \"a\", role = \"admin\" }\n",
        "[app.tasks]\nx = { command = \"a\", shell = true }\n",
        "[app.tasks]\nx = \"\"\n",
        "[app.tasks]\n\"Bad Name\" = \"a\"\n",
        "[app.tasks]\nx = { role = \"viewer\" }\n",
    ] {
        let errs = errors(&app(bad));
        assert!(!errs.is_empty(), "{bad}");
    }
}

#[test]
fn log_sources_and_secret_keys() {
    let config = parse_ok(&app("secret_keys = [\"STRIPE_*\"]\n\
         [[app.services]]\nkind = \"compose\"\nproject = \"shop\"\n\
         [[app.logs]]\nname = \"laravel\"\npath = \"storage/logs/laravel-*.log\"\n\
         [[app.logs]]\nname = \"env\"\npath = \".env*\"\nroot = \"shared\"\n\
         [[app.logs]]\nname = \"nginx\"\npath = \"/var/log/nginx/*.log\"\n\
         [[app.logs]]\nname = \"worker\"\nunit = \"shop-worker.service\"\n\
         [[app.logs]]\nname = \"api\"\ncompose_service = \"api\"\n"));
    let shop = &config.apps[0];
    assert_eq!(
        shop.logs[0].kind,
        LogKind::Files {
            root: LogRoot::Current,
            dir: "storage/logs".into(),
            pattern: "laravel-*.log".into()
        }
    );
    assert_eq!(
        shop.logs[1].kind,
        LogKind::Files {
            root: LogRoot::Shared,
            dir: String::new(),
            pattern: ".env*".into()
        }
    );
    assert_eq!(
        shop.logs[2].kind,
        LogKind::Files {
            root: LogRoot::Absolute("/var/log/nginx".into()),
            dir: String::new(),
            pattern: "*.log".into()
        }
    );
    assert_eq!(
        shop.logs[4].kind,
        LogKind::Compose {
            project: "shop".into(),
            service: "api".into()
        }
    );
    assert!(shop.is_secret_key("STRIPE_SK") && shop.is_secret_key("db_password"));
    assert!(!shop.is_secret_key("DB_HOST") && !shop.is_secret_key("APP_ENV"));
    let err = shop.log_source("mail").unwrap_err().to_string();
    assert!(
        err.contains("its log sources: laravel, env, nginx, worker, api"),
        "{err}"
    );

    for (bad, says) in [
        ("[[app.logs]]\nname = \"x\"\n", "says nowhere to read"),
        (
            "[[app.logs]]\nname = \"x\"\npath = \"a.log\"\nunit = \"u\"\n",
            "has path and unit",
        ),
        (
            "[[app.logs]]\nname = \"x\"\npath = \"../etc/*.log\"\n",
            "invalid log path",
        ),
        (
            "[[app.logs]]\nname = \"x\"\npath = \"logs/*/a.log\"\n",
            "wildcard outside",
        ),
        (
            "[[app.logs]]\nname = \"x\"\npath = \"/var/log/a.log\"\nroot = \"shared\"\n",
            "is absolute",
        ),
        (
            "[[app.logs]]\nname = \"x\"\nunit = \"u\"\nroot = \"shared\"\n",
            "`root` only goes with `path`",
        ),
        (
            "[[app.logs]]\nname = \"x\"\ncompose_service = \"api\"\n",
            "needs the compose `project`",
        ),
        (
            "[[app.logs]]\nname = \"x\"\nunit = \"u\"\n[[app.logs]]\nname = \"x\"\nunit = \"v\"\n",
            "duplicate log source `x`",
        ),
        ("secret_keys = [\"BAD KEY\"]\n", "invalid secret key"),
    ] {
        let errs = errors(&app(bad));
        let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert!(text.iter().any(|t| t.contains(says)), "{bad}: {text:?}");
    }
}

#[test]
fn https_checks_monitor_only_checks_and_ca() {
    let config = parse_ok(&app(r#"
[[app.checks]]
kind = "http"
name = "tls"
url = "https://shop.example/health"
ca = "internal-ca.pem"
gate = false
[[app.checks]]
kind = "tcp"
address = "127.0.0.1:5432"
"#));
    let checks = &config.apps[0].checks;
    assert!(!checks[0].gate && checks[1].gate);
    let Probe::Http { url, ca, .. } = &checks[0].probe else {
        panic!("expected an http check");
    };
    assert_eq!(url, "https://shop.example/health");
    assert_eq!(ca.as_deref(), Some(Path::new("/etc/hoist/internal-ca.pem")));

    let errs = errors(&app(
        "[[app.checks]]\nkind = \"http\"\nurl = \"http://127.0.0.1/\"\nca = \"/etc/ca.pem\"\n\
         [[app.checks]]\nkind = \"tcp\"\naddress = \"127.0.0.1:1\"\nca = \"/etc/ca.pem\"\n",
    ));
    let text: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
    assert!(
        text.iter().any(|e| e.contains("`ca` is for https checks")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|e| e.contains("tcp checks") && e.contains("ca")),
        "{text:?}"
    );
    let errs = errors(&app(
        "[[app.checks]]\nkind = \"http\"\nurl = \"ftp://x/\"\n",
    ));
    assert!(
        errs[0].to_string().contains("invalid check url"),
        "{errs:?}"
    );
}
