//! `hoist env APP list|get|set|unset`: the app's shared `.env` on each host.
//!
//! Values stay hidden unless `--show` is given (the agent then needs the deployer
//! role) and the agent actually sent them; the JSON output follows the same rule.
//! `set` and `unset` are jobs on the agents (they may restart the app's services), run
//! host by host like a deploy.

use std::time::Duration;

use hoist_proto::v1::{EnvListRequest, EnvSetRequest, EnvUnsetRequest, EnvVar};
use serde_json::{Value, json};

use crate::{
    Failure,
    client::Credentials,
    fanout::{self, Answer},
    fleet::Host,
    jobs::{self, JobRequest, Report, Session},
    render::Output,
    table::{self, Cell, Tone},
};

// === arguments ===

/// An env key: a letter or `_`, then letters, digits or `_`.
pub fn validate_key(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid key {key:?}: keys are letters, digits and '_', not starting with a digit \
             (e.g. APP_DEBUG)"
        ))
    }
}

/// `KEY=VALUE` arguments. The value is everything after the first `=` (it may be empty
/// or contain `=`), on one line.
pub fn parse_assignments(args: &[String]) -> Result<Vec<EnvVar>, String> {
    if args.is_empty() {
        return Err("nothing to set: give KEY=VALUE arguments".into());
    }
    let mut vars: Vec<EnvVar> = Vec::with_capacity(args.len());
    for arg in args {
        let Some((key, value)) = arg.split_once('=') else {
            let key = arg.as_str();
            return Err(format!(
                "{key:?} is not KEY=VALUE; write {key}=VALUE (VALUE may be empty: {key}=)"
            ));
        };
        validate_key(key)?;
        if value.contains(['\n', '\r', '\0']) {
            return Err(format!(
                "the value of {key} has a line break or NUL; .env values are one line"
            ));
        }
        if vars.iter().any(|v| v.key == key) {
            return Err(format!("{key} is given twice"));
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
pub fn parse_keys(args: &[String]) -> Result<Vec<String>, String> {
    if args.is_empty() {
        return Err("nothing to unset: give KEY arguments".into());
    }
    let mut keys: Vec<String> = Vec::with_capacity(args.len());
    for key in args {
        if key.contains('=') {
            return Err(format!(
                "{key:?}: unset takes keys, not KEY=VALUE; `hoist env APP set {key}` sets it"
            ));
        }
        validate_key(key)?;
        if keys.contains(key) {
            return Err(format!("{key} is given twice"));
        }
        keys.push(key.clone());
    }
    Ok(keys)
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
        out.json_document(&list_json(&answers, show));
    } else {
        let text = render_list(&answers, show, out.colour);
        out.text(&text);
    }
    fanout::unanswered(&answers, "answer")
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
    validate_key(key).map_err(|e| Failure::usage(anyhow::anyhow!(e)))?;
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
        out.json_document(&Value::Array(hosts));
    } else {
        let text = render_get(&answers, key, show, out.colour);
        out.text(&text);
    }
    fanout::unanswered(&answers, "answer")?;
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

/// `hoist env APP set KEY=VALUE... [--restart]`, host by host.
pub async fn set(
    session: &mut Session<'_, '_>,
    hosts: &[&Host],
    app: &str,
    vars: Vec<EnvVar>,
    restart: bool,
) -> Result<Report, Failure> {
    let base = jobs::new_job_id("env")
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot read /dev/urandom: {e}")))?;
    let keys: Vec<&str> = vars.iter().map(|v| v.key.as_str()).collect();
    let title = format!("env set of {app} {}", keys.join(" "));
    let requests = hosts
        .iter()
        .map(|host| {
            let request = EnvSetRequest {
                app: app.to_string(),
                vars: vars.clone(),
                restart,
                job_id: jobs::host_job_id(&base, &host.name),
            };
            (*host, JobRequest::EnvSet(request))
        })
        .collect();
    Ok(session.run_in_order(&title, requests).await)
}

/// `hoist env APP unset KEY... [--restart]`, host by host.
pub async fn unset(
    session: &mut Session<'_, '_>,
    hosts: &[&Host],
    app: &str,
    keys: Vec<String>,
    restart: bool,
) -> Result<Report, Failure> {
    let base = jobs::new_job_id("env")
        .map_err(|e| Failure::failed(anyhow::anyhow!("cannot read /dev/urandom: {e}")))?;
    let title = format!("env unset of {app} {}", keys.join(" "));
    let requests = hosts
        .iter()
        .map(|host| {
            let request = EnvUnsetRequest {
                app: app.to_string(),
                keys: keys.clone(),
                restart,
                job_id: jobs::host_job_id(&base, &host.name),
            };
            (*host, JobRequest::EnvUnset(request))
        })
        .collect();
    Ok(session.run_in_order(&title, requests).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::CallError;

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

        let err = parse_assignments(&args(&["APP_DEBUG"])).unwrap_err();
        assert!(err.contains("APP_DEBUG=VALUE"), "{err}");
        for bad in ["=x", "1KEY=x", "MY-KEY=x", "A B=x", "../X=1"] {
            let err = parse_assignments(&args(&[bad])).unwrap_err();
            assert!(err.contains("invalid key"), "{bad}: {err}");
        }
        assert!(
            parse_assignments(&args(&["A=1", "A=2"]))
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            parse_assignments(&args(&["A=x\ny"]))
                .unwrap_err()
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
                .contains("not KEY=VALUE")
        );
        assert!(
            parse_keys(&args(&["2A"]))
                .unwrap_err()
                .contains("invalid key")
        );
        assert!(
            parse_keys(&args(&["A", "A"]))
                .unwrap_err()
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
                result: Ok(vec![
                    var("APP_KEY", "s3cret", false),
                    var("EMPTY", "", false),
                ]),
            },
            Answer {
                host: "web-2".into(),
                address: "10.0.0.12:7443".into(),
                result: Ok(vec![var("APP_KEY", "", true)]),
            },
            Answer {
                host: "web-3".into(),
                address: "10.0.0.13:7443".into(),
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
