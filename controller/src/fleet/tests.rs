use super::{
    window::{parse_date, utc},
    *,
};

const TLS: &str =
    "[tls]\nca = \"certs/ca.pem\"\ncert = \"/abs/deployer.pem\"\nkey = \"certs/deployer.key\"\n";

fn hosts() -> String {
    format!(
        "{TLS}
[[host]]
name = \"web-1\"
address = \"10.0.0.11:7443\"
groups = [\"web\", \"prod\"]
[[host]]
name = \"web-2\"
address = \"10.0.0.12:7443\"
groups = [\"web\"]
[[host]]
name = \"db-1\"
address = \"[2001:db8::1]:7443\"
metrics = \"10.0.1.1:9464\"
"
    )
}

fn parse_ok(text: &str) -> Fleet {
    parse(text, Path::new("/home/ops/fleet.toml")).unwrap_or_else(|e| panic!("{e}"))
}

/// The first diagnostic, rendered.
fn error(text: &str) -> String {
    match parse(text, Path::new("fleet.toml")) {
        Err(FleetError::Invalid { errors }) => errors[0].to_string(),
        Err(err) => panic!("unexpected error {err}"),
        Ok(_) => panic!("expected an error for:\n{text}"),
    }
}

#[test]
fn spec_example() {
    let fleet = parse_ok(&format!(
        "{TLS}
[[host]]
name = \"web-1\"
address = \"10.0.0.11:7443\"
groups = [\"web\", \"prod\"]

[deploy]
strategy = \"rolling\"
batch = \"25%\"
canary = \"5%\"
bake = \"5m\"
max_unhealthy = 0
migrate_on = \"first\"

[[gate]]
prometheus = \"http://127.0.0.1:9090\"
query = 'sum(rate(http_requests_total{{status=~\"5..\"}}[5m])) / sum(rate(http_requests_total[5m]))'
max = 0.01

[[gate]]
name = \"Error rate < 1%\"
prometheus = \"http://127.0.0.1:9090\"
query = 'sum(rate(http_requests_total{{status=~\"5..\"}}[5m])) / sum(rate(http_requests_total[5m]))'
max = 0.01
on_empty = \"pass\"

[window]
allow = [\"Tue-Thu 10:00-16:00\"]
timezone = \"Asia/Dhaka\"
blackout = [\"2026-12-16\", \"2026-12-25\"]

[notify]
webhooks = [\"https://hooks.slack.com/services/T000/B000/XXXX\"]
"
    ));
    assert_eq!(fleet.tls.ca, Path::new("/home/ops/certs/ca.pem"));
    assert_eq!(fleet.tls.cert, Path::new("/abs/deployer.pem"));
    assert_eq!(fleet.hosts[0].groups, ["web", "prod"]);
    assert_eq!(
        fleet.deploy,
        DeployDefaults {
            strategy: Strategy::Rolling,
            batch: Amount::Percent(25),
            canary: Amount::Percent(5),
            bake: Duration::from_secs(300),
            max_unhealthy: Amount::Count(0),
            migrate_on: MigrateOn::First,
            concurrency: crate::fleet::DEFAULT_CONCURRENCY,
        }
    );
    assert_eq!(fleet.gates[0].max, 0.01);
    assert_eq!(fleet.gates[0].name, None);
    assert_eq!(fleet.gates[0].on_empty, crate::fleet::OnEmpty::Fail);
    assert_eq!(fleet.gates[1].name.as_deref(), Some("Error rate < 1%"));
    assert_eq!(fleet.gates[1].on_empty, crate::fleet::OnEmpty::Pass);
    let window = fleet.window.expect("window");
    assert_eq!(window.allow[0].to_string(), "Tue-Thu 10:00-16:00");
    assert_eq!(window.timezone, "Asia/Dhaka");
    assert_eq!(window.blackout[1].to_string(), "2026-12-25");
    let hook = &fleet.notify.webhooks[0];
    assert_eq!(
        hook.url(),
        "https://hooks.slack.com/services/T000/B000/XXXX"
    );
    assert_eq!(format!("{hook:?}"), "Webhook(https://hooks.slack.com/…)");
}

#[test]
fn defaults() {
    let fleet = parse_ok(&hosts());
    assert_eq!(fleet.deploy, DeployDefaults::default());
    assert!(fleet.gates.is_empty() && fleet.window.is_none());
    assert!(fleet.notify.webhooks.is_empty());
    assert_eq!(fleet.hosts[2].metrics.as_deref(), Some("10.0.1.1:9464"));
    let window = parse_ok(&format!("{}[window]\n", hosts()))
        .window
        .expect("window");
    assert_eq!(window.timezone, "UTC");
}

#[test]
fn select() {
    let fleet = parse_ok(&hosts());
    let names = |hosts: &[&str], group| -> Result<Vec<String>, String> {
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        fleet
            .select(&hosts, group)
            .map(|hs| hs.iter().map(|h| h.name.clone()).collect())
            .map_err(|e| e.to_string())
    };
    assert_eq!(names(&[], None).unwrap(), ["web-1", "web-2", "db-1"]);
    assert_eq!(names(&["db-1", "web-1"], None).unwrap(), ["web-1", "db-1"]);
    assert_eq!(names(&[], Some("web")).unwrap(), ["web-1", "web-2"]);
    assert_eq!(names(&["web-2", "db-1"], Some("web")).unwrap(), ["web-2"]);
    assert_eq!(
        names(&["web-9"], None).unwrap_err(),
        "unknown host `web-9`; the fleet file lists: web-1, web-2, db-1"
    );
    assert_eq!(
        names(&[], Some("staging")).unwrap_err(),
        "unknown group `staging`; the fleet file's groups are: prod, web"
    );
    assert_eq!(
        names(&["db-1"], Some("prod")).unwrap_err(),
        "none of the hosts db-1 is in group `prod`"
    );
}

#[test]
fn amounts() {
    assert_eq!("3".parse(), Ok(Amount::Count(3)));
    assert_eq!("25%".parse(), Ok(Amount::Percent(25)));
    assert!("101%".parse::<Amount>().is_err() && "x%".parse::<Amount>().is_err());
    assert_eq!(Amount::Percent(25).resolve(10), 3);
    assert_eq!(Amount::Percent(5).resolve(10), 1);
    assert_eq!(Amount::Percent(100).resolve(10), 10);
    assert_eq!(Amount::Count(50).resolve(10), 10);
    assert_eq!(Amount::Count(2).resolve(0), 0);
    assert_eq!(Amount::Count(0).budget(10), 0);
    assert_eq!(Amount::Percent(10).budget(15), 1);
    assert_eq!(Amount::Count(20).budget(15), 15);
    assert_eq!(Amount::Percent(25).to_string(), "25%");
}

#[test]
fn windows() {
    let rule: AllowRule = "tue-thu 10:00-16:00".parse().unwrap();
    assert!(rule.contains(Weekday::Wednesday, 10 * 60));
    assert!(!rule.contains(Weekday::Wednesday, 16 * 60));
    assert!(!rule.contains(Weekday::Monday, 12 * 60));
    let wrap: AllowRule = "Fri-Mon".parse().unwrap();
    assert!(wrap.contains(Weekday::Sunday, 0) && wrap.contains(Weekday::Monday, 23 * 60 + 59));
    assert!(!wrap.contains(Weekday::Tuesday, 12 * 60));
    assert_eq!(
        "Sunday 22:00-24:00"
            .parse::<AllowRule>()
            .unwrap()
            .to_string(),
        "Sun 22:00-24:00"
    );
    for bad in [
        "",
        "Tue-Thu 16:00-10:00",
        "Tue-Thu 10:00",
        "Tus 10:00-11:00",
        "Mon 9:00-10:00",
        "Mon 10:00-24:01",
    ] {
        assert!(bad.parse::<AllowRule>().is_err(), "{bad}");
    }

    let date: Date = parse_date("2024-02-29").unwrap();
    assert_eq!(date.weekday(), Weekday::Thursday);
    assert_eq!(parse_date("2026-12-25").unwrap().weekday(), Weekday::Friday);
    for bad in [
        "2023-02-29",
        "2026-13-01",
        "2026-1-01",
        "26-12-25",
        "2026-12-25x",
        "20261225",
        "+002026-12-25",
    ] {
        assert!(parse_date(bad).is_err(), "{bad}");
    }
    let window = Window {
        allow: vec![rule],
        timezone: utc(),
        blackout: vec!["2026-12-16".parse().unwrap()],
    };
    assert!(window.permits("2026-12-15".parse().unwrap(), 11 * 60)); // a Tuesday
    assert!(!window.permits("2026-12-16".parse().unwrap(), 11 * 60)); // blackout
    assert!(!window.permits("2026-12-18".parse().unwrap(), 11 * 60)); // a Friday
}

#[test]
fn diagnostics() {
    let cases = [
        (
            "[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"\nverify = false\n",
            "fleet.toml:5:1: unknown key `verify`\n  hint: valid keys here: ca, cert, key",
        ),
        (
            "[[host]]\nname = \"web-1\"\naddress = \"10.0.0.11:7443\"\n",
            "fleet.toml:1:1: missing key `tls`\n  hint: add a [tls] table",
        ),
        (
            TLS,
            "fleet.toml:1:1: the fleet file lists no hosts\n  hint: add one [[host]] table",
        ),
        (
            &format!(
                "{}[[host]]\nname = \"web-1\"\naddress = \"10.0.0.13:7443\"\n",
                hosts()
            ),
            "fleet.toml:19:8: duplicate host `web-1`\n  hint: the first `web-1` is at line 7",
        ),
        (
            &format!(
                "{}[[host]]\nname = \"web-3\"\naddress = \"10.0.0.11:7443\"\n",
                hosts()
            ),
            "fleet.toml:20:11: address 10.0.0.11:7443 is already host `web-1`'s",
        ),
        (
            &format!("{TLS}[[host]]\nname = \"Web 1\"\naddress = \"10.0.0.11:7443\"\n"),
            "fleet.toml:6:8: invalid name \"Web 1\"",
        ),
        (
            &format!("{TLS}[[host]]\nname = \"web-1\"\naddress = \"10.0.0.11\"\n"),
            "fleet.toml:7:11: invalid address \"10.0.0.11\": expected host:port",
        ),
        (
            &format!("{}[deploy]\nstrategy = \"blue-green\"\n", hosts()),
            "fleet.toml:19:12: unknown value `blue-green`\n  hint: valid values: all, rolling, canary",
        ),
        (
            &format!("{}[deploy]\nbatch = \"0%\"\n", hosts()),
            "fleet.toml:19:9: a batch or canary of 0 hosts would never deploy",
        ),
        (
            &format!("{}[deploy]\nmax_unhealthy = \"150%\"\n", hosts()),
            "fleet.toml:19:17: invalid amount \"150%\": a percentage is at most 100%",
        ),
        (
            &format!("{}[deploy]\nbake = \"5 minutes\"\n", hosts()),
            "fleet.toml:19:8: invalid duration \"5 minutes\"",
        ),
        (
            &format!("{}[deploy]\nmigrate_on = \"some\"\n", hosts()),
            "fleet.toml:19:14: unknown value `some`\n  hint: valid values: first, all, none",
        ),
        (
            &format!(
                "{}[[gate]]\nprometheus = \"localhost:9090\"\nquery = \"up\"\nmax = 1\n",
                hosts()
            ),
            "fleet.toml:19:14: invalid URL \"localhost:9090\"",
        ),
        (
            &format!(
                "{}[[gate]]\nprometheus = \"http://p:9090\"\nquery = \"up\"\nmin = 1\n",
                hosts()
            ),
            "fleet.toml:21:1: unknown key `min`\n  hint: valid keys here: name, prometheus, query, max, on_empty",
        ),
        (
            &format!(
                "{}[[gate]]\nprometheus = \"http://p:9090\"\nquery = \"up\"\nmax = 1\non_empty = \"skip\"\n",
                hosts()
            ),
            "fleet.toml:22:12: unknown value `skip`\n  hint: valid values: fail or pass",
        ),
        (
            &format!(
                "{}[[gate]]\nname = \"\"\nprometheus = \"http://p:9090\"\nquery = \"up\"\nmax = 1\n",
                hosts()
            ),
            "fleet.toml:19:8: invalid gate name \"\"",
        ),
        (
            &format!("{}[window]\nallow = [\"Tue-Thu 16:00-10:00\"]\n", hosts()),
            "fleet.toml:19:9: invalid allow entry \"Tue-Thu 16:00-10:00\": the end is not after the start",
        ),
        (
            &format!("{}[window]\nblackout = [\"2026-02-30\"]\n", hosts()),
            "fleet.toml:19:12: invalid date \"2026-02-30\"",
        ),
        (
            &format!("{}[window]\ntimezone = \"\"\n", hosts()),
            "fleet.toml:19:12: invalid timezone \"\"",
        ),
        (
            &format!("{}[notify]\nwebhooks = [\"hooks.slack.com/x\"]\n", hosts()),
            "fleet.toml:19:12: invalid URL \"hooks.slack.com/x\"",
        ),
    ];
    for (text, want) in cases {
        let got = error(text);
        assert!(got.starts_with(want), "got:\n{got}\nwant a prefix:\n{want}");
    }
}

#[test]
fn io_error() {
    let err = load(Path::new("/nonexistent/fleet.toml")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot read the fleet file /nonexistent/fleet.toml (pass --fleet PATH or set HOIST_FLEET)"
    );
    assert!(std::error::Error::source(&err).is_some());
}

#[test]
fn deploy_concurrency_has_a_default_and_a_range() {
    assert_eq!(parse_ok(&hosts()).deploy.concurrency, DEFAULT_CONCURRENCY);
    let fleet = parse_ok(&format!("{}\n[deploy]\nconcurrency = 200\n", hosts()));
    assert_eq!(fleet.deploy.concurrency, 200);
    for bad in ["0", "5000"] {
        let err = parse(
            &format!("{}\n[deploy]\nconcurrency = {bad}\n", hosts()),
            Path::new("/home/ops/fleet.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("out of range") && err.contains("1 to 1024"),
            "{err}"
        );
    }
    assert_eq!(parse_concurrency("32"), Ok(32));
    assert!(parse_concurrency("0").is_err() && parse_concurrency("x").is_err());
}
