//! The watchers of `hoist top`: one task per host follows the agent's WatchStatus
//! stream and reconnects with backoff when it cannot be opened or breaks.

use std::time::Duration;

use hoist_proto::v1::WatchStatusRequest;
use tokio::sync::mpsc;

use super::{
    BACKOFF_FIRST, BACKOFF_MAX,
    board::{HostUpdate, Reading},
};
use crate::{
    agents::client::{self, Credentials},
    fleet::Host,
};

// === the watchers ===

pub(crate) struct Watch {
    pub(crate) index: usize,
    pub(crate) host: Host,
    pub(crate) creds: Credentials,
    pub(crate) request: WatchStatusRequest,
    pub(crate) timeout: Duration,
    pub(crate) stall: Duration,
    pub(crate) tx: mpsc::Sender<HostUpdate>,
}

/// Follows one host's WatchStatus stream for as long as the view lives, reopening it
/// with backoff whenever it cannot be opened or breaks.
pub(crate) async fn watch(w: Watch) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        let (report, received) = follow(&w).await;
        let update = HostUpdate {
            host: w.index,
            report,
        };
        if w.tx.send(update).await.is_err() {
            return;
        }
        if received {
            backoff = BACKOFF_FIRST;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// Opens the stream and forwards its snapshots until it ends; returns why it ended and
/// whether any snapshot arrived.
pub(crate) async fn follow(w: &Watch) -> (Reading, bool) {
    let open = async {
        let mut agent = client::connect(&w.host.address, &w.creds, w.timeout)
            .await
            .map_err(|e| Reading::Unreachable(e.to_string()))?;
        agent
            .watch_status(w.request.clone())
            .await
            .map(|r| r.into_inner())
            .map_err(|s| classify(&s))
    };
    let mut stream = match tokio::time::timeout(w.timeout, open).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(report)) => return (report, false),
        Err(_) => {
            let why = format!("no answer within {:?}", w.timeout);
            return (Reading::Unreachable(why), false);
        }
    };
    let mut received = false;
    loop {
        let report = match tokio::time::timeout(w.stall, stream.message()).await {
            Ok(Ok(Some(status))) => {
                received = true;
                let update = HostUpdate {
                    host: w.index,
                    report: Reading::Status(Box::new(status)),
                };
                if w.tx.send(update).await.is_err() {
                    return (Reading::Unreachable("the view closed".into()), received);
                }
                continue;
            }
            Ok(Ok(None)) => Reading::Unreachable("the agent closed the stream".into()),
            Ok(Err(status)) => classify(&status),
            Err(_) => Reading::Unreachable(format!("no snapshot for {:?}", w.stall)),
        };
        return (report, received);
    }
}

/// Transport trouble makes a host unreachable; any other gRPC error is the agent's
/// answer (unknown app, role not allowed).
pub(crate) fn classify(status: &tonic::Status) -> Reading {
    let message = client::status_error(status);
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled => Reading::Unreachable(message),
        _ => Reading::Refused(message),
    }
}
