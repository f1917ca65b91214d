//! Prometheus gates (`[[gate]]`): an instant query through the HTTP API
//! (`GET /api/v1/query?query=...`) whose value must stay at or under `max` during a
//! bake. A gate that cannot be evaluated — no connection, an HTTP error, a query error,
//! an empty result, NaN — fails: silence from Prometheus is not health.
//!
//! A vector result with several series holds only when every series does, so the
//! gate's value is the largest sample.
//!
//! An empty result or NaN (a ratio before the first error, or with no traffic) fails
//! with a hint (`or vector(0)`, `on_empty = "pass"`) unless the gate says
//! `on_empty = "pass"`. A gate is shown by its `name` when it has one; the query stays
//! in `--json` and in the plan lines.
//!
//! `prometheus` may be `http://` or `https://` (verified against the system's root
//! certificates; see [`crate::rollout::httpc`]).

use std::{fmt, time::Duration};

use serde_json::Value;

use crate::{
    fleet::{Gate, OnEmpty},
    output::redact,
    rollout::httpc::{self, HttpError},
};

/// Limit for one query, connecting included.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// What evaluating a gate found.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// The value, at or under max.
    Pass(f64),
    /// The value, over max.
    Over(f64),
    /// No data (an empty vector or NaN), and the gate says `on_empty = "pass"`.
    Empty,
    /// Could not evaluate: why.
    Error(String),
}

impl Verdict {
    pub fn ok(&self) -> bool {
        matches!(self, Verdict::Pass(_) | Verdict::Empty)
    }

    pub fn value(&self) -> Option<f64> {
        match self {
            Verdict::Pass(v) | Verdict::Over(v) => Some(*v),
            Verdict::Empty | Verdict::Error(_) => None,
        }
    }
}

/// A gate as the operator reads it: its `name`, else `QUERY <= MAX`.
pub fn describe(gate: &Gate) -> String {
    gate.name.clone().unwrap_or_else(|| rule(gate))
}

/// The gate's rule in full: `QUERY <= MAX`.
pub fn rule(gate: &Gate) -> String {
    format!("{} <= {}", gate.query, gate.max)
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Pass(v) => write!(f, "{v} (ok)"),
            Verdict::Over(v) => write!(f, "{v}, over the max"),
            Verdict::Empty => write!(f, "no data (ok: on_empty = \"pass\")"),
            Verdict::Error(why) => write!(f, "cannot evaluate: {why}"),
        }
    }
}

/// A gate whose query URL cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("[[gate]] #{number} (prometheus = {prometheus}): {error}")]
pub struct GateError {
    /// 1 for the first `[[gate]]`.
    pub number: usize,
    pub prometheus: String,
    pub error: HttpError,
}

/// Checks every gate's URL before anything changes: `Err` names the first bad one.
pub fn validate(gates: &[Gate]) -> Result<(), GateError> {
    for (i, gate) in gates.iter().enumerate() {
        httpc::Url::parse(&query_url(gate)).map_err(|error| GateError {
            number: i + 1,
            prometheus: redact::userinfo(&gate.prometheus),
            error,
        })?;
    }
    Ok(())
}

/// `<prometheus>/api/v1/query?query=<encoded>`.
pub fn query_url(gate: &Gate) -> String {
    format!(
        "{}/api/v1/query?query={}",
        gate.prometheus.trim_end_matches('/'),
        httpc::encode(&gate.query)
    )
}

/// Runs the gate's query once.
pub async fn evaluate(gate: &Gate) -> Verdict {
    let url = match httpc::Url::parse(&query_url(gate)) {
        Ok(url) => url,
        Err(why) => return Verdict::Error(why.to_string()),
    };
    match httpc::get(&url, QUERY_TIMEOUT).await {
        Ok(response) => judge(gate.max, gate.on_empty, response.status, &response.body),
        Err(why) => Verdict::Error(format!("{}: {why}", redact::userinfo(&gate.prometheus))),
    }
}

/// What to do about a query that returned no data.
const EMPTY_HINT: &str = "if no data means healthy here (a ratio before the first error), \
     append `or vector(0)` to the query, or set on_empty = \"pass\" on the gate";

