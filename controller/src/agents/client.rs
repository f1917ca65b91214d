//! Connections to agents: gRPC over mutual TLS with the operator's certificate.

use std::{
    collections::HashMap,
    error::Error as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use hoist_proto::v1::agent_client::AgentClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::fleet::FleetTls;

/// The operator's TLS material cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "cannot read the {what} {} named in [tls] of the fleet file: {source}; make \
         certificates with `hoist ca init` and `hoist ca issue --user NAME --role deployer`",
        path.display()
    )]
    Read {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The certificate would be refused by every agent; `why` says why.
    #[error(
        "your certificate {} {why}; issue a new one with `hoist ca issue --ca CA_DIR --user \
         NAME --role ROLE --force` and point [tls] cert/key of the fleet file at it",
        path.display()
    )]
    Unusable {
        path: PathBuf,
        why: CertificateProblem,
    },
}

/// Why the agents would refuse the operator's certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertificateProblem {
    #[error("holds no usable PEM certificate ({0})")]
    NoPem(rustls::pki_types::pem::Error),
    #[error("cannot be parsed ({0})")]
    Unparsable(String),
    #[error("expired on {0}")]
    Expired(String),
    #[error("is not valid before {0} (check this machine's clock)")]
    NotYetValid(String),
    #[error("is revoked (listed in {}); the agents refuse it", crl.display())]
    Revoked { crl: PathBuf },
    #[error("is signed by another CA than the fleet CA {}", ca.display())]
    ForeignCa { ca: PathBuf },
    #[error("is refused by the fleet CA {}: {error:?}", ca.display())]
    Refused {
        ca: PathBuf,
        error: rustls::CertificateError,
    },
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
    /// The same material as PEM, for [`diagnose_refusal`]'s own handshake.
    pem: Arc<Pem>,
    /// The client certificate file (named in errors).
    pub cert_path: PathBuf,
    /// When the client certificate expires (Unix seconds).
    pub not_after: i64,
    /// The certificate's common name: who the agents record as the operator.
    pub who: String,
    /// The channels opened with this material, one per agent address and call timeout:
    /// a command makes one TLS connection per host, whatever number of calls it makes
    /// (lock, status, deploy, follow), multiplexed over HTTP/2.
    channels: Arc<std::sync::Mutex<HashMap<String, Channel>>>,
}

