//! The whole signaling node, from its configuration: the policy that turns flags into a
//! running node (token mode, topology — embedded media node, one separate media node, or a
//! Redis cluster —, TLS choice, settings of every part), then start-up of the shared actors,
//! the public and internal HTTP servers, and the drain on SIGTERM.
//!
//! [`run`] is what the binary calls; tests start the same parts with [`start_services`] and
//! [`serve`] on ports of their own.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use actix_web::{web, App, HttpServer};

use conclave_common::caps::ParticipantCaps;
use conclave_common::cluster::{ClusterStore, RedisSettings};
use conclave_common::link_auth::LinkSecret;

use crate::auth::{TokenKeys, TokenPolicy, MIN_SECRET_LEN};
use crate::client_ip::ConnectionsPerIp;
use crate::config::Config;
use crate::error::StartError;
use crate::http::{self, AppState};
use crate::limits::Limits;
use crate::media_link::{MediaLink, MediaTarget, RemoteMedia};
use crate::metrics;
use crate::origin::AllowedOrigins;
use crate::outbound::ConnectionSocket;
use crate::presence::{PresenceSettings, PresenceSink, WebhookSettings};
use crate::registry::{self, Placement, Registry};
use crate::room::{AssertBatch, RoomCluster, RoomDeps};
use crate::room_bus::RoomBus;
use crate::session::SessionDeps;
use crate::tls;
use crate::turn::TurnServers;
use crate::upkeep::Upkeep;

/// Seconds a stopping server waits for open connections (WebSockets never finish by themselves).
const SHUTDOWN_TIMEOUT_SECS: u64 = 3;
/// Wait between attempts to reach the cluster's Redis at start.
const REDIS_CONNECT_RETRY: Duration = Duration::from_secs(2);
/// How often a draining node checks whether its last room has closed.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Run the node `config` describes until it has drained after SIGTERM (or Ctrl-C). Call
/// inside an actix system (`#[actix_web::main]`). Prints the machine-readable readiness line
/// (`listening url=... internal=...`) on stdout once both listeners are bound.
pub async fn run(config: Config) -> Result<(), StartError> {
    check_dev_mode(&config)?;
    let allowed_origins =
        AllowedOrigins::parse(&config.allowed_origins).map_err(StartError::AllowedOrigins)?;
    let token_secret = token_secret(&config)?;
    let link_secret = link_secret(&config)?;
    let turn = config.turn()?.map(Arc::new);
    if let Some(turn) = &turn {
        tracing::info!(servers = ?turn, "clients get these ICE servers, TURN credentials minted per participant");
    }
    let mut udp_note = String::new();
    let media = match (&config.redis_url, &config.media_node) {
        (Some(redis_url), _) => {
            let redis = RedisSettings {
                url: redis_url.clone(),
                password: config.redis_password.clone(),
                ca_file: config.redis_ca_file.clone(),
            };
            MediaSetup::Cluster(connect_cluster(&redis, &config.redis_prefix).await?)
        }
        (None, Some(url)) => MediaSetup::Single(MediaTarget::Remote(RemoteMedia {
            url: url.clone(),
            secret: link_secret.clone(),
            node_id: None,
        })),
        (None, None) => {
            let media = conclave_media_node::start(&config.media)?;
            let udp: Vec<String> = media.udp_locals.iter().map(|a| a.to_string()).collect();
            udp_note = format!(" udp={}", udp.join(","));
            MediaSetup::Single(MediaTarget::Local(media.commands()))
        }
    };
    let tls = tls_config(&config)?;
    let listener = bind(config.listen)?;
    let local = listener.local_addr()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let shown = if local.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", local.port())
    } else {
        format!("{scheme}://{local}")
    };
    let mut settings = settings(&config, media, token_secret, shown.clone());
    settings.link_secret = link_secret;
    settings.turn = turn;
    settings.allowed_origins = allowed_origins;
    let services = start_services(settings);
    // Machine-readable readiness line on stdout (tests and scripts wait for it).
    let internal = bind(config.internal_listen)?;
    let internal_addr = internal.local_addr()?;
    println!("listening url={shown} internal=http://{internal_addr}{udp_note}");
    eprintln!("Conclave is up: open {shown} in two browser tabs and join the same room.");
    let internal_server = serve_internal(internal, &services)?;
    let public_server = serve(listener, tls, services.clone(), config.workers)?;
    let (public, internal) = (public_server.handle(), internal_server.handle());
    let drain = Duration::from_secs(config.drain_timeout_secs);
    actix::spawn(async move {
        drain_on_signal(services, drain).await;
        public.stop(true).await;
        internal.stop(true).await;
    });
    let (a, b) = futures_util::future::join(public_server, internal_server).await;
    Ok(a.and(b)?)
}

