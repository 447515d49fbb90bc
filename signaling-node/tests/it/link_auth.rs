//! The signaling node's end of the authenticated link: it sends nothing, no participant's SDP
//! above all, to a "media node" that does not prove it holds the link secret (a link URL
//! rewritten to a rogue address), and it reaches a real media node holding the same secret.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use serde_json::json;

use crate::cluster_support::{spawn_media_node_with, start_redis};
use crate::support::{remote_media, start_with, valid_offer, Options};

/// A rogue "media node": accepts any upgrade, sends a hello with a made-up proof, and keeps
/// every text frame it is sent.
struct Rogue {
    received: Arc<Mutex<Vec<String>>>,
}

impl Actor for Rogue {
    type Context = ws::WebsocketContext<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.text(
            json!({"type": "hello", "nodeId": "media-1", "udpAddr": "127.0.0.1:9", "proof": "00".repeat(32)})
                .to_string(),
        );
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Rogue {
    fn handle(&mut self, msg: Result<ws::Message, ws::ProtocolError>, _: &mut Self::Context) {
        if let Ok(ws::Message::Text(text)) = msg {
            self.received.lock().unwrap().push(text.to_string());
        }
    }
}

async fn rogue_link(
    req: HttpRequest,
    stream: web::Payload,
    received: web::Data<Arc<Mutex<Vec<String>>>>,
) -> actix_web::Result<HttpResponse> {
    let received = received.get_ref().clone();
    ws::start(Rogue { received }, &req, stream)
}

#[actix_rt::test]
async fn no_sdp_goes_to_a_media_node_that_does_not_prove_the_link_secret() {
    let received: Arc<Mutex<Vec<String>>> = Arc::default();
    let data = web::Data::new(received.clone());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/internal/link", web::get().to(rogue_link))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    actix_rt::spawn(server);

    let signaling = start_with(
        Options::default(),
        None,
        Some(remote_media(format!("ws://{addr}/internal/link"))),
    );
    let (mut alice, _) = signaling.join("alice", "rogue").await;
    for _ in 0..3 {
        alice
            .send(json!({"id": "offer", "sdp": valid_offer()}))
            .await;
        let reply = alice.expect("error").await;
        assert_eq!(reply["code"], "unavailable", "{reply}");
        actix_rt::time::sleep(Duration::from_millis(1200)).await;
    }
    let frames = received.lock().unwrap().clone();
    assert!(
        frames.is_empty(),
        "the rogue node received link frames: {frames:?}"
    );
}

#[actix_rt::test]
async fn a_media_node_with_another_secret_is_not_used() {
    let (_redis, redis_url) = start_redis();
    // The media node holds a different secret from the signaling node's.
    let other = ["--link-secret", "a-different-link-secret-0123456789abcdef"];
    let (_media, link_url, _) = spawn_media_node_with(&redis_url, "m-other", 10, &other);
    let signaling = start_with(Options::default(), None, Some(remote_media(link_url)));
    let (mut alice, _) = signaling.join("alice", "other").await;
    for _ in 0..2 {
        alice
            .send(json!({"id": "offer", "sdp": valid_offer()}))
            .await;
        let reply = alice.expect("error").await;
        assert_eq!(reply["code"], "unavailable", "{reply}");
        actix_rt::time::sleep(Duration::from_millis(1200)).await;
    }
}
