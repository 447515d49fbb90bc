//! The media node's internal HTTP server: the link endpoint for signaling nodes, health,
//! readiness and metrics. Never exposed to browsers.
//!
//! Health, readiness and metrics read shared atomics only and never send a message to the
//! node's actor: that actor shares its thread with the receive loop and the first rooms, so
//! a saturated (but working) media thread would make a probe wait behind it and fail.

use std::sync::Mutex;

use actix_web::error::PayloadError;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use conclave_common::frame_limit::FrameLimit;
use conclave_common::link_auth::{self, LinkAuthError, LinkSecret, ReplayGuard};

use std::sync::atomic::Ordering::Relaxed;

use crate::handle::MediaNodeHandle;
use crate::link::LinkSession;

/// Largest link frame: a server offer for a full room is tens of KiB.
const MAX_LINK_FRAME: usize = 1024 * 1024;

/// Who may open a link: holders of the link secret (`None`: anyone, `--dev` only).
pub struct LinkGate {
    secret: Option<LinkSecret>,
    replay: Mutex<ReplayGuard>,
}

impl LinkGate {
    pub fn new(secret: Option<LinkSecret>) -> Self {
        LinkGate {
            secret,
            replay: Mutex::default(),
        }
    }

    /// Check an upgrade; `Ok` carries the hello's proof (none without a secret). A refusal
    /// is logged and counted here.
    fn admit(&self, req: &HttpRequest, node_id: &str) -> Result<Option<String>, LinkAuthError> {
        let Some(secret) = &self.secret else {
            return Ok(None);
        };
        let header = req
            .headers()
            .get(actix_web::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let mut replay = self.replay.lock().unwrap_or_else(|e| e.into_inner());
        let checked = secret.verify_upgrade(header, link_auth::unix_now(), &mut replay);
        match checked {
            Ok(nonce) => Ok(Some(secret.hello_proof(&nonce, node_id))),
            Err(e) => {
                let peer = req.peer_addr().map(|a| a.to_string()).unwrap_or_default();
                tracing::warn!(%peer, reason = %e, "internal link upgrade refused");
                crate::metrics::LINK_UPGRADES_REFUSED
                    .with_label_values(&[e.label()])
                    .inc();
                Err(e)
            }
        }
    }
}

async fn link(
    req: HttpRequest,
    stream: web::Payload,
    media: web::Data<MediaNodeHandle>,
    gate: web::Data<LinkGate>,
) -> actix_web::Result<HttpResponse> {
    let Ok(proof) = gate.admit(&req, &media.node_id) else {
        // No detail for the caller: it either holds the secret or learns nothing.
        return Ok(HttpResponse::Unauthorized().body("unauthorized\n"));
    };
    let session = LinkSession::new(media.node.clone(), media.hello(proof));
    // Frames over the limit end the link from their header, before their payload is buffered.
    let payload = FrameLimit::new(stream, MAX_LINK_FRAME, || PayloadError::Overflow);
    let session = session.with_frame_limit(payload.tripped());
    ws::WsResponseBuilder::new(session, &req, payload)
        .frame_size(MAX_LINK_FRAME)
        .start()
}

/// Liveness: the process answers and the node's actor still runs (its mailbox is open; it
/// is not asked anything, so a busy media thread does not delay the answer).
async fn health(media: web::Data<MediaNodeHandle>) -> HttpResponse {
    let alive = media.node.connected();
    let body = serde_json::json!({
        "status": if alive { "ok" } else { "node stopped" },
        "nodeId": media.node_id,
        "udp": media.advertised[0].to_string(),
        "udpAddrs": media.advertised_strings(),
        "rooms": media.rooms.load(Relaxed),
        "participants": media.participants.load(Relaxed),
        "load": media.load.load_fpps.load(Relaxed),
        "loadCapacity": media.load.capacity_fpps.load(Relaxed),
    });
    if alive {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Ready to take rooms: not while draining, nor once the node's actor has stopped.
async fn ready(media: web::Data<MediaNodeHandle>) -> HttpResponse {
    let draining = media.draining.load(Relaxed);
    let alive = media.node.connected();
    let body = serde_json::json!({ "ready": alive && !draining, "draining": draining });
    if alive && !draining {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

/// Prometheus text format. Every gauge is kept current where its state changes (room and
/// peer start/stop), so a scrape only reads atomics.
async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(conclave_common::metrics::CONTENT_TYPE)
        .body(conclave_common::metrics::encode())
}

/// What one HTTP listener serves.
pub enum Endpoints {
    /// Probes, metrics and the link (no `--link-listen`).
    All(web::Data<LinkGate>),
    /// Probes and metrics (the link has its own listener).
    Probes,
    /// The link alone (`--link-listen`).
    Link(web::Data<LinkGate>),
}

/// Serve `endpoints` on `listener` until the server is stopped.
pub fn serve(
    listener: std::net::TcpListener,
    media: MediaNodeHandle,
    endpoints: Endpoints,
) -> std::io::Result<actix_web::dev::Server> {
    let media = web::Data::new(media);
    let (probes, gate) = match endpoints {
        Endpoints::All(gate) => (true, Some(gate)),
        Endpoints::Probes => (true, None),
        Endpoints::Link(gate) => (false, Some(gate)),
    };
    Ok(HttpServer::new(move || {
        let mut app = App::new().app_data(media.clone());
        if let Some(gate) = &gate {
            app = app
                .app_data(gate.clone())
                .route("/internal/link", web::get().to(link));
        }
        if probes {
            app = app
                .route("/healthz", web::get().to(health))
                .route("/readyz", web::get().to(ready))
                .route("/metrics", web::get().to(metrics));
        }
        app
    })
    .workers(1)
    // SIGTERM drains (main.rs); the server is stopped when that is done.
    .disable_signals()
    // Links are long-lived WebSockets: do not wait the default 30 s for them on stop.
    .shutdown_timeout(3)
    .listen(listener)?
    .run())
}
