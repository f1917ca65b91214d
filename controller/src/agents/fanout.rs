//! Asking every selected host the same question at once (releases, job logs, env,
//! lock state): bounded concurrency, a per-host limit for connecting and answering,
//! answers in fleet order, and an error that still tells "unreachable" from the
//! agent's own gRPC status (so callers can treat NotFound as "not here").

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, stream};

use crate::{
    agents::client::{self, Credentials},
    fleet::Host,
};

/// Hosts asked at once unless the caller says otherwise.
pub const CONCURRENCY: usize = 64;

/// Why a host gave no answer: the transport error or the agent's gRPC status, carried
/// as is so callers can tell "unreachable" from "not here" (NotFound).
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No connection, or no answer in time.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The agent answered with an error.
    #[error("{}", client::status_error(.0))]
    Status(tonic::Status),
}

impl CallError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Status(s) if s.code() == tonic::Code::NotFound)
    }

    /// Why, without saying "unreachable" (for tables that say so already).
    pub fn reason(&self) -> String {
        match self {
            CallError::Unreachable(why) => why.clone(),
            CallError::Status(status) => client::status_error(status),
        }
    }
}

/// One host's answer.
pub struct Answer<T> {
    pub host: String,
    pub address: String,
    /// From the start of the call to its answer (or to giving up).
    pub elapsed: Duration,
    pub result: Result<T, CallError>,
}

/// Hosts that gave no usable answer: the unreachable ones, and those that answered
/// with an error (an unknown app, no `.env`, ...), which are not called unreachable.
#[derive(Debug, thiserror::Error)]
#[error("{}", describe(.what, .unreachable, .refused))]
pub struct Unanswered {
    pub what: String,
    pub unreachable: Vec<String>,
    /// Host and the agent's message.
    pub refused: Vec<(String, String)>,
}

impl Unanswered {
    pub fn is_empty(&self) -> bool {
        self.unreachable.is_empty() && self.refused.is_empty()
    }
}

/// `app X is not configured on web-1, web-2 (known: shop)`, `web-3: no .env ...`, `no
/// WHAT from web-4 (unreachable)`, joined by `; `. Hosts with the same message are
/// named together.
fn describe(what: &str, unreachable: &[String], refused: &[(String, String)]) -> String {
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for (host, message) in refused {
        match groups.iter_mut().find(|(m, _)| m == message) {
            Some((_, hosts)) => hosts.push(host),
            None => groups.push((message, vec![host])),
        }
    }
    let mut parts: Vec<String> = groups
        .into_iter()
        .map(|(message, hosts)| {
            let hosts = hosts.join(", ");
            match unknown_app(message) {
                Some((app, known)) => {
                    format!("app {app} is not configured on {hosts} (known: {known})")
                }
                None => format!("{hosts}: {message}"),
            }
        })
        .collect();
    if !unreachable.is_empty() {
        parts.push(format!(
            "no {what} from {} (unreachable)",
            unreachable.join(", ")
        ));
    }
    parts.join("; ")
}

/// The app and the agent's apps from its unknown-app answer
/// (`unknown app "X"; this agent has: a, b`).
fn unknown_app(message: &str) -> Option<(&str, &str)> {
    let rest = message.strip_prefix("unknown app \"")?;
    let (app, known) = rest.split_once("\"; this agent has: ")?;
    Some((app, known))
}

/// Fails naming every host that gave no usable answer, telling the unreachable ones
/// apart from those that answered with an error.
pub fn unanswered<T>(answers: &[Answer<T>], what: &str) -> Result<(), Unanswered> {
    let mut failed = Unanswered {
        what: what.to_string(),
        unreachable: Vec::new(),
        refused: Vec::new(),
    };
    for answer in answers {
        match &answer.result {
            Ok(_) => {}
            Err(CallError::Unreachable(_)) => failed.unreachable.push(answer.host.clone()),
            Err(CallError::Status(status)) => failed
                .refused
                .push((answer.host.clone(), status.message().to_string())),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed)
    }
}

/// How long [`ask_one`] waits for its diagnosis of a call that got no answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Calls `call` on `host`, bounded by `timeout` for connecting and answering.
pub async fn ask_one<T, F, Fut>(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    call: F,
) -> Result<T, CallError>
where
    F: FnOnce(client::Client) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    match tokio::time::timeout(timeout, ask_each(host, creds, timeout, call)).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Unreachable(format!(
            "no answer within {timeout:?}"
        ))),
    }
}

