//! `signaling-node`: parses config, sets up logging, binds, runs. All logic is in the library.

use clap::Parser;
use conclave_common::cluster::ClusterStore;
use conclave_signaling_node::config::Config;
use conclave_signaling_node::media_link::MediaTarget;
use conclave_signaling_node::presence::WebhookSettings;
use conclave_signaling_node::{
    drain_on_signal, serve, serve_internal, start_services, tls, MediaSetup, ServiceSettings,
};

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,str0m=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let config = Config::parse();
    if let Err(e) = run(config).await {
        tracing::error!("{e}");
        eprintln!("signaling-node: {e}");
        std::process::exit(2);
    }
    Ok(())
}

async fn run(config: Config) -> Result<(), String> {
    let token_secret = match (&config.token_secret, config.dev) {
        (Some(s), _) if !s.is_empty() => s.clone().into_bytes(),
        (_, true) => {
            tracing::warn!("dev mode: using a random token secret");
            uuid::Uuid::new_v4().as_bytes().to_vec()
        }
        _ => return Err("a token secret is required: set --token-secret or CONCLAVE_TOKEN_SECRET (or use --dev)".into()),
    };
    let mut udp_note = String::new();
    let media = match (&config.redis_url, &config.media_node) {
        (Some(redis_url), _) => {
            MediaSetup::Cluster(connect_cluster(redis_url, &config.redis_prefix).await)
        }
        (None, Some(url)) => MediaSetup::Single(MediaTarget::Remote(url.clone())),
        (None, None) => {
            let media = conclave_media_node::start(&config.media)
                .map_err(|e| format!("cannot bind media UDP {}: {e}", config.media.udp_listen))?;
            udp_note = format!(" udp={}", media.udp_local);
            MediaSetup::Single(MediaTarget::Local(media.commands()))
        }
    };
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::from_pem_files(cert, key).map_err(|e| e.to_string())?),
        _ if config.tls_self_signed => {
            let advertised = config.media.advertised_addr(config.media.udp_listen);
            Some(tls::self_signed(vec![advertised.ip().to_string()]).map_err(|e| e.to_string())?)
        }
        _ => None,
    };
    let listener = std::net::TcpListener::bind(config.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let shown = if local.ip().is_unspecified() {
        format!("{scheme}://localhost:{}", local.port())
    } else {
        format!("{scheme}://{local}")
    };
    let services = start_services(ServiceSettings {
        media,
        token_secret,
        dev: config.dev,
        room_cap: config.room_cap,
        heartbeat_interval: config.heartbeat_interval(),
        client_timeout: config.client_timeout(),
        resume_grace: config.resume_grace(),
        signaling_id: config.signaling_id.clone(),
        public_url: shown.clone(),
        presence_webhook: config.presence_webhook.clone().map(|url| WebhookSettings {
            url,
            secret: config.presence_webhook_secret.clone(),
            ..WebhookSettings::default()
        }),
        presence_stream_len: config.presence_stream_len,
        api_key: config.api_key.clone().filter(|k| !k.is_empty()),
    });
    // Machine-readable readiness line on stdout (tests and scripts wait for it).
    let internal = std::net::TcpListener::bind(config.internal_listen)
        .map_err(|e| format!("cannot listen on {}: {e}", config.internal_listen))?;
    let internal_addr = internal.local_addr().map_err(|e| e.to_string())?;
    println!("listening url={shown} internal=http://{internal_addr}{udp_note}");
    eprintln!("Conclave is up: open {shown} in two browser tabs and join the same room.");
    let internal_server = serve_internal(internal, &services).map_err(|e| e.to_string())?;
    let public_server =
        serve(listener, tls, services.clone(), config.workers).map_err(|e| e.to_string())?;
    let (public, internal) = (public_server.handle(), internal_server.handle());
    let drain = std::time::Duration::from_secs(config.drain_timeout_secs);
    actix::spawn(async move {
        drain_on_signal(services, drain).await;
        public.stop(true).await;
        internal.stop(true).await;
    });
    let (a, b) = futures_util::future::join(public_server, internal_server).await;
    a.and(b).map_err(|e| e.to_string())
}

/// Connect to the cluster's Redis, retrying until it answers (a node without its cluster
/// state cannot place rooms; it says so and waits).
async fn connect_cluster(redis_url: &str, prefix: &str) -> ClusterStore {
    loop {
        match ClusterStore::connect(redis_url, prefix).await {
            Ok(store) => return store,
            Err(e) => {
                tracing::error!(redis_url = %conclave_common::cluster::redacted(redis_url), error = %e, "redis unreachable; retrying in 2 s");
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
        }
    }
}
