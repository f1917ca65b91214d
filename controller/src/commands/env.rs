//! `hoist env APP list|get|set|unset`: the app's shared `.env` on each host.
//!
//! Values stay hidden unless `--show` is given (the agent then needs the deployer
//! role) and the agent actually sent them; the JSON output follows the same rule.
//! `set` and `unset` are jobs on the agents (they may restart the app's services), run
//! host by host like a deploy.

use std::time::Duration;

use clap::{Args, Subcommand};
use hoist_proto::v1::{EnvListRequest, EnvVar};
use serde_json::{Value, json};

use crate::{
    agents::{
        client::Credentials,
        fanout::{self, Answer},
        ids,
    },
    commands::{Ctx, Failure, Global, JOB_CONNECT_TIMEOUT, finish, parse_duration, usage},
    fleet::Host,
    output::{
        render::Output,
        table::{self, Cell, Tone},
    },
    rollout::operation::EnvChange,
};

// === arguments ===

#[derive(Args, Debug)]
pub struct EnvArgs {
    /// The app, as named in the agents' config.
    pub app: String,
    #[command(subcommand)]
    pub action: EnvAction,
    /// Limit for connecting to each agent (and for list/get, for answering).
    #[arg(long, global = true, default_value = JOB_CONNECT_TIMEOUT, value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Subcommand, Debug)]
pub enum EnvAction {
    /// The keys of the app's .env on each host.
    List {
        /// Show the values (needs the deployer role).
        #[arg(long)]
        show: bool,
    },
    /// One key on each host.
    Get {
        key: String,
        /// Show the value (needs the deployer role).
        #[arg(long)]
        show: bool,
    },
    /// Set keys in the app's .env on each host, one host after another.
    Set {
        #[arg(required = true, value_name = "KEY=VALUE")]
        vars: Vec<String>,
        /// Restart the app's services afterwards so they read the new values.
        #[arg(long)]
        restart: bool,
    },
    /// Remove keys from the app's .env on each host, one host after another.
    Unset {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
        /// Restart the app's services afterwards.
        #[arg(long)]
        restart: bool,
    },
}

/// Arguments that cannot be sent: a usage error.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnvArgError {
    #[error(
        "invalid key {0:?}: keys are letters, digits and '_', not starting with a digit \
         (e.g. APP_DEBUG)"
    )]
    InvalidKey(String),
    #[error("nothing to set: give KEY=VALUE arguments")]
    NothingToSet,
    #[error("{0:?} is not KEY=VALUE; write {0}=VALUE (VALUE may be empty: {0}=)")]
    NotAnAssignment(String),
    #[error("the value of {0} has a line break or NUL; .env values are one line")]
    NotOneLine(String),
    #[error("{0} is given twice")]
    Twice(String),
    #[error("nothing to unset: give KEY arguments")]
    NothingToUnset,
    #[error("{0:?}: unset takes keys, not KEY=VALUE; `hoist env APP set {0}` sets it")]
    AssignmentToUnset(String),
}

/// An env key: a letter or `_`, then letters, digits or `_`.
pub fn validate_key(key: &str) -> Result<(), EnvArgError> {
    let mut chars = key.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(EnvArgError::InvalidKey(key.to_string()))
    }
}

/// `KEY=VALUE` arguments. The value is everything after the first `=` (it may be empty
/// or contain `=`), on one line.
pub fn parse_assignments(args: &[String]) -> Result<Vec<EnvVar>, EnvArgError> {
    if args.is_empty() {
        return Err(EnvArgError::NothingToSet);
    }
    let mut vars: Vec<EnvVar> = Vec::with_capacity(args.len());
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(EnvArgError::NotAnAssignment(arg.clone()));
        };
        validate_key(key)?;
        if value.contains(['\n', '\r', '\0']) {
            return Err(EnvArgError::NotOneLine(key.to_string()));
        }
        if vars.iter().any(|v| v.key == key) {
            return Err(EnvArgError::Twice(key.to_string()));
        }
        vars.push(EnvVar {
            key: key.to_string(),
            value: value.to_string(),
            redacted: false,
        });
    }
    Ok(vars)
}

