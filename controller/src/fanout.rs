//! Asking every selected host the same question at once (releases, job logs, env,
//! lock state): bounded concurrency, a per-host limit for connecting and answering,
//! answers in fleet order, and an error that still tells "unreachable" from the
//! agent's own gRPC status (so callers can treat NotFound as "not here").

use std::{fmt, future::Future, time::Duration};

use futures_util::{StreamExt as _, stream};
use hoist_proto::v1::agent_client::AgentClient;
use tonic::transport::Channel;

use crate::{
    client::{self, Credentials},
    fleet::Host,
};

/// Hosts asked at once.
const CONCURRENCY: usize = 64;

/// Why a host gave no answer.
#[derive(Debug)]
pub enum CallError {
    /// No connection, or no answer in time.
    Unreachable(String),
    /// The agent answered with an error.
    Status(tonic::Status),
}

impl CallError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Status(s) if s.code() == tonic::Code::NotFound)
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Unreachable(why) => write!(f, "unreachable: {why}"),
            CallError::Status(status) => f.write_str(&client::status_error(status)),
        }
    }
}

/// One host's answer.
pub struct Answer<T> {
    pub host: String,
    pub address: String,
    pub result: Result<T, CallError>,
}

/// Fails naming every host that gave no answer ("no WHAT from web-1, web-3").
pub fn unanswered<T>(answers: &[Answer<T>], what: &str) -> Result<(), crate::Failure> {
    let failed: Vec<&str> = answers
        .iter()
        .filter(|a| a.result.is_err())
        .map(|a| a.host.as_str())
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(crate::Failure::failed(anyhow::anyhow!(
            "no {what} from {}",
            failed.join(", ")
        )))
    }
}

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
            .map_err(CallError::Unreachable)?;
        call(client).await.map_err(CallError::Status)
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
    let call = &call;
    let mut answers: Vec<(usize, Answer<T>)> = stream::iter(hosts.iter().enumerate())
        .map(|(i, host)| async move {
            let answer = Answer {
                host: host.name.clone(),
                address: host.address.clone(),
                result: ask_one(host, creds, timeout, call).await,
            };
            (i, answer)
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    answers.sort_by_key(|(i, _)| *i);
    answers.into_iter().map(|(_, a)| a).collect()
}
