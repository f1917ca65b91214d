//! The fleet's certificate authority: `hoist ca init` makes a self-signed CA and
//! `hoist ca issue` signs agent (server + client) and user (client) certificates with it,
//! so mutual TLS needs no openssl.
//!
//! Identity lives in the certificate: the subject CN names the holder, and URI SANs carry
//! `hoist://agent/NAME`, `hoist://user/NAME` and `hoist://role/viewer|deployer`, which the
//! agents read to authorise each call. All keys are ECDSA P-256, written mode 0600 through
//! a temporary file, fsync and rename, so a crash never leaves a torn or readable key.

use std::{
    fmt, fs,
    io::{self, Write as _},
    net::IpAddr,
    os::unix::fs::{DirBuilderExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    str::FromStr,
};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, PublicKeyData as _, RevocationReason, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls_pemfile::certs;
use time::{Duration, OffsetDateTime};
use x509_parser::{certificate::X509Certificate, extensions::GeneralName};

/// File name of the CA certificate inside the CA directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key inside the CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// File name of the certificate revocation list inside the CA directory (and, by
/// default, beside `ca.pem` on every agent).
pub const CRL_FILE: &str = "crl.pem";
/// Default lifetime of an agent certificate: a year (rotated with the host's upkeep).
pub const AGENT_DAYS: u32 = 365;
/// Default lifetime of an operator certificate: 90 days (a person's credential is the
/// one most likely to leak; short-lived and revocable).
pub const USER_DAYS: u32 = 90;
/// How long a CRL is declared current (`nextUpdate`); agents keep using an older one.
const CRL_VALIDITY_DAYS: i64 = 365;

const CA_COMMON_NAME: &str = "hoist fleet CA";
const CA_VALIDITY_DAYS: i64 = 3650;
/// Certificates start this long before "now", so a host whose clock is a little behind
/// still accepts a freshly issued certificate.
const CLOCK_SKEW: Duration = Duration::minutes(5);
const NAME_MAX_LEN: usize = 63;
const DNS_NAME_MAX_LEN: usize = 253;
const DNS_LABEL_MAX_LEN: usize = 63;

const DIR_MODE: u32 = 0o700;
const KEY_MODE: u32 = 0o600;
const CERT_MODE: u32 = 0o644;

const ROLE_URI_PREFIX: &str = "hoist://role/";
const USER_URI_PREFIX: &str = "hoist://user/";
const AGENT_URI_PREFIX: &str = "hoist://agent/";

/// What a user certificate allows on the agents: viewers read, deployers also change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Deployer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
        }
    }

    fn from_uri(uri: &str) -> Option<Role> {
        uri.strip_prefix(ROLE_URI_PREFIX)?.parse().ok()
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = CaError;

    fn from_str(s: &str) -> Result<Role, CaError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            _ => Err(CaError::UnknownRole {
                given: s.to_owned(),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot create directory {path}: {source}")]
    CreateDir { path: PathBuf, source: io::Error },
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("{path} already exists; pass --force to replace it")]
    Exists { path: PathBuf },
    #[error(
        "{path} not found; run `hoist ca init {dir}` first, or pass --ca with the directory \
         holding ca.pem and ca.key"
    )]
    MissingCa { path: PathBuf, dir: PathBuf },
    #[error("{path} is not a usable CA certificate: {reason}")]
    BadCaCert { path: PathBuf, reason: String },
    #[error("{path} is not a usable CA key (expected a PEM \"PRIVATE KEY\" block): {source}")]
    BadCaKey { path: PathBuf, source: rcgen::Error },
    #[error(
        "{key} is not the private key of {cert}; restore the matching pair, or make a new CA \
         with `hoist ca init --force` and reissue every certificate"
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error(
        "CA certificate {path} expired on {expired}; make a new CA with `hoist ca init --force` \
         and reissue every certificate"
    )]
    CaExpired { path: PathBuf, expired: time::Date },
    #[error(
        "invalid name {name:?}: use 1 to 63 letters, digits, '_', '.' or '-', starting with a \
         letter or digit, with no '/' and no '..'"
    )]
    InvalidName { name: String },
    #[error("name {name:?} is reserved for the CA's own ca.pem and ca.key; choose another name")]
    ReservedName { name: String },
    #[error(
        "an agent certificate needs the addresses the agent is dialled at: pass --san with the \
         host's IP or DNS name"
    )]
    NoSans,
    #[error(
        "invalid --san {san:?}: expected an IP address (10.0.0.11, ::1) or a DNS name made of \
         letters, digits, '-' and '.' (web-1.example.com)"
    )]
    InvalidSan { san: String },
    #[error("unknown role {given:?}: expected viewer or deployer")]
    UnknownRole { given: String },
    #[error("--days must be at least 1")]
    ZeroDays,
    #[error("cannot generate the {what}: {source}")]
    Generate {
        what: &'static str,
        source: rcgen::Error,
    },
    #[error("not a usable certificate: {reason}")]
    InvalidCertificate { reason: String },
    #[error(
        "{given:?} names no certificate: expected a NAME with NAME.pem in {dir}, or a serial \
         number in hex (as printed by `hoist ca revoke` and `openssl x509 -serial`)"
    )]
    UnknownCertificate { given: String, dir: PathBuf },
    #[error("{path} was not issued by the CA in {dir}; only its own certificates can be revoked")]
    ForeignCertificate { path: PathBuf, dir: PathBuf },
    #[error("{path} is not a usable revocation list: {reason}; move it away to start a new one")]
    BadCrl { path: PathBuf, reason: String },
}

