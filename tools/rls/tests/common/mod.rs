//! Test fixtures: a real `redis-server` on a free port, the real binary, and the tonic client.
#![allow(dead_code)]

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::UInt64Value;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `redis-server --port P --save '' --appendonly no` in a temp dir, killed on drop.
pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_on(free_port())
    }

    /// On a given port (a restart of a stopped one).
    pub fn start_on(port: u16) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (scripts/setup, or apt-get install -y redis-server)")
            });
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cmd(&["PING"]).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let client = redis::Client::open(self.url())?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
        let mut c = redis::cmd(args[0]);
        for a in &args[1..] {
            c.arg(*a);
        }
        c.query(&mut conn)
    }

    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The real `llm-router-rls` binary, killed on drop; its stderr is collected.
pub struct Rls {
    child: Child,
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
    pub limits: PathBuf,
    _dir: tempfile::TempDir,
}

impl Rls {
    pub fn start(redis: &Redis, limits_yaml: &str) -> Rls {
        let dir = tempfile::tempdir().unwrap();
        let limits = dir.path().join("limits.yaml");
        std::fs::write(&limits, limits_yaml).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_llm-router-rls"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--redis",
                &redis.url(),
                "--limits",
            ])
            .arg(&limits)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split(',').next().unwrap_or_default().to_owned());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("llm-router-rls did not start: {:?}", log.lock().unwrap()));
        Rls {
            child,
            addr,
            log,
            limits,
            _dir: dir,
        }
    }

    pub async fn client(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn wait_logged(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.logged(needle) {
            assert!(
                Instant::now() < deadline,
                "never logged {needle:?}: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn limits_path(&self) -> &Path {
        &self.limits
    }
}

impl Drop for Rls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One limits-file entry of the CLI's shape.
pub fn limit(kind: &str, scope: &str, value: &str, max: u64, seconds: u64) -> String {
    format!(
        "- namespace: llm_router\n  name: {kind}.{scope}.{value}\n  max_value: {max}\n  seconds: {seconds}\n  conditions: [\"descriptors[0]['limit'] == '{kind}'\", \"descriptors[0]['{scope}'] == '{value}'\"]\n  variables: []\n"
    )
}

/// A descriptor `{limit: kind, scope: value}` with a per-descriptor addend.
pub fn desc(
    kind: &str,
    scope: &str,
    value: &str,
    addend: Option<u64>,
    negative: bool,
) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: vec![
            Entry {
                key: "limit".into(),
                value: kind.into(),
            },
            Entry {
                key: scope.into(),
                value: value.into(),
            },
        ],
        hits_addend: addend.map(|value| UInt64Value { value }),
        is_negative_hits: negative,
        ..Default::default()
    }
}

pub async fn call(
    client: &mut RateLimitServiceClient<Channel>,
    descriptors: Vec<RateLimitDescriptor>,
) -> Result<RateLimitResponse, tonic::Status> {
    let req = RateLimitRequest {
        domain: "llm_router".into(),
        descriptors,
        hits_addend: 0,
    };
    client.should_rate_limit(req).await.map(|r| r.into_inner())
}

pub const OK: i32 = 1;
pub const OVER_LIMIT: i32 = 2;

/// A settlement: the call with the router's settlement metadata.
pub async fn settle(
    client: &mut RateLimitServiceClient<Channel>,
    descriptors: Vec<RateLimitDescriptor>,
) -> Result<RateLimitResponse, tonic::Status> {
    let mut req = tonic::Request::new(RateLimitRequest {
        domain: "llm_router".into(),
        descriptors,
        hits_addend: 0,
    });
    req.metadata_mut()
        .insert(llm_router_rls::service::SETTLEMENT_HEADER, "1".parse().expect("ascii"));
    client.should_rate_limit(req).await.map(|r| r.into_inner())
}
