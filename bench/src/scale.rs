//! `vpcep-bench scale` (root): one node as it fills up. Both forwarding paths side by
//! side, at 10, 100, 1,000 and 10,000 endpoints: how long a new endpoint takes from
//! create to accepted (and to its first connection), how long a deleted one takes to stop
//! carrying traffic, new connections/s through one endpoint, kernel and process memory per
//! endpoint, and how long a restarted node takes to rewrite its state (kernel path:
//! while an established session keeps exchanging data). Then 1,000 VPCs with one subnet
//! and one host each: memory, threads and descriptors per VPC.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};
use vpcep::client::ApiClient;

use crate::dataplane::{
    admin, client, host, in_ns, meminfo_kb, network_of, rss_kb, scratch_netns, spawn_serve, Procs,
};

#[derive(clap::Args)]
pub(crate) struct Opts {
    /// Endpoint counts to measure at, ascending.
    #[arg(long, value_delimiter = ',', default_value = "10,100,1000,10000")]
    sizes: Vec<usize>,
    /// Endpoints created and deleted one by one at each size (latency samples).
    #[arg(long, default_value_t = 20, value_parser = crate::at_least_one::<usize>())]
    samples: usize,
    /// Seconds of new connections through one endpoint at each size.
    #[arg(long, default_value_t = 3, value_parser = crate::at_least_one::<u64>())]
    secs: u64,
    /// VPCs (one subnet and one host each) for the per-VPC figures; 0 skips them.
    #[arg(long, default_value_t = 1000)]
    vpcs: usize,
    /// Forwarding paths to measure.
    #[arg(long, value_delimiter = ',', default_value = "kernel,userspace", value_parser = ["kernel", "userspace"])]
    paths: Vec<String>,
}

/// Endpoints created at once while a node is filled up to the next size.
const FILL_CONCURRENCY: usize = 16;
/// Endpoints per provider VPC (each has 4,094 SNAT addresses).
const PER_PROVIDER: usize = 4000;

/// What one size gave on one path.
#[derive(Default)]
struct AtSize {
    size: usize,
    create_ms: Vec<f64>,
    /// Of which the API's answer to the create.
    answered_ms: Vec<f64>,
    first_conn_ms: Vec<f64>,
    delete_ms: Vec<f64>,
    conn_per_s: f64,
    /// Growth per endpoint while filling up to this size: MemAvailable, slab, vpcep RSS.
    kernel_bytes: f64,
    slab_bytes: f64,
    rss_bytes: f64,
    fill_s: f64,
    /// The node's mean apply while the samples were created and deleted (ms).
    apply_ms: f64,
}

struct PathRun {
    path: String,
    sizes: Vec<AtSize>,
    /// Restart at the largest size: process start → first apply done, and that apply.
    resync_s: f64,
    first_apply_s: f64,
    /// The established session during the restart: exchanges, failures, longest gap.
    session: Option<Held>,
    failed: Option<String>,
}

fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Connects from inside a namespace: a thread that entered it answers probes.
pub(crate) struct Prober {
    tx: mpsc::Sender<(SocketAddr, bool, mpsc::Sender<f64>)>,
}

