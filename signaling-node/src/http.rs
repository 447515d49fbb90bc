//! Public HTTP routes: the web client, the WebSocket, dev tokens, health, and the operators'
//! query API (`/api/...`, behind a bearer key).

use actix_web::error::PayloadError;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use conclave_common::cluster::ClusterStore;
use conclave_common::frame_limit::FrameLimit;
use conclave_common::protocol::ParticipantInfo;
use serde::{Deserialize, Serialize};

use crate::auth::{now_secs, Claims};
use crate::client_ip::{ConnectionsPerIp, TrustedProxies};
use crate::metrics;
use crate::origin::AllowedOrigins;
use crate::outbound::{self, ConnectionSocket};
use crate::registry::CommunityRooms;
use crate::room::messages::Snapshot;
use crate::session::{Session, SessionDeps, MAX_FRAME};

/// Lifetime of a dev-minted token.
const DEV_TOKEN_TTL_SECS: u64 = 3600;

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    pub deps: SessionDeps,
    pub dev: bool,
    pub api: ApiState,
    /// This signaling instance.
    pub instance: String,
    /// Set on SIGTERM: not ready, no new WebSockets.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Open WebSockets per client address (shared by every worker).
    pub connections: ConnectionsPerIp,
    /// Proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: std::sync::Arc<TrustedProxies>,
    /// Whose pages may open `/ws`.
    pub allowed_origins: std::sync::Arc<AllowedOrigins>,
}

