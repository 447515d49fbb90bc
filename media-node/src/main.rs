//! `media-node`: the SFU process. Parses config, binds, runs.

use clap::Parser;
use conclave_common::cluster::NodeInfo;
use conclave_media_node::config::MediaConfig;

/// Conclave media node: forwards WebRTC media between the participants of its rooms.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Internal HTTP address (link endpoint for signaling nodes, /healthz). Keep it private.
    #[arg(long, env = "CONCLAVE_MEDIA_LISTEN", default_value = "0.0.0.0:8081")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    media: MediaConfig,
    /// Redis URL of the cluster (`redis://host:6379/`): register and heartbeat there so
    /// signaling nodes place rooms here. Without it the node only serves its links.
    #[arg(long, env = "CONCLAVE_REDIS_URL")]
    redis_url: Option<String>,
    /// Prefix of every cluster key in Redis.
    #[arg(long, env = "CONCLAVE_REDIS_PREFIX", default_value = "conclave:")]
    redis_prefix: String,
    /// Most participants this node takes (placement skips it when full).
    #[arg(long, env = "CONCLAVE_CAPACITY", default_value_t = 500)]
    capacity: u32,
    /// Internal link URL signaling nodes should use for this node. Default: built from the
    /// advertised IP and the `--listen` port.
    #[arg(long, env = "CONCLAVE_LINK_URL")]
    link_url: Option<String>,
    /// On SIGTERM (or Ctrl-C): take no new rooms, serve the live ones until they empty or
    /// this many seconds pass, then exit (what is left fails over to other nodes).
    #[arg(long, env = "CONCLAVE_DRAIN_TIMEOUT", default_value_t = 600)]
    drain_timeout_secs: u64,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,str0m=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let media = conclave_media_node::start(&cli.media)?;
    conclave_media_node::metrics::CAPACITY.set(cli.capacity as i64);
    let listener = std::net::TcpListener::bind(cli.listen)?;
    let internal = listener.local_addr()?;
    if let Some(redis_url) = cli.redis_url {
        let link_url = cli.link_url.unwrap_or_else(|| {
            format!(
                "ws://{}:{}/internal/link",
                media.advertised.ip(),
                internal.port()
            )
        });
        let info = NodeInfo {
            id: media.node_id.clone(),
            link_url,
            udp_addr: media.advertised.to_string(),
            capacity: cli.capacity,
        };
        actix::spawn(conclave_media_node::cluster::heartbeat_loop(
            redis_url,
            cli.redis_prefix,
            info,
            media.clone(),
        ));
    }
    // Machine-readable readiness line on stdout (tests and scripts wait for it).
    println!(
        "listening internal=http://{internal} udp={}",
        media.udp_local
    );
    let server = conclave_media_node::http::serve(listener, media.clone())?;
    let handle = server.handle();
    let drain = std::time::Duration::from_secs(cli.drain_timeout_secs);
    actix::spawn(async move {
        conclave_media_node::drain_on_signal(media, drain).await;
        handle.stop(true).await;
    });
    server.await
}
