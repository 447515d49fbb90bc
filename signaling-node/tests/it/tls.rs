//! HTTPS and WSS with a given PEM certificate (browsers on other machines need https).

use std::sync::Arc;

use awc::ws;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;

use crate::support::{start_with_tls, Options};

#[actix_rt::test]
async fn serves_the_page_and_the_websocket_over_tls_with_a_pem_certificate() {
    // A certificate as an operator would give it: PEM files on disk.
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("conclave-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    let server_tls = conclave_signaling_node::tls::from_pem_files(&cert, &key).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let server = start_with_tls(Options::default(), Some(server_tls));
    assert!(server.base.starts_with("https://"));

    // A client that trusts exactly that certificate.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(generated.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = awc::Client::builder()
        .connector(awc::Connector::new().rustls_0_23(Arc::new(client_tls)))
        .finish();

    let mut page = client
        .get(format!("{}/", server.base))
        .send()
        .await
        .unwrap();
    assert!(page.status().is_success());
    let body = page.body().await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("<html"));

    let wss = format!("{}/ws?room=tls", server.base.replace("https", "wss"));
    let (_, mut framed) = client.ws(wss).connect().await.unwrap();
    let join = json!({"id": "join", "token": server.token("u1", "tls")}).to_string();
    framed.send(ws::Message::Text(join.into())).await.unwrap();
    loop {
        match framed.next().await {
            Some(Ok(ws::Frame::Text(t))) => {
                let v: serde_json::Value = serde_json::from_slice(&t).unwrap();
                if v["id"] == "joined" {
                    break;
                }
                assert_eq!(v["id"], "heartbeat", "{v}");
            }
            other => panic!("expected joined over wss, got {other:?}"),
        }
    }
}
