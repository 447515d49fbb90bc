//! `signaling-node`: parses config, sets up logging, runs. All logic (and every policy the
//! flags choose) is in the library: [`conclave_signaling_node::run`].

use clap::Parser;
use conclave_signaling_node::config::Config;

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
    if let Err(e) = conclave_signaling_node::run(config).await {
        tracing::error!("{e}");
        eprintln!("signaling-node: {e}");
        std::process::exit(2);
    }
    Ok(())
}
