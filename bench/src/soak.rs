//! `vpcep-bench soak` (root): a control plane and one gateway node (`serve --dataplane
//! remote` and `vpcep gateway`, netns substrate, kernel path) under steady churn —
//! endpoints created and deleted at a fixed rate — while 10,000 sessions through other
//! endpoints of the same services exchange a message every second. Reports the errors
//! those sessions saw (goal: none), and both processes' memory and descriptors over time
//! (goal: flat). Then the faults: SIGKILL of the gateway node and of the control plane in
//! the middle of the traffic, each restarted after a pause: what the sessions saw, and
//! how long until a new endpoint carries a new connection again.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vpcep::client::ApiClient;

use crate::dataplane::{
    client, host, network_of, rss_kb, scratch_netns, spawn_in, spawn_serve_at, Procs,
};
use crate::scale::{host_up, Prober};

#[derive(clap::Args)]
pub(crate) struct Opts {
    /// Minutes of churn and traffic before the faults.
    #[arg(long, default_value_t = 10, value_parser = crate::at_least_one::<u64>())]
    minutes: u64,
    /// Sessions that keep exchanging a message every second.
    #[arg(long, default_value_t = 10_000, value_parser = crate::at_least_one::<usize>())]
    sessions: usize,
    /// Endpoints that carry those sessions (they stay; the churn is of others).
    #[arg(long, default_value_t = 10, value_parser = crate::at_least_one::<usize>())]
    steady: usize,
    /// Endpoints created per second by the churn (each deleted again 20 creates later).
    #[arg(long, default_value_t = 2, value_parser = crate::at_least_one::<u64>())]
    rate: u64,
    /// Seconds between the rows of the table over time.
    #[arg(long, default_value_t = 30, value_parser = crate::at_least_one::<u64>())]
    every: u64,
    /// Seconds a killed process stays down before it is started again.
    #[arg(long, default_value_t = 5, value_parser = crate::at_least_one::<u64>())]
    down: u64,
}

/// Endpoints of the churn alive at once.
const CHURN_WINDOW: usize = 20;

