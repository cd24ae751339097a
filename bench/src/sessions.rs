//! `vpcep-bench sessions`: how many concurrent idle sessions one node carries on the
//! kernel path, and what they cost. Clients in a consumer host and backends in a provider
//! host hold TCP sessions through endpoints of one consumer VPC; every session is one
//! conntrack entry in each VPC namespace and no process of vpcep touches it.
//!
//! A process here may hold 20,000 descriptors, so both sides are spread over worker
//! processes (`vpcep-bench hold` / `vpcep-bench sink`, ≤ 19,000 sessions each). A
//! consumer VPC's sessions leave it from one link address, so each (endpoint IP, port)
//! carries at most ~64,000 of them: the run uses an endpoint per 50,000 sessions with ten
//! ports each, and the per-endpoint limit is the API's maximum (100,000).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::dataplane::{
    admin, client, connect, host, in_ns, meminfo_kb, network, publish, rss_kb, scratch_netns,
    serve, Procs,
};

/// Sessions per worker process (the descriptor limit is 20,000).
const PER_WORKER: usize = 19_000;
/// Ports of every endpoint (client port = server port). Many destinations keep the
/// connect-side port search short: Linux looks for a source port that is free for the
/// exact destination, which slows down as one destination fills its ~64,000 ports.
const PORTS: [u16; 10] = [
    20_000, 20_001, 20_002, 20_003, 20_004, 20_005, 20_006, 20_007, 20_008, 20_009,
];
/// Sessions per endpoint (the API allows 100,000).
const PER_ENDPOINT: usize = 50_000;

pub(crate) fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

/// `vpcep-bench hold TARGET,TARGET.. COUNT`: opens COUNT sessions round-robin over the
/// targets, printing `held N` as it goes and `done N ERRORS` at the end, then holds
/// them until stdin closes.
pub(crate) fn hold(targets: &str, count: usize) -> Result<()> {
    raise_nofile();
    let targets: Vec<SocketAddr> = targets
        .split(',')
        .map(|t| t.parse().context("target"))
        .collect::<Result<_>>()?;
    let mut held = Vec::with_capacity(count);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut failed_in_a_row = 0;
    for i in 0..count {
        match TcpStream::connect_timeout(&targets[i % targets.len()], Duration::from_secs(3)) {
            Ok(s) => {
                held.push(s);
                failed_in_a_row = 0;
            }
            Err(e) => {
                *errors.entry(e.kind().to_string()).or_default() += 1;
                failed_in_a_row += 1;
                if failed_in_a_row >= 20 {
                    break;
                }
            }
        }
        if i % 1000 == 999 {
            println!("held {}", held.len());
        }
    }
    let errs: Vec<String> = errors.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("done {} {}", held.len(), errs.join(","));
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    Ok(())
}

