//! TLS material and servers for tests of https clients (checks, webhooks): a rustls
//! server configuration from PEM files, and certificates `hoist ca` refuses to make
//! (expired, not yet valid), signed by a test's fleet CA.

use std::{path::Path, sync::Arc};

use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};

/// A server configuration (ring, no client certificates, ALPN `http/1.1`) for the
/// certificate chain in `cert` and the key in `key`.
pub fn server_config(cert: &Path, key: &Path) -> Arc<ServerConfig> {
    let certs = CertificateDer::pem_file_iter(cert)
        .expect("read the certificate")
        .collect::<Result<Vec<_>, _>>()
        .expect("parse the certificate");
    let key = PrivateKeyDer::from_pem_file(key).expect("read the key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A certificate signed by the CA in `ca_dir` valid from `from` to `until` days from
/// now (negative: in the past), written as NAME.pem/NAME.key into `dir`: with
/// `agent`, a server and client certificate for 127.0.0.1; else a viewer's.
pub fn issue_window(ca_dir: &Path, dir: &Path, name: &str, from: i64, until: i64, agent: bool) {
    use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
    let ca_pem = std::fs::read_to_string(ca_dir.join("ca.pem")).expect("ca.pem");
    let ca_key =
        KeyPair::from_pem(&std::fs::read_to_string(ca_dir.join("ca.key")).expect("ca.key"))
            .expect("the CA key");
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).expect("the CA");
    let now = time::OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    if agent {
        params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
    } else {
        params.subject_alt_names =
            vec![SanType::URI("hoist://role/viewer".try_into().expect("uri"))];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    params.use_authority_key_identifier_extension = true;
    params.not_before = now + time::Duration::days(from);
    params.not_after = now + time::Duration::days(until);
    let key = KeyPair::generate().expect("a key");
    let cert = params.signed_by(&key, &issuer).expect("signed");
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("write the cert");
    std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("write the key");
}
