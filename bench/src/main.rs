//! `vpcep-bench api`: API throughput and latency of a release `vpcep serve` on SQLite,
//! side by side with the HTTP stack's own ceiling (`/healthz`) in the same run.
//!
//! Run: `cargo build --release -p vpcep -p vpcep-bench && target/release/vpcep-bench api`

mod alloc;
mod dataplane;
mod dns;
mod endpoints;
mod machines;
mod resolvers;
mod scale;
mod sessions;
mod soak;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use serde_json::{json, Value};
use vpcep::client::ApiClient;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The bench's client: the CLI's signed client, plus the raw HTTP client for /healthz.
#[derive(Clone)]
struct Client {
    base: String,
    api: Arc<ApiClient>,
    http: reqwest::Client,
}

impl Client {
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        self.api.send(method, path, body).await
    }

    async fn ok(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        self.api.call(method, path, Some(&body)).await
    }
}

pub(crate) fn admin(bin: &Path, dir: &Path, args: &[&str]) -> Result<Value> {
    let out = Command::new(bin)
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()?;
    if !out.status.success() {
        bail!("vpcep {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// An account with room for `quota` services and endpoints: its JSON (keys, project).
pub(crate) fn account_with_quota(
    bin: &Path,
    dir: &Path,
    name: &str,
    quota: usize,
) -> Result<Value> {
    let acct = admin(bin, dir, &["admin", "account", "create", name])?;
    let n = quota.to_string();
    admin(
        bin,
        dir,
        &[
            "admin",
            "quota",
            "set",
            name,
            "--endpoints",
            &n,
            "--endpoint-services",
            &n,
        ],
    )?;
    Ok(acct)
}

struct Stats {
    name: &'static str,
    count: usize,
    secs: f64,
    lat_us: Vec<u64>,
}

impl Stats {
    fn rate(&self) -> f64 {
        self.count as f64 / self.secs
    }

    fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return 0.0;
        }
        let i = ((self.lat_us.len() as f64 - 1.0) * p).round() as usize;
        self.lat_us[i] as f64 / 1000.0
    }
}

/// Runs `op` from `conc` tasks for `dur`, or until `limit` operations are done.
async fn load<F, Fut>(
    name: &'static str,
    conc: usize,
    dur: Duration,
    limit: usize,
    op: F,
) -> Result<Stats>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let op = op.clone();
        let counter = counter.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            loop {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n >= limit || start.elapsed() >= dur {
                    break;
                }
                let t = Instant::now();
                op(n).await?;
                lat.push(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok(lat)
        }));
    }
    let mut lat_us = Vec::new();
    for t in tasks {
        lat_us.extend(t.await??);
    }
    let secs = start.elapsed().as_secs_f64();
    lat_us.sort_unstable();
    Ok(Stats {
        name,
        count: lat_us.len(),
        secs,
        lat_us,
    })
}

/// Endpoints the create phase makes at most (its subnet, a /16, holds them all).
const MAX_CREATES: usize = 60_000;
/// VPCs its endpoints go to: each takes MAX_CREATES / 16 = 3,750, and the other phases'
/// 101, within the 4,094 endpoints one VPC's services may have.
const PROVIDER_VPCS: usize = 16;

/// A new VPC with one subnet: (VPC id, subnet id).
async fn vpc_with_subnet(c: &Client, cidr: &str, subnet: &str) -> Result<(String, String)> {
    let id = |v: &Value, kind: &str| v[kind]["id"].as_str().unwrap_or_default().to_owned();
    let vpc = id(
        &c.ok("POST", "/v1/{p}/vpcs", json!({"vpc": {"cidr": cidr}}))
            .await?,
        "vpc",
    );
    let sub = id(
        &c.ok(
            "POST",
            "/v1/{p}/subnets",
            json!({"subnet": {"vpc_id": vpc, "cidr": subnet}}),
        )
        .await?,
        "subnet",
    );
    Ok((vpc, sub))
}