/// The files `init` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub not_after: OffsetDateTime,
}

impl fmt::Display for CaPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} (CA certificate, valid until {}; copy it to every host) and {} \
             (CA key; keep it secret)",
            self.cert.display(),
            self.not_after.date(),
            self.key.display()
        )
    }
}

/// The files `issue_agent` or `issue_user` wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedPaths {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub not_after: OffsetDateTime,
}

impl fmt::Display for IssuedPaths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "wrote {} and {} (valid until {})",
            self.cert.display(),
            self.key.display(),
            self.not_after.date()
        )
    }
}

/// Makes a new self-signed CA in `dir` (created 0700 if missing): `ca.pem` and `ca.key`.
/// Existing files are only replaced with `force`.
pub fn init(dir: &Path, force: bool) -> Result<CaPaths, CaError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    if !force {
        refuse_existing(&[&cert_path, &key_path])?;
    }
    create_private_dir(dir)?;

    let now = OffsetDateTime::now_utc();
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = now - CLOCK_SKEW;
    params.not_after = now + Duration::days(CA_VALIDITY_DAYS);

    let key = generate_key()?;
    let cert = params
        .self_signed(&key)
        .map_err(|source| CaError::Generate {
            what: "CA certificate",
            source,
        })?;
    write_pair(
        dir,
        &cert_path,
        cert.pem().as_bytes(),
        &key_path,
        key.serialize_pem().as_bytes(),
    )?;
    Ok(CaPaths {
        cert: cert_path,
        key: key_path,
        not_after: params.not_after,
    })
}

/// Issues an agent certificate (server and client auth) for `name`, valid for every IP
/// address or DNS name in `sans`, and writes `NAME.pem` and `NAME.key` into `ca_dir`.
pub fn issue_agent(
    ca_dir: &Path,
    name: &str,
    sans: &[String],
    days: u32,
    force: bool,
) -> Result<IssuedPaths, CaError> {
    validate_name(name)?;
    if sans.is_empty() {
        return Err(CaError::NoSans);
    }
    let mut names = Vec::with_capacity(sans.len() + 1);
    for san in sans {
        let san = parse_san(san)?;
        if !names.contains(&san) {
            names.push(san);
        }
    }
    names.push(uri_san(AGENT_URI_PREFIX, name)?);
    issue_leaf(
        ca_dir,
        name,
        names,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        days,
        force,
    )
}

/// Issues a user certificate (client auth) for `name` with `role`, and writes `NAME.pem`
/// and `NAME.key` into `ca_dir`.
pub fn issue_user(
    ca_dir: &Path,
    name: &str,
    role: Role,
    days: u32,
    force: bool,
) -> Result<IssuedPaths, CaError> {
    validate_name(name)?;
    let names = vec![
        uri_san(ROLE_URI_PREFIX, role.as_str())?,
        uri_san(USER_URI_PREFIX, name)?,
    ];
    issue_leaf(
        ca_dir,
        name,
        names,
        vec![ExtendedKeyUsagePurpose::ClientAuth],
        days,
        force,
    )
}

/// Reads the holder's CN and role from the first certificate in a PEM file. A certificate
/// naming two roles gets the weaker one, as the agents do.
pub fn read_identity(cert_pem: &[u8]) -> Result<(String, Option<Role>), CaError> {
    let invalid = |reason: String| CaError::InvalidCertificate { reason };
    let der = first_certificate(cert_pem).map_err(invalid)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|err| invalid(format!("cannot parse it: {err}")))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| invalid("its subject has no common name (CN)".into()))?
        .to_owned();
    let role = uri_sans(&cert).filter_map(Role::from_uri).min();
    Ok((cn, role))
}