/// Calls `call` on `host`, bounded by `timeout` for connecting and for each request
/// `call` makes (not for all of them together: a call that pages through a long
/// answer takes as many requests as it needs).
pub async fn ask_each<T, F, Fut>(
    host: &Host,
    creds: &Credentials,
    timeout: Duration,
    call: F,
) -> Result<T, CallError>
where
    F: FnOnce(client::Client) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let client = client::connect(&host.address, creds, timeout)
        .await
        .map_err(|e| CallError::Unreachable(e.to_string()))?;
    match call(client).await {
        Ok(answer) => Ok(answer),
        Err(status)
            if status.code() == tonic::Code::Cancelled && status.message().contains("Timeout") =>
        {
            Err(CallError::Unreachable(format!(
                "no answer within {timeout:?}"
            )))
        }
        // No answer at all: the agent may have refused our certificate after the
        // handshake looked complete; ask it why, on a connection of our own.
        Err(status)
            if matches!(
                status.code(),
                tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown
            ) =>
        {
            match client::diagnose_refusal(&host.address, creds, timeout.min(PROBE_TIMEOUT)).await {
                Some(why) => Err(CallError::Unreachable(why)),
                None => Err(CallError::Status(status)),
            }
        }
        Err(status) => Err(CallError::Status(status)),
    }
}

/// Calls `call` on every host in `hosts` (at most [`CONCURRENCY`] at a time), each
/// bounded by `timeout` for connecting and answering. Answers come back in the order
/// of `hosts`.
pub async fn ask_all<T, F, Fut>(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    call: F,
) -> Vec<Answer<T>>
where
    F: Fn(client::Client) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    ask_all_bounded(hosts, creds, timeout, CONCURRENCY, call).await
}

/// [`ask_all`], at most `concurrency` hosts at a time.
pub async fn ask_all_bounded<T, F, Fut>(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    concurrency: usize,
    call: F,
) -> Vec<Answer<T>>
where
    F: Fn(client::Client) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    ask_all_with(hosts, creds, timeout, concurrency, true, call).await
}

/// [`ask_all`], with `timeout` bounding each request rather than each host's whole
/// answer ([`ask_each`]): for answers that come in pages.
pub async fn ask_all_paged<T, F, Fut>(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    call: F,
) -> Vec<Answer<T>>
where
    F: Fn(client::Client) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    ask_all_with(hosts, creds, timeout, CONCURRENCY, false, call).await
}

async fn ask_all_with<T, F, Fut>(
    hosts: &[&Host],
    creds: &Credentials,
    timeout: Duration,
    concurrency: usize,
    whole: bool,
    call: F,
) -> Vec<Answer<T>>
where
    F: Fn(client::Client) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let call = &call;
    let mut answers: Vec<(usize, Answer<T>)> = stream::iter(hosts.iter().enumerate())
        .map(|(i, host)| async move {
            let started = Instant::now();
            let result = if whole {
                ask_one(host, creds, timeout, call).await
            } else {
                ask_each(host, creds, timeout, call).await
            };
            let answer = Answer {
                host: host.name.clone(),
                address: host.address.clone(),
                elapsed: started.elapsed(),
                result,
            };
            (i, answer)
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(host: &str, result: Result<(), CallError>) -> Answer<()> {
        Answer {
            host: host.into(),
            address: String::new(),
            elapsed: Duration::ZERO,
            result,
        }
    }

    #[test]
    fn hosts_that_answered_are_not_unreachable() {
        let unknown = || {
            Err(CallError::Status(tonic::Status::not_found(
                "unknown app \"nosuchapp\"; this agent has: shop, blog",
            )))
        };
        let answers = [
            answer("web-1", unknown()),
            answer("web-2", unknown()),
            answer(
                "web-3",
                Err(CallError::Status(tonic::Status::failed_precondition(
                    "no .env yet",
                ))),
            ),
            answer("web-4", Err(CallError::Unreachable("refused".into()))),
            answer("web-5", Ok(())),
        ];
        let err = unanswered(&answers, "status").unwrap_err().to_string();
        assert_eq!(
            err,
            "app nosuchapp is not configured on web-1, web-2 (known: shop, blog); \
             web-3: no .env yet; no status from web-4 (unreachable)"
        );
        assert!(unanswered(&answers[4..], "status").is_ok());
    }
}
