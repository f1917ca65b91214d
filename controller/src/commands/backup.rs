//! Backups as an operation of their own: `hoist backup APP` (a dump now, with the app's
//! `backup` step), `hoist backups APP` (every host's dumps: id, size, age, release) and
//! `hoist restore APP [--backup ID] --yes` (the database from one dump, inside the
//! app's maintenance_on/off; code and `current` stay).
//!
//! The database is the fleet's, so a backup and a restore run on one host: `backup` on
//! the first selected host (the one that migrates first; `--hosts` picks another),
//! `restore` on the host that holds the chosen backup.

use std::time::{Duration, SystemTime};

use clap::Args;
use hoist_proto::v1::Backup;
use serde_json::{Value, json};

use crate::{
    agents::{fanout, fanout::Answer, ids},
    commands::{
        Ctx, Failure, Global, JOB_CONNECT_TIMEOUT, QUERY_TIMEOUT, finish, parse_duration,
        status::human_bytes, usage,
    },
    output::{
        render,
        table::{self, Cell, Tone},
    },
    rollout::operation::{BackupOptions, RestoreOptions},
};

#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Limit for connecting to the agent; the backup itself may run up to the app's
    /// step_timeout.
    #[arg(long, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct BackupsArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = QUERY_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// The backup to restore (`hoist backups APP` lists them); default: the one taken
    /// before the newest release that was rolled back (else the newest backup).
    #[arg(long = "backup", value_name = "ID")]
    pub backup: Option<String>,
    /// Confirm: every write made since the backup was taken is lost.
    #[arg(long)]
    pub yes: bool,
    /// Limit for connecting to each agent.
    #[arg(long, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `hoist backup APP`: on the first selected host.
pub async fn backup(global: &Global, args: BackupArgs) -> Result<(), Failure> {
    let options = BackupOptions { app: args.app };
    let mut ctx = Ctx::load(global)?;
    let base = ids::new_job_id("backup").map_err(Failure::failed)?;
    let (hosts, mut session) = ctx.session(args.timeout, 2);
    let first: Vec<_> = hosts.into_iter().take(1).collect();
    let report = session
        .run_in_order(&options.title(), options.requests(&first, &base))
        .await;
    finish(&report, &mut ctx.out)
}

/// Every selected host's backups of `app`.
async fn ask(ctx: &Ctx, app: &str, timeout: Duration) -> Vec<Answer<Vec<Backup>>> {
    let request = BackupOptions {
        app: app.to_string(),
    }
    .list_request();
    let hosts: Vec<_> = ctx.hosts.iter().collect();
    fanout::ask_all(&hosts, &ctx.creds, timeout, |mut client| {
        let request = request.clone();
        async move {
            client
                .list_backups(request)
                .await
                .map(|r| r.into_inner().backups)
        }
    })
    .await
}

