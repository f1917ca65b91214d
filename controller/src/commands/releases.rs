//! `hoist releases APP`: the fleet's releases of the app side by side, newest first:
//! one row per release id (a fleet deploy gives every host the same one), which hosts
//! have it, where it serves now (current), where a plain `hoist rollback` returns to it
//! (previous), where a database backup was taken with it (what `rollback --restore-db`
//! needs), and how it fared (ok, failed, rolled back).

use std::time::Duration;

use hoist_proto::v1::{ListReleasesRequest, Release, ReleaseOutcome};
use serde_json::{Value, json};

use clap::Args;

use crate::commands::{Ctx, Global, QUERY_TIMEOUT, parse_duration};
use crate::{
    Failure,
    agents::client::Credentials,
    agents::fanout::{self, Answer},
    fleet::Host,
    output::render::{self, Output},
    output::table::{self, Cell, Tone},
};

#[derive(Args, Debug)]
pub struct ReleasesArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Per-host limit for connecting and answering.
    #[arg(long, default_value = QUERY_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// `hoist releases APP`.
pub async fn run(global: &Global, args: ReleasesArgs) -> Result<(), Failure> {
    let mut ctx = Ctx::load(global)?;
    let hosts = ctx.hosts.iter().collect::<Vec<_>>();
    releases(&hosts, &ctx.creds, args.timeout, &args.app, &mut ctx.out).await
}

/// How a release fared on one host, as text and JSON say it.
pub fn outcome_name(release: &Release) -> &'static str {
    match release.outcome() {
        ReleaseOutcome::Ok => "ok",
        ReleaseOutcome::Failed => "failed",
        ReleaseOutcome::RolledBack => "rolled_back",
        ReleaseOutcome::Unspecified => "unknown",
    }
}

/// One release id across the fleet: each host that has it, with its record there.
struct Row<'a> {
    id: &'a str,
    on: Vec<(&'a str, &'a Release)>,
}

impl Row<'_> {
    fn hosts(&self, pick: impl Fn(&Release) -> bool) -> Vec<&str> {
        self.on
            .iter()
            .filter(|(_, r)| pick(r))
            .map(|(h, _)| *h)
            .collect()
    }

    fn first(&self) -> &Release {
        self.on[0].1
    }

    /// `ok`, or per outcome the hosts: `rolled_back on web-1; ok on web-2, web-3`.
    fn outcome(&self) -> (String, Vec<(&'static str, Vec<&str>)>) {
        let mut groups: Vec<(&'static str, Vec<&str>)> = Vec::new();
        for (host, release) in &self.on {
            let name = outcome_name(release);
            match groups.iter_mut().find(|(n, _)| *n == name) {
                Some((_, hosts)) => hosts.push(host),
                None => groups.push((name, vec![host])),
            }
        }
        let text = if groups.len() == 1 {
            groups[0].0.to_string()
        } else {
            groups
                .iter()
                .map(|(n, hosts)| format!("{n} on {}", hosts.join(", ")))
                .collect::<Vec<_>>()
                .join("; ")
        };
        (text, groups)
    }
}

/// The answering hosts' releases, one row per release id, newest first.
fn rows(answers: &[Answer<Vec<Release>>]) -> Vec<Row<'_>> {
    let mut rows: Vec<Row<'_>> = Vec::new();
    for answer in answers {
        let Ok(releases) = &answer.result else {
            continue;
        };
        for release in releases {
            match rows.iter_mut().find(|r| r.id == release.id) {
                Some(row) => row.on.push((&answer.host, release)),
                None => rows.push(Row {
                    id: &release.id,
                    on: vec![(&answer.host, release)],
                }),
            }
        }
    }
    // Newest first: by the time in the id, then (two deploys in one second) by when
    // they were deployed.
    let key = |r: &Row<'_>| {
        let at = r
            .first()
            .deployed_at
            .as_ref()
            .map_or((0, 0), |t| (t.seconds, t.nanos));
        (
            r.id.get(..16).unwrap_or(r.id).to_string(),
            at,
            r.id.to_string(),
        )
    };
    rows.sort_by_key(|r| std::cmp::Reverse(key(r)));
    rows
}

/// `all` when every answering host is named (and there are several), else the names.
fn hosts_cell(names: &[&str], answering: usize) -> Cell {
    if names.is_empty() {
        Cell::new("-", Tone::Dim)
    } else if names.len() == answering && answering > 1 {
        Cell::from("all")
    } else {
        Cell::from(names.join(", "))
    }
}

