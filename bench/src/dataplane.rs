//! `vpcep-bench dataplane` (root): the data paths side by side on one netns topology, in
//! one run — the direct path (no proxy; switched and routed), the kernel path, the userspace path, and
//! HAProxy as the same TCP forwarder — with iperf3 (bulk) and wrk (short requests).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use vpcep::client::ApiClient;

use crate::cores;

pub(crate) use crate::admin;

pub(crate) struct Procs(pub(crate) Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master stops its workers only when asked politely.
        for c in &mut self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(300));
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn in_ns(ns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!("{args:?} in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub(crate) fn spawn_in(ns: &str, args: &[&str]) -> Result<Child> {
    Ok(Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Starts HAProxy in `ns` and waits until it listens: the process (stopped when it
/// drops) and its pid, the process that holds the sessions.
fn start_haproxy(ns: &str, conf: &Path) -> Result<(Procs, u32)> {
    let child = spawn_in(ns, &["haproxy", "-f", &conf.display().to_string(), "-db"])?;
    // `ip netns exec` execs the program, and `-db` keeps HAProxy in the foreground
    // without a master process: the child's pid is the one that accepts.
    let pid = child.id();
    let proc = Procs(vec![child]);
    for _ in 0..100 {
        if listening(ns, 80)? {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"))?;
            if comm.trim() != "haproxy" {
                bail!("pid {pid} is {comm:?}, not HAProxy");
            }
            return Ok((proc, pid));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("HAProxy did not listen in {ns}")
}

/// Whether something listens on `port` in `ns`.
fn listening(ns: &str, port: u16) -> Result<bool> {
    let filter = format!("( sport = :{port} )");
    Ok(!in_ns(ns, &["ss", "-Hltn", &filter])?.trim().is_empty())
}

pub(crate) fn serve(
    bin: &Path,
    dir: &Path,
    prefix: &str,
    forwarding: &str,
) -> Result<(Child, String)> {
    serve_with(bin, dir, prefix, forwarding, &[])
}

/// `vpcep serve` on the netns substrate, with `more` arguments.
pub(crate) fn serve_with(
    bin: &Path,
    dir: &Path,
    prefix: &str,
    forwarding: &str,
    more: &[&str],
) -> Result<(Child, String)> {
    let mut args = vec![
        "--substrate",
        "netns",
        "--netns-prefix",
        prefix,
        "--forwarding",
        forwarding,
    ];
    args.extend_from_slice(more);
    spawn_serve(bin, dir, &args)
}

/// Starts `vpcep serve` on a free API port with `args`: the child and the API's URL.
/// Metrics are on a port of their own ([`metrics`] finds it); the per-key rate limit is
/// off, since the benches measure what the server can do.
pub(crate) fn spawn_serve(bin: &Path, dir: &Path, args: &[&str]) -> Result<(Child, String)> {
    spawn_serve_at(bin, dir, "127.0.0.1:0", args)
}

/// `vpcep serve` listening on `listen` (a fixed port, to be restarted on it).
pub(crate) fn spawn_serve_at(
    bin: &Path,
    dir: &Path,
    listen: &str,
    args: &[&str],
) -> Result<(Child, String)> {
    let mut child = Command::new(bin)
        .args(["serve", "--listen", listen])
        .args(["--metrics-listen", "127.0.0.1:0", "--api-rate-limit", "0"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        // The server logs what the bench is asked to (warnings by default).
        .env(
            "VPCEP_LOG",
            std::env::var("VPCEP_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let url = read_urls(&mut child)?;
    Ok((child, url))
}

/// The metrics URL of each server started here, by API URL.
static METRICS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

/// Reads the API's URL (first line) and the metrics URL (second line) a server prints.
pub(crate) fn read_urls(child: &mut Child) -> Result<String> {
    let mut out = BufReader::new(child.stdout.take().context("stdout")?);
    let (mut line, mut second) = (String::new(), String::new());
    out.read_line(&mut line)?;
    out.read_line(&mut second)?;
    let last = |l: &str| l.trim().rsplit(' ').next().map(str::to_owned);
    let api = last(&line).context("listen line")?;
    let metrics = last(&second).context("metrics line")?;
    anyhow::ensure!(
        second.starts_with("metrics on "),
        "unexpected second line {second:?}"
    );
    METRICS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((api.clone(), metrics));
    Ok(api)
}

/// The Prometheus text of the server whose API is at `url`.
pub(crate) async fn metrics(url: &str) -> Result<String> {
    let m = METRICS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(api, _)| api == url)
        .map(|(_, m)| m.clone())
        .context("no metrics URL for this server")?;
    Ok(reqwest::get(m).await?.text().await?)
}

pub(crate) fn client(url: &str, acct: &Value) -> ApiClient {
    let s = |k: &str| acct[k].as_str().unwrap_or_default().to_owned();
    ApiClient::with_keys(url, &s("access_key"), &s("secret_key"), &s("project_id"))
}

pub(crate) async fn network(c: &ApiClient) -> Result<(String, String)> {
    network_of(c, "10.1.0.0/16", "10.1.0.0/24").await
}

/// A VPC `cidr` with one subnet `subnet`: (VPC id, subnet id).
pub(crate) async fn network_of(
    c: &ApiClient,
    cidr: &str,
    subnet: &str,
) -> Result<(String, String)> {
    let vpc = c
        .call(
            "POST",
            "/v1/{p}/vpcs",
            Some(&json!({"vpc": {"name": "bench", "cidr": cidr}})),
        )
        .await?;
    let vpc = vpc["vpc"]["id"].as_str().unwrap_or_default().to_owned();
    let sub = subnet_in(c, &vpc, subnet).await?;
    Ok((vpc, sub))
}

/// A subnet `cidr` in VPC `vpc`: its id.
pub(crate) async fn subnet_in(c: &ApiClient, vpc: &str, cidr: &str) -> Result<String> {
    let sub = c
        .call(
            "POST",
            "/v1/{p}/subnets",
            Some(&json!({"subnet": {"name": "s", "cidr": cidr, "vpc_id": vpc}})),
        )
        .await?;
    Ok(sub["subnet"]["id"].as_str().unwrap_or_default().to_owned())
}

pub(crate) async fn host(
    c: &ApiClient,
    vpc: &str,
    sub: &str,
    ip: &str,
    name: &str,
) -> Result<Value> {
    Ok(c.call(
        "POST",
        "/v1/{p}/hosts",
        Some(&json!({"host": {"vpc_id": vpc, "subnet_id": sub, "ip": ip, "name": name}})),
    )
    .await?["host"]
        .clone())
}

/// Namespaces under a fresh prefix, all removed when the guard drops.
pub(crate) struct Scratch(vpcep_dataplane::Netns);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.0.remove_all();
    }
}

pub(crate) fn scratch_netns(kind: &str) -> Result<(String, Scratch)> {
    let prefix = format!("{kind}{}", std::process::id() % 10000);
    let netns =
        vpcep_dataplane::Netns::new(&prefix).map_err(|e| anyhow::anyhow!("needs root: {e}"))?;
    Ok((prefix, Scratch(netns)))
}

/// Creates a service from `body`, waits until it is available and whitelists the
/// consumer's account: the service id.
pub(crate) async fn publish(provider: &ApiClient, body: Value, consumer: &Value) -> Result<String> {
    let svc = provider
        .call("POST", "/v1/{p}/vpc-endpoint-services", Some(&body))
        .await?;
    let sid = svc["id"].as_str().unwrap_or_default().to_owned();
    wait_status(
        provider,
        &format!("/v1/{{p}}/vpc-endpoint-services/{sid}"),
        "available",
    )
    .await?;
    let domain = consumer["domain_id"].as_str().unwrap_or_default();
    provider
        .call(
            "POST",
            &format!("/v1/{{p}}/vpc-endpoint-services/{sid}/permissions/action"),
            Some(&json!({"permissions": [format!("iam:domain::{domain}")], "action": "add"})),
        )
        .await?;
    Ok(sid)
}

/// An endpoint of `sid` in the consumer's subnet, accepted: (id, node IP).
pub(crate) async fn connect(
    c: &ApiClient,
    sid: &str,
    vpc: &str,
    sub: &str,
) -> Result<(String, String)> {
    let ep = c
        .call(
            "POST",
            "/v1/{p}/vpc-endpoints",
            Some(&json!({"endpoint_service_id": sid, "vpc_id": vpc, "subnet_id": sub})),
        )
        .await?;
    let id = ep["id"].as_str().unwrap_or_default().to_owned();
    let ep = wait_status(c, &format!("/v1/{{p}}/vpc-endpoints/{id}"), "accepted").await?;
    Ok((id, ep["ip"].as_str().unwrap_or_default().to_owned()))
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
pub(crate) fn iperf(ns: &str, target: &str, secs: u64, streams: u32) -> Result<f64> {
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

pub(crate) struct Wrk {
    pub(crate) rps: f64,
    p50_ms: f64,
    pub(crate) p99_ms: f64,
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
pub(crate) fn wrk(ns: &str, url: &str, secs: u64, close: bool) -> Result<Wrk> {
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

pub(crate) fn meminfo_kb(key: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

pub(crate) fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Established TCP sockets in `ns` whose local port is `port`.
fn established(ns: &str, port: u16) -> Result<usize> {
    let filter = format!("( sport = :{port} )");
    let out = in_ns(ns, &["ss", "-Htn", "state", "established", &filter])?;
    Ok(out.lines().count())
}

/// Holds `n` idle sessions from `ns` to `target:80`: kernel slab growth and the
/// forwarder's RSS growth, in bytes per session. Both are read once the backend (in
/// `backend_ns`) holds every session, i.e. once the forwarder has accepted each and
/// connected it through; a client's `connect` returns as soon as the forwarder's kernel
/// has answered, before the forwarder itself has seen the connection.
fn idle(
    ns: &str,
    backend_ns: &str,
    target: &str,
    n: u32,
    forwarder: Option<u32>,
) -> Result<(f64, f64)> {
    use std::io::Read;
    std::thread::sleep(Duration::from_secs(2));
    let before = established(backend_ns, 80)?;
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
    let mut through = 0;
    for _ in 0..100 {
        through = established(backend_ns, 80)?.saturating_sub(before);
        if through >= n as usize {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if through < n as usize {
        eprintln!("only {through} of {n} idle sessions reached the backend through {target}");
    }
    std::thread::sleep(Duration::from_secs(1));
    let (slab1, rss1) = (meminfo_kb("Slab:"), forwarder.map(rss_kb).unwrap_or(0));
    drop(holder.stdin.take());
    let _ = holder.wait();
    let per = |a: u64, b: u64| (b.saturating_sub(a) as f64) * 1024.0 / n as f64;
    Ok((per(slab0, slab1), per(rss0, rss1)))
}

/// One measurement of one path; `None` where the path cannot take the test (iperf3 and
/// the idle holder do not speak PROXY v2).
#[derive(Default)]
struct Row {
    one: Option<f64>,
    eight: Option<f64>,
    new_conn: Option<Wrk>,
    keep: Option<Wrk>,
    /// Per idle session: kernel slab growth, forwarder RSS growth (bytes).
    idle: Option<(f64, f64)>,
}

/// Idle sessions held per path (the userspace gateway needs two descriptors per session,
/// and a process here may hold 20,000).
const IDLE_SESSIONS: u32 = 5000;

/// A path under test: where the client runs and what it talks to.
struct Path_ {
    name: &'static str,
    ns: String,
    /// The backend host's namespace.
    backend_ns: String,
    addr: String,
    http_port: u16,
    /// A plain TCP path (iperf3 and idle sessions work through it).
    plain: bool,
    forwarder: Option<u32>,
}

fn measure(p: &Path_, secs: u64) -> Result<Row> {
    eprintln!("measuring {} …", p.name);
    let url = format!("http://{}:{}/", p.addr, p.http_port);
    let row = Row {
        one: p
            .plain
            .then(|| iperf(&p.ns, &p.addr, secs, 1))
            .transpose()?,
        eight: p
            .plain
            .then(|| iperf(&p.ns, &p.addr, secs, 8))
            .transpose()?,
        new_conn: Some(wrk(&p.ns, &url, secs, true)?),
        keep: Some(wrk(&p.ns, &url, secs, false)?),
        idle: p
            .plain
            .then(|| idle(&p.ns, &p.backend_ns, &p.addr, IDLE_SESSIONS, p.forwarder))
            .transpose()?,
    };
    // Each round's figures, so that a median can be read against its spread.
    let w = |w: &Option<Wrk>| {
        w.as_ref()
            .map(|w| format!("{:.0}/s p99 {:.2} ms", w.rps, w.p99_ms))
            .unwrap_or_default()
    };
    eprintln!(
        "  Gbit/s {} / {}; new conn {}; keep-alive {}; idle slab / RSS B {}",
        cell(row.one, 2),
        cell(row.eight, 2),
        w(&row.new_conn),
        w(&row.keep),
        row.idle
            .map(|(a, b)| format!("{a:.0} / {b:.0}"))
            .unwrap_or_else(|| "-".into())
    );
    Ok(row)
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// The medians of every figure of a path over the repeats.
struct Med {
    name: &'static str,
    one: Option<f64>,
    eight: Option<f64>,
    conn: Option<f64>,
    conn_p50: Option<f64>,
    conn_p99: Option<f64>,
    keep: Option<f64>,
    keep_p50: Option<f64>,
    keep_p99: Option<f64>,
    slab: Option<f64>,
    rss: Option<f64>,
}

fn medians(name: &'static str, runs: &[Row]) -> Med {
    let m = |f: &dyn Fn(&Row) -> Option<f64>| median(runs.iter().filter_map(f).collect());
    Med {
        name,
        one: m(&|r| r.one),
        eight: m(&|r| r.eight),
        conn: m(&|r| r.new_conn.as_ref().map(|w| w.rps)),
        conn_p50: m(&|r| r.new_conn.as_ref().map(|w| w.p50_ms)),
        conn_p99: m(&|r| r.new_conn.as_ref().map(|w| w.p99_ms)),
        keep: m(&|r| r.keep.as_ref().map(|w| w.rps)),
        keep_p50: m(&|r| r.keep.as_ref().map(|w| w.p50_ms)),
        keep_p99: m(&|r| r.keep.as_ref().map(|w| w.p99_ms)),
        slab: m(&|r| r.idle.map(|i| i.0)),
        rss: m(&|r| r.idle.map(|i| i.1)),
    }
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "-".into())
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
        _ => "-".into(),
    }
}

pub(crate) async fn run(
    bin: &Path,
    secs: u64,
    repeats: usize,
    explore: Option<&str>,
) -> Result<()> {
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
    let (prefix, _clean) = scratch_netns("bn")?;
    let dir = tempfile::tempdir()?;
    let a = admin(bin, dir.path(), &["admin", "account", "create", "provider"])?;
    let b = admin(bin, dir.path(), &["admin", "account", "create", "consumer"])?;
    let mut procs = Procs(Vec::new());

    let (server, url) = serve(bin, dir.path(), &prefix, "userspace")?;
    procs.0.push(server);
    let (pa, pb) = (client(&url, &a), client(&url, &b));
    let (pvpc, psub) = network(&pa).await?;
    let backend = host(&pa, &pvpc, &psub, "10.1.0.10", "backend").await?;
    let direct = host(&pa, &pvpc, &psub, "10.1.0.20", "direct").await?;
    let hap = host(&pa, &pvpc, &psub, "10.1.0.30", "haproxy").await?;
    // The direct path the data-plane issue names is routed: a client in another subnet
    // of the provider VPC, whose packets the VPC router forwards (the same-subnet client
    // above is only switched by the subnet's bridge).
    let psub2 = subnet_in(&pa, &pvpc, "10.1.1.0/24").await?;
    let routed = host(&pa, &pvpc, &psub2, "10.1.1.20", "routed").await?;
    let (cvpc, csub) = network(&pb).await?;
    let cl = host(&pb, &cvpc, &csub, "10.1.0.20", "client").await?;
    let ns = |h: &Value| h["netns"].as_str().unwrap_or_default().to_owned();
    let (backend_ns, direct_ns, hap_ns, client_ns, routed_ns) =
        (ns(&backend), ns(&direct), ns(&hap), ns(&cl), ns(&routed));
    // Two services of the same backend: plain (iperf3 5201, nginx 80) and with PROXY v2
    // (nginx 81, `listen … proxy_protocol`), each with an endpoint of the consumer.
    let mut nodes = Vec::new();
    let mut eid = String::new();
    for (proxy, ports) in [
        (
            "close",
            json!([{"client_port": 5201, "server_port": 5201}, {"client_port": 80, "server_port": 80}]),
        ),
        (
            "proxy_open",
            json!([{"client_port": 81, "server_port": 81}]),
        ),
    ] {
        let body = json!({"vpc_id": pvpc, "port_id": backend["port_id"], "server_type": "VM", "approval_enabled": false, "connection_limit": 20000, "tcp_proxy": proxy, "ports": ports});
        let sid = publish(&pa, body, &b).await?;
        let (id, ip) = connect(&pb, &sid, &cvpc, &csub).await?;
        nodes.push(ip);
        if proxy == "close" {
            eid = id;
        }
    }
    let (node, node_pp) = (nodes[0].clone(), nodes[1].clone());

    // wrk's short connections leave TIME_WAIT at the client when it closes first; over
    // rounds they would exhaust the default 28,000 ports of the load generator itself.
    for ns in [&direct_ns, &client_ns, &routed_ns] {
        crate::sessions::sysctl_in(Some(ns), "net.ipv4.ip_local_port_range", "1024 65535")?;
    }

    // Backends: iperf3 and nginx in the backend host; HAProxy in a host of the same VPC.
    let work = tempfile::tempdir()?;
    let nginx_conf = work.path().join("nginx.conf");
    std::fs::write(&nginx_conf, format!("worker_processes 1; daemon off; pid {0}/nginx.pid; error_log stderr;\nevents {{ worker_connections 20000; }}\nhttp {{ access_log off; client_body_temp_path {0}; proxy_temp_path {0}; fastcgi_temp_path {0}; uwsgi_temp_path {0}; scgi_temp_path {0};\n  server {{ listen 10.1.0.10:80 backlog=4096; listen 10.1.0.10:81 backlog=4096 proxy_protocol; keepalive_requests 1000000; location / {{ return 200 \"ok\\n\"; }} }} }}\n", work.path().display()))?;
    let hap_conf = work.path().join("haproxy.cfg");
    std::fs::write(&hap_conf, "global\n  maxconn 9000\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\nlisten bulk\n  bind 10.1.0.30:5201\n  server b 10.1.0.10:5201\nlisten web\n  bind 10.1.0.30:80\n  server b 10.1.0.10:80\nlisten web_pp\n  bind 10.1.0.30:81\n  server b 10.1.0.10:81 send-proxy-v2\n")?;
    procs
        .0
        .push(spawn_in(&backend_ns, &["iperf3", "-s", "-p", "5201"])?);
    procs.0.push(spawn_in(
        &backend_ns,
        &["nginx", "-c", &nginx_conf.display().to_string()],
    )?);
    let (mut haproxy, mut hap_pid) = start_haproxy(&hap_ns, &hap_conf)?;

    if let Some(forwarding) = explore {
        let mut server = procs.0.remove(0);
        let _ = server.kill();
        let _ = server.wait();
        let (server, url) = serve(bin, dir.path(), &prefix, forwarding)?;
        println!(
            "vpcep pid {} at {url}, forwarding {forwarding}",
            server.id()
        );
        procs.0.insert(0, server);
        let want = if forwarding == "userspace" {
            "userspace"
        } else {
            "kernel"
        };
        wait_path(&url, &eid, want).await?;
        println!("client ns {client_ns}: endpoint {node} (ports 5201, 80), proxy_open endpoint {node_pp} (81)");
        println!("direct ns {direct_ns}: backend 10.1.0.10 (5201, 80, 81 proxy_protocol), HAProxy 10.1.0.30 (5201, 80, 81 send-proxy-v2), pid {hap_pid}");
        println!("backend ns {backend_ns}, HAProxy ns {hap_ns}; close stdin to clean up");
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await??;
        return Ok(());
    }

    const NAMES: [&str; 7] = [
        "direct, same subnet (switched, no proxy)",
        "vpcep userspace path",
        "HAProxy 2.6 (mode tcp)",
        "vpcep kernel path",
        "vpcep userspace, proxy_open (PROXY v2)",
        "HAProxy 2.6, send-proxy-v2",
        "direct, routed (another subnet, no proxy)",
    ];
    let mut runs: Vec<Vec<Row>> = (0..NAMES.len()).map(|_| Vec::new()).collect();
    for round in 0..repeats {
        eprintln!("round {}/{repeats}", round + 1);
        // The userspace rows, then the same endpoint on the kernel path: the control
        // plane restarts with --forwarding auto; namespaces, hosts and programs stay.
        let mut server = procs.0.remove(0);
        let _ = server.kill();
        let _ = server.wait();
        let (server, url) = serve(bin, dir.path(), &prefix, "userspace")?;
        let vpcep_pid = server.id();
        procs.0.insert(0, server);
        wait_path(&url, &eid, "userspace").await?;
        // HAProxy starts afresh each round too: it keeps the memory of ended sessions in
        // its pools, so in a process that already held 5,000 sessions the next 5,000
        // grow it by almost nothing (see BENCHMARKS.md).
        drop(haproxy);
        (haproxy, hap_pid) = start_haproxy(&hap_ns, &hap_conf)?;
        let paths = [
            Path_ {
                name: NAMES[0],
                ns: direct_ns.clone(),
                backend_ns: backend_ns.clone(),
                addr: "10.1.0.10".into(),
                http_port: 80,
                plain: true,
                forwarder: None,
            },
            Path_ {
                name: NAMES[6],
                ns: routed_ns.clone(),
                backend_ns: backend_ns.clone(),
                addr: "10.1.0.10".into(),
                http_port: 80,
                plain: true,
                forwarder: None,
            },
            Path_ {
                name: NAMES[1],
                ns: client_ns.clone(),
                backend_ns: backend_ns.clone(),
                addr: node.clone(),
                http_port: 80,
                plain: true,
                forwarder: Some(vpcep_pid),
            },
            Path_ {
                name: NAMES[2],
                ns: direct_ns.clone(),
                backend_ns: backend_ns.clone(),
                addr: "10.1.0.30".into(),
                http_port: 80,
                plain: true,
                forwarder: Some(hap_pid),
            },
            Path_ {
                name: NAMES[4],
                ns: client_ns.clone(),
                backend_ns: backend_ns.clone(),
                addr: node_pp.clone(),
                http_port: 81,
                plain: false,
                forwarder: None,
            },
            Path_ {
                name: NAMES[5],
                ns: direct_ns.clone(),
                backend_ns: backend_ns.clone(),
                addr: "10.1.0.30".into(),
                http_port: 81,
                plain: false,
                forwarder: None,
            },
        ];
        for p in &paths {
            let i = NAMES.iter().position(|n| *n == p.name).unwrap_or(0);
            runs[i].push(measure(p, secs)?);
        }
        let mut server = procs.0.remove(0);
        let _ = server.kill();
        let _ = server.wait();
        let (server, url) = serve(bin, dir.path(), &prefix, "auto")?;
        procs.0.insert(0, server);
        wait_path(&url, &eid, "kernel").await?;
        // The userspace rows left the backend in TIME_WAIT towards the endpoint's SNAT
        // address, under the gateway's TCP timestamps; the kernel path reuses that
        // address with the clients' ports and timestamps, and a SYN that lands on such a
        // port is refused by PAWS (a transient of switching paths, not of either path).
        drain_time_wait(&backend_ns).await?;
        let kernel = Path_ {
            name: NAMES[3],
            ns: client_ns.clone(),
            backend_ns: backend_ns.clone(),
            addr: node.clone(),
            http_port: 80,
            plain: true,
            forwarder: None,
        };
        runs[3].push(measure(&kernel, secs)?);
    }
    let rows: Vec<Med> = NAMES
        .iter()
        .zip(&runs)
        .map(|(n, r)| medians(n, r))
        .collect();
    let (direct, hap, hap_pp, routed) = (&rows[0], &rows[2], &rows[5], &rows[6]);
    println!("Medians of {repeats} rounds ({secs} s per measurement; wrk -t2 -c32; iperf3 -P1/-P8; {} cores):", cores());
    println!();
    println!("| path | 1 stream Gbit/s | 8 streams Gbit/s | new conn/s | p50 ms | p99 ms | keep-alive req/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            cell(r.one, 2),
            cell(r.eight, 2),
            cell(r.conn, 0),
            cell(r.conn_p50, 2),
            cell(r.conn_p99, 2),
            cell(r.keep, 0),
            cell(r.keep_p50, 2),
            cell(r.keep_p99, 2)
        );
    }
    println!();
    println!("| idle sessions ({IDLE_SESSIONS} held) | kernel slab bytes/session | over direct, same subnet | forwarder RSS bytes/session |");
    println!("|---|---:|---:|---:|");
    for r in rows.iter().filter(|r| r.slab.is_some()) {
        println!(
            "| {} | {} | {} | {} |",
            r.name,
            cell(r.slab, 0),
            cell(r.slab.zip(direct.slab).map(|(a, b)| a - b), 0),
            cell(r.rss, 0)
        );
    }
    println!();
    println!("| ratio (of medians) | 1 stream | 8 streams | new conn/s | new-conn p99 (lower is better) | keep-alive req/s |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (r, base, what) in [
        (&rows[3], routed, "direct, routed"),
        (&rows[3], direct, "direct, switched"),
        (&rows[1], routed, "direct, routed"),
        (&rows[3], hap, "HAProxy"),
        (&rows[1], hap, "HAProxy"),
        (&rows[4], hap_pp, "HAProxy send-proxy-v2"),
    ] {
        println!(
            "| {} / {what} | {} | {} | {} | {} | {} |",
            r.name,
            ratio(r.one, base.one),
            ratio(r.eight, base.eight),
            ratio(r.conn, base.conn),
            ratio(r.conn_p99, base.conn_p99),
            ratio(r.keep, base.keep)
        );
    }
    Ok(())
}

/// Waits (at most the kernel's 60 s) until the backend host holds no TIME_WAIT
/// towards the endpoints' SNAT addresses.
async fn drain_time_wait(backend_ns: &str) -> Result<()> {
    for i in 0..70 {
        let out = in_ns(
            backend_ns,
            &[
                "ss",
                "-Htan",
                "state",
                "time-wait",
                "dst",
                "198.19.128.0/20",
            ],
        )?;
        let n = out.lines().count();
        if n == 0 {
            return Ok(());
        }
        if i % 10 == 0 {
            eprintln!("waiting for {n} TIME_WAIT sockets of the backend to expire …");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Ok(())
}

/// Waits until the endpoint's metrics show it on `path` (`kernel` or `userspace`).
async fn wait_path(url: &str, eid: &str, path: &str) -> Result<()> {
    let want = format!("endpoint=\"{eid}\",path=\"{path}\"");
    for _ in 0..100 {
        let metrics = metrics(url).await?;
        if metrics.contains(&want) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("the endpoint did not take the {path} path (are nft and conntrack installed?)")
}