struct Pem {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

/// How early `hoist status` warns that the operator's certificate expires.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

impl Credentials {
    /// Reads the CA, certificate and key, and checks the certificate against the CA
    /// (and the CA's `crl.pem` beside it, when present) the way the agents will: an
    /// expired, not yet valid, foreign or revoked certificate is refused here with the
    /// file and the reason instead of an opaque handshake failure.
    pub fn load(tls: &FleetTls) -> Result<Credentials, CredentialsError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| CredentialsError::Read {
                what,
                path: path.to_path_buf(),
                source,
            })
        };
        let ca = read("CA certificate", &tls.ca)?;
        let cert = read("client certificate", &tls.cert)?;
        let key = read("client key", &tls.key)?;
        let not_after = check_own_certificate(&tls.ca, &ca, &cert).map_err(|why| {
            CredentialsError::Unusable {
                path: tls.cert.clone(),
                why,
            }
        })?;
        let who = common_name(&cert).unwrap_or_default();
        Ok(Credentials {
            who,
            ca: Certificate::from_pem(&ca),
            identity: Identity::from_pem(&cert, &key),
            pem: Arc::new(Pem { ca, cert, key }),
            cert_path: tls.cert.clone(),
            not_after,
            channels: Arc::default(),
        })
    }

    /// Drops the channels to `address` (after a lost connection, so the next call
    /// connects afresh instead of waiting on a dead one).
    pub fn forget(&self, address: &str) {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(address);
    }

    fn cached(&self, address: &str) -> Option<Channel> {
        self.channels
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(address)
            .cloned()
    }

    /// A warning when the certificate expires within [`EXPIRY_WARNING`].
    pub fn expiry_warning(&self) -> Option<String> {
        let now = unix_now();
        let left = self.not_after - now;
        (left < EXPIRY_WARNING.as_secs() as i64).then(|| {
            format!(
                "warning: your certificate {} expires on {} (in {} day(s)); issue a new one \
                 with `hoist ca issue --ca CA_DIR --user NAME --role ROLE --force`",
                self.cert_path.display(),
                utc_date(self.not_after),
                left.max(0) / 86400
            )
        })
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The subject common name of the first certificate in `pem`.
fn common_name(pem: &[u8]) -> Option<String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let der = CertificateDer::from_pem_slice(pem).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

/// `YYYY-MM-DD` of a Unix time, UTC.
fn utc_date(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .map(|t| t.date().to_string())
        .unwrap_or_else(|_| secs.to_string())
}

/// The certificate's `notAfter`, or why the agents would refuse it.
fn check_own_certificate(
    ca_path: &Path,
    ca_pem: &[u8],
    cert_pem: &[u8],
) -> Result<i64, CertificateProblem> {
    use rustls::pki_types::{
        CertificateDer, CertificateRevocationListDer, UnixTime, pem::PemObject as _,
    };
    let leaf = CertificateDer::from_pem_slice(cert_pem).map_err(CertificateProblem::NoPem)?;
    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|err| CertificateProblem::Unparsable(err.to_string()))?;
    let validity = parsed.validity();
    let (not_before, not_after) = (
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    );
    let now = unix_now();
    if now > not_after {
        return Err(CertificateProblem::Expired(utc_date(not_after)));
    }
    if now < not_before {
        return Err(CertificateProblem::NotYetValid(utc_date(not_before)));
    }
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_pem).flatten() {
        let _ = roots.add(ca);
    }
    let crl_path = ca_path
        .parent()
        .unwrap_or(Path::new("."))
        .join(crate::ca::CRL_FILE);
    let crls: Vec<_> = CertificateRevocationListDer::pem_file_iter(&crl_path)
        .map(|iter| iter.flatten().collect())
        .unwrap_or_default();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(verifier) =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .with_crls(crls)
            .build()
    else {
        // An unusable CA file is reported by the handshake itself.
        return Ok(not_after);
    };
    match verifier.verify_client_cert(&leaf, &[], UnixTime::now()) {
        Ok(_) => Ok(not_after),
        Err(rustls::Error::InvalidCertificate(err)) => Err(match err {
            rustls::CertificateError::Revoked => CertificateProblem::Revoked { crl: crl_path },
            rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature => {
                CertificateProblem::ForeignCa {
                    ca: ca_path.to_path_buf(),
                }
            }
            error => CertificateProblem::Refused {
                ca: ca_path.to_path_buf(),
                error,
            },
        }),
        Err(_) => Ok(not_after),
    }
}

/// After a call failed without an answer ("broken pipe", "operation was canceled"):
/// a TLS handshake of our own with the agent at `address`, reading its first bytes, to
/// learn whether it refused our certificate and why (the alert it sends, which the
/// gRPC stack loses). `None` when the agent accepts the certificate or cannot be asked.
pub async fn diagnose_refusal(
    address: &str,
    creds: &Credentials,
    timeout: Duration,
) -> Option<String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _};
    use tokio::io::AsyncReadExt as _;
    let pem = &creds.pem;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(&pem.ca).flatten() {
        let _ = roots.add(ca);
    }
    let chain: Vec<_> = CertificateDer::pem_slice_iter(&pem.cert)
        .flatten()
        .collect();
    let key = PrivateKeyDer::from_pem_slice(&pem.key).ok()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .ok()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .ok()?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    let host = address
        .rsplit_once(':')
        .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']'))
        .unwrap_or(address);
    let name = ServerName::try_from(host.to_string()).ok()?;
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(address).await.ok()?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .ok()?;
        let mut byte = [0u8; 1];
        match tls.read(&mut byte).await {
            Ok(_) => None,
            Err(err) => {
                let alert = err
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<rustls::Error>())
                    .and_then(|e| match e {
                        rustls::Error::AlertReceived(alert) => Some(*alert),
                        _ => None,
                    })?;
                Some(alert)
            }
        }
    };
    let alert = tokio::time::timeout(timeout, probe).await.ok().flatten()?;
    let file = creds.cert_path.display();
    let fix = "issue a new one with `hoist ca issue --ca CA_DIR --user NAME --role ROLE \
               --force` and point [tls] cert/key of the fleet file at it";
    use rustls::AlertDescription as A;
    Some(match alert {
        A::CertificateRevoked => {
            format!("the agent refused your certificate {file}: it is revoked; {fix}")
        }
        A::CertificateExpired => {
            format!("the agent refused your certificate {file}: it has expired; {fix}")
        }
        A::UnknownCA => format!(
            "the agent refused your certificate {file}: it is not signed by the agent's CA; {fix}"
        ),
        other => format!("the agent refused your certificate {file} ({other:?}); {fix}"),
    })
}

