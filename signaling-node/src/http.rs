//! Public HTTP routes: the web client, the WebSocket, dev tokens, health.

use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;
use serde::Deserialize;

use crate::auth::{now_secs, Claims};
use crate::registry::RoomCount;
use crate::session::{Session, SessionDeps, MAX_FRAME};

/// Lifetime of a dev-minted token.
const DEV_TOKEN_TTL_SECS: u64 = 3600;

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    pub deps: SessionDeps,
    pub dev: bool,
}

/// Register every public route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index))
        .route("/app.js", web::get().to(app_js))
        .route("/style.css", web::get().to(style_css))
        .route("/ws", web::get().to(websocket))
        .route("/dev/token", web::get().to(dev_token))
        .route("/healthz", web::get().to(health));
}

async fn index() -> HttpResponse {
    static_file(
        "text/html; charset=utf-8",
        include_str!("../static/index.html"),
    )
}

async fn app_js() -> HttpResponse {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    )
}

async fn style_css() -> HttpResponse {
    static_file(
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    )
}

fn static_file(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header(("Cache-Control", "no-cache"))
        .body(body)
}

/// The browser's WebSocket. `?room=` is only for the load balancer's sticky hashing; the
/// token decides the room.
async fn websocket(
    req: HttpRequest,
    stream: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    ws::WsResponseBuilder::new(Session::new(state.deps.clone()), &req, stream)
        .frame_size(MAX_FRAME)
        .start()
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
    HttpResponse::Ok().json(serde_json::json!({ "token": state.deps.keys.mint(&claims) }))
}

async fn health(state: web::Data<AppState>) -> HttpResponse {
    let rooms = state.deps.registry.send(RoomCount).await.unwrap_or(0);
    HttpResponse::Ok().json(serde_json::json!({ "status": "ok", "rooms": rooms }))
}
