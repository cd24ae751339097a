//! `vpcep-bench dns`: the private DNS of a VPC side by side with Unbound serving the same
//! records, both on loopback addresses of this machine, driven by dnsperf with the same
//! client settings, in one run.
//!
//! A release `vpcep serve` (loopback substrate) gets one VPC with a /20 subnet, one
//! endpoint service (approval off) and `--endpoints` endpoints created with `enable_dns`;
//! once they are accepted, their private names (`dns_names`) and addresses become
//! Unbound's `local-data` in a `static` local zone of the same name. The query file holds
//! every name once plus 5% names under the same zone that do not exist (NXDOMAIN), in a
//! fixed shuffled order. Each repeat measures, per server: saturated throughput (dnsperf
//! `-c 4 -q 100`, no per-query output) and latency at a fixed offered load (`-Q RATE -v`,
//! every query's latency parsed) — dnsperf 2.10 has no percentile output of its own.
//! With `--baseline BIN`, a second server from another build gets the same setup on its
//! own loopback block and is measured in the same rounds, between the two others.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::dataplane::{client, spawn_serve, wait_status};
use crate::{account_with_quota, at_least_one, cores, Proc};

#[derive(clap::Args)]
pub(crate) struct Opts {
    /// Seconds per dnsperf run.
    #[arg(long, default_value_t = 10, value_parser = at_least_one::<u64>())]
    pub secs: u64,
    /// Endpoint services, each with one endpoint and its private name.
    #[arg(long, default_value_t = 1000, value_parser = at_least_one::<usize>())]
    pub endpoints: usize,
    /// Rounds; every figure is the median of the rounds.
    #[arg(long, default_value_t = 3, value_parser = at_least_one::<usize>())]
    pub repeats: usize,
    /// Offered load (queries/s) of the latency runs.
    #[arg(long, default_value_t = 20000, value_parser = at_least_one::<u64>())]
    pub rate: u64,
    /// Unbound's `num-threads` (one per core unless given: its faster setting here).
    #[arg(long, default_value_t = cores(), value_parser = at_least_one::<usize>())]
    pub unbound_threads: usize,
    /// `--loopback-base` of the server; Unbound listens on 127.BASE.0.2, which no VPC of
    /// that server uses (VPC number N ≥ 1 is 127.(BASE+N)).
    #[arg(long, default_value_t = 100)]
    pub loopback_base: u8,
    /// The resolvers' port, for every server.
    #[arg(long, default_value_t = 10053, value_parser = at_least_one::<u16>())]
    pub port: u16,
    /// Another `vpcep` binary (e.g. a build of main) measured the same way in the same
    /// rounds, with `--loopback-base` 50 above this one's: a before/after in one run.
    #[arg(long)]
    pub baseline: Option<PathBuf>,
}

/// The consumer subnet: its resolver is the second reserved address, 10.0.0.2.
const SUBNET: &str = "10.0.0.0/20";
const REGION: &str = "local-1";
/// dnsperf settings shared by every run: sockets and queries in flight.
const CLIENTS: &str = "4";
const IN_FLIGHT: &str = "100";