/// `KEY` arguments of `unset`.
pub fn parse_keys(args: &[String]) -> Result<Vec<String>, EnvArgError> {
    if args.is_empty() {
        return Err(EnvArgError::NothingToUnset);
    }
    let mut keys: Vec<String> = Vec::with_capacity(args.len());
    for key in args {
        if key.contains('=') {
            return Err(EnvArgError::AssignmentToUnset(key.clone()));
        }
        validate_key(key)?;
        if keys.contains(key) {
            return Err(EnvArgError::Twice(key.clone()));
        }
        keys.push(key.clone());
    }
    Ok(keys)
}

/// `hoist env APP list|get|set|unset`.
pub async fn run(global: &Global, args: EnvArgs) -> Result<(), Failure> {
    // Bad arguments are usage errors before anything is loaded or sent.
    let change = match &args.action {
        EnvAction::Set { vars, restart } => Some((
            EnvChange::Set(parse_assignments(vars).map_err(usage)?),
            *restart,
        )),
        EnvAction::Unset { keys, restart } => {
            Some((EnvChange::Unset(parse_keys(keys).map_err(usage)?), *restart))
        }
        EnvAction::Get { key, .. } => {
            validate_key(key).map_err(usage)?;
            None
        }
        EnvAction::List { .. } => None,
    };
    let mut ctx = Ctx::load(global)?;
    let (change, restart) = match (change, &args.action) {
        (None, EnvAction::List { show }) => {
            let hosts = ctx.hosts.iter().collect::<Vec<_>>();
            return list(
                &hosts,
                &ctx.creds,
                args.timeout,
                &args.app,
                *show,
                &mut ctx.out,
            )
            .await;
        }
        (None, EnvAction::Get { key, show }) => {
            let hosts = ctx.hosts.iter().collect::<Vec<_>>();
            return get(
                &hosts,
                &ctx.creds,
                args.timeout,
                &args.app,
                key,
                *show,
                &mut ctx.out,
            )
            .await;
        }
        (Some(change), _) => change,
        (None, _) => unreachable!("set and unset always parse into a change"),
    };
    let base = ids::new_job_id("env").map_err(Failure::failed)?;
    let (hosts, mut session) = ctx.session(args.timeout, 2);
    let report = session
        .run_in_order(
            &change.title(&args.app),
            change.requests(&hosts, &base, &args.app, restart),
        )
        .await;
    finish(&report, &mut ctx.out)
}

// === list / get ===

async fn fetch(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    show: bool,
) -> Vec<Answer<Vec<EnvVar>>> {
    let request = EnvListRequest {
        app: app.to_string(),
        show,
    };
    fanout::ask_all(hosts, creds, timeout, |mut client| {
        let request = request.clone();
        async move { client.env_list(request).await.map(|r| r.into_inner().vars) }
    })
    .await
}

fn value_cell(var: &EnvVar, show: bool) -> Cell {
    if !show || var.redacted {
        Cell::new("(hidden)", Tone::Dim)
    } else if var.value.is_empty() {
        Cell::new("(empty)", Tone::Dim)
    } else {
        Cell::from(var.value.clone())
    }
}

fn var_json(var: &EnvVar, show: bool) -> Value {
    if show && !var.redacted {
        json!({ "key": var.key, "redacted": false, "value": var.value })
    } else {
        json!({ "key": var.key, "redacted": true })
    }
}

fn problems(answers: &[Answer<Vec<EnvVar>>], colour: bool) -> String {
    let mut text = String::new();
    for answer in answers {
        if let Err(err) = &answer.result {
            let line = format!("{} ({}): {err}", answer.host, answer.address);
            text.push_str(&table::paint(&line, Tone::Bad, colour));
            text.push('\n');
        }
    }
    text
}