/// `--dev` opens `/dev/token` and the query API to anyone: next to a real Redis or a real
/// token secret that is a production node minting tokens for strangers, unless the operator
/// said explicitly that this is a test cluster (`--dev-with-real-services`), and then loudly.
fn check_dev_mode(config: &Config) -> Result<(), StartError> {
    if !config.dev {
        return Ok(());
    }
    let mut uses = Vec::new();
    if config.redis_url.is_some() {
        uses.push("--redis-url");
    }
    if config
        .token_secret
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        uses.push("--token-secret");
    }
    if uses.is_empty() {
        return Ok(());
    }
    let uses = uses.join(" and ");
    if !config.dev_with_real_services {
        return Err(StartError::DevWithRealServices { uses });
    }
    let warning = format!(
        "DEV MODE WITH REAL SERVICES ({uses}): anyone who reaches this node can mint tokens \
         at /dev/token and read the query API. Never run this in production."
    );
    tracing::warn!(uses = %uses, "{warning}");
    eprintln!("\n!!! WARNING !!! {warning}\n");
    Ok(())
}

/// Token mode: the configured secret, or a random one in dev mode.
fn token_secret(config: &Config) -> Result<Vec<u8>, StartError> {
    let given = config.token_secret.as_deref().filter(|s| !s.is_empty());
    match (given, config.dev) {
        (Some(s), _) if s.len() < MIN_SECRET_LEN => Err(StartError::TokenSecretTooShort),
        (Some(s), _) => Ok(s.as_bytes().to_vec()),
        (None, true) => {
            tracing::warn!("dev mode: using a random token secret");
            Ok(uuid::Uuid::new_v4().as_bytes().to_vec())
        }
        (None, false) => Err(StartError::NoTokenSecret),
    }
}

/// The internal link's secret: needed to reach separate media nodes (`--media-node`, cluster
/// mode), except in `--dev`, where an unauthenticated link is allowed with a warning.
fn link_secret(config: &Config) -> Result<Option<LinkSecret>, StartError> {
    let remote = config.media_node.is_some() || config.redis_url.is_some();
    match (&config.link_secret, remote, config.dev) {
        (Some(secret), _, _) => Ok(Some(LinkSecret::new(secret)?)),
        (None, true, true) => {
            tracing::warn!("dev mode: no --link-secret; links to media nodes are NOT authenticated (the media nodes must run with --dev too)");
            Ok(None)
        }
        (None, true, false) => Err(StartError::NoLinkSecret),
        (None, false, _) => Ok(None),
    }
}

/// TLS choice: the given PEM files, a self-signed certificate (dev), or plain HTTP.
fn tls_config(config: &Config) -> Result<Option<rustls::ServerConfig>, StartError> {
    Ok(match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::from_pem_files(cert, key)?),
        _ if config.tls_self_signed => {
            let advertised = config.media.advertised_addr(config.media.udp_listen);
            Some(tls::self_signed(vec![advertised.ip().to_string()])?)
        }
        _ => None,
    })
}

fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source })
}

/// The settings of every part, from the flags.
fn settings(
    config: &Config,
    media: MediaSetup,
    token_secret: Vec<u8>,
    public_url: String,
) -> ServiceSettings {
    ServiceSettings {
        media,
        token_secret,
        token_policy: TokenPolicy {
            max_lifetime_secs: config.token_max_lifetime_secs,
            audience: config.token_audience.clone(),
            issuer: config.token_issuer.clone(),
        },
        dev: config.dev,
        room_cap: config.room_cap,
        heartbeat_interval: config.heartbeat_interval(),
        client_timeout: config.client_timeout(),
        resume_grace: config.resume_grace(),
        signaling_id: config.signaling_id.clone(),
        public_url,
        presence_webhook: config.presence_webhook.clone().map(|url| WebhookSettings {
            url,
            secret: config.presence_webhook_secret.clone(),
            ..WebhookSettings::default()
        }),
        presence_stream_len: config.presence_stream_len,
        api_key: config.api_key.clone().filter(|k| !k.is_empty()),
        link_secret: None,
        caps: config.media.caps.caps(),
        limits: config.limits(),
        allowed_origins: AllowedOrigins::default(),
        turn: None,
    }
}

