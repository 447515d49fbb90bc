//! The media node's internal HTTP server: the link endpoint for signaling nodes, health,
//! readiness and metrics. Never exposed to browsers.
//!
//! Health, readiness and metrics read shared atomics only and never send a message to the
//! node's actor: that actor shares its thread with the receive loop and the first rooms, so
//! a saturated (but working) media thread would make a probe wait behind it and fail.

use actix_web::error::PayloadError;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use conclave_common::frame_limit::FrameLimit;

use std::sync::atomic::Ordering::Relaxed;

use crate::handle::MediaNodeHandle;
use crate::link::LinkSession;

/// Largest link frame: a server offer for a full room is tens of KiB.
const MAX_LINK_FRAME: usize = 1024 * 1024;

async fn link(
    req: HttpRequest,
    stream: web::Payload,
    media: web::Data<MediaNodeHandle>,
) -> actix_web::Result<HttpResponse> {
    let session = LinkSession::new(media.node.clone(), media.hello());
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
        "udp": media.advertised.to_string(),
        "rooms": media.rooms.load(Relaxed),
        "participants": media.participants.load(Relaxed),
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

/// Serve the internal API on `listener` until the server is stopped.
pub fn serve(
    listener: std::net::TcpListener,
    media: MediaNodeHandle,
) -> std::io::Result<actix_web::dev::Server> {
    let media = web::Data::new(media);
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(media.clone())
            .route("/internal/link", web::get().to(link))
            .route("/healthz", web::get().to(health))
            .route("/readyz", web::get().to(ready))
            .route("/metrics", web::get().to(metrics))
    })
    .workers(1)
    // SIGTERM drains (main.rs); the server is stopped when that is done.
    .disable_signals()
    // Links are long-lived WebSockets: do not wait the default 30 s for them on stop.
    .shutdown_timeout(3)
    .listen(listener)?
    .run())
}
