//! `vpcep-bench dataplane` (root): the data paths side by side on one netns topology, in
//! one run — the direct routed path (no proxy), the kernel path, the userspace path, and
//! HAProxy as the same TCP forwarder — with iperf3 (bulk) and wrk (short requests).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use vpcep::client::ApiClient;

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("{args:?} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn spawn_in(ns: &str, args: &[&str]) -> Result<Child> {
    Ok(Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn admin(bin: &Path, dir: &Path, args: &[&str]) -> Result<Value> {
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

fn serve(bin: &Path, dir: &Path, prefix: &str, forwarding: &str) -> Result<(Child, String)> {
    spawn_serve(
        bin,
        dir,
        &[
            "--substrate",
            "netns",
            "--netns-prefix",
            prefix,
            "--forwarding",
            forwarding,
        ],
    )
}

/// Starts `vpcep serve` on a free API port with `args`: the child and the API's URL.
pub(crate) fn spawn_serve(bin: &Path, dir: &Path, args: &[&str]) -> Result<(Child, String)> {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("VPCEP_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    Ok((
        child,
        line.trim()
            .rsplit(' ')
            .next()
            .context("listen line")?
            .to_owned(),
    ))
}

pub(crate) fn client(url: &str, acct: &Value) -> ApiClient {
    let s = |k: &str| acct[k].as_str().unwrap_or_default().to_owned();
    ApiClient::with_keys(url, &s("access_key"), &s("secret_key"), &s("project_id"))
}

async fn network(c: &ApiClient) -> Result<(String, String)> {
    let vpc = c
        .call(
            "POST",
            "/v1/{p}/vpcs",
            Some(&json!({"vpc": {"name": "bench", "cidr": "10.1.0.0/16"}})),
        )
        .await?;
    let vpc = vpc["vpc"]["id"].as_str().unwrap_or_default().to_owned();
    let sub = c
        .call(
            "POST",
            "/v1/{p}/subnets",
            Some(&json!({"subnet": {"name": "s", "cidr": "10.1.0.0/24", "vpc_id": vpc}})),
        )
        .await?;
    Ok((
        vpc,
        sub["subnet"]["id"].as_str().unwrap_or_default().to_owned(),
    ))
}

async fn host(c: &ApiClient, vpc: &str, sub: &str, ip: &str, name: &str) -> Result<Value> {
    Ok(c.call(
        "POST",
        "/v1/{p}/hosts",
        Some(&json!({"host": {"vpc_id": vpc, "subnet_id": sub, "ip": ip, "name": name}})),
    )
    .await?["host"]
        .clone())
}

pub(crate) async fn wait_status(c: &ApiClient, path: &str, want: &str) -> Result<Value> {
    for _ in 0..200 {
        let v = c.call("GET", path, None).await?;
        if v["status"] == want {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("{path} never became {want}")
}

/// Bulk throughput in Gbit/s with `streams` parallel streams.
fn iperf(ns: &str, target: &str, secs: u64, streams: u32) -> Result<f64> {
    let out = in_ns(
        ns,
        &[
            "iperf3",
            "-c",
            target,
            "-p",
            "5201",
            "-t",
            &secs.to_string(),
            "-P",
            &streams.to_string(),
            "-J",
        ],
    )?;
    let v: Value = serde_json::from_str(&out)?;
    Ok(v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9)
}

struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn ms(s: &str) -> f64 {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(s.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    match unit {
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        _ => n,
    }
}

/// Short requests: `close` opens a new connection for every request.
fn wrk(ns: &str, url: &str, secs: u64, close: bool) -> Result<Wrk> {
    let d = format!("{secs}s");
    let mut args = vec!["wrk", "-t", "2", "-c", "32", "-d", d.as_str(), "--latency"];
    if close {
        args.extend(["-H", "Connection: close"]);
    }
    args.push(url);
    let out = in_ns(ns, &args)?;
    let find = |key: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(key))
            .map(|l| l.trim_start()[key.len()..].trim().to_owned())
            .unwrap_or_default()
    };
    Ok(Wrk {
        rps: find("Requests/sec:").parse().unwrap_or(0.0),
        p50_ms: ms(&find("50%")),
        p99_ms: ms(&find("99%")),
    })
}

const HOLD: &str = r#"
import socket, sys
host, n = sys.argv[1], int(sys.argv[2])
held = [socket.create_connection((host, 80), timeout=5) for _ in range(n)]
print("ready", flush=True)
sys.stdin.read()
"#;

fn meminfo_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Holds `n` idle sessions from `ns` to `target:80`: kernel slab growth and the
/// forwarder's RSS growth, in bytes per session.
fn idle(ns: &str, target: &str, n: u32, forwarder: Option<u32>) -> Result<(f64, f64)> {
    use std::io::Read;
    std::thread::sleep(Duration::from_secs(2));
    let (slab0, rss0) = (meminfo_kb("Slab:"), forwarder.map(rss_kb).unwrap_or(0));
    let mut holder = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "python3",
            "-c",
            HOLD,
            target,
            &n.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut ready = [0u8; 5];
    holder
        .stdout
        .as_mut()
        .context("holder stdout")?
        .read_exact(&mut ready)?;
    std::thread::sleep(Duration::from_secs(1));
    let (slab1, rss1) = (meminfo_kb("Slab:"), forwarder.map(rss_kb).unwrap_or(0));
    drop(holder.stdin.take());
    let _ = holder.wait();
    let per = |a: u64, b: u64| (b.saturating_sub(a) as f64) * 1024.0 / n as f64;
    Ok((per(slab0, slab1), per(rss0, rss1)))
}

struct Row {
    name: String,
    one: f64,
    eight: f64,
    new_conn: Wrk,
    keep: Wrk,
    /// Per idle session: kernel slab growth, forwarder RSS growth (bytes).
    idle: (f64, f64),
}

/// Idle sessions held per path (the userspace gateway needs two descriptors per session,
/// and a process here may hold 20,000).
const IDLE_SESSIONS: u32 = 5000;

fn measure(
    name: &str,
    ns: &str,
    addr: &str,
    http_port: u16,
    secs: u64,
    forwarder: Option<u32>,
) -> Result<Row> {
    eprintln!("measuring {name} …");
    Ok(Row {
        name: name.to_owned(),
        one: iperf(ns, addr, secs, 1)?,
        eight: iperf(ns, addr, secs, 8)?,
        new_conn: wrk(ns, &format!("http://{addr}:{http_port}/"), secs, true)?,
        keep: wrk(ns, &format!("http://{addr}:{http_port}/"), secs, false)?,
        idle: idle(ns, addr, IDLE_SESSIONS, forwarder)?,
    })
}

pub(crate) async fn run(bin: &Path, secs: u64) -> Result<()> {
    for tool in ["iperf3", "wrk", "nginx", "haproxy", "nft", "conntrack"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()?
            .stdout
            .is_empty()
        {
            bail!("{tool} is missing (apt-get install iperf3 wrk nginx-light haproxy nftables conntrack)");
        }
    }
    let prefix = format!("bn{}", std::process::id() % 10000);
    let cleanup =
        vpcep_dataplane::Netns::new(&prefix).map_err(|e| anyhow::anyhow!("needs root: {e}"))?;
    struct Clean(vpcep_dataplane::Netns);
    impl Drop for Clean {
        fn drop(&mut self) {
            let _ = self.0.remove_all();
        }
    }
    let _clean = Clean(cleanup);
    let dir = tempfile::tempdir()?;
    let a = admin(bin, dir.path(), &["admin", "account", "create", "provider"])?;
    let b = admin(bin, dir.path(), &["admin", "account", "create", "consumer"])?;
    let mut procs = Procs(Vec::new());

    let (server, url) = serve(bin, dir.path(), &prefix, "userspace")?;
    let vpcep_pid = server.id();
    procs.0.push(server);
    let (pa, pb) = (client(&url, &a), client(&url, &b));
    let (pvpc, psub) = network(&pa).await?;
    let backend = host(&pa, &pvpc, &psub, "10.1.0.10", "backend").await?;
    let direct = host(&pa, &pvpc, &psub, "10.1.0.20", "direct").await?;
    let hap = host(&pa, &pvpc, &psub, "10.1.0.30", "haproxy").await?;
    let (cvpc, csub) = network(&pb).await?;
    let cl = host(&pb, &cvpc, &csub, "10.1.0.20", "client").await?;
    let ns = |h: &Value| h["netns"].as_str().unwrap_or_default().to_owned();
    let (backend_ns, direct_ns, hap_ns, client_ns) = (ns(&backend), ns(&direct), ns(&hap), ns(&cl));
    let svc = pa
        .call("POST", "/v1/{p}/vpc-endpoint-services", Some(&json!({"vpc_id": pvpc, "port_id": backend["port_id"], "server_type": "VM", "approval_enabled": false, "connection_limit": 20000,
            "ports": [{"client_port": 5201, "server_port": 5201}, {"client_port": 80, "server_port": 80}]})))
        .await?;
    let sid = svc["id"].as_str().unwrap_or_default().to_owned();
    wait_status(
        &pa,
        &format!("/v1/{{p}}/vpc-endpoint-services/{sid}"),
        "available",
    )
    .await?;
    let domain = b["domain_id"].as_str().unwrap_or_default();
    pa.call(
        "POST",
        &format!("/v1/{{p}}/vpc-endpoint-services/{sid}/permissions/action"),
        Some(&json!({"permissions": [format!("iam:domain::{domain}")], "action": "add"})),
    )
    .await?;
    let ep = pb
        .call(
            "POST",
            "/v1/{p}/vpc-endpoints",
            Some(&json!({"endpoint_service_id": sid, "vpc_id": cvpc, "subnet_id": csub})),
        )
        .await?;
    let eid = ep["id"].as_str().unwrap_or_default().to_owned();
    let ep = wait_status(&pb, &format!("/v1/{{p}}/vpc-endpoints/{eid}"), "accepted").await?;
    let node = ep["ip"].as_str().unwrap_or_default().to_owned();

    // Backends: iperf3 and nginx in the backend host; HAProxy in a host of the same VPC.
    let work = tempfile::tempdir()?;
    let nginx_conf = work.path().join("nginx.conf");
    std::fs::write(&nginx_conf, format!("worker_processes 1; daemon off; pid {0}/nginx.pid; error_log stderr;\nevents {{ worker_connections 20000; }}\nhttp {{ access_log off; client_body_temp_path {0}; proxy_temp_path {0}; fastcgi_temp_path {0}; uwsgi_temp_path {0}; scgi_temp_path {0};\n  server {{ listen 10.1.0.10:80 backlog=4096; keepalive_requests 1000000; location / {{ return 200 \"ok\\n\"; }} }} }}\n", work.path().display()))?;
    let hap_conf = work.path().join("haproxy.cfg");
    std::fs::write(&hap_conf, "global\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nlisten bulk\n  bind 10.1.0.30:5201\n  server b 10.1.0.10:5201\nlisten web\n  bind 10.1.0.30:80\n  server b 10.1.0.10:80\n")?;
    procs
        .0
        .push(spawn_in(&backend_ns, &["iperf3", "-s", "-p", "5201"])?);
    procs.0.push(spawn_in(
        &backend_ns,
        &["nginx", "-c", &nginx_conf.display().to_string()],
    )?);
    let haproxy = spawn_in(
        &hap_ns,
        &["haproxy", "-f", &hap_conf.display().to_string(), "-db"],
    )?;
    // `ip netns exec` execs the program: the child's pid is HAProxy's.
    let hap_pid = haproxy.id();
    procs.0.push(haproxy);
    tokio::time::sleep(Duration::from_millis(700)).await;

    let mut rows = vec![measure(
        "direct (routed, no proxy)",
        &direct_ns,
        "10.1.0.10",
        80,
        secs,
        None,
    )?];
    rows.push(measure(
        "vpcep userspace path",
        &client_ns,
        &node,
        80,
        secs,
        Some(vpcep_pid),
    )?);
    rows.push(measure(
        "HAProxy 2.6 (mode tcp)",
        &direct_ns,
        "10.1.0.30",
        80,
        secs,
        Some(hap_pid),
    )?);
    // The same endpoint on the kernel path: restart the control plane with
    // --forwarding auto; the namespaces, hosts and programs stay.
    let mut server = procs.0.remove(0);
    let _ = server.kill();
    let _ = server.wait();
    let (server, url) = serve(bin, dir.path(), &prefix, "auto")?;
    procs.0.push(server);
    let mut metrics = String::new();
    for _ in 0..100 {
        metrics = reqwest::get(format!("{url}/metrics")).await?.text().await?;
        if metrics.contains(&format!("endpoint=\"{eid}\",path=\"kernel\"")) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !metrics.contains(&format!("endpoint=\"{eid}\",path=\"kernel\"")) {
        bail!("the endpoint did not take the kernel path (are nft and conntrack installed?)");
    }
    rows.push(measure(
        "vpcep kernel path",
        &client_ns,
        &node,
        80,
        secs,
        None,
    )?);

    let (direct, hap) = (&rows[0], &rows[2]);
    println!("| path | 1 stream Gbit/s | 8 streams Gbit/s | new conn/s | p50 ms | p99 ms | keep-alive req/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} |",
            r.name,
            r.one,
            r.eight,
            r.new_conn.rps,
            r.new_conn.p50_ms,
            r.new_conn.p99_ms,
            r.keep.rps,
            r.keep.p50_ms,
            r.keep.p99_ms
        );
    }
    println!();
    println!("| idle sessions ({IDLE_SESSIONS} held) | kernel slab bytes/session | over direct | forwarder RSS bytes/session |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.0} |",
            r.name,
            r.idle.0,
            r.idle.0 - direct.idle.0,
            r.idle.1
        );
    }
    println!();
    println!("| ratio | 1 stream | 8 streams | new conn/s | new-conn p99 (lower is better) |");
    println!("|---|---:|---:|---:|---:|");
    for r in &rows[1..] {
        if r.name.starts_with("HAProxy") {
            continue;
        }
        println!(
            "| {} / direct | {:.2} | {:.2} | {:.2} | |",
            r.name,
            r.one / direct.one,
            r.eight / direct.eight,
            r.new_conn.rps / direct.new_conn.rps
        );
        println!(
            "| {} / HAProxy | {:.2} | {:.2} | {:.2} | {:.2} |",
            r.name,
            r.one / hap.one,
            r.eight / hap.eight,
            r.new_conn.rps / hap.new_conn.rps,
            r.new_conn.p99_ms / hap.new_conn.p99_ms
        );
    }
    println!();
    println!(
        "{secs} s per measurement; wrk -t2 -c32; iperf3 -P1/-P8; {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    Ok(())
}
