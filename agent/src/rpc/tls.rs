//! Mutual TLS for the gRPC listener: TLS 1.3 only, client certificates required and
//! verified against the fleet CA, and the caller's identity read from its certificate.

use std::{
    fmt, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::server::Connected;

use crate::config::TlsSection;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {source}")]
    Read {
        what: &'static str,
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no certificate; expected a PEM file with a CERTIFICATE block")]
    NoCertificate { path: PathBuf },
    #[error("CA certificate {path} is not usable: {source}")]
    BadCa {
        path: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot build the client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error(
        "cannot read the revocation list {path}: {source}; copy crl.pem from the CA directory \
         (`hoist ca revoke` writes it), or remove `crl` from [tls]"
    )]
    Crl {
        path: PathBuf,
        source: rustls::pki_types::pem::Error,
    },
    #[error("{path} holds no revocation list; expected a PEM file with an X509 CRL block")]
    NoCrl { path: PathBuf },
    #[error("certificate {cert} and key {key} do not make a usable identity: {source}")]
    Identity {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
}

/// A caller's role, from a `hoist://role/NAME` URI SAN in its certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    Deployer,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
        })
    }
}

/// Who is on the other end of a connection, as proven by its certificate.
#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// Subject CN (or `unknown`): recorded as the holder of locks and the author of jobs.
    pub name: String,
    pub role: Option<Role>,
}

impl Peer {
    /// Reads CN and role from the verified end-entity certificate.
    pub fn from_certificate(addr: Option<SocketAddr>, der: &[u8]) -> Peer {
        let mut peer = Peer {
            addr,
            name: "unknown".into(),
            role: None,
        };
        let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
            return peer;
        };
        if let Some(cn) = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
        {
            peer.name = cn.to_string();
        }
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = name {
                    let role = match uri.strip_prefix("hoist://role/") {
                        Some("deployer") => Some(Role::Deployer),
                        Some("viewer") => Some(Role::Viewer),
                        _ => None,
                    };
                    // A certificate naming two roles gets the weaker one.
                    if let Some(role) = role {
                        peer.role = Some(peer.role.map_or(role, |r| r.min(role)));
                    }
                }
            }
        }
        peer
    }
}

/// Builds the rustls server config: TLS 1.3 only, client certificate mandatory.
pub fn server_config(tls: &TlsSection) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for ca in read_certs(&tls.ca)? {
        roots.add(ca).map_err(|source| TlsError::BadCa {
            path: tls.ca.clone(),
            source,
        })?;
    }
    let crls = read_crls(tls)?;
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .with_crls(crls)
        .build()?;
    let certs = read_certs(&tls.cert)?;
    let not_after = certs.first().and_then(|leaf| not_after(leaf));
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|source| TlsError::Read {
        what: "private key",
        path: tls.key.clone(),
        source,
    })?;
    let identity_err = |source| TlsError::Identity {
        cert: tls.cert.clone(),
        key: tls.key.clone(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(identity_err)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(identity_err)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    if let Some(expiry) = not_after {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let days_left = (expiry - now).div_euclid(86_400);
        if days_left < 14 {
            tracing::warn!(
                cert = %tls.cert.display(),
                days_left,
                "this agent's certificate expires soon or has expired; controllers refuse an \
                 expired one: renew it with `hoist ca issue --agent NAME --san ADDR --force`"
            );
        }
    }
    CERT_NOT_AFTER.store(not_after.unwrap_or(0), Ordering::Relaxed);
    Ok(Arc::new(config))
}

/// `notAfter` (Unix seconds) of the certificate the listener last loaded (at start or a
/// SIGHUP that applied), 0 before: for `hoist_agent_certificate_expiry_timestamp_seconds`.
static CERT_NOT_AFTER: AtomicI64 = AtomicI64::new(0);

/// When the agent's own certificate in use expires (Unix seconds), once loaded.
pub fn certificate_expiry() -> Option<i64> {
    Some(CERT_NOT_AFTER.load(Ordering::Relaxed)).filter(|t| *t != 0)
}

fn not_after(der: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The revocation lists `tls` names (see [`TlsSection::crl_path`]); none when the
/// conventional file is absent. Read on every (re)load, so a SIGHUP applies a new CRL.
fn read_crls(tls: &TlsSection) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let (path, required) = tls.crl_path();
    if !required && !path.exists() {
        return Ok(Vec::new());
    }
    let crls = CertificateRevocationListDer::pem_file_iter(&path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Crl {
            path: path.clone(),
            source,
        })?;
    if crls.is_empty() {
        return Err(TlsError::NoCrl { path });
    }
    Ok(crls)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::Read {
            what: "certificate",
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

/// A TLS connection whose client certificate has been verified.
pub struct TlsConn {
    inner: TlsStream<TcpStream>,
    peer: Peer,
}

impl Connected for TlsConn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Accepts TCP connections and completes TLS handshakes concurrently, yielding only
/// connections with a verified client certificate. The server config is read from
/// `config` per connection, so a SIGHUP that rotates certificates applies to new
/// connections without a restart. Handshake failures are logged and dropped.
pub fn incoming(
    listener: TcpListener,
    config: watch::Receiver<Arc<ServerConfig>>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsConn, io::Error>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let mut backoff = crate::listen::Backoff::default();
        loop {
            let (tcp, addr) = match listener.accept().await {
                Ok(pair) => {
                    backoff.succeeded("grpc");
                    pair
                }
                Err(err) => {
                    backoff.failed("grpc", &err).await;
                    continue;
                }
            };
            if tx.is_closed() {
                return;
            }
            let acceptor = TlsAcceptor::from(config.borrow().clone());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tcp.set_nodelay(true);
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let peer = match stream.get_ref().1.peer_certificates() {
                            Some([leaf, ..]) => Peer::from_certificate(Some(addr), leaf),
                            _ => return,
                        };
                        let _ = tx
                            .send(Ok(TlsConn {
                                inner: stream,
                                peer,
                            }))
                            .await;
                    }
                    Ok(Err(err)) => {
                        tracing::info!(peer = %addr, error = %err, "TLS handshake refused");
                    }
                    Err(_) => tracing::info!(peer = %addr, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
