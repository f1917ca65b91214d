//! `hoist releases APP`: each host's releases of the app, newest first, with the one
//! serving now (current), the one a plain `hoist rollback` returns to (previous), and
//! whether a database backup was taken with it (what `rollback --restore-db` needs).

use std::time::Duration;

use hoist_proto::v1::{ListReleasesRequest, Release};
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

fn mark(release: &Release) -> Cell {
    if release.current {
        Cell::new("current", Tone::Good)
    } else if release.previous {
        Cell::new("previous", Tone::Plain)
    } else {
        Cell::from("")
    }
}

/// One section per host: its name and address, then RELEASE, COMMIT, REF, WHO,
/// DEPLOYED, STATE, BACKUP.
pub fn render(answers: &[Answer<Vec<Release>>], colour: bool) -> String {
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
            Ok(releases) if releases.is_empty() => {
                text.push_str(&table::paint("  no releases yet", Tone::Dim, colour));
                text.push('\n');
            }
            Ok(releases) => {
                let rows: Vec<Vec<Cell>> = releases
                    .iter()
                    .map(|r| {
                        vec![
                            Cell::from(r.id.clone()),
                            Cell::from(render::short_commit(&r.commit).to_string()),
                            Cell::from(r.r#ref.clone()),
                            Cell::from(r.who.clone()),
                            Cell::from(render::utc_time(r.deployed_at.as_ref())),
                            mark(r),
                            if r.has_backup {
                                Cell::from("yes")
                            } else {
                                Cell::new("no", Tone::Dim)
                            },
                        ]
                    })
                    .collect();
                let header = [
                    "RELEASE", "COMMIT", "REF", "WHO", "DEPLOYED", "STATE", "BACKUP",
                ];
                for line in table::render(&header, &rows, colour).lines() {
                    text.push_str(&format!("  {line}\n"));
                }
            }
        }
    }
    text
}

pub fn to_json(answers: &[Answer<Vec<Release>>]) -> Value {
    Value::Array(
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
                    })).collect::<Vec<_>>(),
                }),
            })
            .collect(),
    )
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
        out.json_document("releases", to_json(&answers));
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
    fn marks_current_previous_and_backups() {
        let release = |id: &str, current, previous, has_backup| Release {
            id: id.into(),
            commit: "abc1234def5678".into(),
            r#ref: "main".into(),
            who: "dana".into(),
            deployed_at: at(T0, 0),
            current,
            previous,
            has_backup,
        };
        let answers = vec![
            Answer {
                host: "web-1".into(),
                address: "10.0.0.11:7443".into(),
                elapsed: std::time::Duration::ZERO,
                result: Ok(vec![
                    release("20261122T101500Z-abc1234", true, false, true),
                    release("20261121T090000Z-0f0f0f0", false, true, false),
                ]),
            },
            Answer {
                host: "web-2".into(),
                address: "10.0.0.12:7443".into(),
                elapsed: std::time::Duration::ZERO,
                result: Err(CallError::Status(tonic::Status::not_found(
                    "unknown app `carbx`",
                ))),
            },
        ];
        assert_eq!(
            render(&answers, false),
            "web-1 (10.0.0.11:7443)
  RELEASE                   COMMIT   REF   WHO   DEPLOYED                 STATE     BACKUP
  20261122T101500Z-abc1234  abc1234  main  dana  2026-11-22 10:15:00 UTC  current   yes
  20261121T090000Z-0f0f0f0  abc1234  main  dana  2026-11-22 10:15:00 UTC  previous  no

web-2 (10.0.0.12:7443)
  NotFound: unknown app `carbx`
"
        );
        let json = to_json(&answers);
        assert_eq!(json[0]["releases"][0]["current"], true);
        assert_eq!(json[0]["releases"][1]["has_backup"], false);
        assert_eq!(json[1]["error"], "NotFound: unknown app `carbx`");
    }
}