/// The fleet's releases side by side: a line naming the hosts, then one row per
/// release id (RELEASE, COMMIT, REF, DEPLOYED, OUTCOME, ON, CURRENT, PREVIOUS,
/// BACKUP: which hosts have it, serve it, would return to it, hold a backup taken with
/// it), then the hosts that did not answer.
pub fn render(answers: &[Answer<Vec<Release>>], colour: bool) -> String {
    let answering: Vec<&str> = answers
        .iter()
        .filter(|a| a.result.is_ok())
        .map(|a| a.host.as_str())
        .collect();
    let mut text = format!(
        "{} {}: {}\n",
        answering.len(),
        if answering.len() == 1 {
            "host"
        } else {
            "hosts"
        },
        if answering.is_empty() {
            "none answered".to_string()
        } else {
            answering.join(", ")
        }
    );
    let rows = rows(answers);
    let count = answering.len();
    if rows.is_empty() && count > 0 {
        text.push_str(&table::paint("no releases yet", Tone::Dim, colour));
        text.push('\n');
    } else if !rows.is_empty() {
        let cells: Vec<Vec<Cell>> = rows
            .iter()
            .map(|row| {
                let first = row.first();
                let (mut outcome, groups) = row.outcome();
                let mut tone = match groups.as_slice() {
                    [("ok", _)] => Tone::Good,
                    [("unknown", _)] => Tone::Dim,
                    _ => Tone::Bad,
                };
                // Left behind with its migrations applied: `hoist rollback APP --migrate`
                // (or `--of ID`) reverses them.
                let ahead = row.hosts(|r| r.schema_ahead);
                if !ahead.is_empty() {
                    outcome = format!("{outcome}; schema applied on {}", ahead.join(", "));
                    tone = Tone::Bad;
                }
                vec![
                    Cell::from(row.id.to_string()),
                    Cell::from(render::short_commit(&first.commit).to_string()),
                    Cell::from(first.r#ref.clone()),
                    Cell::from(render::utc_time(first.deployed_at.as_ref())),
                    Cell::new(outcome.replace('_', " "), tone),
                    hosts_cell(&row.hosts(|_| true), count),
                    hosts_cell(&row.hosts(|r| r.current), count),
                    hosts_cell(&row.hosts(|r| r.previous), count),
                    hosts_cell(&row.hosts(|r| r.has_backup), count),
                ]
            })
            .collect();
        let header = [
            "RELEASE", "COMMIT", "REF", "DEPLOYED", "OUTCOME", "ON", "CURRENT", "PREVIOUS",
            "BACKUP",
        ];
        text.push_str(&table::render(&header, &cells, colour));
    }
    for answer in answers {
        if let Err(err) = &answer.result {
            text.push_str(&table::paint(
                &format!("{} ({}): {err}", answer.host, answer.address),
                Tone::Bad,
                colour,
            ));
            text.push('\n');
        }
    }
    text
}

/// Each host's releases (the document's `hosts`), and the fleet's side by side (its
/// `releases`): see docs/REFERENCE.md, `hoist releases --json`.
pub fn to_json(answers: &[Answer<Vec<Release>>]) -> (Value, Value) {
    let hosts = Value::Array(
        answers
            .iter()
            .map(|a| match &a.result {
                Err(err) => json!({ "host": a.host, "error": err.to_string() }),
                Ok(releases) => json!({
                    "host": a.host,
                    "releases": releases.iter().map(|r| json!({
                        "id": r.id,
                        "commit": r.commit,
                        "ref": r.r#ref,
                        "who": r.who,
                        "deployed_at": render::timestamp_json(r.deployed_at.as_ref()),
                        "current": r.current,
                        "previous": r.previous,
                        "has_backup": r.has_backup,
                        "migrations": r.migrations,
                        "schema_ahead": r.schema_ahead,
                        "outcome": outcome_name(r),
                    })).collect::<Vec<_>>(),
                }),
            })
            .collect(),
    );
    let answering: Vec<&str> = answers
        .iter()
        .filter(|a| a.result.is_ok())
        .map(|a| a.host.as_str())
        .collect();
    let releases: Vec<Value> = rows(answers)
        .iter()
        .map(|row| {
            let first = row.first();
            let (_, groups) = row.outcome();
            let on = row.hosts(|_| true);
            json!({
                "id": row.id,
                "commit": first.commit,
                "ref": first.r#ref,
                "deployed_at": render::timestamp_json(first.deployed_at.as_ref()),
                "outcome": if groups.len() == 1 { groups[0].0 } else { "mixed" },
                "outcomes": groups.iter().map(|(name, hosts)| json!({"outcome": name, "hosts": hosts})).collect::<Vec<_>>(),
                "on": on,
                "missing_on": answering.iter().filter(|h| !on.contains(h)).collect::<Vec<_>>(),
                "current_on": row.hosts(|r| r.current),
                "previous_on": row.hosts(|r| r.previous),
                "backup_on": row.hosts(|r| r.has_backup),
            })
        })
        .collect();
    (hosts, Value::Array(releases))
}

/// `hoist releases APP`.
pub async fn releases(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    out: &mut Output<'_>,
) -> Result<(), Failure> {
    let request = ListReleasesRequest {
        app: app.to_string(),
    };
    let answers = fanout::ask_all(hosts, creds, timeout, |mut client| {
        let request = request.clone();
        async move {
            client
                .list_releases(request)
                .await
                .map(|r| r.into_inner().releases)
        }
    })
    .await;
    if out.json {
        let (hosts, releases) = to_json(&answers);
        out.json_document_with("releases", hosts, json!({ "releases": releases }));
    } else {
        let text = render(&answers, out.colour);
        out.text(&text);
    }
    crate::agents::fanout::unanswered(&answers, "releases").map_err(Failure::failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        agents::fanout::CallError,
        output::render::tests::{T0, at},
    };

    #[test]
    fn the_fleet_side_by_side() {
        let release = |id: &str, current, previous, has_backup, outcome: ReleaseOutcome| Release {
            id: id.into(),
            commit: "abc1234def5678".into(),
            r#ref: "main".into(),
            who: "dana".into(),
            deployed_at: at(T0, 0),
            current,
            previous,
            has_backup,
            outcome: outcome.into(),
            ..Default::default()
        };
        let (new, old) = ("20261122T101500Z-abc1234", "20261121T090000Z-0f0f0f0");
        let host = |name: &str, result| Answer {
            host: name.into(),
            address: format!("10.0.0.1{}:7443", &name[4..]),
            elapsed: std::time::Duration::ZERO,
            result,
        };
        let answers = vec![
            host(
                "web-1",
                Ok(vec![
                    release(new, false, false, false, ReleaseOutcome::RolledBack),
                    release(old, true, false, true, ReleaseOutcome::Ok),
                ]),
            ),
            host(
                "web-2",
                Ok(vec![
                    release(new, true, false, false, ReleaseOutcome::Ok),
                    release(old, false, true, false, ReleaseOutcome::Ok),
                ]),
            ),
            host(
                "web-3",
                Err(CallError::Status(tonic::Status::not_found(
                    "unknown app `carbx`",
                ))),
            ),
        ];
        assert_eq!(
            render(&answers, false),
            "2 hosts: web-1, web-2
RELEASE                   COMMIT   REF   DEPLOYED                 OUTCOME                            ON   CURRENT  PREVIOUS  BACKUP
20261122T101500Z-abc1234  abc1234  main  2026-11-22 10:15:00 UTC  rolled back on web-1; ok on web-2  all  web-2    -         -
20261121T090000Z-0f0f0f0  abc1234  main  2026-11-22 10:15:00 UTC  ok                                 all  web-1    web-2     web-1
web-3 (10.0.0.13:7443): NotFound: unknown app `carbx`
"
        );
        let (hosts, releases) = to_json(&answers);
        assert_eq!(releases[0]["id"], new);
        assert_eq!(releases[0]["outcome"], "mixed");
        assert_eq!(
            releases[0]["outcomes"],
            json!([{"outcome": "rolled_back", "hosts": ["web-1"]}, {"outcome": "ok", "hosts": ["web-2"]}])
        );
        assert_eq!(releases[0]["current_on"], json!(["web-2"]));
        assert_eq!(releases[1]["outcome"], "ok");
        assert_eq!(releases[1]["previous_on"], json!(["web-2"]));
        assert_eq!(releases[1]["backup_on"], json!(["web-1"]));
        assert_eq!(releases[1]["missing_on"], json!([]));
        assert_eq!(hosts[0]["releases"][0]["outcome"], "rolled_back");
        assert_eq!(hosts[2]["error"], "NotFound: unknown app `carbx`");
    }
}
