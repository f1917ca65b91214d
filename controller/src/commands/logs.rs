//! `hoist logs APP`: the last lines of the app's declared log sources (`[[app.logs]]`
//! in the agents' config: files, a unit's journal, a compose service's containers) on
//! every selected host at once, then, with `-f`, new lines as they come until Ctrl-C
//! or `--for`. Each line is prefixed with its host (and its source, unless `--source`
//! names one); log content is untrusted and shown through the escape layer.

use std::time::Duration;

use clap::Args;
use hoist_proto::v1::LogLine;
use serde_json::json;
use tokio::sync::mpsc;

use crate::{
    agents::{client::Credentials, fanout},
    commands::{Ctx, Failure, Global, JOB_CONNECT_TIMEOUT, parse_duration, usage},
    fleet::Host,
    output::{
        escape::one_line,
        render::Output,
        table::{Tone, paint},
    },
    rollout::operation::LogsOptions,
};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    /// Only this declared log source (default: every source of the app).
    #[arg(long)]
    pub source: Option<String>,
    /// The last lines of each source to show first (at most 10000).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub lines: u32,
    /// Keep showing new lines as they come, until Ctrl-C or --for.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How long -f follows at most (at most 24h).
    #[arg(long = "for", default_value = "1h", value_parser = parse_duration)]
    pub follow_for: Duration,
    /// Only lines matching this pattern: literals, . [a-z] [^...] \d \w \s, * + ?, ^ $,
    /// | and a leading (?i); at most 256 bytes. --lines counts matching lines.
    #[arg(long)]
    pub grep: Option<String>,
    /// Limit for connecting to each agent.
    #[arg(long, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

/// What one host's reader hands to the printer.
enum Item {
    Line(LogLine),
    Failed(String),
}

/// `hoist logs APP ...`.
pub async fn run(global: &Global, args: LogsArgs) -> Result<(), Failure> {
    let options = LogsOptions::new(
        args.app,
        args.source,
        args.lines,
        args.follow.then_some(args.follow_for),
        args.grep,
    )
    .map_err(usage)?;
    let mut ctx = Ctx::load(global)?;
    let request = options.request();
    let width = ctx.hosts.iter().map(|h| h.name.len()).max().unwrap_or(0);
    let show_source = options.source.is_none();
    let (tx, mut rx) = mpsc::channel::<(String, Item)>(256);
    let readers = futures_util::future::join_all(
        ctx.hosts
            .iter()
            .map(|host| read_host(host, &ctx.creds, args.timeout, request.clone(), tx.clone())),
    );
    drop(tx);
    let out = &mut ctx.out;
    let mut failed: Vec<String> = Vec::new();
    let printer = async {
        while let Some((host, item)) = rx.recv().await {
            match item {
                Item::Line(line) => print_line(out, &host, width, show_source, &line),
                Item::Failed(why) => {
                    print_failure(out, &host, width, &why);
                    failed.push(host);
                }
            }
        }
    };
    tokio::join!(readers, printer);
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed_with(format!(
            "no logs from {}",
            failed.join(", ")
        )))
    }
}

/// Streams `host`'s lines into `tx` until the agent ends the stream (or fails).
async fn read_host(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    request: hoist_proto::v1::LogsRequest,
    tx: mpsc::Sender<(String, Item)>,
) {
    let name = host.name.clone();
    let answer = fanout::ask_one(host, creds, timeout, |mut client| async move {
        client.logs(request).await.map(tonic::Response::into_inner)
    })
    .await;
    let mut stream = match answer {
        Ok(stream) => stream,
        Err(e) => {
            let _ = tx.send((name, Item::Failed(e.to_string()))).await;
            return;
        }
    };
    loop {
        let item = match stream.message().await {
            Ok(Some(line)) => Item::Line(line),
            Ok(None) => return,
            Err(status) => Item::Failed(crate::agents::client::status_error(&status)),
        };
        let last = matches!(item, Item::Failed(_));
        if tx.send((name.clone(), item)).await.is_err() || last {
            return;
        }
    }
}

/// `HOST [SOURCE] | line`, or `HOST [SOURCE] ! notice`; a JSON line with `--json`.
fn print_line(out: &mut Output<'_>, host: &str, width: usize, show_source: bool, line: &LogLine) {
    if out.json {
        let kind = if line.notice.is_empty() {
            "log_line"
        } else {
            "log_notice"
        };
        let mut value = json!({ "kind": kind, "host": host, "source": line.source });
        if !line.file.is_empty() {
            value["file"] = json!(line.file);
        }
        if line.notice.is_empty() {
            value["line"] = json!(line.line);
            value["truncated"] = json!(line.truncated);
        } else {
            value["message"] = json!(line.notice);
        }
        out.json_line(&value);
        return;
    }
    let mut prefix = format!("{host:<width$}");
    if show_source {
        prefix.push(' ');
        prefix.push_str(&one_line(&line.source));
    }
    let colour = out.colour;
    let text = if line.notice.is_empty() {
        let cut = if line.truncated {
            " …(cut at 8 KiB)"
        } else {
            ""
        };
        format!(
            "{} {}{cut}\n",
            paint(&format!("{prefix} |"), Tone::Dim, colour),
            one_line(&line.line)
        )
    } else {
        format!(
            "{} {}\n",
            paint(&format!("{prefix} !"), Tone::Warn, colour),
            paint(&one_line(&line.notice), Tone::Warn, colour)
        )
    };
    out.text(&text);
}

fn print_failure(out: &mut Output<'_>, host: &str, width: usize, why: &str) {
    if out.json {
        out.json_line(&json!({ "kind": "log_error", "host": host, "error": why }));
        return;
    }
    let colour = out.colour;
    out.text(&format!(
        "{} {}\n",
        paint(&format!("{host:<width$} !"), Tone::Bad, colour),
        paint(&one_line(why), Tone::Bad, colour)
    ));
}