/// The verdict on a query's answer.
pub fn judge(max: f64, on_empty: OnEmpty, status: u16, body: &str) -> Verdict {
    let empty = |what: &str| match on_empty {
        OnEmpty::Pass => Verdict::Empty,
        OnEmpty::Fail => Verdict::Error(format!("{what}; {EMPTY_HINT}")),
    };
    let excerpt = |body: &str| {
        let body = body.trim();
        match body.char_indices().nth(200) {
            Some((i, _)) => format!("{}…", &body[..i]),
            None => body.to_string(),
        }
    };
    let json: Value = match serde_json::from_str(body) {
        Ok(json) => json,
        Err(_) => {
            return Verdict::Error(format!(
                "HTTP {status}, not a Prometheus answer: {}",
                excerpt(body)
            ));
        }
    };
    if status != 200 || json["status"] != "success" {
        let error = json["error"].as_str().unwrap_or_default();
        return Verdict::Error(if error.is_empty() {
            format!("HTTP {status}: {}", excerpt(body))
        } else {
            format!("HTTP {status}: {error}")
        });
    }
    let data = &json["data"];
    let samples: Vec<&Value> = match data["resultType"].as_str() {
        Some("vector") => data["result"]
            .as_array()
            .map(|series| series.iter().map(|s| &s["value"][1]).collect())
            .unwrap_or_default(),
        Some("scalar") => vec![&data["result"][1]],
        Some(other) => {
            return Verdict::Error(format!(
                "the query returns a {other}; a gate needs a single number (a vector or scalar)"
            ));
        }
        None => return Verdict::Error(format!("no resultType in {}", excerpt(body))),
    };
    if samples.is_empty() {
        return empty("the query returned no data (an empty vector)");
    }
    let mut worst = f64::NEG_INFINITY;
    for sample in samples {
        let value = sample
            .as_str()
            .and_then(|s| match s {
                "+Inf" | "Inf" => Some(f64::INFINITY),
                "-Inf" => Some(f64::NEG_INFINITY),
                s => s.parse::<f64>().ok(),
            })
            .ok_or_else(|| format!("not a sample value: {sample}"));
        match value {
            Ok(v) if v.is_nan() => {
                return empty("the query's value is NaN (no traffic to divide?)");
            }
            Ok(v) => worst = worst.max(v),
            Err(why) => return Verdict::Error(why.to_string()),
        }
    }
    if worst <= max {
        Verdict::Pass(worst)
    } else {
        Verdict::Over(worst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::httpc::tests::server;

    fn vector(values: &[&str]) -> String {
        let series: Vec<String> = values
            .iter()
            .map(|v| format!("{{\"metric\":{{}},\"value\":[1700000000.1,\"{v}\"]}}"))
            .collect();
        format!(
            "{{\"status\":\"success\",\"data\":{{\"resultType\":\"vector\",\"result\":[{}]}}}}",
            series.join(",")
        )
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            judge(0.01, OnEmpty::Fail, 200, &vector(&["0.002"])),
            Verdict::Pass(0.002)
        );
        assert_eq!(
            judge(0.01, OnEmpty::Fail, 200, &vector(&["0.01"])),
            Verdict::Pass(0.01)
        );
        assert_eq!(
            judge(0.01, OnEmpty::Fail, 200, &vector(&["0.002", "0.5"])),
            Verdict::Over(0.5)
        );
        assert_eq!(
            judge(1.0, OnEmpty::Fail, 200, &vector(&["+Inf"])),
            Verdict::Over(f64::INFINITY)
        );
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"3"]}}"#;
        assert_eq!(judge(5.0, OnEmpty::Fail, 200, scalar), Verdict::Pass(3.0));
        let failing = |v: Verdict, needle: &str| match v {
            Verdict::Error(why) => assert!(why.contains(needle), "{why}"),
            other => panic!("{other:?}"),
        };
        failing(
            judge(1.0, OnEmpty::Fail, 200, &vector(&[])),
            "no data (an empty vector); if no data means healthy here (a ratio before the \
             first error), append `or vector(0)` to the query, or set on_empty = \"pass\"",
        );
        assert_eq!(judge(1.0, OnEmpty::Pass, 200, &vector(&[])), Verdict::Empty);
        assert_eq!(
            judge(1.0, OnEmpty::Pass, 200, &vector(&["NaN"])),
            Verdict::Empty
        );
        assert!(Verdict::Empty.ok());
        // on_empty never hides a real value over the max.
        assert_eq!(
            judge(0.01, OnEmpty::Pass, 200, &vector(&["0.5"])),
            Verdict::Over(0.5)
        );
        failing(judge(1.0, OnEmpty::Fail, 200, &vector(&["NaN"])), "NaN");
        failing(
            judge(
                1.0,
                OnEmpty::Fail,
                400,
                r#"{"status":"error","errorType":"bad_data","error":"parse error at char 5"}"#,
            ),
            "HTTP 400: parse error",
        );
        failing(
            judge(1.0, OnEmpty::Fail, 502, "<html>bad gateway</html>"),
            "HTTP 502",
        );
        failing(
            judge(
                1.0,
                OnEmpty::Fail,
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#,
            ),
            "matrix",
        );
    }

    #[tokio::test]
    async fn evaluates_over_http() {
        let prometheus = server(200, r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1,"0.25"]}]}}"#).await;
        let gate = Gate {
            name: None,
            prometheus: format!("{}/", prometheus.url),
            query: "sum(rate(x[5m])) > 0".into(),
            max: 0.5,
            on_empty: OnEmpty::Fail,
        };
        assert_eq!(evaluate(&gate).await, Verdict::Pass(0.25));
        let requests = prometheus.requests.lock().unwrap().clone();
        assert!(
            requests[0].starts_with(
                "GET /api/v1/query?query=sum%28rate%28x%5B5m%5D%29%29%20%3E%200 HTTP/1.1"
            ),
            "{requests:?}"
        );
        let strict = Gate { max: 0.1, ..gate };
        assert_eq!(evaluate(&strict).await, Verdict::Over(0.25));

        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = Gate {
            name: Some("Agent up".into()),
            prometheus: format!("http://{}", closed.local_addr().unwrap()),
            query: "up".into(),
            max: 1.0,
            on_empty: OnEmpty::Fail,
        };
        assert_eq!(describe(&dead), "Agent up");
        assert_eq!(rule(&dead), "up <= 1");
        drop(closed);
        assert!(matches!(evaluate(&dead).await, Verdict::Error(why) if why.contains("connect")));
        let https = Gate {
            prometheus: "https://prom.example".into(),
            ..dead.clone()
        };
        assert!(validate(&[https]).is_ok());
        let bad_port = Gate {
            prometheus: "https://prom.example:99999".into(),
            ..dead
        };
        assert!(
            validate(&[bad_port])
                .unwrap_err()
                .to_string()
                .contains("[[gate]] #1")
        );
    }
}