impl Prober {
    /// A prober in namespace `ns`. `up` probes wait until a connection succeeds, down
    /// probes until one fails (no answer within 25 ms); both answer the milliseconds
    /// from being asked to the success, or to the start of the attempt that failed.
    pub(crate) fn new(ns: &str) -> Result<Prober> {
        let target = File::open(format!("/run/netns/{ns}"))?;
        let (tx, rx) = mpsc::channel::<(SocketAddr, bool, mpsc::Sender<f64>)>();
        std::thread::spawn(move || {
            if nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET).is_err() {
                return;
            }
            for (addr, up, answer) in rx {
                let t0 = Instant::now();
                let mut at = t0;
                while t0.elapsed() < Duration::from_secs(30) {
                    let tried = Instant::now();
                    let ok = TcpStream::connect_timeout(&addr, Duration::from_millis(25)).is_ok();
                    // Up: when the connection succeeded; down: when the first attempt
                    // that found nothing began (not when its wait ran out).
                    at = if up { Instant::now() } else { tried };
                    if ok == up {
                        break;
                    }
                    if ok {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
                let _ = answer.send(at.duration_since(t0).as_secs_f64() * 1000.0);
            }
        });
        Ok(Prober { tx })
    }

    /// Asks now; the answer comes when the condition holds.
    pub(crate) fn ask(&self, addr: SocketAddr, up: bool) -> mpsc::Receiver<f64> {
        let (tx, rx) = mpsc::channel();
        let _ = self.tx.send((addr, up, tx));
        rx
    }
}

/// What a held session saw: exchanges, failures, the longest round trip in ms.
type Held = (usize, usize, f64);

/// Holds one TCP session through an endpoint from inside a namespace and exchanges a
/// byte with the echo backend every 10 ms until told to stop: (exchanges, failures,
/// longest round trip in ms).
fn hold_session(ns: &str, addr: SocketAddr) -> Result<(mpsc::Sender<()>, mpsc::Receiver<Held>)> {
    let target = File::open(format!("/run/netns/{ns}"))?;
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let (out_tx, out_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let result = (|| -> Result<Held> {
            nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET)?;
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.set_nodelay(true)?;
            let (mut n, mut failed, mut worst) = (0, 0, 0.0f64);
            while stop_rx.try_recv().is_err() {
                let t0 = Instant::now();
                let mut b = [0u8; 1];
                match s.write_all(b"x").and_then(|()| s.read_exact(&mut b)) {
                    Ok(()) => n += 1,
                    Err(_) => failed += 1,
                }
                worst = worst.max(t0.elapsed().as_secs_f64() * 1000.0);
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok((n, failed, worst))
        })();
        let _ = out_tx.send(result.unwrap_or((0, 1, f64::NAN)));
    });
    Ok((stop_tx, out_rx))
}