/// `vpcep-bench sink PORT,PORT.. MAX`: accepts on every port (SO_REUSEPORT, so many sinks
/// share the load) and keeps up to MAX sessions; those beyond are closed and counted.
pub(crate) fn sink(ports: &str, max: usize) -> Result<()> {
    raise_nofile();
    let held = Arc::new(Mutex::new(Vec::<TcpStream>::with_capacity(max)));
    let over = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for p in ports.split(',') {
        let port: u16 = p.parse().context("port")?;
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
        s.listen(65_535)?;
        let listener: TcpListener = s.into();
        let (held, over) = (held.clone(), over.clone());
        threads.push(std::thread::spawn(move || {
            while let Ok((c, _)) = listener.accept() {
                let mut h = held.lock().unwrap_or_else(|p| p.into_inner());
                if h.len() < max {
                    h.push(c);
                } else {
                    over.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    let n = held.lock().unwrap_or_else(|p| p.into_inner()).len();
    eprintln!(
        "sink: held {n}, closed {} over the limit",
        over.load(Ordering::Relaxed)
    );
    Ok(())
}

/// A worker process in a namespace, its stdout read line by line.
struct Worker {
    child: Child,
    held: Arc<AtomicUsize>,
    done: Arc<Mutex<Option<String>>>,
}

fn worker(ns: &str, args: &[&str]) -> Result<Worker> {
    let me = std::env::current_exe()?;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(me)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let out = child.stdout.take().context("worker stdout")?;
    let held = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Mutex::new(None));
    let (h, d) = (held.clone(), done.clone());
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
            let mut parts = line.splitn(3, ' ');
            let (kind, n) = (parts.next(), parts.next().and_then(|n| n.parse().ok()));
            if let Some(n) = n {
                h.store(n, Ordering::Relaxed);
            }
            if kind == Some("done") {
                *d.lock().unwrap_or_else(|p| p.into_inner()) = Some(line.clone());
            }
        }
    });
    Ok(Worker { child, held, done })
}

pub(crate) fn sysctl_in(ns: Option<&str>, key: &str, value: &str) -> Result<()> {
    let kv = format!("{key}={value}");
    match ns {
        Some(ns) => in_ns(ns, &["sysctl", "-qw", &kv]).map(|_| ()),
        None => {
            let out = Command::new("sysctl").args(["-qw", &kv]).output()?;
            if !out.status.success() {
                bail!("sysctl {kv}: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok(())
        }
    }
}

fn conntrack_count(ns: &str) -> u64 {
    in_ns(ns, &["cat", "/proc/sys/net/netfilter/nf_conntrack_count"])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) async fn run(bin: &Path, target: usize) -> Result<()> {
    let endpoints = target.div_ceil(PER_ENDPOINT).max(1);
    let (prefix, _clean) = scratch_netns("bs")?;
    // Room for every session twice over in conntrack (a table per VPC namespace, one
    // global limit), and a hash table to match.
    sysctl_in(None, "net.netfilter.nf_conntrack_max", "4194304")?;
    let _ = std::fs::write("/sys/module/nf_conntrack/parameters/hashsize", "1048576");

    let dir = tempfile::tempdir()?;
    let a = admin(bin, dir.path(), &["admin", "account", "create", "provider"])?;
    let b = admin(bin, dir.path(), &["admin", "account", "create", "consumer"])?;
    let mut procs = Procs(Vec::new());
    let (server, url) = serve(bin, dir.path(), &prefix, "auto")?;
    let vpcep_pid = server.id();
    procs.0.push(server);
    let (pa, pb) = (client(&url, &a), client(&url, &b));
    let (pvpc, psub) = network(&pa).await?;
    let backend = host(&pa, &pvpc, &psub, "10.1.0.10", "backend").await?;
    let (cvpc, csub) = network(&pb).await?;
    let cl = host(&pb, &cvpc, &csub, "10.1.0.20", "client").await?;
    let ns = |h: &Value| h["netns"].as_str().unwrap_or_default().to_owned();
    let (backend_ns, client_ns) = (ns(&backend), ns(&cl));
    let ports: Vec<Value> = PORTS
        .iter()
        .map(|p| json!({"client_port": p, "server_port": p, "protocol": "TCP"}))
        .collect();
    let body = json!({"vpc_id": pvpc, "port_id": backend["port_id"], "server_type": "VM", "approval_enabled": false, "connection_limit": 100_000, "ports": ports});
    let sid = publish(&pa, body, &b).await?;
    let mut targets = Vec::new();
    for _ in 0..endpoints {
        let (_, ip) = connect(&pb, &sid, &cvpc, &csub).await?;
        targets.extend(PORTS.iter().map(|p| format!("{ip}:{p}")));
    }
    // Wait for the kernel path of the last endpoint.
    let probe = targets.last().cloned().unwrap_or_default();
    let mut ok = false;
    for _ in 0..100 {
        let m = crate::dataplane::metrics(&url).await?;
        if m.matches("path=\"kernel\"").count() >= endpoints {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !ok {
        bail!("the endpoints did not take the kernel path (nft and conntrack installed?)");
    }
    sysctl_in(
        Some(&client_ns),
        "net.ipv4.ip_local_port_range",
        "1024 65535",
    )?;
    for (k, v) in [
        ("net.core.somaxconn", "65535"),
        ("net.ipv4.tcp_max_syn_backlog", "65535"),
    ] {
        sysctl_in(Some(&backend_ns), k, v)?;
    }
    let vpc_ns = |id: &str| {
        format!(
            "{prefix}-v-{}",
            id.chars().filter(|c| *c != '-').take(8).collect::<String>()
        )
    };
    let (cvpc_ns, pvpc_ns) = (vpc_ns(&cvpc), vpc_ns(&pvpc));

    let clients = target.div_ceil(PER_WORKER);
    let sinks = (clients * 3).div_ceil(2) + 2;
    eprintln!(
        "{target} sessions: {endpoints} endpoints × {} ports, {clients} client and {sinks} backend processes (probe {probe})",
        PORTS.len()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (avail0, slab0) = (meminfo_kb("MemAvailable:"), meminfo_kb("Slab:"));
    let rss0 = rss_kb(vpcep_pid);
    let port_list: Vec<String> = PORTS.iter().map(|p| p.to_string()).collect();
    let mut workers = Vec::new();
    for _ in 0..sinks {
        workers.push(worker(
            &backend_ns,
            &["sink", &port_list.join(","), &PER_WORKER.to_string()],
        )?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = Instant::now();
    let targets = targets.join(",");
    let mut holders = Vec::new();
    let mut left = target;
    for _ in 0..clients {
        let n = left.min(PER_WORKER);
        left -= n;
        holders.push(worker(&client_ns, &["hold", &targets, &n.to_string()])?);
    }
    let mut last = 0;
    let mut stalled = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let held: usize = holders.iter().map(|w| w.held.load(Ordering::Relaxed)).sum();
        let done = holders
            .iter()
            .filter(|w| w.done.lock().unwrap_or_else(|p| p.into_inner()).is_some())
            .count();
        eprintln!(
            "  {:>5.0} s  {held:>8} sessions  conntrack {} / {}  MemAvailable −{} MiB  ({done}/{} clients done)",
            started.elapsed().as_secs_f64(),
            conntrack_count(&cvpc_ns),
            conntrack_count(&pvpc_ns),
            avail0.saturating_sub(meminfo_kb("MemAvailable:")) / 1024,
            holders.len()
        );
        if held > last {
            last = held;
            stalled = Instant::now();
        }
        if done == holders.len() || stalled.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
    let ramp = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held: usize = holders.iter().map(|w| w.held.load(Ordering::Relaxed)).sum();
    let (avail1, slab1) = (meminfo_kb("MemAvailable:"), meminfo_kb("Slab:"));
    let rss1 = rss_kb(vpcep_pid);
    let (ct_c, ct_p) = (conntrack_count(&cvpc_ns), conntrack_count(&pvpc_ns));
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for w in &holders {
        if let Some(line) = w.done.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            for kv in line.splitn(3, ' ').nth(2).unwrap_or("").split(',') {
                if let Some((k, v)) = kv.split_once('=') {
                    *errors.entry(k.to_owned()).or_default() += v.parse::<usize>().unwrap_or(0);
                }
            }
        }
    }
    let per = |kb: u64| kb as f64 * 1024.0 / held.max(1) as f64;
    println!("| sessions asked | held | ramp s | sessions/s | MemAvailable used | per session | kernel slab per session | conntrack consumer / provider | vpcep RSS growth |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {target} | {held} | {:.0} | {:.0} | {:.2} GiB | {:.0} B | {:.0} B | {ct_c} / {ct_p} | {} KiB |",
        ramp.as_secs_f64(),
        held as f64 / ramp.as_secs_f64(),
        avail0.saturating_sub(avail1) as f64 / 1048576.0,
        per(avail0.saturating_sub(avail1)),
        per(slab1.saturating_sub(slab0)),
        rss1.saturating_sub(rss0)
    );
    println!();
    if held >= target {
        println!("All {target} sessions held; what stopped the run: the target.");
    } else {
        println!("Stopped at {held}: connect errors {errors:?}");
    }
    println!(
        "Memory is the whole machine's (both TCP ends of every session, in client and backend processes, plus conntrack in the consumer VPC's namespace); {} client and {sinks} backend processes of ≤ {PER_WORKER} sessions.",
        holders.len()
    );
    for mut w in holders.into_iter().chain(workers) {
        drop(w.child.stdin.take());
        let _ = w.child.kill();
        let _ = w.child.wait();
    }
    Ok(())
}