fn issue_leaf(
    ca_dir: &Path,
    name: &str,
    subject_alt_names: Vec<SanType>,
    extended_key_usages: Vec<ExtendedKeyUsagePurpose>,
    days: u32,
    force: bool,
) -> Result<IssuedPaths, CaError> {
    if days == 0 {
        return Err(CaError::ZeroDays);
    }
    let ca = load_ca(ca_dir)?;
    let cert_path = ca_dir.join(format!("{name}.pem"));
    let key_path = ca_dir.join(format!("{name}.key"));
    if !force {
        refuse_existing(&[&cert_path, &key_path])?;
    }

    let now = OffsetDateTime::now_utc();
    // A certificate never outlives the CA that vouches for it.
    let not_after = now
        .checked_add(Duration::days(days.into()))
        .map_or(ca.not_after, |end| end.min(ca.not_after));
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(name);
    params.subject_alt_names = subject_alt_names;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = extended_key_usages;
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - CLOCK_SKEW;
    params.not_after = not_after;

    let key = generate_key()?;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|source| CaError::Generate {
            what: "certificate",
            source,
        })?;
    write_pair(
        ca_dir,
        &cert_path,
        cert.pem().as_bytes(),
        &key_path,
        key.serialize_pem().as_bytes(),
    )?;
    Ok(IssuedPaths {
        cert: cert_path,
        key: key_path,
        not_after,
    })
}

/// What `revoke` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revoked {
    /// The certificate's serial number, lowercase hex.
    pub serial: String,
    /// Whether it was already on the list.
    pub already: bool,
    pub crl: PathBuf,
    /// How many certificates the list names now.
    pub count: usize,
}

impl fmt::Display for Revoked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.already {
            "was already revoked"
        } else {
            "revoked"
        };
        write!(
            f,
            "serial {} {what}; wrote {} ({} revoked). Copy it to every agent beside its CA \
             certificate (or where `[tls] crl` points) and reload them \
             (`systemctl reload hoistd`): new connections with that certificate are refused",
            self.serial,
            self.crl.display(),
            self.count
        )
    }
}