/// Echoes what it receives, on port 9000 of the backend host.
const ECHO: &str = r#"
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9000)); s.listen(64)
def serve(c):
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Waits until host namespace `ns` has its address `ip` (hosts are made by the node
/// after the API has answered).
pub(crate) async fn host_up(ns: &str, ip: &str) -> Result<()> {
    for _ in 0..2000 {
        if in_ns(ns, &["ip", "-4", "-o", "addr", "show", "eth0"]).is_ok_and(|o| o.contains(ip)) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("host {ns} never came up")
}

/// The value of an unlabelled metric.
async fn metric(url: &str, name: &str) -> Option<f64> {
    let text = crate::dataplane::metrics(url).await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_gone(c: &ApiClient, path: &str) -> Result<()> {
    for _ in 0..2000 {
        let (status, _) = c.send("GET", path, None).await?;
        if status == 404 {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    bail!("{path} never went")
}

/// An endpoint created and accepted, and how long the API took to answer the create and
/// the endpoint to be accepted (ms).
struct Created {
    id: String,
    ip: String,
    answered_ms: f64,
    accepted_ms: f64,
}

/// Creates an endpoint and polls it every 2 ms until accepted.
async fn create(c: &ApiClient, body: &Value) -> Result<Created> {
    let t0 = Instant::now();
    let ep = c.call("POST", "/v1/{p}/vpc-endpoints", Some(body)).await?;
    let answered_ms = t0.elapsed().as_secs_f64() * 1000.0;
    let id = ep["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/{{p}}/vpc-endpoints/{id}");
    loop {
        let v = c.call("GET", &path, None).await?;
        match v["status"].as_str() {
            Some("accepted") => {
                return Ok(Created {
                    ip: v["ip"].as_str().unwrap_or_default().to_owned(),
                    id,
                    answered_ms,
                    accepted_ms: t0.elapsed().as_secs_f64() * 1000.0,
                });
            }
            Some("failed") => bail!("endpoint failed: {}", v["error"]),
            _ if t0.elapsed() > Duration::from_secs(120) => bail!("{id} never accepted"),
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}

fn serve(bin: &Path, dir: &Path, prefix: &str, path: &str) -> Result<(Child, String)> {
    let forwarding = if path == "kernel" {
        "auto"
    } else {
        "userspace"
    };
    crate::dataplane::serve_with(bin, dir, prefix, forwarding, &["--dns-port", "0"])
}

async fn wait_applied(url: &str, t0: Instant) -> Result<f64> {
    while t0.elapsed() < Duration::from_secs(600) {
        if metric(url, "vpcep_node_applied_revision")
            .await
            .unwrap_or(0.0)
            > 0.0
        {
            return Ok(t0.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("the node never applied its state after a restart")
}

async fn endpoints_run(bin: &Path, path: &str, opts: &Opts) -> Result<PathRun> {
    let max = opts.sizes.iter().copied().max().unwrap_or(0);
    let (prefix, _clean) = scratch_netns(if path == "kernel" { "sk" } else { "su" })?;
    let dir = tempfile::tempdir()?;
    let quota = max + opts.samples + 10;
    let a = crate::account_with_quota(bin, dir.path(), "provider", 20)?;
    let b = crate::account_with_quota(bin, dir.path(), "consumer", quota)?;
    let mut procs = Procs(Vec::new());
    let (server, mut url) = serve(bin, dir.path(), &prefix, path)?;
    let mut vpcep_pid = server.id();
    procs.0.push(server);
    let (pa, pb) = (client(&url, &a), std::sync::Arc::new(client(&url, &b)));
    let work = tempfile::tempdir()?;

    // Providers: a VPC with a backend (nginx on 80, an echo on 9000) per 4,000 endpoints.
    let providers = (max + opts.samples).div_ceil(PER_PROVIDER).max(1);
    let mut services = Vec::new();
    for i in 0..providers {
        let (vpc, sub) = network_of(&pa, "10.1.0.0/16", "10.1.0.0/24").await?;
        let backend = host(&pa, &vpc, &sub, "10.1.0.10", &format!("backend{i}")).await?;
        let ns = backend["netns"].as_str().unwrap_or_default().to_owned();
        host_up(&ns, "10.1.0.10").await?;
        let conf = work.path().join(format!("nginx{i}.conf"));
        let tmp = work.path().join(format!("nginx{i}"));
        std::fs::create_dir_all(&tmp)?;
        std::fs::write(&conf, format!("worker_processes 1; daemon off; pid {0}/nginx.pid; error_log stderr;\nevents {{ worker_connections 20000; }}\nhttp {{ access_log off; client_body_temp_path {0}; proxy_temp_path {0}; fastcgi_temp_path {0}; uwsgi_temp_path {0}; scgi_temp_path {0};\n  server {{ listen 10.1.0.10:80 backlog=4096; location / {{ return 200 \"ok\\n\"; }} }} }}\n", tmp.display()))?;
        procs.0.push(crate::dataplane::spawn_in(
            &ns,
            &["nginx", "-c", &conf.display().to_string()],
        )?);
        procs
            .0
            .push(crate::dataplane::spawn_in(&ns, &["python3", "-c", ECHO])?);
        // The kernel path's endpoints also map the echo port, for the session held
        // through a restart; the userspace path's map one port, since each of its
        // endpoints' ports costs a listener, within the process's 20,000 descriptors.
        let mut ports = vec![json!({"client_port": 8080, "server_port": 80, "protocol": "TCP"})];
        if path == "kernel" {
            ports.push(json!({"client_port": 9000, "server_port": 9000, "protocol": "TCP"}));
        }
        let body = json!({"vpc_id": vpc, "port_id": backend["port_id"], "server_type": "VM", "approval_enabled": false,
            "ports": ports});
        services.push(crate::dataplane::publish(&pa, body, &b).await?);
    }
    // The consumer: one VPC, a subnet with room for every endpoint, one client host.
    let (cvpc, csub) = network_of(&pb, "10.0.0.0/16", "10.0.0.0/17").await?;
    let cl = host(&pb, &cvpc, &csub, "10.0.127.200", "client").await?;
    let client_ns = cl["netns"].as_str().unwrap_or_default().to_owned();
    host_up(&client_ns, "10.0.127.200").await?;
    crate::sessions::sysctl_in(
        Some(&client_ns),
        "net.ipv4.ip_local_port_range",
        "1024 65535",
    )?;
    let prober = Prober::new(&client_ns)?;
    let body_for = |i: usize| json!({"endpoint_service_id": services[i % services.len()], "vpc_id": cvpc, "subnet_id": csub});

    let mut run = PathRun {
        path: path.to_owned(),
        sizes: Vec::new(),
        resync_s: f64::NAN,
        first_apply_s: f64::NAN,
        session: None,
        failed: None,
    };
    let mut have = 0usize;
    let mut first_ip = String::new();
    for &size in &opts.sizes {
        // Fill up to `size`, FILL_CONCURRENCY at a time.
        let (avail0, slab0, rss0) = (
            meminfo_kb("MemAvailable:"),
            meminfo_kb("Slab:"),
            rss_kb(vpcep_pid),
        );
        let t0 = Instant::now();
        while have < size {
            let batch = (size - have).min(FILL_CONCURRENCY);
            let mut tasks = Vec::new();
            for k in 0..batch {
                let (pb, body) = (pb.clone(), body_for(have + k));
                tasks.push(tokio::spawn(async move { create(&pb, &body).await }));
            }
            for t in tasks {
                match t.await? {
                    Ok(c) if first_ip.is_empty() => first_ip = c.ip,
                    Ok(_) => {}
                    Err(e) => {
                        run.failed = Some(format!("at {} endpoints: {e}", have));
                        return Ok(run);
                    }
                }
            }
            have += batch;
            if have % 1000 < batch {
                eprintln!(
                    "{path}: {have} endpoints ({:.0} s)",
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let grown = (size - run.sizes.last().map_or(0, |s| s.size)).max(1) as f64;
        let mut at = AtSize {
            size,
            fill_s: t0.elapsed().as_secs_f64(),
            kernel_bytes: avail0.saturating_sub(meminfo_kb("MemAvailable:")) as f64 * 1024.0
                / grown,
            slab_bytes: meminfo_kb("Slab:").saturating_sub(slab0) as f64 * 1024.0 / grown,
            rss_bytes: rss_kb(vpcep_pid).saturating_sub(rss0) as f64 * 1024.0 / grown,
            ..Default::default()
        };
        // One more endpoint at a time: create → accepted → first connection; delete →
        // traffic stopped. The node's own share: its applies meanwhile.
        let applied = |url: String| async move {
            (
                metric(&url, "vpcep_node_apply_seconds_total")
                    .await
                    .unwrap_or(0.0),
                metric(&url, "vpcep_node_applies_total")
                    .await
                    .unwrap_or(0.0),
            )
        };
        let before = applied(url.clone()).await;
        for i in 0..opts.samples {
            let Created {
                id,
                ip,
                answered_ms,
                accepted_ms: ms,
            } = create(&pb, &body_for(i)).await?;
            at.create_ms.push(ms);
            at.answered_ms.push(answered_ms);
            let addr: SocketAddr = format!("{ip}:8080").parse()?;
            let t0 = Instant::now();
            prober.ask(addr, true).recv()?;
            at.first_conn_ms
                .push(ms + t0.elapsed().as_secs_f64() * 1000.0);
            let stopped = prober.ask(addr, false);
            pb.call("DELETE", &format!("/v1/{{p}}/vpc-endpoints/{id}"), None)
                .await?;
            at.delete_ms.push(stopped.recv()?);
            wait_gone(&pb, &format!("/v1/{{p}}/vpc-endpoints/{id}")).await?;
        }
        let after = applied(url.clone()).await;
        at.apply_ms = (after.0 - before.0) * 1000.0 / (after.1 - before.1).max(1.0);
        // New connections through one endpoint (nginx, a connection per request).
        let out = in_ns(
            &client_ns,
            &[
                "wrk",
                "-t",
                "2",
                "-c",
                "32",
                "-d",
                &format!("{}s", opts.secs),
                "-H",
                "Connection: close",
                &format!("http://{first_ip}:8080/"),
            ],
        )?;
        at.conn_per_s = out
            .lines()
            .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        eprintln!(
            "{path} at {size}: create→accepted p50 {:.1} p99 {:.1} ms (API answer p50 {:.1}, node apply mean {:.1}), delete→stopped p50 {:.1} p99 {:.1} ms, {:.0} conn/s",
            pct(&at.create_ms, 0.5), pct(&at.create_ms, 0.99), pct(&at.answered_ms, 0.5), at.apply_ms, pct(&at.delete_ms, 0.5), pct(&at.delete_ms, 0.99), at.conn_per_s
        );
        run.sizes.push(at);
        // Let wrk's TIME_WAIT states go before the next round's connections.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // A restart at the largest size: the node rewrites everything from the snapshot.
    let session = if path == "kernel" {
        Some(hold_session(
            &client_ns,
            format!("{first_ip}:9000").parse()?,
        )?)
    } else {
        None
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut server = procs.0.remove(0);
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    let _ = server.wait();
    let t0 = Instant::now();
    let (server, new_url) = serve(bin, dir.path(), &prefix, path)?;
    vpcep_pid = server.id();
    procs.0.insert(0, server);
    url = new_url;
    run.resync_s = wait_applied(&url, t0).await?;
    run.first_apply_s = metric(&url, "vpcep_node_last_apply_seconds")
        .await
        .unwrap_or(f64::NAN);
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some((stop, result)) = session {
        let _ = stop.send(());
        run.session = result.recv_timeout(Duration::from_secs(10)).ok();
    }
    let _ = vpcep_pid;
    Ok(run)
}

/// 1,000 VPCs with a subnet and a host each: what a VPC costs the node.
async fn vpcs_run(bin: &Path, n: usize) -> Result<()> {
    let (prefix, _clean) = scratch_netns("sv")?;
    let dir = tempfile::tempdir()?;
    let a = admin(bin, dir.path(), &["admin", "account", "create", "tenant"])?;
    let mut procs = Procs(Vec::new());
    let (server, url) = spawn_serve(
        bin,
        dir.path(),
        &["--substrate", "netns", "--netns-prefix", &prefix],
    )?;
    let pid = server.id();
    procs.0.push(server);
    let c = client(&url, &a);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let threads = |pid: u32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("Threads:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let fds = |pid: u32| std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    let (avail0, slab0, rss0, threads0, fds0) = (
        meminfo_kb("MemAvailable:"),
        meminfo_kb("Slab:"),
        rss_kb(pid),
        threads(pid),
        fds(pid),
    );
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let (vpc, sub) = network_of(&c, "192.168.0.0/16", "192.168.0.0/24").await?;
        let h = host(&c, &vpc, &sub, "192.168.0.10", &format!("h{i}")).await?;
        host_up(h["netns"].as_str().unwrap_or_default(), "192.168.0.10").await?;
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        if (i + 1) % 100 == 0 {
            eprintln!("{} VPCs ({:.0} s)", i + 1, t0.elapsed().as_secs_f64());
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let per = |before: u64, after: u64| after.saturating_sub(before) as f64 * 1024.0 / n as f64;
    println!("| {n} VPCs (a subnet and a host each) | per VPC |");
    println!("|---|---:|");
    println!(
        "| MemAvailable used (kernel and processes) | {:.0} KiB |",
        per(meminfo_kb("MemAvailable:"), avail0) / 1024.0
    );
    println!(
        "| of which kernel slab | {:.0} KiB |",
        per(slab0, meminfo_kb("Slab:")) / 1024.0
    );
    println!("| vpcep RSS | {:.0} B |", per(rss0, rss_kb(pid)));
    println!(
        "| vpcep threads | {:.3} ({} → {}) |",
        (threads(pid) as f64 - threads0 as f64) / n as f64,
        threads0,
        threads(pid)
    );
    println!(
        "| vpcep descriptors | {:.2} ({} → {}) |",
        (fds(pid) as f64 - fds0 as f64) / n as f64,
        fds0,
        fds(pid)
    );
    println!(
        "| VPC + subnet + host, create → host up | p50 {:.0} ms, p99 {:.0} ms, {:.0} s in all |",
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        t0.elapsed().as_secs_f64()
    );
    println!();
    Ok(())
}

pub(crate) async fn run(bin: &Path, opts: Opts) -> Result<()> {
    for tool in ["wrk", "nginx", "nft", "conntrack"] {
        if std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()?
            .stdout
            .is_empty()
        {
            bail!("{tool} is missing (apt-get install wrk nginx-light nftables conntrack)");
        }
    }
    crate::sessions::sysctl_in(None, "net.netfilter.nf_conntrack_max", "1048576")?;
    let mut runs = Vec::new();
    for path in &opts.paths {
        runs.push(endpoints_run(bin, path, &opts).await?);
    }
    println!("| path | endpoints | create → accepted p50 / p99 ms | of which the API's answer p50 / p99 ms | the node's apply, mean ms | → first connection p50 / p99 ms | delete → stopped p50 / p99 ms | new conn/s (one endpoint) | MemAvailable / slab / vpcep RSS per endpoint (B) | fill s |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &runs {
        for s in &r.sizes {
            println!(
                "| {} | {} | {:.1} / {:.1} | {:.1} / {:.1} | {:.1} | {:.1} / {:.1} | {:.1} / {:.1} | {:.0} | {:.0} / {:.0} / {:.0} | {:.0} |",
                r.path, s.size,
                pct(&s.create_ms, 0.5), pct(&s.create_ms, 0.99),
                pct(&s.answered_ms, 0.5), pct(&s.answered_ms, 0.99),
                s.apply_ms,
                pct(&s.first_conn_ms, 0.5), pct(&s.first_conn_ms, 0.99),
                pct(&s.delete_ms, 0.5), pct(&s.delete_ms, 0.99),
                s.conn_per_s, s.kernel_bytes, s.slab_bytes, s.rss_bytes, s.fill_s
            );
        }
        if let Some(why) = &r.failed {
            println!("| {} | stopped | {why} | | | | | | | |", r.path);
        }
    }
    println!();
    println!("| path | create→accepted p99, largest / smallest | new conn/s, largest / smallest | restart: start → state rewritten s | of which the first apply s | established session during the restart |");
    println!("|---|---:|---:|---:|---:|---|");
    for r in &runs {
        let (Some(lo), Some(hi)) = (r.sizes.first(), r.sizes.last()) else {
            continue;
        };
        let session = match r.session {
            Some((n, failed, worst)) => {
                format!("{n} exchanges, {failed} failed, longest {worst:.1} ms")
            }
            None => "- (userspace sessions end with the process)".into(),
        };
        println!(
            "| {} | {:.2} ({} / {}) | {:.2} ({} / {}) | {:.2} | {:.2} | {session} |",
            r.path,
            pct(&hi.create_ms, 0.99) / pct(&lo.create_ms, 0.99),
            hi.size,
            lo.size,
            hi.conn_per_s / lo.conn_per_s,
            hi.size,
            lo.size,
            r.resync_s,
            r.first_apply_s
        );
    }
    println!();
    println!(
        "{} samples per size (created and deleted one at a time, polled every 2 ms), wrk -t2 -c32 {} s, {} cores",
        opts.samples,
        opts.secs,
        crate::cores()
    );
    println!();
    if opts.vpcs > 0 {
        vpcs_run(bin, opts.vpcs).await?;
    }
    Ok(())
}
