//! `https://` upstreams: the fixture behind a TLS server whose certificate is issued by a CA
//! made for the test. With the CA in the catalog's `ca_file` the runtime reaches it; without
//! it (the system's roots do not know that CA) a required upstream fails the start with the
//! certificate error, and a bad `ca_file` is a catalog error naming the upstream.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::sidecar::Sidecar;
use crate::support::*;
use mcp_runtime_core::{CatalogConfig, Runtime, RuntimeConfig};

/// A TLS server on a loopback port in front of `plain` (the fixture's address): each
/// connection is decrypted and copied to a fresh TCP connection to the fixture. Returns the
/// port and the CA's certificate (PEM); the server stops when the test's runtime ends.
async fn tls_front(plain: std::net::SocketAddr) -> (u16, String) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("server key");
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .expect("server params")
        .signed_by(&key, &issuer)
        .expect("server certificate");
    let config = ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if let Ok(mut upstream) = TcpStream::connect(plain).await {
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                }
            });
        }
    });
    (port, ca.pem())
}

fn catalog(port: u16, ca_file: Option<&std::path::Path>) -> String {
    let ca = ca_file.map_or_else(String::new, |p| format!("ca_file = \"{}\"\n", p.display()));
    format!("[[upstreams]]\nid = \"tls\"\nurl = \"https://localhost:{port}/mcp\"\n{ca}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_reached_with_the_ca_of_its_ca_file() {
    let fx = Fixture::start();
    let (port, ca) = tls_front(fx.addr()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).expect("ca");
    let rt = Sidecar::start(&catalog(port, Some(&ca_file))).await;
    let http = Http::new(&rt.http);
    let who = auth("alice@example.com", false, Some(&[]));
    let sid = http.initialize(&who, None).await;
    let r = http
        .send(
            &Call::post(
                &who,
                rpc(
                    2,
                    "tools/call",
                    json!({"name": "echo", "arguments": {"text": "over tls"}}),
                ),
            )
            .session(&sid),
        )
        .await;
    assert_eq!(
        r.json().pointer("/result/content/0/text"),
        Some(&json!("over tls"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_ca_an_https_upstream_fails_the_start_on_its_certificate() {
    let fx = Fixture::start();
    let (port, _) = tls_front(fx.addr()).await;
    let config = CatalogConfig::parse(&catalog(port, None)).expect("catalog");
    let err = Runtime::start(&config, RuntimeConfig::default())
        .await
        .expect_err("an unknown CA must fail the start");
    let text = format!("{err:#}").to_lowercase();
    assert!(text.contains("tls"), "{text}");
    assert!(text.contains("certificate"), "{text}");
}

#[tokio::test]
async fn a_ca_file_that_is_missing_or_not_pem_is_a_catalog_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").expect("junk");
    for (path, why) in [
        (dir.path().join("missing.pem"), "No such file"),
        (junk, "no PEM certificate"),
    ] {
        let config = CatalogConfig::parse(&catalog(9, Some(&path))).expect("catalog");
        let err = Runtime::start(&config, RuntimeConfig::default())
            .await
            .expect_err("a bad ca_file must fail the start");
        let text = err.to_string();
        assert!(
            text.contains("upstream `tls`: ca_file") && text.contains(why),
            "{text}"
        );
    }
}