/// `3h 5m`, `2d 4h`: how long ago `taken` was.
fn age(taken: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    let Some(t) = taken else {
        return "-".into();
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let secs = (now - t.seconds).max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// One section per host: ID, SIZE, AGE, TAKEN, RELEASE, WHY (`*` marks the default of
/// `hoist restore`).
pub fn render(answers: &[Answer<Vec<Backup>>], colour: bool, now: SystemTime) -> String {
    let mut text = String::new();
    for (i, answer) in answers.iter().enumerate() {
        if i > 0 {
            text.push('\n');
        }
        text.push_str(&format!("{} ({})\n", answer.host, answer.address));
        match &answer.result {
            Err(err) => {
                text.push_str(&table::paint(&format!("  {err}"), Tone::Bad, colour));
                text.push('\n');
            }
            Ok(backups) if backups.is_empty() => {
                text.push_str(&table::paint("  no backups", Tone::Dim, colour));
                text.push('\n');
            }
            Ok(backups) => {
                let rows: Vec<Vec<Cell>> = backups
                    .iter()
                    .map(|b| {
                        let why = match b.reason.as_str() {
                            "deploy" => format!("before {}", b.before),
                            other => other.to_string(),
                        };
                        vec![
                            Cell::from(b.id.clone()),
                            Cell::from(human_bytes(b.size_bytes)),
                            Cell::from(age(b.taken_at.as_ref(), now)),
                            Cell::from(render::utc_time(b.taken_at.as_ref())),
                            Cell::from(b.release.clone()),
                            Cell::from(why),
                            if b.is_default {
                                Cell::new("restore default", Tone::Good)
                            } else {
                                Cell::from("")
                            },
                        ]
                    })
                    .collect();
                let header = ["BACKUP", "SIZE", "AGE", "TAKEN", "RELEASE", "WHY", ""];
                for line in table::render(&header, &rows, colour).lines() {
                    text.push_str(&format!("  {}\n", line.trim_end()));
                }
            }
        }
    }
    text
}

pub fn to_json(answers: &[Answer<Vec<Backup>>]) -> Value {
    Value::Array(
        answers
            .iter()
            .map(|a| match &a.result {
                Err(err) => json!({ "host": a.host, "error": err.to_string() }),
                Ok(backups) => json!({
                    "host": a.host,
                    "backups": backups.iter().map(|b| json!({
                        "id": b.id,
                        "size_bytes": b.size_bytes,
                        "taken_at": render::timestamp_json(b.taken_at.as_ref()),
                        "release": b.release,
                        "reason": b.reason,
                        "before": b.before,
                        "default": b.is_default,
                    })).collect::<Vec<_>>(),
                }),
            })
            .collect(),
    )
}

/// `hoist backups APP`.
pub async fn backups(global: &Global, args: BackupsArgs) -> Result<(), Failure> {
    let mut ctx = Ctx::load(global)?;
    let answers = ask(&ctx, &args.app, args.timeout).await;
    if ctx.out.json {
        ctx.out.json_document("backups", to_json(&answers));
    } else {
        let text = render(&answers, ctx.out.colour, SystemTime::now());
        ctx.out.text(&text);
    }
    fanout::unanswered(&answers, "backups").map_err(Failure::failed)
}

/// The host and backup a restore uses: the one named (on whichever host holds it),
/// else the hosts' defaults, the newest first.
pub fn choose(
    answers: &[Answer<Vec<Backup>>],
    named: Option<&str>,
) -> Result<(usize, String), String> {
    let mut found: Vec<(usize, &Backup)> = answers
        .iter()
        .enumerate()
        .filter_map(|(i, a)| a.result.as_ref().ok().map(|list| (i, list)))
        .flat_map(|(i, list)| list.iter().map(move |b| (i, b)))
        .filter(|(_, b)| named.map_or(b.is_default, |id| b.id == id))
        .collect();
    let taken = |b: &Backup| b.taken_at.as_ref().map_or((0, 0), |t| (t.seconds, t.nanos));
    found.sort_by_key(|b| std::cmp::Reverse(taken(b.1)));
    match found.first() {
        Some((i, b)) => Ok((*i, b.id.clone())),
        None => Err(match named {
            Some(id) => format!("no selected host has a backup {id}"),
            None => "no selected host has a backup".to_string(),
        }),
    }
}

/// `hoist restore APP [--backup ID] --yes`: on the host that holds the backup.
pub async fn restore(global: &Global, args: RestoreArgs) -> Result<(), Failure> {
    let options = RestoreOptions::new(args.app, args.backup, args.yes).map_err(usage)?;
    let mut ctx = Ctx::load(global)?;
    let answers = ask(&ctx, &options.app, args.timeout).await;
    let (index, id) = choose(&answers, options.backup.as_deref()).map_err(|why| {
        Failure::failed(anyhow::anyhow!(
            "{why}; `hoist backups {}` lists them, `hoist backup {}` takes one",
            options.app,
            options.app
        ))
    })?;
    let base = ids::new_job_id("restore").map_err(Failure::failed)?;
    let (hosts, mut session) = ctx.session(args.timeout, 2);
    let host = hosts[index];
    let report = session
        .run_in_order(&options.title(), options.request(host, &id, &base))
        .await;
    finish(&report, &mut ctx.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(id: &str, secs: i64, is_default: bool) -> Backup {
        Backup {
            id: id.into(),
            size_bytes: 6_600,
            taken_at: Some(prost_types::Timestamp {
                seconds: secs,
                nanos: 0,
            }),
            release: "r1".into(),
            reason: "deploy".into(),
            before: "r2".into(),
            is_default,
        }
    }

    fn answers() -> Vec<Answer<Vec<Backup>>> {
        vec![
            Answer {
                host: "web-1".into(),
                address: "10.0.0.1:7443".into(),
                elapsed: Duration::ZERO,
                result: Ok(vec![
                    backup("r1.before-r2", 200, true),
                    backup("r0.manual-1", 100, false),
                ]),
            },
            Answer {
                host: "web-2".into(),
                address: "10.0.0.2:7443".into(),
                elapsed: Duration::ZERO,
                result: Ok(vec![backup("r9.manual-3", 50, true)]),
            },
        ]
    }

    #[test]
    fn the_named_backup_or_the_newest_default() {
        let a = answers();
        assert_eq!(choose(&a, None).unwrap(), (0, "r1.before-r2".to_string()));
        assert_eq!(
            choose(&a, Some("r9.manual-3")).unwrap(),
            (1, "r9.manual-3".to_string())
        );
        assert!(
            choose(&a, Some("nope"))
                .unwrap_err()
                .contains("no selected host has a backup nope")
        );
    }

    #[test]
    fn listing_shows_size_age_release_and_the_default() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(200 + 7260);
        let text = render(&answers(), false, now);
        assert!(text.contains("web-1 (10.0.0.1:7443)"), "{text}");
        assert!(text.contains("6.4KiB"), "{text}");
        assert!(text.contains("2h 1m"), "{text}");
        assert!(text.contains("before r2"), "{text}");
        assert!(text.contains("restore default"), "{text}");
        let json = to_json(&answers());
        assert_eq!(json[0]["backups"][0]["size_bytes"], 6600);
        assert_eq!(json[0]["backups"][0]["default"], true);
        assert_eq!(json[1]["backups"][0]["release"], "r1");
    }
}