/// A service without approval on a VM port in a VPC of its own, once it is available.
async fn provider_service(c: &Client) -> Result<String> {
    let (vpc, sub) = vpc_with_subnet(c, "192.168.0.0/16", "192.168.0.0/24").await?;
    let port = c
        .ok(
            "POST",
            "/v1/{p}/ports",
            json!({"port": {"network_id": sub}}),
        )
        .await?["port"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let svc = c.ok("POST", "/v1/{p}/vpc-endpoint-services", json!({"vpc_id": vpc, "port_id": port, "server_type": "VM", "approval_enabled": false, "ports": [{"client_port": 80, "server_port": 80}]})).await?["id"].as_str().unwrap_or_default().to_owned();
    loop {
        let (_, v) = c
            .call(
                "GET",
                &format!("/v1/{{p}}/vpc-endpoint-services/{svc}"),
                None,
            )
            .await?;
        if v["status"] == "available" {
            return Ok(svc);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn api_bench(bin: PathBuf, secs: u64, conc: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let acct = account_with_quota(&bin, dir.path(), "bench", 100_000)?;
    let mut child = Command::new(&bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        // One key's ceiling is what is measured: no per-key limit.
        .args(["--metrics-listen", "127.0.0.1:0", "--api-rate-limit", "0"])
        .env("VPCEP_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()?;
    let base = dataplane::read_urls(&mut child);
    let _server = Proc(child);
    let base = base?;
    let s = |k: &str| acct[k].as_str().unwrap_or_default().to_owned();
    let c = Client {
        api: Arc::new(ApiClient::with_keys(
            &base,
            &s("access_key"),
            &s("secret_key"),
            &s("project_id"),
        )),
        base,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(conc)
            .build()?,
    };

    // The endpoints are made in one subnet, towards services in VPCs of their own taken
    // in turn: the services of one VPC take at most 4,094 endpoints (one SNAT address
    // each), fewer than the create phase may make.
    let (vpc, sub) = vpc_with_subnet(&c, "10.0.0.0/8", "10.0.0.0/16").await?;
    let mut creates = Vec::new();
    for _ in 0..PROVIDER_VPCS {
        let svc = provider_service(&c).await?;
        creates.push(json!({"endpoint_service_id": svc, "vpc_id": vpc, "subnet_id": sub}));
    }
    let create = creates[0].clone();
    let first = c
        .ok("POST", "/v1/{p}/vpc-endpoints", create.clone())
        .await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let dur = Duration::from_secs(secs);

    let mut results = Vec::new();
    let cc = c.clone();
    results.push(
        load(
            "GET /healthz (HTTP ceiling, unauthenticated)",
            conc,
            dur,
            usize::MAX,
            move |_| {
                let c = cc.clone();
                async move {
                    let r = c.http.get(format!("{}/healthz", c.base)).send().await?;
                    r.bytes().await?;
                    Ok(())
                }
            },
        )
        .await?,
    );
    let (cc, path) = (c.clone(), format!("/v1/{{p}}/vpc-endpoints/{first}"));
    results.push(
        load(
            "show endpoint (signed GET)",
            conc,
            dur,
            usize::MAX,
            move |_| {
                let (c, path) = (cc.clone(), path.clone());
                async move {
                    let (st, _) = c.call("GET", &path, None).await?;
                    if st != 200 {
                        bail!("show endpoint: {st}");
                    }
                    Ok(())
                }
            },
        )
        .await?,
    );
    let (cc, creates) = (c.clone(), Arc::new(creates));
    results.push(
        load(
            "create endpoint (signed POST, one fsync'd transaction)",
            conc,
            dur,
            MAX_CREATES,
            move |n| {
                let (c, body) = (cc.clone(), creates[n % PROVIDER_VPCS].clone());
                async move {
                    let (st, v) = c.call("POST", "/v1/{p}/vpc-endpoints", Some(&body)).await?;
                    if st != 200 {
                        bail!("create endpoint: {st} {v}");
                    }
                    Ok(())
                }
            },
        )
        .await?,
    );

    // create → accepted, one at a time, polled every millisecond.
    let mut settle = Vec::new();
    for _ in 0..100 {
        let t = Instant::now();
        let id = c
            .ok("POST", "/v1/{p}/vpc-endpoints", create.clone())
            .await?["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        loop {
            let (_, v) = c
                .call("GET", &format!("/v1/{{p}}/vpc-endpoints/{id}"), None)
                .await?;
            if v["status"] == "accepted" {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        settle.push(t.elapsed().as_micros() as u64);
    }
    settle.sort_unstable();
    let settle = Stats {
        name: "create → accepted",
        count: settle.len(),
        secs: 1.0,
        lat_us: settle,
    };

    let base_rate = results[0].rate();
    println!("| operation | requests | req/s | p50 ms | p99 ms | req/s vs /healthz |");
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &results {
        println!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} |",
            r.name,
            r.count,
            r.rate(),
            r.pct(0.5),
            r.pct(0.99),
            r.rate() / base_rate
        );
    }
    println!();
    println!(
        "| {} (n={}) | p50 ms | p99 ms | max ms |",
        settle.name, settle.count
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| sequential, polled every 1 ms | {:.2} | {:.2} | {:.2} |",
        settle.pct(0.5),
        settle.pct(0.99),
        settle.pct(1.0)
    );
    println!();
    println!(
        "concurrency {conc}, {secs} s per phase, SQLite WAL synchronous=FULL, {} cores",
        cores()
    );
    Ok(())
}

/// Benchmarks of vpcep; each prints Markdown tables for BENCHMARKS.md.
#[derive(Parser)]
#[command(name = "vpcep-bench")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// (root) Machines on one box: the endpoint across compute and gateway machines
    /// (VXLAN) against one machine, and failovers of a gateway pair on each path.
    Machines(machines::Opts),
    /// API throughput and latency of a release `vpcep serve` on SQLite.
    Api {
        /// Seconds per phase.
        #[arg(long, default_value_t = 10, value_parser = at_least_one::<u64>())]
        secs: u64,
        /// Concurrent signed clients.
        #[arg(long, default_value_t = 32, value_parser = at_least_one::<usize>())]
        concurrency: usize,
    },
    /// (root) The data paths side by side with HAProxy on one netns topology.
    Dataplane {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5, value_parser = at_least_one::<u64>())]
        secs: u64,
        /// Rounds; every figure is the median of the rounds.
        #[arg(long, default_value_t = 3, value_parser = at_least_one::<usize>())]
        repeats: usize,
        /// Set the topology up with this forwarding, print it, and hold it until stdin
        /// closes, for profiling one path by hand (no measurement).
        #[arg(long, value_parser = ["userspace", "auto"])]
        explore: Option<String>,
    },
    /// The userspace gateway with many single-port endpoints (loopback substrate, no
    /// root): start and stop cost as endpoints accumulate, and the listeners' descriptors.
    Endpoints {
        /// Endpoints to start.
        #[arg(long, default_value_t = 10_000, value_parser = at_least_one::<u32>())]
        count: u32,
        /// Endpoints per row of the table.
        #[arg(long, default_value_t = 1_000, value_parser = at_least_one::<u32>())]
        batch: u32,
    },
    /// (root) Idle sessions held through one node's kernel path.
    Sessions {
        /// Sessions to open.
        #[arg(long, default_value_t = 1_000_000, value_parser = at_least_one::<usize>())]
        target: usize,
    },
    /// The private DNS of a VPC side by side with Unbound serving the same records.
    Dns(dns::Opts),
    /// (root) One node with 10 to 10,000 endpoints on both paths, and 1,000 VPCs: change
    /// latency, connection rate, memory and resync time as it fills up.
    Scale(scale::Opts),
    /// Threads and descriptors of a node as VPCs (and their resolvers) come.
    Resolvers(resolvers::Opts),
    /// The store's endpoint create with 10 to 10,000 endpoints in one subnet (address
    /// and SNAT allocation), `--baseline` for another build in the same rounds.
    Alloc(alloc::Opts),
    /// (root) A control plane and a gateway node under steady endpoint churn while
    /// 10,000 sessions exchange data: errors, memory and descriptors over time; then
    /// SIGKILL of each process in the middle of the traffic.
    Soak(soak::Opts),
    /// Worker of `soak` (started by it inside the backend host): echoes on a port.
    #[command(hide = true)]
    Echo {
        #[arg(long)]
        port: u16,
    },
    /// Worker of `sessions` (started by it inside a namespace): opens COUNT sessions
    /// round-robin over the targets and holds them.
    #[command(hide = true)]
    Hold { targets: String, count: usize },
    /// Worker of `sessions`: accepts up to MAX sessions on every port and holds them.
    #[command(hide = true)]
    Sink { ports: String, max: usize },
}

/// The machine's cores, as the benches report them.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A count (or seconds, or rate) that must be 1 or more.
fn at_least_one<T: TryFrom<u64> + Clone + Send + Sync + 'static>(
) -> clap::builder::RangedU64ValueParser<T> {
    clap::builder::RangedU64ValueParser::new().range(1..)
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("vpcep");
    match cli.bench {
        Bench::Api { secs, concurrency } => api_bench(bin, secs, concurrency).await,
        Bench::Dataplane {
            secs,
            repeats,
            explore,
        } => dataplane::run(&bin, secs, repeats, explore.as_deref()).await,
        Bench::Endpoints { count, batch } => endpoints::run(count, batch).await,
        Bench::Sessions { target } => sessions::run(&bin, target).await,
        Bench::Dns(opts) => dns::run(&bin, opts).await,
        Bench::Scale(opts) => scale::run(&bin, opts).await,
        Bench::Resolvers(opts) => resolvers::run(&bin, opts).await,
        Bench::Alloc(opts) => alloc::run(opts).await,
        Bench::Soak(opts) => soak::run(&bin, opts).await,
        Bench::Machines(opts) => machines::run(&bin, opts).await,
        Bench::Echo { port } => soak::echo(port).await,
        Bench::Hold { targets, count } => sessions::hold(&targets, count),
        Bench::Sink { ports, max } => sessions::sink(&ports, max),
    }
}
