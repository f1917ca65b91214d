//! Asking every selected host the same question at once (releases, job logs, env,
//! lock state): bounded concurrency, a per-host limit for connecting and answering,
//! answers in fleet order, and an error that still tells "unreachable" from the
//! agent's own gRPC status (so callers can treat NotFound as "not here").

use std::{
    future::Future,
    time::{Duration, Instant},
};

use futures_util::{StreamExt as _, stream};
use hoist_proto::v1::agent_client::AgentClient;
use tonic::transport::Channel;

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

/// Hosts that gave no answer.
#[derive(Debug, thiserror::Error)]
#[error("no {what} from {}", hosts.join(", "))]
pub struct Unanswered {
    pub what: String,
    pub hosts: Vec<String>,
}

/// Fails naming every host that gave no answer ("no WHAT from web-1, web-3").
pub fn unanswered<T>(answers: &[Answer<T>], what: &str) -> Result<(), Unanswered> {
    let hosts: Vec<String> = answers
        .iter()
        .filter(|a| a.result.is_err())
        .map(|a| a.host.clone())
        .collect();
    if hosts.is_empty() {
        Ok(())
    } else {
        Err(Unanswered {
            what: what.to_string(),
            hosts,
        })
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
    F: FnOnce(AgentClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let ask = async {
        let client = client::connect(&host.address, creds, timeout)
            .await
            .map_err(|e| CallError::Unreachable(e.to_string()))?;
        match call(client).await {
            Ok(answer) => Ok(answer),
            // No answer at all: the agent may have refused our certificate after the
            // handshake looked complete; ask it why, on a connection of our own.
            Err(status)
                if matches!(
                    status.code(),
                    tonic::Code::Cancelled | tonic::Code::Unavailable | tonic::Code::Unknown
                ) =>
            {
                match client::diagnose_refusal(&host.address, creds, timeout.min(PROBE_TIMEOUT))
                    .await
                {
                    Some(why) => Err(CallError::Unreachable(why)),
                    None => Err(CallError::Status(status)),
                }
            }
            Err(status) => Err(CallError::Status(status)),
        }
    };
    match tokio::time::timeout(timeout, ask).await {
        Ok(result) => result,
        Err(_) => Err(CallError::Unreachable(format!(
            "no answer within {timeout:?}"
        ))),
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
    F: Fn(AgentClient<Channel>) -> Fut,
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
    F: Fn(AgentClient<Channel>) -> Fut,
    Fut: Future<Output = Result<T, tonic::Status>>,
{
    let call = &call;
    let mut answers: Vec<(usize, Answer<T>)> = stream::iter(hosts.iter().enumerate())
        .map(|(i, host)| async move {
            let started = Instant::now();
            let result = ask_one(host, creds, timeout, call).await;
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
