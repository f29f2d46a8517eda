//! `llm-router-rls --listen ADDR --redis URL --limits FILE [--hold-ttl-secs N]`: see README.md.
//! Logs to stderr: one line at start, one per reload and per storage error.

use tokio_stream::StreamExt as _;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::RateLimitServiceServer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const USAGE: &str = "usage: llm-router-rls --listen HOST:PORT --redis redis://HOST:PORT --limits FILE [--hold-ttl-secs N]";

struct Args {
    listen: String,
    redis: String,
    limits: PathBuf,
    hold_ttl_secs: u64,
}

fn parse_args() -> Result<Args, String> {
    let (mut listen, mut redis, mut limits, mut hold) = (None, None, None, 10u64);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--redis" => redis = Some(value),
            "--limits" => limits = Some(PathBuf::from(value)),
            "--hold-ttl-secs" => {
                hold = value
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or("--hold-ttl-secs: a whole number ≥ 1")?
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(Args {
        listen: listen.ok_or("--listen is required")?,
        redis: redis.ok_or("--redis is required")?,
        limits: limits.ok_or("--limits is required")?,
        hold_ttl_secs: hold,
    })
}

#[tokio::main]
async fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("llm-router-rls: {e}\n{USAGE}");
        std::process::exit(2)
    });
    if let Err(e) = run(args).await {
        eprintln!("llm-router-rls: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), String> {
    let loaded = llm_router_rls::limits_file::mtime(&args.limits);
    let limits = llm_router_rls::limits_file::load(&args.limits)?;
    let rls = llm_router_rls::connect(&args.redis, Duration::from_secs(args.hold_ttl_secs)).await?;
    let rls = Arc::new(rls);
    let count = rls.configure(limits).await?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|e| format!("{}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    eprintln!("llm-router-rls: listening on {addr}, {count} limits");
    tokio::spawn(llm_router_rls::watch(
        Arc::clone(&rls),
        args.limits.clone(),
        loaded,
    ));
    tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(
            llm_router_rls::service::Handler(rls),
        ))
        // Small gRPC frames on a long-lived HTTP/2 connection: without TCP_NODELAY, Nagle's algorithm
        // and the peer's delayed ACK hold each answer ~40 ms (measured with bench/run variant 3g).
        .serve_with_incoming(
            tokio_stream::wrappers::TcpListenerStream::new(listener).map(|conn| {
                if let Ok(c) = &conn {
                    if let Err(e) = c.set_nodelay(true) {
                        eprintln!("llm-router-rls: TCP_NODELAY: {e}");
                    }
                }
                conn
            }),
        )
        .await
        .map_err(|e| e.to_string())
}
