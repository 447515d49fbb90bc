//! `media-node`: the SFU process. Parses config, sets up logging, runs; all logic is in the
//! library (`conclave_media_node::run`).

use clap::Parser;
use conclave_media_node::config::NodeConfig;

#[actix_web::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,str0m=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = conclave_media_node::run(NodeConfig::parse()).await {
        eprintln!("media-node: {e}");
        std::process::exit(1);
    }
}