/// HOST, KEY, VALUE; then the hosts that did not answer.
pub fn render_list(answers: &[Answer<Vec<EnvVar>>], show: bool, colour: bool) -> String {
    let mut rows = Vec::new();
    for answer in answers {
        if let Ok(vars) = &answer.result {
            if vars.is_empty() {
                rows.push(vec![
                    Cell::from(answer.host.clone()),
                    Cell::new("(no keys)", Tone::Dim),
                    Cell::from(""),
                ]);
            }
            for var in vars {
                rows.push(vec![
                    Cell::from(answer.host.clone()),
                    Cell::from(var.key.clone()),
                    value_cell(var, show),
                ]);
            }
        }
    }
    let mut text = table::render(&["HOST", "KEY", "VALUE"], &rows, colour);
    text.push_str(&problems(answers, colour));
    text
}

pub fn list_json(answers: &[Answer<Vec<EnvVar>>], show: bool) -> Value {
    Value::Array(
        answers
            .iter()
            .map(|a| match &a.result {
                Ok(vars) => json!({
                    "host": a.host,
                    "vars": vars.iter().map(|v| var_json(v, show)).collect::<Vec<_>>(),
                }),
                Err(err) => json!({ "host": a.host, "error": err.to_string() }),
            })
            .collect(),
    )
}

/// `hoist env APP list [--show]`.
pub async fn list(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    show: bool,
    out: &mut Output<'_>,
) -> Result<(), Failure> {
    let answers = fetch(hosts, creds, timeout, app, show).await;
    if out.json {
        out.json_document("env_list", list_json(&answers, show));
    } else {
        let text = render_list(&answers, show, out.colour);
        out.text(&text);
    }
    fanout::unanswered(&answers, "answer").map_err(Failure::failed)
}

/// HOST and the key's value on each host (`(not set)` where it is missing).
pub fn render_get(answers: &[Answer<Vec<EnvVar>>], key: &str, show: bool, colour: bool) -> String {
    let rows: Vec<Vec<Cell>> = answers
        .iter()
        .filter_map(|a| a.result.as_ref().ok().map(|vars| (a, vars)))
        .map(|(a, vars)| {
            let value = match vars.iter().find(|v| v.key == key) {
                Some(var) => value_cell(var, show),
                None => Cell::new("(not set)", Tone::Bad),
            };
            vec![Cell::from(a.host.clone()), value]
        })
        .collect();
    let mut text = table::render(&["HOST", key], &rows, colour);
    text.push_str(&problems(answers, colour));
    text
}

/// `hoist env APP get KEY [--show]`; fails when a host does not have the key.
pub async fn get(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    app: &str,
    key: &str,
    show: bool,
    out: &mut Output<'_>,
) -> Result<(), Failure> {
    let answers = fetch(hosts, creds, timeout, app, show).await;
    if out.json {
        let hosts: Vec<Value> = answers
            .iter()
            .map(|a| match &a.result {
                Ok(vars) => match vars.iter().find(|v| v.key == key) {
                    Some(var) => {
                        let mut v = var_json(var, show);
                        v["host"] = json!(a.host);
                        v["set"] = json!(true);
                        v
                    }
                    None => json!({ "host": a.host, "key": key, "set": false }),
                },
                Err(err) => json!({ "host": a.host, "key": key, "error": err.to_string() }),
            })
            .collect();
        out.json_document("env_get", Value::Array(hosts));
    } else {
        let text = render_get(&answers, key, show, out.colour);
        out.text(&text);
    }
    fanout::unanswered(&answers, "answer").map_err(Failure::failed)?;
    let missing: Vec<&str> = answers
        .iter()
        .filter(|a| {
            a.result
                .as_ref()
                .is_ok_and(|vars| !vars.iter().any(|v| v.key == key))
        })
        .map(|a| a.host.as_str())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Failure::failed(anyhow::anyhow!(
            "{key} is not set in {app}'s .env on {}",
            missing.join(", ")
        )))
    }
}