/// Connect to the cluster's Redis, retrying until it answers (a node without its cluster
/// state cannot place rooms; it says so and waits). Refused credentials or unusable settings
/// stop the node instead: waiting cannot fix them.
async fn connect_cluster(redis: &RedisSettings, prefix: &str) -> Result<ClusterStore, StartError> {
    loop {
        match ClusterStore::connect(redis.clone(), prefix).await {
            Ok(store) => return Ok(store),
            Err(e) if e.is_fatal() => {
                return Err(StartError::Redis {
                    url: redis.redacted_url(),
                    source: e,
                })
            }
            Err(e) => {
                tracing::error!(redis_url = %redis.redacted_url(), error = %e, "redis unreachable; retrying in 2 s");
                tokio::time::sleep(REDIS_CONNECT_RETRY).await;
            }
        }
    }
}

/// What the HTTP server needs to run: started once, outside the per-worker app factory, so
/// that every worker shares one registry (one actor per room, not one per worker).
#[derive(Clone)]
pub struct Services {
    pub state: AppState,
}

/// Where media goes.
pub enum MediaSetup {
    /// One media node for every room (embedded, or `--media-node`).
    Single(MediaTarget),
    /// Cluster mode: each new room is placed on the least-loaded live media node in Redis.
    Cluster(ClusterStore),
}

/// Settings of [`start_services`].
pub struct ServiceSettings {
    pub media: MediaSetup,
    pub token_secret: Vec<u8>,
    /// Lifetime, audience and issuer a token must have.
    pub token_policy: TokenPolicy,
    pub dev: bool,
    pub room_cap: usize,
    pub heartbeat_interval: Duration,
    pub client_timeout: Duration,
    pub resume_grace: Duration,
    /// This node's name; the process's instance id adds a random suffix.
    pub signaling_id: String,
    /// Where this node serves browsers (recorded in Redis for operators).
    pub public_url: String,
    pub presence_webhook: Option<WebhookSettings>,
    pub presence_stream_len: usize,
    pub api_key: Option<String>,
    /// Signs links to separate media nodes in cluster mode (`None`: unauthenticated, `--dev`).
    pub link_secret: Option<LinkSecret>,
    /// Caps on what one participant creates (`--max-sdp-bytes` and the others).
    pub caps: ParticipantCaps,
    /// What one client may do (rates, queues, deadlines, connections per address).
    pub limits: Limits,
    /// Origins whose pages may open `/ws` (besides the node's own host).
    pub allowed_origins: AllowedOrigins,
    /// TURN/STUN servers for the clients' `iceServers` (`None`: the field stays out of `joined`).
    pub turn: Option<Arc<TurnServers>>,
}