impl AppState {
    fn is_draining(&self) -> bool {
        self.draining.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The query API: cluster-wide from Redis in cluster mode, this node's rooms otherwise.
#[derive(Clone)]
pub struct ApiState {
    pub store: Option<ClusterStore>,
    /// Required as `Authorization: Bearer <key>`.
    pub key: Option<String>,
    /// No key needed (dev mode).
    pub open: bool,
}

/// Register every public route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/ws", web::get().to(websocket))
        .route("/dev/token", web::get().to(dev_token))
        .route("/healthz", web::get().to(health))
        .route("/readyz", web::get().to(ready))
        .route(
            "/api/communities/{community}/rooms",
            web::get().to(community_rooms),
        )
        .route("/api/nodes", web::get().to(nodes))
        // The web client (`/` and each file of `static/`); last, as it matches every GET path.
        .route("/{path:.*}", web::get().to(crate::web_client::serve));
}

/// The browser's WebSocket. `?room=` is only for the load balancer's sticky hashing; the
/// token decides the room.
async fn websocket(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    // Before anything else: a foreign page must not even learn whether this node drains.
    let host = req.headers().get("host").and_then(|v| v.to_str().ok());
    // A present but non-ASCII Origin is foreign, not absent.
    let origin = req
        .headers()
        .get("origin")
        .map(|v| v.to_str().unwrap_or(""));
    if !state.allowed_origins.allows(origin, host) {
        tracing::info!(origin = ?origin.map(|o| o.chars().take(100).collect::<String>()), "websocket from a foreign origin refused");
        return Ok(HttpResponse::Forbidden().json(serde_json::json!({
            "error": "forbidden", "message": "this page's origin may not connect here"
        })));
    }
    if state.is_draining() {
        // The load balancer retries another node (nginx: proxy_next_upstream http_503).
        return Ok(HttpResponse::ServiceUnavailable().json(serde_json::json!({
            "error": "unavailable", "message": "this node is draining; connect to another"
        })));
    }
    let slot = match req.peer_addr() {
        Some(peer) => {
            let forwarded: Vec<&str> = req
                .headers()
                .get_all("x-forwarded-for")
                .filter_map(|v| v.to_str().ok())
                .collect();
            let client = state
                .trusted_proxies
                .client_ip(peer.ip(), forwarded.into_iter());
            match state.connections.acquire(client) {
                Some(slot) => Some(slot),
                None => {
                    metrics::CONNECTIONS_REFUSED
                        .with_label_values(&["per_ip"])
                        .inc();
                    tracing::info!(%client, "too many connections from one address: refused");
                    return Ok(HttpResponse::TooManyRequests().json(serde_json::json!({
                        "error": "too_many_connections",
                        "message": "too many connections from your address"
                    })));
                }
            }
        }
        None => None, // Not a TCP connection (tests over a Unix socket).
    };
    let mut response = ws::handshake(&req)?;
    // Frames over the limit are refused from their header, before their payload is buffered.
    let payload = FrameLimit::new(stream, MAX_FRAME, || PayloadError::Overflow);
    let session = Session::new(state.deps.clone())
        .with_frame_limit(payload.tripped())
        .with_ip_slot(slot);
    let codec = actix_http::ws::Codec::new().max_size(MAX_FRAME);
    let frames = ws::WebsocketContext::with_codec(session, payload, codec);
    // The session's frames go through a bounded queue: a client that stops reading is cut.
    let socket = req.conn_data::<std::sync::Arc<ConnectionSocket>>().cloned();
    let limit = state.deps.limits.outbound_queue_bytes;
    Ok(response.streaming(outbound::bounded(frames, limit, socket)))
}

#[derive(Deserialize)]
struct DevTokenQuery {
    room: String,
    user: String,
    #[serde(default = "default_community")]
    community: String,
    name: Option<String>,
}

fn default_community() -> String {
    "default".into()
}

/// Dev mode only: mint a token, as a chat backend would for its logged-in user.
async fn dev_token(
    query: Result<web::Query<DevTokenQuery>, actix_web::Error>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if !state.dev {
        return HttpResponse::NotFound().json(serde_json::json!({
            "error": "not_found", "message": "token minting is off (start with --dev)"
        }));
    }
    let q = match query {
        Ok(q) => q.into_inner(),
        Err(e) => {
            return HttpResponse::BadRequest()
                .json(serde_json::json!({"error": "bad_request", "message": e.to_string()}))
        }
    };
    let claims = Claims {
        sub: q.user,
        room: q.room,
        community: q.community,
        name: q.name,
        exp: now_secs() + DEV_TOKEN_TTL_SECS,
    };
    for (field, value) in [
        ("room", &claims.room),
        ("user", &claims.sub),
        ("community", &claims.community),
    ] {
        if value.is_empty() || value.len() > 128 {
            return HttpResponse::BadRequest().json(serde_json::json!({
                "error": "bad_request", "message": format!("{field} must be 1..=128 bytes")
            }));
        }
    }
    for (field, value) in [("room", &claims.room), ("community", &claims.community)] {
        if let Err(e) = conclave_common::names::check_name(value) {
            return HttpResponse::BadRequest().json(serde_json::json!({
                "error": "bad_request", "message": format!("{field} {e}")
            }));
        }
    }
    HttpResponse::Ok().json(serde_json::json!({ "token": state.deps.keys.mint(&claims) }))
}

/// Liveness: the process answers and its registry runs (its mailbox is open: the registry
/// is not asked anything, so a busy actor cannot make the probe wait). Probes and `/metrics`
/// read atomics only.
async fn health(state: web::Data<AppState>) -> HttpResponse {
    let body = serde_json::json!({
        "status": "ok",
        "rooms": crate::metrics::ROOMS.get(),
        "instance": state.instance,
    });
    if state.deps.registry.connected() {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({ "status": "registry stopped" }))
    }
}

/// Readiness: false while draining. A node whose Redis is down stays ready (its calls go on;
/// new joins get `unavailable`) and says so in the details.
async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let redis = match &state.api.store {
        None => "none",
        Some(_) if crate::metrics::REDIS_UP.get() == 1 => "up",
        Some(_) => "down",
    };
    let draining = state.is_draining();
    let body = serde_json::json!({
        "ready": !draining,
        "draining": draining,
        "redis": redis,
        "sessions": crate::metrics::SESSIONS.get(),
        "instance": state.instance,
    });
    if draining {
        HttpResponse::ServiceUnavailable().json(body)
    } else {
        HttpResponse::Ok().json(body)
    }
}