// === set / unset ===

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agents::fanout::CallError;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn assignments() {
        let vars = parse_assignments(&args(&[
            "APP_DEBUG=false",
            "DSN=pg://u:p@h/db?x=1",
            "EMPTY=",
        ]))
        .unwrap();
        let pairs: Vec<(&str, &str)> = vars
            .iter()
            .map(|v| (v.key.as_str(), v.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("APP_DEBUG", "false"),
                ("DSN", "pg://u:p@h/db?x=1"),
                ("EMPTY", "")
            ]
        );
        assert!(vars.iter().all(|v| !v.redacted));

        let err = parse_assignments(&args(&["APP_DEBUG"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("APP_DEBUG=VALUE"), "{err}");
        for bad in ["=x", "1KEY=x", "MY-KEY=x", "A B=x", "../X=1"] {
            let err = parse_assignments(&args(&[bad])).unwrap_err().to_string();
            assert!(err.contains("invalid key"), "{bad}: {err}");
        }
        assert!(
            parse_assignments(&args(&["A=1", "A=2"]))
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(
            parse_assignments(&args(&["A=x\ny"]))
                .unwrap_err()
                .to_string()
                .contains("one line")
        );
        assert!(parse_assignments(&[]).is_err());
    }

    #[test]
    fn keys() {
        assert_eq!(parse_keys(&args(&["A", "_B2"])).unwrap(), ["A", "_B2"]);
        assert!(
            parse_keys(&args(&["A=1"]))
                .unwrap_err()
                .to_string()
                .contains("not KEY=VALUE")
        );
        assert!(
            parse_keys(&args(&["2A"]))
                .unwrap_err()
                .to_string()
                .contains("invalid key")
        );
        assert!(
            parse_keys(&args(&["A", "A"]))
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(parse_keys(&[]).is_err());
    }

    fn answers() -> Vec<Answer<Vec<EnvVar>>> {
        let var = |key: &str, value: &str, redacted| EnvVar {
            key: key.into(),
            value: value.into(),
            redacted,
        };
        vec![
            Answer {
                host: "web-1".into(),
                address: "10.0.0.11:7443".into(),
                elapsed: std::time::Duration::ZERO,
                result: Ok(vec![
                    var("APP_KEY", "s3cret", false),
                    var("EMPTY", "", false),
                ]),
            },
            Answer {
                host: "web-2".into(),
                address: "10.0.0.12:7443".into(),
                elapsed: std::time::Duration::ZERO,
                result: Ok(vec![var("APP_KEY", "", true)]),
            },
            Answer {
                host: "web-3".into(),
                address: "10.0.0.13:7443".into(),
                elapsed: std::time::Duration::ZERO,
                result: Err(CallError::Unreachable("connection refused".into())),
            },
        ]
    }

    #[test]
    fn values_hidden_unless_shown() {
        let answers = answers();
        let hidden = render_list(&answers, false, false);
        assert!(!hidden.contains("s3cret"), "{hidden}");
        assert_eq!(
            hidden,
            "HOST   KEY      VALUE\n\
             web-1  APP_KEY  (hidden)\n\
             web-1  EMPTY    (hidden)\n\
             web-2  APP_KEY  (hidden)\n\
             web-3 (10.0.0.13:7443): unreachable: connection refused\n"
        );
        let shown = render_list(&answers, true, false);
        assert!(shown.contains("web-1  APP_KEY  s3cret"), "{shown}");
        assert!(shown.contains("web-1  EMPTY    (empty)"), "{shown}");
        assert!(shown.contains("web-2  APP_KEY  (hidden)"), "{shown}");

        let json = list_json(&answers, false).to_string();
        assert!(
            !json.contains("s3cret") && !json.contains("\"value\""),
            "{json}"
        );
        let json = list_json(&answers, true);
        assert_eq!(json[0]["vars"][0]["value"], "s3cret");
        assert_eq!(
            json[1]["vars"][0],
            json!({"key": "APP_KEY", "redacted": true})
        );
        assert_eq!(json[2]["error"], "unreachable: connection refused");
    }

    #[test]
    fn get_marks_missing_keys() {
        let answers = answers();
        let text = render_get(&answers, "EMPTY", true, false);
        assert!(text.contains("web-1  (empty)"), "{text}");
        assert!(text.contains("web-2  (not set)"), "{text}");
    }
}
