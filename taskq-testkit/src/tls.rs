//! [`TlsFiles`]: a certificate authority, a server certificate and a client certificate,
//! generated per test with rcgen and written as PEM files for `redis-server` and clients.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// PEM files of one test's TLS setup: `ca` signed `server_cert` (for `127.0.0.1` and
/// `localhost`) and `client_cert`.
///
/// ```no_run
/// let dir = std::env::temp_dir().join("tls-example");
/// let files = taskq_testkit::TlsFiles::generate(&dir);
/// let other = taskq_testkit::TlsFiles::generate(&dir.join("other")); // another CA
/// # let _ = (files, other);
/// ```
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The authority's certificate.
    pub ca: PathBuf,
    /// The server's certificate and key.
    pub server_cert: PathBuf,
    /// The server's private key.
    pub server_key: PathBuf,
    /// A client certificate the authority signed (mutual TLS).
    pub client_cert: PathBuf,
    /// The client certificate's private key.
    pub client_key: PathBuf,
}

impl TlsFiles {
    /// Generates a fresh authority and both certificates into `dir` (created if needed).
    ///
    /// # Panics
    ///
    /// When generating or writing fails.
    pub fn generate(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).expect("create the TLS directory");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "taskq test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("self-sign the CA");
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().expect("leaf key");
            let cert = CertificateParams::new(names)
                .expect("leaf params")
                .signed_by(&key, &ca)
                .expect("sign a leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
        let (client_cert, client_key) = leaf(vec!["taskq-client".into()]);
        let write = |name: &str, pem: &str| {
            let path = dir.join(name);
            std::fs::write(&path, pem).expect("write a PEM file");
            path
        };
        Self {
            ca: write("ca.pem", &ca.pem()),
            server_cert: write("server.pem", &server_cert),
            server_key: write("server.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
        }
    }
}