/// Echoes what it receives on `port`, for as many sessions as come (`vpcep-bench echo`,
/// started by `soak` inside the backend host).
pub(crate) async fn echo(port: u16) -> Result<()> {
    crate::sessions::raise_nofile();
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    loop {
        let (mut s, _) = listener.accept().await?;
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// What the sessions saw, shared with the thread that drives them.
#[derive(Default)]
struct Traffic {
    open: AtomicU64,
    exchanges: AtomicU64,
    errors: AtomicU64,
    /// The longest exchange since the last sample, µs.
    worst_us: AtomicU64,
    stop: AtomicBool,
}

/// Opens `n` sessions from inside namespace `ns`, round-robin over `targets`, each of
/// which sends 8 bytes every second and waits (at most 5 s) for them to come back; a
/// session that fails is counted once and ends.
fn drive(ns: &str, targets: Vec<SocketAddr>, n: usize, t: Arc<Traffic>) -> Result<()> {
    let target = std::fs::File::open(format!("/run/netns/{ns}"))?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let run = || -> Result<()> {
            nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET)?;
            crate::sessions::raise_nofile();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut streams = Vec::with_capacity(n);
                for i in 0..n {
                    let addr = targets[i % targets.len()];
                    let s = tokio::time::timeout(
                        Duration::from_secs(5),
                        tokio::net::TcpStream::connect(addr),
                    )
                    .await
                    .context("connect timed out")??;
                    s.set_nodelay(true)?;
                    streams.push(s);
                }
                t.open.store(n as u64, Ordering::Relaxed);
                let _ = ready_tx.send(Ok(()));
                let mut tasks = Vec::with_capacity(n);
                for (i, mut s) in streams.into_iter().enumerate() {
                    let t = t.clone();
                    // Spread over the second, so the load is steady.
                    let first = Duration::from_micros((i as u64 * 1_000_000) / n as u64);
                    tasks.push(tokio::spawn(async move {
                        let mut tick = tokio::time::interval_at(
                            tokio::time::Instant::now() + first,
                            Duration::from_secs(1),
                        );
                        let mut seq = 0u64;
                        while !t.stop.load(Ordering::Relaxed) {
                            tick.tick().await;
                            seq += 1;
                            let t0 = Instant::now();
                            let mut back = [0u8; 8];
                            let ok = tokio::time::timeout(Duration::from_secs(5), async {
                                s.write_all(&seq.to_be_bytes()).await?;
                                s.read_exact(&mut back).await?;
                                std::io::Result::Ok(())
                            })
                            .await;
                            if !matches!(ok, Ok(Ok(()))) || back != seq.to_be_bytes() {
                                t.errors.fetch_add(1, Ordering::Relaxed);
                                t.open.fetch_sub(1, Ordering::Relaxed);
                                return;
                            }
                            t.exchanges.fetch_add(1, Ordering::Relaxed);
                            t.worst_us
                                .fetch_max(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                        }
                    }));
                }
                for task in tasks {
                    let _ = task.await;
                }
                Ok(())
            })
        };
        if let Err(e) = run() {
            let _ = ready_tx.send(Err(e));
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(600))
        .context("the sessions never opened")?
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The gateway node, following the control plane at `url`.
fn gateway(bin: &Path, url: &str, token: &str, prefix: &str) -> Result<Child> {
    Ok(Command::new(bin)
        .args(["gateway", "--control-plane", url, "--token", token])
        .args(["--substrate", "netns", "--netns-prefix", prefix])
        .env(
            "VPCEP_LOG",
            std::env::var("VPCEP_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?)
}

/// A process killed (SIGKILL) when it drops, however the bench ends.
struct Killed(Child);

impl Killed {
    fn id(&self) -> u32 {
        self.0.id()
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Creates an endpoint of `sid` and waits until it is accepted: (id, IP, milliseconds).
async fn create(c: &ApiClient, sid: &str, vpc: &str, sub: &str) -> Result<(String, String, f64)> {
    let t0 = Instant::now();
    let body = json!({"endpoint_service_id": sid, "vpc_id": vpc, "subnet_id": sub});
    let ep = c.call("POST", "/v1/{p}/vpc-endpoints", Some(&body)).await?;
    let id = ep["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/{{p}}/vpc-endpoints/{id}");
    while t0.elapsed() < Duration::from_secs(60) {
        let v = c.call("GET", &path, None).await?;
        if v["status"] == "accepted" {
            let ip = v["ip"].as_str().unwrap_or_default().to_owned();
            return Ok((id, ip, t0.elapsed().as_secs_f64() * 1000.0));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("endpoint {id} never accepted")
}

/// Retries `create` until the control plane answers again (after a restart).
async fn create_when_up(
    c: &ApiClient,
    sid: &str,
    vpc: &str,
    sub: &str,
) -> Result<(String, String)> {
    let t0 = Instant::now();
    loop {
        match create(c, sid, vpc, sub).await {
            Ok((id, ip, _)) => return Ok((id, ip)),
            Err(e) if t0.elapsed() > Duration::from_secs(120) => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

pub(crate) async fn run(bin: &Path, opts: Opts) -> Result<()> {
    let (prefix, _clean) = scratch_netns("so")?;
    let dir = tempfile::tempdir()?;
    let a = crate::account_with_quota(bin, dir.path(), "provider", 10)?;
    let consumer_quota = opts.steady + CHURN_WINDOW + 50;
    let b = crate::account_with_quota(bin, dir.path(), "consumer", consumer_quota)?;
    let token = format!("soak-node-token-{}", std::process::id());
    let listen = format!("127.0.0.1:{}", free_port()?);
    let remote = ["--dataplane", "remote", "--node-token", token.as_str()];
    let (server, url) = spawn_serve_at(bin, dir.path(), &listen, &remote)?;
    let mut server = Killed(server);
    let mut node = Killed(gateway(bin, &url, &token, &prefix)?);
    let mut procs = Procs(Vec::new());
    let (pa, pb) = (client(&url, &a), client(&url, &b));

    // The provider: an echo backend behind one service.
    let (vpc, sub) = network_of(&pa, "10.1.0.0/16", "10.1.0.0/24").await?;
    let backend = host(&pa, &vpc, &sub, "10.1.0.10", "backend").await?;
    // A control plane without a data plane of its own does not name the namespaces;
    // the node names them as the netns substrate does.
    let ns_of = |h: &serde_json::Value| {
        vpcep_dataplane::substrate::netns::host_ns_name(
            &prefix,
            h["port_id"].as_str().unwrap_or_default(),
        )
    };
    let backend_ns = ns_of(&backend);
    host_up(&backend_ns, "10.1.0.10").await?;
    let exe = std::env::current_exe()?.display().to_string();
    procs
        .0
        .push(spawn_in(&backend_ns, &[&exe, "echo", "--port", "9000"])?);
    let body = json!({"vpc_id": vpc, "port_id": backend["port_id"], "server_type": "VM", "approval_enabled": false,
        "ports": [{"client_port": 9000, "server_port": 9000, "protocol": "TCP"}]});
    let sid = crate::dataplane::publish(&pa, body, &b).await?;
    // The consumer: steady endpoints, a client host.
    let (cvpc, csub) = network_of(&pb, "10.0.0.0/16", "10.0.0.0/20").await?;
    let cl = host(&pb, &cvpc, &csub, "10.0.15.200", "client").await?;
    let client_ns = ns_of(&cl);
    host_up(&client_ns, "10.0.15.200").await?;
    crate::sessions::sysctl_in(
        Some(&client_ns),
        "net.ipv4.ip_local_port_range",
        "1024 65535",
    )?;
    let mut targets = Vec::new();
    for _ in 0..opts.steady {
        let (_, ip, _) = create(&pb, &sid, &cvpc, &csub).await?;
        targets.push(format!("{ip}:9000").parse::<SocketAddr>()?);
    }
    let prober = Prober::new(&client_ns)?;
    for t in &targets {
        prober.ask(*t, true).recv()?;
    }
    let traffic = Arc::new(Traffic::default());
    let t0 = Instant::now();
    drive(&client_ns, targets.clone(), opts.sessions, traffic.clone())?;
    eprintln!(
        "{} sessions open ({:.0} s)",
        opts.sessions,
        t0.elapsed().as_secs_f64()
    );

    println!(
        "| minute | sessions open | exchanges/s | session errors | longest exchange ms | endpoints created / deleted | create → accepted p50 / max ms | control plane RSS MiB / descriptors | gateway node RSS MiB / descriptors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let start = Instant::now();
    let end = start + Duration::from_secs(opts.minutes * 60);
    let (mut churn, mut created, mut deleted, mut churn_errors) =
        (std::collections::VecDeque::new(), 0u64, 0u64, 0u64);
    let mut lat: Vec<f64> = Vec::new();
    let mut next_row = start + Duration::from_secs(opts.every);
    let mut last_exchanges = 0u64;
    let mut first_last: Vec<(u64, usize, u64, usize)> = Vec::new();
    let gap = Duration::from_micros(1_000_000 / opts.rate);
    let mut next = Instant::now();
    while Instant::now() < end {
        tokio::time::sleep_until(next.into()).await;
        next += gap;
        match create(&pb, &sid, &cvpc, &csub).await {
            Ok((id, _, ms)) => {
                created += 1;
                lat.push(ms);
                churn.push_back(id);
            }
            Err(e) => {
                churn_errors += 1;
                eprintln!("churn create: {e:#}");
            }
        }
        while churn.len() > CHURN_WINDOW {
            let id = churn.pop_front().unwrap_or_default();
            match pb
                .send("DELETE", &format!("/v1/{{p}}/vpc-endpoints/{id}"), None)
                .await
            {
                Ok((204, _)) => deleted += 1,
                other => {
                    churn_errors += 1;
                    eprintln!("churn delete {id}: {other:?}");
                }
            }
        }
        if Instant::now() >= next_row {
            next_row += Duration::from_secs(opts.every);
            let exchanges = traffic.exchanges.load(Ordering::Relaxed);
            let rate = (exchanges - last_exchanges) as f64 / opts.every as f64;
            last_exchanges = exchanges;
            lat.sort_by(|x, y| x.total_cmp(y));
            let (p50, max) = (
                lat.get(lat.len() / 2).copied().unwrap_or(f64::NAN),
                lat.last().copied().unwrap_or(f64::NAN),
            );
            lat.clear();
            let sample = (
                rss_kb(server.id()),
                fds(server.id()),
                rss_kb(node.id()),
                fds(node.id()),
            );
            first_last.push(sample);
            println!(
                "| {:.1} | {} | {rate:.0} | {} | {:.1} | {created} / {deleted} | {p50:.0} / {max:.0} | {:.1} / {} | {:.1} / {} |",
                start.elapsed().as_secs_f64() / 60.0,
                traffic.open.load(Ordering::Relaxed),
                traffic.errors.load(Ordering::Relaxed),
                traffic.worst_us.swap(0, Ordering::Relaxed) as f64 / 1000.0,
                sample.0 as f64 / 1024.0,
                sample.1,
                sample.2 as f64 / 1024.0,
                sample.3,
            );
        }
    }
    println!();
    if let (Some(f), Some(l)) = (first_last.first(), first_last.last()) {
        println!(
            "Over the run: control plane RSS {:.1} → {:.1} MiB, descriptors {} → {}; gateway node RSS {:.1} → {:.1} MiB, descriptors {} → {}; churn errors {churn_errors}.",
            f.0 as f64 / 1024.0,
            l.0 as f64 / 1024.0,
            f.1,
            l.1,
            f.2 as f64 / 1024.0,
            l.2 as f64 / 1024.0,
            f.3,
            l.3
        );
        println!();
    }

    // The faults, one at a time, in the middle of the traffic.
    println!(
        "| fault ({} s down) | session errors meanwhile | longest exchange ms | restart → a new endpoint accepted s | → a new connection through it s |",
        opts.down
    );
    println!("|---|---:|---:|---:|---:|");
    for fault in [
        "SIGKILL of the gateway node",
        "SIGKILL of the control plane",
    ] {
        let errors0 = traffic.errors.load(Ordering::Relaxed);
        traffic.worst_us.store(0, Ordering::Relaxed);
        if fault.contains("gateway") {
            node.kill();
        } else {
            server.kill();
        }
        tokio::time::sleep(Duration::from_secs(opts.down)).await;
        let restarted = Instant::now();
        if fault.contains("gateway") {
            node = Killed(gateway(bin, &url, &token, &prefix)?);
        } else {
            server = Killed(spawn_serve_at(bin, dir.path(), &listen, &remote)?.0);
        }
        let (id, ip) = create_when_up(&pb, &sid, &cvpc, &csub).await?;
        let accepted = restarted.elapsed().as_secs_f64();
        prober
            .ask(format!("{ip}:9000").parse()?, true)
            .recv_timeout(Duration::from_secs(60))?;
        let connected = restarted.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "| {fault} | {} | {:.1} | {accepted:.2} | {connected:.2} |",
            traffic.errors.load(Ordering::Relaxed) - errors0,
            traffic.worst_us.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        let _ = pb
            .send("DELETE", &format!("/v1/{{p}}/vpc-endpoints/{id}"), None)
            .await;
    }
    traffic.stop.store(true, Ordering::Relaxed);
    println!();
    println!(
        "{} sessions through {} endpoints, a message each per second; churn {} creates/s, {} alive; {} cores",
        opts.sessions,
        opts.steady,
        opts.rate,
        CHURN_WINDOW,
        crate::cores()
    );
    drop((node, server, procs));
    Ok(())
}