/// What a TLS failure in `text` (an error chain) means for the operator, when it is
/// one a certificate explains; appended to connection errors.
pub fn tls_hint(text: &str) -> Option<&'static str> {
    const HINTS: &[(&str, &str)] = &[
        (
            "CertificateRevoked",
            "the agent refused your certificate: it is revoked; issue a new one with \
             `hoist ca issue --user NAME --role ROLE --force`",
        ),
        (
            "CertificateExpired",
            "the agent refused your certificate: it has expired; issue a new one with \
             `hoist ca issue --user NAME --role ROLE --force`",
        ),
        (
            "UnknownCA",
            "the agent does not trust your certificate's CA; use a certificate from the fleet \
             CA (`hoist ca issue --ca CA_DIR --user NAME --role ROLE`)",
        ),
        (
            "BadCertificate",
            "the agent refused your certificate; check it was issued by the fleet CA and has \
             not expired or been revoked",
        ),
        (
            "invalid peer certificate: Expired",
            "the agent's certificate has expired; renew it with `hoist ca issue --agent NAME \
             --san ADDR --force`, copy it to the host and `systemctl reload hoistd`",
        ),
        (
            "certificate expired",
            "the agent's certificate has expired; renew it with `hoist ca issue --agent NAME \
             --san ADDR --force`, copy it to the host and `systemctl reload hoistd`",
        ),
        (
            "invalid peer certificate: BadSignature",
            "the agent's certificate is not signed by the fleet CA in [tls] ca; issue it from \
             the fleet CA (`hoist ca issue --agent NAME --san ADDR`)",
        ),
        (
            "UnknownIssuer",
            "the agent's certificate is not signed by the fleet CA in [tls] ca; issue it from \
             the fleet CA (`hoist ca issue --agent NAME --san ADDR`)",
        ),
        (
            "NotValidForName",
            "the agent's certificate does not name the address it was dialled at; reissue it \
             with that address in --san",
        ),
        // Last: the alert was lost because the agent closed first.
        (
            "broken pipe",
            "the agent closed the connection during the handshake, which usually means it \
             refused your certificate (revoked, expired or from another CA); its log says why",
        ),
        (
            "operation was canceled",
            "the agent closed the connection during the handshake, which usually means it \
             refused your certificate (revoked, expired or from another CA); its log says why",
        ),
    ];
    HINTS
        .iter()
        .find(|(needle, _)| text.contains(needle))
        .map(|(_, hint)| *hint)
}

/// `text` with the certificate hint, if any, appended.
fn with_hint(text: String) -> String {
    match tls_hint(&text) {
        Some(hint) => format!("{text} ({hint})"),
        None => text,
    }
}

/// A client of one agent whose every request is bounded ([`Deadline`]).
pub type Client = AgentClient<Deadline>;

/// A channel whose requests each fail with tonic's "Timeout expired" (`Cancelled`)
/// when no answer comes within `timeout`: one channel per agent serves calls with
/// different bounds (a status call, a job that may take minutes to be accepted).
#[derive(Clone)]
pub struct Deadline {
    channel: Channel,
    timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<tonic::body::Body>> for Deadline {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let answer = self.channel.call(request);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, answer).await {
                Ok(answer) => answer.map_err(Into::into),
                Err(_) => Err(Box::new(tonic::TimeoutExpired(())) as BoxError),
            }
        })
    }
}

/// A client of one agent. `address` is `host:port`; the agent's certificate must
/// carry `host` as a SAN. The channel is opened once per command and address and
/// shared by every later call ([`Credentials`]); `timeout` bounds the connection and
/// each request of the returned client.
pub async fn connect(
    address: &str,
    creds: &Credentials,
    timeout: Duration,
) -> Result<Client, ConnectError> {
    let client = |channel| AgentClient::new(Deadline { channel, timeout });
    if let Some(channel) = creds.cached(address) {
        return Ok(client(channel));
    }
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
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ConnectError::Transport(with_hint(chain(&e))))?;
    creds
        .channels
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(address.to_string())
        .or_insert_with(|| channel.clone());
    Ok(client(channel))
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
        return with_hint(format!("{} ({})", status.message(), chain(source)));
    }
    let text = format!("{:?}: {}", status.code(), status.message());
    if matches!(status.code(), tonic::Code::Cancelled) {
        return with_hint(text);
    }
    text
}
