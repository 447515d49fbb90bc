//! The media node's internal HTTP server: the link endpoint for signaling nodes, health,
//! readiness and metrics. Never exposed to browsers.

use actix_web::error::PayloadError;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use actix_web_actors::ws;
use conclave_common::frame_limit::FrameLimit;

use crate::handle::MediaNodeHandle;
use crate::link::LinkSession;
use crate::node::RoomCount;

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

async fn health(media: web::Data<MediaNodeHandle>) -> HttpResponse {
    let rooms = media.node.send(RoomCount).await.unwrap_or(0);
    HttpResponse::Ok().json(serde_json::json!({
        "status": "ok",
        "nodeId": media.node_id,
        "udp": media.advertised.to_string(),
        "rooms": rooms,
    }))
}

/// Ready to take rooms: not while draining.
async fn ready(media: web::Data<MediaNodeHandle>) -> HttpResponse {
    let draining = media.draining.load(std::sync::atomic::Ordering::Relaxed);
    let body = serde_json::json!({ "ready": !draining, "draining": draining });
    if draining {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

/// Prometheus text format; gauges that mirror state elsewhere are read now.
async fn metrics(media: web::Data<MediaNodeHandle>) -> HttpResponse {
    let participants = media
        .participants
        .load(std::sync::atomic::Ordering::Relaxed);
    crate::metrics::PARTICIPANTS.set(participants as i64);
    if let Ok(rooms) = media.node.send(RoomCount).await {
        crate::metrics::ROOMS.set(rooms as i64);
    }
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
