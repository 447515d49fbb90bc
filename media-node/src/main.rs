//! `media-node`: the SFU process. Parses config, binds, runs.

use clap::Parser;
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
    let listener = std::net::TcpListener::bind(cli.listen)?;
    let internal = listener.local_addr()?;
    // Machine-readable readiness line on stdout (tests and scripts wait for it).
    println!(
        "listening internal=http://{internal} udp={}",
        media.udp_local
    );
    conclave_media_node::http::serve(listener, media)?.await
}