/// Revokes a certificate of the CA in `ca_dir`, named by `NAME` (its `NAME.pem` there)
/// or by serial number (hex, colons allowed), and rewrites `crl.pem` signed by the CA:
/// every certificate revoked so far plus this one. Idempotent.
pub fn revoke(ca_dir: &Path, which: &str) -> Result<Revoked, CaError> {
    let ca = load_ca(ca_dir)?;
    let serial = serial_of(ca_dir, which, &ca)?;
    let crl_path = ca_dir.join(CRL_FILE);
    let (mut revoked, number) = read_crl(&crl_path, &ca)?;
    let already = revoked.iter().any(|r| r.serial_number == serial);
    let now = OffsetDateTime::now_utc();
    if !already {
        revoked.push(RevokedCertParams {
            serial_number: serial.clone(),
            revocation_time: now,
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        });
    }
    let params = CertificateRevocationListParams {
        this_update: now - CLOCK_SKEW,
        next_update: now + Duration::days(CRL_VALIDITY_DAYS),
        crl_number: SerialNumber::from(number.saturating_add(1)),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params
        .signed_by(&ca.issuer)
        .and_then(|crl| crl.pem())
        .map_err(|source| CaError::Generate {
            what: "revocation list",
            source,
        })?;
    let staged = stage(ca_dir, &crl_path, crl.as_bytes(), CERT_MODE)?;
    staged.persist(&crl_path).map_err(|err| CaError::Write {
        path: crl_path.clone(),
        source: err.error,
    })?;
    fs::File::open(ca_dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CaError::Write {
            path: ca_dir.to_path_buf(),
            source,
        })?;
    Ok(Revoked {
        serial: hex(serial.as_ref()),
        already,
        crl: crl_path,
        count: params.revoked_certs.len(),
    })
}

/// The serial `which` names: NAME.pem's (checked to be this CA's), or a hex serial.
fn serial_of(ca_dir: &Path, which: &str, ca: &LoadedCa) -> Result<SerialNumber, CaError> {
    let unknown = || CaError::UnknownCertificate {
        given: which.to_owned(),
        dir: ca_dir.to_path_buf(),
    };
    if validate_name(which).is_ok() {
        let path = ca_dir.join(format!("{which}.pem"));
        match fs::read(&path) {
            Ok(pem) => {
                let invalid = |reason: String| CaError::InvalidCertificate { reason };
                let der = first_certificate(&pem).map_err(invalid)?;
                let (_, cert) = x509_parser::parse_x509_certificate(&der)
                    .map_err(|err| invalid(format!("cannot parse {}: {err}", path.display())))?;
                // Every hoist CA has the same name: the signature tells them apart.
                let signed_by_us =
                    x509_parser::parse_x509_certificate(&ca.cert_der).is_ok_and(|(_, ca_cert)| {
                        cert.verify_signature(Some(ca_cert.public_key())).is_ok()
                    });
                if cert.issuer().as_raw() != ca.subject_der.as_slice() || !signed_by_us {
                    return Err(CaError::ForeignCertificate {
                        path,
                        dir: ca_dir.to_path_buf(),
                    });
                }
                return Ok(SerialNumber::from_slice(cert.raw_serial()));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(CaError::Read { path, source }),
        }
    }
    let digits: String = which.chars().filter(|c| *c != ':').collect();
    if digits.is_empty() || digits.len() > 40 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    let bytes: Vec<u8> = (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).expect("hex digits checked"))
        .collect();
    Ok(SerialNumber::from_slice(&bytes))
}

/// The entries and number of the CA's current CRL (none and 0 when there is none yet).
fn read_crl(path: &Path, ca: &LoadedCa) -> Result<(Vec<RevokedCertParams>, u64), CaError> {
    let pem = match fs::read(path) {
        Ok(pem) => pem,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(source) => {
            return Err(CaError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let bad = |reason: String| CaError::BadCrl {
        path: path.to_path_buf(),
        reason,
    };
    let der = rustls_pemfile::crls(&mut &pem[..])
        .next()
        .ok_or_else(|| bad("no PEM X509 CRL block found".into()))?
        .map_err(|err| bad(format!("bad PEM: {err}")))?;
    let (_, crl) =
        x509_parser::parse_x509_crl(&der).map_err(|err| bad(format!("cannot parse it: {err}")))?;
    let signed_by_us = x509_parser::parse_x509_certificate(&ca.cert_der)
        .is_ok_and(|(_, ca_cert)| crl.verify_signature(ca_cert.public_key()).is_ok());
    if crl.issuer().as_raw() != ca.subject_der.as_slice() || !signed_by_us {
        return Err(bad("it was issued by another CA".into()));
    }
    let number = crl
        .crl_number()
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0);
    let revoked = crl
        .iter_revoked_certificates()
        .map(|r| RevokedCertParams {
            serial_number: SerialNumber::from_slice(r.raw_serial()),
            revocation_time: r.revocation_date.to_datetime(),
            reason_code: Some(RevocationReason::KeyCompromise),
            invalidity_date: None,
        })
        .collect();
    Ok((revoked, number))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A certificate's serial number in lowercase hex, as `hoist ca revoke` takes it.
pub fn serial_hex(cert_pem: &[u8]) -> Result<String, CaError> {
    let invalid = |reason: String| CaError::InvalidCertificate { reason };
    let der = first_certificate(cert_pem).map_err(invalid)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|err| invalid(format!("cannot parse it: {err}")))?;
    Ok(hex(cert.raw_serial()))
}

/// A CA loaded from disk, checked to be a usable signer.
struct LoadedCa {
    issuer: Issuer<'static, KeyPair>,
    not_after: OffsetDateTime,
    /// The CA's subject, DER: the issuer of everything it signed.
    subject_der: Vec<u8>,
    /// The CA certificate, DER (its key checks signatures).
    cert_der: Vec<u8>,
}

fn load_ca(dir: &Path) -> Result<LoadedCa, CaError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    let bad_cert = |reason: String| CaError::BadCaCert {
        path: cert_path.clone(),
        reason,
    };

    let cert_pem = read_ca_file(dir, &cert_path)?;
    let der = first_certificate(&cert_pem).map_err(bad_cert)?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|err| bad_cert(format!("cannot parse it: {err}")))?;
    match cert.basic_constraints() {
        Ok(Some(constraints)) if constraints.value.ca => {}
        Ok(_) => return Err(bad_cert("it is not a CA certificate (no CA:TRUE)".into())),
        Err(err) => return Err(bad_cert(format!("bad basicConstraints: {err}"))),
    }
    if let Ok(Some(usage)) = cert.key_usage()
        && !usage.value.key_cert_sign()
    {
        return Err(bad_cert(
            "its key usage does not allow signing certificates".into(),
        ));
    }
    let not_after = cert.validity().not_after.to_datetime();
    if not_after <= OffsetDateTime::now_utc() {
        return Err(CaError::CaExpired {
            path: cert_path,
            expired: not_after.date(),
        });
    }

    let key_pem = read_ca_file(dir, &key_path)?;
    let key_pem = String::from_utf8(key_pem).map_err(|err| CaError::Read {
        path: key_path.clone(),
        source: io::Error::new(io::ErrorKind::InvalidData, err),
    })?;
    let key = KeyPair::from_pem(&key_pem).map_err(|source| CaError::BadCaKey {
        path: key_path.clone(),
        source,
    })?;
    if cert.public_key().subject_public_key.data.as_ref() != key.der_bytes() {
        return Err(CaError::KeyMismatch {
            cert: cert_path,
            key: key_path,
        });
    }

    let subject_der = cert.subject().as_raw().to_vec();
    let issuer = Issuer::from_ca_cert_der(&der.as_slice().into(), key)
        .map_err(|err| bad_cert(format!("cannot use it to sign: {err}")))?;
    Ok(LoadedCa {
        issuer,
        not_after,
        subject_der,
        cert_der: der.clone(),
    })
}

fn read_ca_file(dir: &Path, path: &Path) -> Result<Vec<u8>, CaError> {
    fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => CaError::MissingCa {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        },
        _ => CaError::Read {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// The DER of the first CERTIFICATE block in `pem`.
fn first_certificate(pem: &[u8]) -> Result<Vec<u8>, String> {
    match certs(&mut &pem[..]).next() {
        Some(Ok(der)) => Ok(der.to_vec()),
        Some(Err(err)) => Err(format!("bad PEM: {err}")),
        None => Err("no PEM CERTIFICATE block found".into()),
    }
}

fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> impl Iterator<Item = &'a str> {
    cert.subject_alternative_name()
        .ok()
        .flatten()
        .into_iter()
        .flat_map(|san| san.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
}

fn common_name(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn generate_key() -> Result<KeyPair, CaError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| CaError::Generate {
        what: "private key",
        source,
    })
}

fn uri_san(prefix: &str, name: &str) -> Result<SanType, CaError> {
    let uri = format!("{prefix}{name}")
        .try_into()
        .map_err(|source| CaError::Generate {
            what: "URI subject alternative name",
            source,
        })?;
    Ok(SanType::URI(uri))
}

/// Names become file names and URI path segments, so they are kept to a safe alphabet.
fn validate_name(name: &str) -> Result<(), CaError> {
    let mut bytes = name.bytes();
    let valid = name.len() <= NAME_MAX_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        && !name.contains("..");
    if !valid {
        return Err(CaError::InvalidName {
            name: name.to_owned(),
        });
    }
    if name.eq_ignore_ascii_case("ca") {
        return Err(CaError::ReservedName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// An IP address if `san` parses as one, else a DNS name.
fn parse_san(san: &str) -> Result<SanType, CaError> {
    if let Ok(ip) = san.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let invalid = || CaError::InvalidSan {
        san: san.to_owned(),
    };
    if !is_dns_name(san) {
        return Err(invalid());
    }
    Ok(SanType::DnsName(san.try_into().map_err(|_| invalid())?))
}

/// Letters, digits and '-' in dot-separated labels of 1 to 63 characters, no label starting
/// or ending with '-', and a last label that is not all digits (that is a mistyped IP).
fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=DNS_LABEL_MAX_LEN).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    name.len() <= DNS_NAME_MAX_LEN
        && name.split('.').all(label_ok)
        && !name
            .rsplit('.')
            .next()
            .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
}

fn refuse_existing(paths: &[&Path]) -> Result<(), CaError> {
    for path in paths {
        match fs::symlink_metadata(path) {
            Ok(_) => {
                return Err(CaError::Exists {
                    path: path.to_path_buf(),
                });
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(CaError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), CaError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(|source| CaError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes a certificate and its key. Both are fully written and synced to temporary files
/// before either is renamed into place, so a failure leaves the old pair (or nothing).
fn write_pair(
    dir: &Path,
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<(), CaError> {
    let key = stage(dir, key_path, key_pem, KEY_MODE)?;
    let cert = stage(dir, cert_path, cert_pem, CERT_MODE)?;
    for (staged, path) in [(key, key_path), (cert, cert_path)] {
        staged.persist(path).map_err(|err| CaError::Write {
            path: path.to_path_buf(),
            source: err.error,
        })?;
    }
    // Make the renames themselves durable.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| CaError::Write {
            path: dir.to_path_buf(),
            source,
        })
}

/// A synced temporary file beside `path`, created with `mode` (removed again if dropped).
fn stage(
    dir: &Path,
    path: &Path,
    contents: &[u8],
    mode: u32,
) -> Result<tempfile::NamedTempFile, CaError> {
    let write_err = |source| CaError::Write {
        path: path.to_path_buf(),
        source,
    };
    let prefix = format!(
        ".{}.",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let mut file = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .map_err(write_err)?;
    file.write_all(contents).map_err(write_err)?;
    file.as_file().sync_all().map_err(write_err)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rustls::{
        RootCertStore,
        client::{WebPkiServerVerifier, danger::ServerCertVerifier as _},
        crypto::ring::default_provider,
        pki_types::{CertificateDer, ServerName, UnixTime},
        server::WebPkiClientVerifier,
    };

    use super::*;

    fn ca_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        dir
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn der(path: &Path) -> CertificateDer<'static> {
        first_certificate(&fs::read(path).unwrap()).unwrap().into()
    }

    fn roots(dir: &Path) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(der(&dir.join(CA_CERT_FILE))).unwrap();
        Arc::new(roots)
    }

    fn verify_client(ca: &Path, cert: &Path) -> Result<(), rustls::Error> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(roots(ca), default_provider().into())
                .build()
                .unwrap();
        verifier
            .verify_client_cert(&der(cert), &[], UnixTime::now())
            .map(drop)
    }

    fn verify_server(ca: &Path, cert: &Path, name: &str) -> Result<(), rustls::Error> {
        let verifier =
            WebPkiServerVerifier::builder_with_provider(roots(ca), default_provider().into())
                .build()
                .unwrap();
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier
            .verify_server_cert(&der(cert), &[], &name, &[], UnixTime::now())
            .map(drop)
    }

    fn parse(path: &Path) -> (Vec<u8>, Vec<String>) {
        let pem = fs::read(path).unwrap();
        let der = first_certificate(&pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let uris = uri_sans(&cert).map(str::to_owned).collect();
        (der, uris)
    }

    #[test]
    fn init_writes_a_ca_with_a_private_key_and_refuses_to_overwrite() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("certs");
        let paths = init(&dir, false).unwrap();
        assert_eq!(paths.cert, dir.join("ca.pem"));
        assert_eq!(paths.key, dir.join("ca.key"));
        assert_eq!(mode(&paths.key), 0o600);
        assert_eq!(mode(&dir), 0o700);
        assert!(paths.to_string().contains("ca.pem"));

        let der = der(&paths.cert);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(
            read_identity(&fs::read(&paths.cert).unwrap()).unwrap().0,
            CA_COMMON_NAME
        );
        let constraints = cert.basic_constraints().unwrap().unwrap().value;
        assert!(constraints.ca);
        assert_eq!(constraints.path_len_constraint, Some(0));
        let usage = cert.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign());
        assert!(cert.validity().time_to_expiration().unwrap() > Duration::days(3649));
        // No stray temporary files.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 2);

        let before = fs::read(&paths.key).unwrap();
        let err = init(&dir, false).unwrap_err();
        assert!(matches!(&err, CaError::Exists { path } if path == &paths.cert));
        assert!(
            err.to_string().contains("pass --force to replace it"),
            "{err}"
        );
        assert_eq!(fs::read(&paths.key).unwrap(), before);

        init(&dir, true).unwrap();
        assert_ne!(fs::read(&paths.key).unwrap(), before);
        assert_eq!(mode(&paths.key), 0o600);
    }

    #[test]
    fn agent_certificate_names_its_addresses_and_verifies_as_server_and_client() {
        let ca = ca_dir();
        let sans = ["127.0.0.1".to_owned(), "web-1.example.com".to_owned()];
        let paths = issue_agent(ca.path(), "web-1", &sans, 30, false).unwrap();
        assert_eq!(paths.cert, ca.path().join("web-1.pem"));
        assert_eq!(mode(&paths.key), 0o600);
        let pem = fs::read_to_string(&paths.cert).unwrap();
        assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 1);
        assert!(!pem.contains("PRIVATE KEY"));

        let (der, uris) = parse(&paths.cert);
        assert_eq!(uris, ["hoist://agent/web-1"]);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        assert_eq!(cert.version(), x509_parser::x509::X509Version::V3);
        assert!(!cert.basic_constraints().unwrap().unwrap().value.ca);
        assert!(cert.key_usage().unwrap().unwrap().value.digital_signature());
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert_eq!(
            read_identity(pem.as_bytes()).unwrap(),
            ("web-1".to_owned(), None)
        );

        verify_server(ca.path(), &paths.cert, "127.0.0.1").unwrap();
        verify_server(ca.path(), &paths.cert, "web-1.example.com").unwrap();
        assert!(verify_server(ca.path(), &paths.cert, "127.0.0.2").is_err());
        assert!(verify_server(ca.path(), &paths.cert, "web-2.example.com").is_err());
        verify_client(ca.path(), &paths.cert).unwrap();

        let err = issue_agent(ca.path(), "web-1", &sans, 30, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        issue_agent(ca.path(), "web-1", &sans, 30, true).unwrap();
    }

    #[test]
    fn user_certificate_carries_its_role_and_verifies_as_client_only() {
        let ca = ca_dir();
        let paths = issue_user(ca.path(), "alice", Role::Deployer, 90, false).unwrap();
        assert_eq!(paths.key, ca.path().join("alice.key"));
        assert_eq!(mode(&paths.key), 0o600);
        let (_, uris) = parse(&paths.cert);
        assert_eq!(uris, ["hoist://role/deployer", "hoist://user/alice"]);
        let remaining = paths.not_after - OffsetDateTime::now_utc();
        assert!(remaining > Duration::days(89) && remaining <= Duration::days(90));

        verify_client(ca.path(), &paths.cert).unwrap();
        // A user certificate is not a server certificate.
        assert!(verify_server(ca.path(), &paths.cert, "alice").is_err());
        // Another CA does not vouch for it.
        let other = ca_dir();
        assert!(verify_client(other.path(), &paths.cert).is_err());
    }

    #[test]
    fn read_identity_round_trips_the_role() {
        let ca = ca_dir();
        for role in [Role::Viewer, Role::Deployer] {
            let name = format!("op-{role}");
            let paths = issue_user(ca.path(), &name, role, 1, false).unwrap();
            let pem = fs::read(&paths.cert).unwrap();
            assert_eq!(read_identity(&pem).unwrap(), (name, Some(role)));
        }
        let err = read_identity(b"not a certificate").unwrap_err();
        assert!(matches!(err, CaError::InvalidCertificate { .. }), "{err}");
    }

    #[test]
    fn roles_parse_and_display() {
        for role in [Role::Viewer, Role::Deployer] {
            assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
        }
        let err = "admin".parse::<Role>().unwrap_err();
        assert!(matches!(&err, CaError::UnknownRole { given } if given == "admin"));
        let message = err.to_string();
        assert!(
            message.contains("viewer") && message.contains("deployer"),
            "{message}"
        );
    }

    #[test]
    fn bad_names_are_refused_before_anything_is_written() {
        let ca = ca_dir();
        let long = "a".repeat(64);
        for name in [
            "",
            "../bob",
            "a/b",
            "a..b",
            ".hidden",
            "-x",
            "bob smith",
            &long,
        ] {
            let err = issue_user(ca.path(), name, Role::Viewer, 1, false).unwrap_err();
            assert!(
                matches!(err, CaError::InvalidName { .. }),
                "{name:?}: {err}"
            );
            assert!(err.to_string().contains("letters, digits"), "{err}");
            let err = issue_agent(ca.path(), name, &["10.0.0.1".into()], 1, false).unwrap_err();
            assert!(
                matches!(err, CaError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
        issue_user(ca.path(), &"a".repeat(63), Role::Viewer, 1, false).unwrap();
        issue_user(ca.path(), "Bob_1.x-y", Role::Viewer, 1, false).unwrap();
        let err = issue_user(ca.path(), "CA", Role::Viewer, 1, true).unwrap_err();
        assert!(matches!(err, CaError::ReservedName { .. }), "{err}");
        let files: Vec<_> = fs::read_dir(ca.path()).unwrap().collect();
        assert_eq!(files.len(), 6);
    }

    #[test]
    fn agent_addresses_are_checked() {
        let ca = ca_dir();
        let err = issue_agent(ca.path(), "web-1", &[], 30, false).unwrap_err();
        assert!(matches!(err, CaError::NoSans));
        assert!(err.to_string().contains("pass --san"), "{err}");
        for san in [
            "web_1",
            "-web",
            "a..b",
            "*.example.com",
            "10.0.0.256",
            "[::1]",
            "a b",
        ] {
            let err = issue_agent(ca.path(), "web-1", &[san.into()], 30, false).unwrap_err();
            assert!(
                matches!(&err, CaError::InvalidSan { san: s } if s == san),
                "{san}: {err}"
            );
        }
        issue_agent(
            ca.path(),
            "web-1",
            &["::1".into(), "localhost".into()],
            30,
            false,
        )
        .unwrap();
        let paths = issue_agent(ca.path(), "web-2", &["::1".into()], 30, false).unwrap();
        verify_server(ca.path(), &paths.cert, "::1").unwrap();
    }

    #[test]
    fn issuing_needs_a_matching_ca() {
        let empty = tempfile::tempdir().unwrap();
        let err = issue_user(empty.path(), "bob", Role::Viewer, 1, false).unwrap_err();
        assert!(matches!(err, CaError::MissingCa { .. }), "{err}");
        assert!(err.to_string().contains("hoist ca init"), "{err}");

        let ca = ca_dir();
        let err = issue_user(ca.path(), "bob", Role::Viewer, 0, false).unwrap_err();
        assert!(matches!(err, CaError::ZeroDays), "{err}");

        // Validity is capped at the CA's own.
        let paths = issue_user(ca.path(), "bob", Role::Viewer, u32::MAX, false).unwrap();
        let (ca_der, _) = parse(&ca.path().join(CA_CERT_FILE));
        let (_, ca_cert) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(
            paths.not_after.unix_timestamp(),
            ca_cert.validity().not_after.timestamp()
        );
        verify_client(ca.path(), &paths.cert).unwrap();

        let other = ca_dir();
        fs::copy(other.path().join(CA_KEY_FILE), ca.path().join(CA_KEY_FILE)).unwrap();
        let err = issue_user(ca.path(), "carol", Role::Viewer, 1, false).unwrap_err();
        assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");

        // A leaf certificate cannot act as a CA.
        let leaf = tempfile::tempdir().unwrap();
        fs::copy(&paths.cert, leaf.path().join(CA_CERT_FILE)).unwrap();
        fs::copy(&paths.key, leaf.path().join(CA_KEY_FILE)).unwrap();
        let err = issue_user(leaf.path(), "dave", Role::Viewer, 1, false).unwrap_err();
        assert!(matches!(err, CaError::BadCaCert { .. }), "{err}");
    }

    #[test]
    fn revoked_certificates_are_refused_with_the_crl_and_others_are_not() {
        let ca = ca_dir();
        let alice = issue_user(ca.path(), "alice", Role::Deployer, 90, false).unwrap();
        let bob = issue_user(ca.path(), "bob", Role::Viewer, 90, false).unwrap();
        let first = revoke(ca.path(), "alice").unwrap();
        assert!(!first.already);
        assert_eq!(first.count, 1);
        assert_eq!(mode(&first.crl) & 0o777, CERT_MODE);
        assert_eq!(
            first.serial,
            serial_hex(&fs::read(&alice.cert).unwrap()).unwrap()
        );
        // By serial, with colons: the same entry.
        let colons: Vec<String> = first
            .serial
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        assert!(revoke(ca.path(), &colons.join(":")).unwrap().already);
        let second = revoke(ca.path(), "bob").unwrap();
        assert_eq!(second.count, 2);

        use rustls::pki_types::pem::PemObject as _;
        let crls: Vec<_> =
            rustls::pki_types::CertificateRevocationListDer::pem_file_iter(&first.crl)
                .unwrap()
                .map(Result::unwrap)
                .collect();
        let verify = |cert: &Path| {
            WebPkiClientVerifier::builder_with_provider(roots(ca.path()), default_provider().into())
                .with_crls(crls.clone())
                .build()
                .unwrap()
                .verify_client_cert(&der(cert), &[], UnixTime::now())
                .map(drop)
        };
        for cert in [&alice.cert, &bob.cert] {
            assert_eq!(
                verify(cert).unwrap_err(),
                rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
            );
        }
        let carol = issue_user(ca.path(), "carol", Role::Viewer, 90, false).unwrap();
        verify(&carol.cert).unwrap();

        let err = revoke(ca.path(), "nobody").unwrap_err().to_string();
        assert!(err.contains("names no certificate"), "{err}");
        let other = ca_dir();
        issue_user(other.path(), "mallory", Role::Viewer, 1, false).unwrap();
        fs::copy(
            other.path().join("mallory.pem"),
            ca.path().join("mallory.pem"),
        )
        .unwrap();
        let err = revoke(ca.path(), "mallory").unwrap_err().to_string();
        assert!(err.contains("not issued by the CA"), "{err}");
        revoke(other.path(), "mallory").unwrap();
        fs::copy(other.path().join(CRL_FILE), ca.path().join(CRL_FILE)).unwrap();
        let err = revoke(ca.path(), "carol").unwrap_err().to_string();
        assert!(err.contains("issued by another CA"), "{err}");
    }
}