/// Start the media link, the room registry and (cluster mode) the room bus and upkeep.
/// Call inside a running actix system.
pub fn start_services(s: ServiceSettings) -> Services {
    let instance = format!(
        "{}.{}",
        s.signaling_id,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let store = match &s.media {
        MediaSetup::Cluster(store) => Some(store.clone()),
        MediaSetup::Single(_) => None,
    };
    metrics::init(store.is_some());
    let presence = (store.is_some() || s.presence_webhook.is_some()).then(|| {
        PresenceSink::new(PresenceSettings {
            redis: store
                .as_ref()
                .map(|st| (st.connection_manager(), st.prefix().to_string())),
            webhook: s.presence_webhook.clone(),
            stream_max_len: s.presence_stream_len,
        })
        .start()
    });
    let cluster = store.as_ref().map(|store| {
        actix::spawn(
            Upkeep {
                store: store.clone(),
                instance: instance.clone(),
                url: s.public_url.clone(),
                resume_grace: s.resume_grace,
                presence: presence.clone(),
            }
            .run(),
        );
        RoomCluster {
            store: store.clone(),
            bus: RoomBus::new(store.clone(), instance.clone()).start(),
            queue_capacity: s.limits.room_redis_queue,
            asserts: AssertBatch::start(store.clone(), instance.clone()),
        }
    });
    let placement = match s.media {
        MediaSetup::Single(target) => Placement::Fixed(MediaLink::new(target).start()),
        MediaSetup::Cluster(store) => Placement::Cluster {
            store,
            link_secret: s.link_secret,
        },
    };
    tracing::info!(%instance, cluster = cluster.is_some(), "signaling instance starting");
    let room_deps = RoomDeps {
        cap: s.room_cap,
        heartbeat_interval_ms: s.heartbeat_interval.as_millis() as u64,
        resume_grace: s.resume_grace,
        instance: instance.clone(),
        presence: presence.clone(),
        cluster,
        caps: s.caps,
        turn: s.turn,
    };
    let registry = Registry::start(placement, room_deps);
    Services {
        state: AppState {
            deps: SessionDeps {
                registry,
                keys: Arc::new(TokenKeys::new(&s.token_secret).with_policy(s.token_policy)),
                heartbeat_interval: s.heartbeat_interval,
                client_timeout: s.client_timeout,
                caps: s.caps,
                limits: Arc::new(s.limits.session.clone()),
            },
            dev: s.dev,
            api: http::ApiState {
                store,
                key: s.api_key,
                open: s.dev,
            },
            instance,
            draining: Arc::default(),
            connections: ConnectionsPerIp::new(s.limits.max_connections_per_ip),
            trusted_proxies: Arc::new(s.limits.trusted_proxies.clone()),
            allowed_origins: Arc::new(s.allowed_origins),
        },
    }
}

/// Serve the public HTTP(S) API on `listener`.
pub fn serve(
    listener: TcpListener,
    tls: Option<rustls::ServerConfig>,
    services: Services,
    workers: Option<usize>,
) -> std::io::Result<actix_web::dev::Server> {
    let send_buffer = services.state.deps.limits.socket_send_buffer;
    let state = web::Data::new(services.state);
    let server =
        HttpServer::new(move || App::new().app_data(state.clone()).configure(http::routes))
            // A handle on each connection's socket, to cut a WebSocket whose client stops
            // reading (`outbound.rs`).
            .on_connect(move |conn, data| {
                if let Some(socket) = ConnectionSocket::of_connection(conn, send_buffer) {
                    data.insert(Arc::new(socket));
                }
            })
            // Open WebSockets would hold a graceful stop for the default 30 s.
            .shutdown_timeout(SHUTDOWN_TIMEOUT_SECS)
            // SIGTERM drains (`drain_on_signal`); the servers are stopped when that is done.
            .disable_signals();
    let server = match workers {
        Some(n) => server.workers(n),
        None => server,
    };
    let server = match tls {
        Some(cfg) => server.listen_rustls_0_23(listener, cfg)?,
        None => server.listen(listener)?,
    };
    Ok(server.run())
}

/// Serve the internal API (`/metrics`, `/healthz`, `/readyz`) on `listener`: for Prometheus
/// and the orchestrator's probes, never for browsers.
pub fn serve_internal(
    listener: TcpListener,
    services: &Services,
) -> std::io::Result<actix_web::dev::Server> {
    let state = web::Data::new(services.state.clone());
    Ok(HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .configure(http::internal_routes)
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

/// Wait for SIGTERM or Ctrl-C, then drain: readiness turns false and new WebSockets get 503
/// (the load balancer sends them elsewhere), every member is asked to reconnect (its browser
/// resumes on another node, media untouched), and this returns once no room is left here —
/// members that came back elsewhere were handed over, the others left after the resume grace
/// — or after `timeout`.
pub async fn drain_on_signal(services: Services, timeout: Duration) {
    use std::sync::atomic::Ordering::Relaxed;
    let name = conclave_common::shutdown::stop_signal().await;
    let state = &services.state;
    state.draining.store(true, Relaxed);
    conclave_common::metrics::DRAINING.set(1);
    let registry = &state.deps.registry;
    let rooms = registry.send(registry::RoomCount).await.unwrap_or(0);
    tracing::info!(
        signal = name,
        rooms,
        timeout_secs = timeout.as_secs(),
        "draining: asking every client to reconnect elsewhere"
    );
    registry.do_send(registry::DrainRooms);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let rooms = registry.send(registry::RoomCount).await.unwrap_or(0);
        if rooms == 0 {
            tracing::info!("drained: no room left; stopping");
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(rooms, "drain timeout: stopping");
            return;
        }
        tokio::time::sleep(DRAIN_POLL_INTERVAL).await;
    }
}