async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(conclave_common::metrics::CONTENT_TYPE)
        .body(conclave_common::metrics::encode())
}

/// Routes of the internal listener (`--internal-listen`).
pub fn internal_routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics))
        .route("/healthz", web::get().to(health))
        .route("/readyz", web::get().to(ready));
}

/// Refuse an API call without the right key (or when the API is off).
fn api_refusal(req: &HttpRequest, api: &ApiState) -> Option<HttpResponse> {
    let Some(key) = &api.key else {
        return (!api.open).then(|| {
            HttpResponse::NotFound().json(serde_json::json!({
                "error": "not_found", "message": "the query API is off (set --api-key)"
            }))
        });
    };
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    // Compared in time independent of where the keys differ.
    let matches = given.is_some_and(|given| {
        use subtle::ConstantTimeEq;
        bool::from(given.as_bytes().ct_eq(key.as_bytes()))
    });
    (!matches).then(|| {
        HttpResponse::Unauthorized().json(serde_json::json!({
            "error": "unauthorized", "message": "send Authorization: Bearer <api key>"
        }))
    })
}

fn unavailable(e: impl std::fmt::Display) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(serde_json::json!({
        "error": "unavailable", "message": format!("cluster state unavailable: {e}")
    }))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct RoomView {
    room: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    media_node: Option<String>,
    participants: Vec<ParticipantInfo>,
}

/// The rooms of a community with their participants and audio/video states.
async fn community_rooms(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> HttpResponse {
    if let Some(refused) = api_refusal(&req, &state.api) {
        return refused;
    }
    let community = path.into_inner();
    let mut rooms = Vec::new();
    if let Some(store) = &state.api.store {
        let ids = match store.community_rooms(&community).await {
            Ok(ids) => ids,
            Err(e) => return unavailable(e),
        };
        for id in ids {
            let Some((_, name)) = id.split_once('/') else {
                continue;
            };
            let (members, node) = match (store.room_members(&id).await, store.room_node(&id).await)
            {
                (Ok(m), Ok(n)) => (m, n),
                (Err(e), _) | (_, Err(e)) => return unavailable(e),
            };
            if members.is_empty() {
                continue; // Emptied between the two reads.
            }
            let mut participants: Vec<ParticipantInfo> =
                members.into_iter().map(|m| m.participant).collect();
            participants.sort_by(|a, b| a.participant_id.cmp(&b.participant_id));
            rooms.push(RoomView {
                room: name.to_string(),
                media_node: node,
                participants,
            });
        }
    } else {
        let open = state
            .deps
            .registry
            .send(CommunityRooms(community.clone()))
            .await
            .unwrap_or_default();
        for (name, room) in open {
            let mut participants = room.send(Snapshot).await.unwrap_or_default();
            if participants.is_empty() {
                continue;
            }
            participants.sort_by(|a, b| a.participant_id.cmp(&b.participant_id));
            rooms.push(RoomView {
                room: name,
                media_node: None,
                participants,
            });
        }
        rooms.sort_by(|a, b| a.room.cmp(&b.room));
    }
    HttpResponse::Ok().json(serde_json::json!({ "community": community, "rooms": rooms }))
}

/// The media nodes with their load (cluster mode).
async fn nodes(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(refused) = api_refusal(&req, &state.api) {
        return refused;
    }
    let Some(store) = &state.api.store else {
        return HttpResponse::Ok().json(serde_json::json!({
            "mode": "single", "mediaNodes": [], "signaling": state.instance
        }));
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    match store.nodes(now).await {
        Ok(nodes) => HttpResponse::Ok().json(serde_json::json!({
            "mode": "cluster", "mediaNodes": nodes, "signaling": state.instance
        })),
        Err(e) => unavailable(e),
    }
}