/// A tool from PATH or the sbin directories (Debian puts unbound in /usr/sbin).
fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn need(name: &str) -> Result<PathBuf> {
    find_tool(name).with_context(|| {
        format!("{name} is missing: `vpcep-bench dns` needs dnsperf, unbound and dig (apt-get install dnsperf unbound bind9-dnsutils)")
    })
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// Same order every run: a fixed-seed Fisher–Yates shuffle.
fn shuffle<T>(v: &mut [T]) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in (1..v.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // After the command name: state is field 3, utime 14, stime 15.
    let tick = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    (tick(14).unwrap_or(0.0) + tick(15).unwrap_or(0.0)) / 100.0
}

struct Target {
    name: String,
    addr: String,
    pid: u32,
    /// The queries it is asked (every name it holds once, and 5% that do not exist).
    file: PathBuf,
}

#[derive(Default, Clone)]
struct Sample {
    qps: f64,
    lost: u64,
    /// Server CPU microseconds per completed query, in the saturated run.
    cpu_us: f64,
    p50_us: f64,
    p99_us: f64,
    lat_qps: f64,
}

fn dnsperf(t: &Target, port: u16, file: &Path, extra: &[&str]) -> Result<String> {
    let out = Command::new("dnsperf")
        .args(["-s", &t.addr, "-p", &port.to_string(), "-d"])
        .arg(file)
        .args(["-c", CLIENTS, "-T", "1", "-q", IN_FLIGHT, "-t", "2"])
        .args(extra)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("dnsperf against {}: {}", t.name, out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The value after `key` on its summary line.
fn summary(out: &str, key: &str) -> f64 {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Every query answered once, with the expected response codes.
fn check(t: &Target, port: u16, file: &Path, ok: usize, nx: usize) -> Result<()> {
    let want = format!("NOERROR {ok} (");
    let mut last = String::new();
    for _ in 0..50 {
        let out = dnsperf(t, port, file, &["-n", "1"])?;
        last = out
            .lines()
            .find(|l| l.contains("Response codes:"))
            .unwrap_or("no answers")
            .trim()
            .to_owned();
        if last.contains(&want) && (nx == 0 || last.contains(&format!("NXDOMAIN {nx} ("))) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "{} at {}:{port} does not answer as expected ({ok} NOERROR, {nx} NXDOMAIN): {last}",
        t.name,
        t.addr
    )
}

fn dig(addr: &str, port: u16, name: &str) -> Result<String> {
    let out = Command::new("dig")
        .args([
            &format!("@{addr}"),
            "-p",
            &port.to_string(),
            name,
            "A",
            "+short",
            "+tries=1",
            "+time=2",
        ])
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn measure(t: &Target, o: &Opts) -> Result<Sample> {
    let file = &t.file;
    let secs = o.secs.to_string();
    let cpu0 = cpu_secs(t.pid);
    let sat = dnsperf(t, o.port, file, &["-l", &secs])?;
    let cpu = cpu_secs(t.pid) - cpu0;
    let completed = summary(&sat, "Queries completed:");
    let rate = o.rate.to_string();
    let lat = dnsperf(t, o.port, file, &["-l", &secs, "-Q", &rate, "-v"])?;
    let mut us: Vec<f64> = lat
        .lines()
        .filter_map(|l| l.strip_prefix("> "))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|s| s * 1e6)
        .collect();
    us.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        us.get(((us.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok(Sample {
        qps: summary(&sat, "Queries per second:"),
        lost: (summary(&sat, "Queries lost:") + summary(&lat, "Queries lost:")) as u64,
        cpu_us: if completed > 0.0 {
            cpu * 1e6 / completed
        } else {
            0.0
        },
        p50_us: pct(0.5),
        p99_us: pct(0.99),
        lat_qps: summary(&lat, "Queries per second:"),
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A release `vpcep serve` whose one VPC's resolver holds `endpoints` private names.
struct Named {
    _server: Proc,
    _dir: tempfile::TempDir,
    pid: u32,
    resolver: String,
    /// (name, address) of every endpoint.
    records: Vec<(String, String)>,
}

/// Starts `bin` on loopback base `base` and gives its VPC `o.endpoints` named endpoints.
async fn serve_names(bin: &Path, o: &Opts, base: u8) -> Result<Named> {
    let dir = tempfile::tempdir()?;
    let acct = account_with_quota(bin, dir.path(), "bench", o.endpoints + 10)?;
    let (port, base_arg) = (o.port.to_string(), base.to_string());
    let (child, url) = spawn_serve(
        bin,
        dir.path(),
        &[
            "--substrate",
            "loopback",
            "--loopback-base",
            &base_arg,
            "--dns-port",
            &port,
            "--region",
            REGION,
        ],
    )?;
    let pid = child.id();
    let server = Proc(child);
    let c = Arc::new(client(&url, &acct));

    let vpc = c
        .call(
            "POST",
            "/v1/{p}/vpcs",
            Some(&json!({"vpc": {"name": "bench", "cidr": "10.0.0.0/16"}})),
        )
        .await?["vpc"]
        .clone();
    let vpc_id = s(&vpc["id"]);
    let sub = s(&c
        .call(
            "POST",
            "/v1/{p}/subnets",
            Some(&json!({"subnet": {"name": "s", "cidr": SUBNET, "vpc_id": vpc_id}})),
        )
        .await?["subnet"]["id"]);
    let backend = s(&c
        .call(
            "POST",
            "/v1/{p}/ports",
            Some(&json!({"port": {"network_id": sub}})),
        )
        .await?["port"]["id"]);
    // The resolver: 10.0.0.2 of VPC number N, i.e. 127.(BASE+N).0.2 on this substrate.
    let block = s(&vpc["loopback_block"]);
    let octets: Vec<&str> = block.split(['.', '/']).collect();
    let resolver = match octets.as_slice() {
        ["127", b, ..] => format!("127.{b}.0.2"),
        _ => bail!("the VPC has no loopback block ({vpc})"),
    };

    // A VPC holds one private name per service, so every endpoint has its own service
    // (the same backend on its own port, approval off).
    eprintln!(
        "{}: creating {} services and endpoints with private names …",
        bin.display(),
        o.endpoints
    );
    let t = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, next, n) = (c.clone(), next.clone(), o.endpoints);
        let (vpc_id, sub, backend) = (vpc_id.clone(), sub.clone(), backend.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return anyhow::Ok(());
                }
                let svc = c
                    .call("POST", "/v1/{p}/vpc-endpoint-services", Some(&json!({"vpc_id": vpc_id, "port_id": backend, "server_type": "VM", "approval_enabled": false, "service_name": format!("dnsbench{i:04}"), "ports": [{"client_port": 80, "server_port": 20000 + i}]})))
                    .await?;
                let sid = s(&svc["id"]);
                wait_status(
                    &c,
                    &format!("/v1/{{p}}/vpc-endpoint-services/{sid}"),
                    "available",
                )
                .await?;
                c.call("POST", "/v1/{p}/vpc-endpoints", Some(&json!({"endpoint_service_id": sid, "vpc_id": vpc_id, "subnet_id": sub, "enable_dns": true})))
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let mut records: Vec<(String, String)> = Vec::new();
    while t.elapsed() < Duration::from_secs(300) {
        records.clear();
        let mut offset = 0;
        loop {
            let page = c
                .call(
                    "GET",
                    &format!("/v1/{{p}}/vpc-endpoints?limit=1000&offset={offset}"),
                    None,
                )
                .await?;
            let rows = page["endpoints"].as_array().cloned().unwrap_or_default();
            for e in &rows {
                if e["status"] == "failed" {
                    bail!("endpoint {} failed: {e}", e["id"]);
                }
                if let Some(name) = e["dns_names"].as_array().and_then(|a| a.first()) {
                    records.push((s(name).trim_end_matches('.').to_owned(), s(&e["ip"])));
                }
            }
            offset += rows.len();
            if rows.len() < 1000 {
                break;
            }
        }
        if records.len() >= o.endpoints {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if records.len() < o.endpoints {
        bail!(
            "only {} of {} endpoints became accepted with a name",
            records.len(),
            o.endpoints
        );
    }
    eprintln!(
        "{} endpoints accepted in {:.1} s",
        records.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(Named {
        _server: server,
        _dir: dir,
        pid,
        resolver,
        records,
    })
}

/// Writes the queries for `records` into `dir`: every name once, and 5% names of the same
/// zone that do not exist, in a fixed shuffled order. Returns the file and the misses.
fn query_file(dir: &Path, file: &str, records: &[(String, String)]) -> Result<(PathBuf, usize)> {
    let zone = format!("vpcep.{REGION}.internal");
    let missing = (records.len() / 20).max(1);
    let mut queries: Vec<String> = records.iter().map(|(n, _)| format!("{n} A")).collect();
    for i in 0..missing {
        queries.push(format!("missing-{i:04}.dnsbench.{zone} A"));
    }
    shuffle(&mut queries);
    let path = dir.join(file);
    std::fs::write(&path, queries.join("\n") + "\n")?;
    Ok((path, missing))
}

pub(crate) async fn run(bin: &Path, o: Opts) -> Result<()> {
    for tool in ["dnsperf", "dig"] {
        need(tool)?;
    }
    let unbound = need("unbound")?;
    let unbound_addr = format!("127.{}.0.2", o.loopback_base);
    let main = serve_names(bin, &o, o.loopback_base).await?;
    let baseline = match &o.baseline {
        Some(b) => {
            let base = o
                .loopback_base
                .checked_add(50)
                .filter(|b| *b < 254)
                .context("--loopback-base is too high for a baseline 50 above it")?;
            Some((b, serve_names(b, &o, base).await?))
        }
        None => None,
    };
    for n in std::iter::once(&main).chain(baseline.as_ref().map(|(_, n)| n)) {
        if n.resolver == unbound_addr {
            bail!("a VPC took {unbound_addr}, which is Unbound's");
        }
    }
    let records = &main.records;

    // The same zone for Unbound: `static` answers the names it holds, NXDOMAIN otherwise.
    let zone = format!("vpcep.{REGION}.internal");
    let work = tempfile::tempdir()?;
    let mut conf = format!(
        "server:\n  interface: {unbound_addr}\n  port: {}\n  do-daemonize: no\n  chroot: \"\"\n  username: \"\"\n  directory: \"{}\"\n  pidfile: \"\"\n  use-syslog: no\n  logfile: \"\"\n  verbosity: 0\n  num-threads: {}\n  so-reuseport: yes\n  module-config: \"iterator\"\n  access-control: 127.0.0.0/8 allow\n  local-zone: \"{zone}.\" static\n",
        o.port,
        work.path().display(),
        o.unbound_threads
    );
    for (name, ip) in records {
        conf.push_str(&format!("  local-data: \"{name}. 60 IN A {ip}\"\n"));
    }
    conf.push_str("remote-control:\n  control-enable: no\n");
    let conf_path = work.path().join("unbound.conf");
    std::fs::write(&conf_path, conf)?;
    let ub = Command::new(&unbound)
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", unbound.display()))?;
    let unbound_pid = ub.id();
    let _unbound = Proc(ub);

    let (file, missing) = query_file(work.path(), "queries.txt", records)?;
    let mut targets = vec![(
        Target {
            name: "vpcep VPC resolver".to_owned(),
            addr: main.resolver.clone(),
            pid: main.pid,
            file: file.clone(),
        },
        records,
    )];
    if let Some((bin, n)) = &baseline {
        let (file, _) = query_file(work.path(), "baseline.txt", &n.records)?;
        let name = format!("vpcep VPC resolver, baseline {}", bin.display());
        let (addr, pid) = (n.resolver.clone(), n.pid);
        targets.push((
            Target {
                name,
                addr,
                pid,
                file,
            },
            &n.records,
        ));
    }
    targets.push((
        Target {
            name: "Unbound".to_owned(),
            addr: unbound_addr,
            pid: unbound_pid,
            file,
        },
        records,
    ));
    for (t, records) in &targets {
        check(t, o.port, &t.file, records.len(), missing)?;
        for (name, ip) in records.iter().step_by((records.len() / 3).max(1)) {
            let got = dig(&t.addr, o.port, name)?;
            if got != *ip {
                bail!("{} answers {name} with {got:?}, not {ip}", t.name);
            }
        }
    }
    let version = Command::new(&unbound)
        .arg("-V")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let version = version
        .lines()
        .find_map(|l| l.strip_prefix("Version "))
        .unwrap_or("?")
        .to_owned();

    let targets: Vec<Target> = targets.into_iter().map(|(t, _)| t).collect();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); targets.len()];
    for r in 0..o.repeats {
        for (i, t) in targets.iter().enumerate() {
            eprintln!("repeat {}/{}: {} …", r + 1, o.repeats, t.name);
            let m = measure(t, &o)?;
            eprintln!(
                "  {:.0} q/s, {:.1} µs CPU/query; at {:.0} q/s p50 {:.0} µs p99 {:.0} µs; lost {}",
                m.qps, m.cpu_us, m.lat_qps, m.p50_us, m.p99_us, m.lost
            );
            samples[i].push(m);
        }
    }
    let med = |i: usize, f: fn(&Sample) -> f64| median(samples[i].iter().map(f).collect());
    let ub = targets.len() - 1;
    println!("| server | queries/s (saturated) | server CPU µs/query | p50 µs at {} q/s | p99 µs at {} q/s | lost | queries/s vs Unbound | p99 vs Unbound (lower is better) |", o.rate, o.rate);
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (i, t) in targets.iter().enumerate() {
        let name = if i == ub {
            format!("Unbound {version} ({} thread(s))", o.unbound_threads)
        } else {
            t.name.clone()
        };
        println!(
            "| {name} | {:.0} | {:.1} | {:.0} | {:.0} | {} | {:.2} | {:.2} |",
            med(i, |m| m.qps),
            med(i, |m| m.cpu_us),
            med(i, |m| m.p50_us),
            med(i, |m| m.p99_us),
            samples[i].iter().map(|m| m.lost).sum::<u64>(),
            med(i, |m| m.qps) / med(ub, |m| m.qps),
            med(i, |m| m.p99_us) / med(ub, |m| m.p99_us),
        );
    }
    println!();
    println!("Every run (saturated q/s; p99 µs at {} q/s):", o.rate);
    for (i, t) in targets.iter().enumerate() {
        let runs: Vec<String> = samples[i]
            .iter()
            .map(|m| format!("{:.0} q/s, p99 {:.0} µs", m.qps, m.p99_us))
            .collect();
        println!("- {}: {}", t.name, runs.join("; "));
    }
    println!();
    println!(
        "{} names + {missing} NXDOMAIN names; medians of {} repeats; dnsperf -c {CLIENTS} -T 1 -q {IN_FLIGHT} for {} s per run (saturated), then -Q {} -v (latency); {} cores",
        records.len(),
        o.repeats,
        o.secs,
        o.rate,
        cores()
    );
    Ok(())
}
