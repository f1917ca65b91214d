//! Connections to agents: gRPC over mutual TLS with the operator's certificate.

use std::{error::Error as _, path::Path, time::Duration};

use hoist_proto::v1::agent_client::AgentClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::fleet::FleetTls;

/// The operator's TLS material could not be read.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot read the {what} {} named in [tls] of the fleet file; make certificates with \
     `hoist ca init` and `hoist ca issue --user NAME --role deployer`",
    path.display()
)]
pub struct CredentialsError {
    pub what: &'static str,
    pub path: std::path::PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// No channel to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad address {address:?}: {reason}")]
    BadAddress { address: String, reason: String },
    /// The transport's error and its sources, on one line.
    #[error("{0}")]
    Transport(String),
    #[error("no connection within {0:?}")]
    Timeout(Duration),
}

/// The operator's TLS material, read once per command.
#[derive(Clone)]
pub struct Credentials {
    ca: Certificate,
    identity: Identity,
}

impl Credentials {
    pub fn load(tls: &FleetTls) -> Result<Credentials, CredentialsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| CredentialsError {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let ca = read("CA certificate", &tls.ca)?;
        let cert = read("client certificate", &tls.cert)?;
        let key = read("client key", &tls.key)?;
        Ok(Credentials {
            ca: Certificate::from_pem(ca),
            identity: Identity::from_pem(cert, key),
        })
    }
}

/// Opens a channel to one agent. `address` is `host:port`; the agent's certificate
/// must carry `host` as a SAN.
pub async fn connect(
    address: &str,
    creds: &Credentials,
    timeout: Duration,
) -> Result<AgentClient<Channel>, ConnectError> {
    let host = address
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(address);
    let tls = ClientTlsConfig::new()
        .ca_certificate(creds.ca.clone())
        .identity(creds.identity.clone())
        .domain_name(host.to_string());
    let endpoint = Endpoint::from_shared(format!("https://{address}"))
        .and_then(|e| e.tls_config(tls))
        .map_err(|e| ConnectError::BadAddress {
            address: address.to_string(),
            reason: chain(&e),
        })?
        .connect_timeout(timeout)
        .timeout(timeout)
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ConnectError::Transport(chain(&e)))?;
    Ok(AgentClient::new(channel))
}

/// An error and its sources on one line: tonic's top-level messages alone ("transport
/// error") do not tell an operator what happened.
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A gRPC error as an operator reads it.
pub fn status_error(status: &tonic::Status) -> String {
    if matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown
    ) && let Some(source) = status.source()
    {
        return format!("{} ({})", status.message(), chain(source));
    }
    format!("{:?}: {}", status.code(), status.message())
}
