//! `vpcep-bench machines` (root): a deployment across machines on one box
//! (`vpcep::testbed`). Throughput and new connections per second through an endpoint
//! whose client and backend are on two compute machines (VXLAN), against the same with one
//! machine that is everything; then failovers of a gateway pair, each the active
//! machine powered off (SIGKILL of all it runs, its link down) and brought back as
//! standby: the time until a new connection through the endpoint works, and the
//! sessions lost, on the kernel path and on the userspace path; then rounds in which the
//! master stays down and a spare takes its place.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use vpcep::client::ApiClient;
use vpcep::testbed::{Testbed, ECHO};

use crate::dataplane::{client, connect, iperf, network_of, wrk};

#[derive(clap::Args)]
pub(crate) struct Opts {
    /// Seconds per throughput and connection-rate measurement.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Failovers of the gateway pair, on each path.
    #[arg(long, default_value_t = 20)]
    failovers: usize,
    /// Sessions held through each failover.
    #[arg(long, default_value_t = 50)]
    sessions: usize,
    /// Rounds in which the master dies and stays down, and a spare takes its place.
    #[arg(long, default_value_t = 10)]
    rehomes: usize,
}

/// Holds N sessions; on `check` sends a byte on each and prints how many echoed it
/// within 3 s; on `reopen` replaces the dead ones.
const HOLDER: &str = r#"
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def open_one():
    try:
        return socket.create_connection((host, port), timeout=3)
    except Exception:
        return None
held = [open_one() for _ in range(n)]
for line in sys.stdin:
    cmd = line.strip()
    if cmd == "check":
        alive = 0
        for i, s in enumerate(held):
            if s is None: continue
            try:
                s.settimeout(3); s.sendall(b"x")
                if s.recv(1) == b"x": alive += 1
                else: held[i] = None
            except Exception:
                held[i] = None
        print(alive, flush=True)
    elif cmd == "reopen":
        held = [s if s is not None else open_one() for s in held]
        print(sum(1 for s in held if s is not None), flush=True)
"#;

/// Seconds until a new HTTP request through `host:80` is answered (tries every 20 ms,
/// each given 200 ms).
const PROBE: &str = r#"
import socket, sys, time
host, t0 = sys.argv[1], time.monotonic()
while time.monotonic() - t0 < 30:
    try:
        s = socket.create_connection((host, 80), timeout=0.2); s.settimeout(0.5)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        if s.recv(64): print(time.monotonic() - t0); sys.exit(0)
    except Exception:
        time.sleep(0.02)
print(-1)
"#;

struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    fn start(ns: &str, host: &str, n: usize) -> Result<Holder> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", HOLDER, host, "9000"])
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take().context("holder stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("holder stdout")?);
        Ok(Holder {
            child,
            stdin,
            stdout,
        })
    }

    fn ask(&mut self, cmd: &str) -> Result<usize> {
        writeln!(self.stdin, "{cmd}")?;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        Ok(line.trim().parse()?)
    }
}

impl Holder {
    /// Re-opens the sessions that ended, and waits until the machine that will take over
    /// tracks them all (its conntrackd was sent them): how many are open.
    fn reopen_all(&mut self, t: &Testbed, vpc: &str) -> Result<usize> {
        let open = self.ask("reopen")?;
        let t0 = Instant::now();
        let standby = ["g1", "g2", "g3"]
            .into_iter()
            .find(|g| t.ha_state(g, vpc) == "standby")
            .context("no standby")?;
        while tracked(t, standby, vpc) < open && t0.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(open)
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One layout ready to measure: the testbed, the client's namespace, the endpoint's
/// address and the consumer VPC.
struct Layout {
    testbed: Testbed,
    client_ns: String,
    endpoint: String,
    vpc: String,
}

/// `machines` on a testbed named `tag`; the backend on `backend_on`, the client on
/// `client_on` (`None`: no placement), an endpoint of ports 5201, 80 and 9000.
async fn layout(
    bin: &Path,
    tag: &str,
    machines: &[(&str, &str)],
    (node_args, serve_args): (&[&str], &[&str]),
    placed: Option<(&str, &str)>,
) -> Result<Layout> {
    let mut t = Testbed::start(bin, tag, machines, node_args, serve_args).await?;
    let acct = t.admin(&["account", "create", "bench"])?;
    let c = client(&t.base, &acct);
    let (pvpc, psub) = network_of(&c, "10.1.0.0/16", "10.1.0.0/24").await?;
    let backend = host_on(&c, &pvpc, &psub, "10.1.0.10", placed.map(|p| p.0)).await?;
    let (cvpc, csub) = network_of(&c, "10.1.0.0/16", "10.1.0.0/24").await?;
    let cl = host_on(&c, &cvpc, &csub, "10.1.0.20", placed.map(|p| p.1)).await?;
    let (backend_ns, client_ns) = (t.host_ns(&backend), t.host_ns(&cl));
    wait_ns(&backend_ns).await?;
    wait_ns(&client_ns).await?;
    let work = std::env::temp_dir().join(format!("{tag}-nginx"));
    std::fs::create_dir_all(&work)?;
    let conf = work.join("nginx.conf");
    std::fs::write(&conf, format!("worker_processes 1; daemon off; pid {0}/nginx.pid; error_log stderr;\nevents {{ worker_connections 20000; }}\nhttp {{ access_log off; client_body_temp_path {0}; proxy_temp_path {0}; fastcgi_temp_path {0}; uwsgi_temp_path {0}; scgi_temp_path {0};\n  server {{ listen 10.1.0.10:80 backlog=4096; keepalive_requests 1000000; location / {{ return 200 \"ok\\n\"; }} }} }}\n", work.display()))?;
    t.spawn_in(&backend_ns, &["iperf3", "-s", "-p", "5201"])?;
    t.spawn_in(&backend_ns, &["nginx", "-c", &conf.display().to_string()])?;
    t.spawn_in(&backend_ns, &["python3", "-c", ECHO])?;
    crate::sessions::sysctl_in(
        Some(&client_ns),
        "net.ipv4.ip_local_port_range",
        "1024 65535",
    )?;
    let body = json!({"vpc_id": pvpc, "port_id": backend["port_id"], "server_type": "VM",
        "approval_enabled": false, "connection_limit": 20000, "tcp_proxy": "close",
        "ports": [{"client_port": 5201, "server_port": 5201}, {"client_port": 80, "server_port": 80},
                  {"client_port": 9000, "server_port": 9000}]});
    let svc = c
        .call("POST", "/v1/{p}/vpc-endpoint-services", Some(&body))
        .await?;
    let sid = svc["id"].as_str().unwrap_or_default().to_owned();
    crate::dataplane::wait_status(
        &c,
        &format!("/v1/{{p}}/vpc-endpoint-services/{sid}"),
        "available",
    )
    .await?;
    let (_, endpoint) = connect(&c, &sid, &cvpc, &csub).await?;
    // Until the first answer: the data path, the backend's servers.
    let t0 = Instant::now();
    while crate::dataplane::in_ns(
        &client_ns,
        &[
            "curl",
            "-sf",
            "--max-time",
            "1",
            &format!("http://{endpoint}/"),
        ],
    )
    .is_err()
    {
        if t0.elapsed() > Duration::from_secs(30) {
            bail!("the endpoint never answered");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(Layout {
        testbed: t,
        client_ns,
        endpoint,
        vpc: cvpc,
    })
}

/// A host at `ip`, on machine `node` if given.
async fn host_on(
    c: &ApiClient,
    vpc: &str,
    sub: &str,
    ip: &str,
    node: Option<&str>,
) -> Result<Value> {
    let body = json!({"host": {"vpc_id": vpc, "subnet_id": sub, "ip": ip, "node": node}});
    Ok(c.call("POST", "/v1/{p}/hosts", Some(&body)).await?["host"].clone())
}

async fn wait_ns(ns: &str) -> Result<()> {
    for _ in 0..300 {
        if crate::dataplane::in_ns(ns, &["true"]).is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("namespace {ns} never came")
}

/// Throughput (Gbit/s, one stream) and new connections per second (wrk, a connection per
/// request) through the endpoint.
fn rates(l: &Layout, secs: u64) -> Result<(f64, f64, f64)> {
    let bulk = iperf(&l.client_ns, &l.endpoint, secs, 1)?;
    let short = wrk(&l.client_ns, &format!("http://{}/", l.endpoint), secs, true)?;
    Ok((bulk, short.rps, short.p99_ms))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `n` failovers of the pair g1/g2, `sessions` held through each: (seconds to a new
/// connection, seconds until the survivor is master, sessions lost) per failover.
async fn failovers(l: &mut Layout, n: usize, sessions: usize) -> Result<Vec<(f64, f64, usize)>> {
    let mut holder = Holder::start(&l.client_ns, &l.endpoint, sessions)?;
    let mut out = Vec::new();
    for i in 0..n {
        let active = if l.testbed.ha_state("g1", &l.vpc) == "master" {
            "g1"
        } else {
            "g2"
        };
        let standby = if active == "g1" { "g2" } else { "g1" };
        let before = holder.ask("reopen")?;
        let died = Instant::now();
        l.testbed.power_off(active)?;
        // The probe (a new connection every 20 ms) and the survivor's state, side by
        // side, both from the kill.
        let probing = died.elapsed().as_secs_f64();
        let (ns, endpoint) = (l.client_ns.clone(), l.endpoint.clone());
        let probe = std::thread::spawn(move || {
            crate::dataplane::in_ns(&ns, &["python3", "-c", PROBE, &endpoint])
        });
        let mut takeover = f64::NAN;
        while died.elapsed() < Duration::from_secs(10) {
            if l.testbed.ha_state(standby, &l.vpc) == "master" {
                takeover = died.elapsed().as_secs_f64();
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let probe = probe.join().map_err(|_| anyhow::anyhow!("the probe"))??;
        let secs: f64 = probe.trim().parse::<f64>().map_or(-1.0, |s| s + probing);
        let after = holder.ask("check")?;
        out.push((secs, takeover, before.saturating_sub(after)));
        eprintln!(
            "failover {}: {active} off; {standby} master after {takeover:.3} s, a new connection after {secs:.3} s; {} of {before} sessions lost",
            i + 1,
            before.saturating_sub(after)
        );
        if l.testbed.ha_state(standby, &l.vpc) != "master" {
            bail!("{standby} did not take over");
        }
        l.testbed.power_on(active)?;
        let back = Instant::now();
        while l.testbed.ha_state(active, &l.vpc) != "standby" {
            if back.elapsed() > Duration::from_secs(30) {
                bail!("{active} did not rejoin as standby");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Its conntrackd catches up (a full resync from the master) before it may have
        // to take over.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(out)
}

/// The established kernel-path sessions to port 9000 that the router of `vpc` on
/// gateway machine `name` tracks.
fn tracked(t: &Testbed, name: &str, vpc: &str) -> usize {
    let Ok(netns) = vpcep_dataplane::Netns::new(&t.machine(name).prefix) else {
        return 0;
    };
    crate::dataplane::in_ns(
        &netns.vpc_ns(vpc),
        &["conntrack", "-L", "-p", "tcp", "--dport", "9000"],
    )
    .map(|out| out.lines().filter(|l| l.contains("ESTABLISHED")).count())
    .unwrap_or(0)
}

/// `n` times: the master of the pair goes dark and stays down; the control plane
/// (`--machine-down-after 3`) gives its slot to the spare, which joins as standby and
/// is sent the sessions; then the dead machine comes back as the next spare. The next
/// round kills the master again, so every round's sessions cross a failover onto a
/// machine that joined the pair in the round before. Per round: (seconds until the
/// survivor is master, seconds until the spare is standby with every session, sessions
/// lost).
async fn rehomes(l: &mut Layout, n: usize, sessions: usize) -> Result<Vec<(f64, f64, usize)>> {
    let mut holder = Holder::start(&l.client_ns, &l.endpoint, sessions)?;
    let gateways = ["g1", "g2", "g3"];
    let mut out = Vec::new();
    for i in 0..n {
        let vpc = l.vpc.clone();
        let state = |t: &Testbed, g: &str| t.ha_state(g, &vpc);
        let Some(active) = gateways
            .into_iter()
            .find(|g| state(&l.testbed, g) == "master")
        else {
            bail!("no master among the gateway machines");
        };
        let Some(spare) = gateways
            .into_iter()
            .find(|g| state(&l.testbed, g) == "spare")
        else {
            bail!("no spare among the gateway machines");
        };
        let peer = gateways
            .into_iter()
            .find(|g| *g != active && *g != spare)
            .unwrap_or_default();
        let before = holder.reopen_all(&l.testbed, &l.vpc)?;
        let died = Instant::now();
        l.testbed.power_off(active)?;
        let mut takeover = f64::NAN;
        let mut redundant = f64::NAN;
        while died.elapsed() < Duration::from_secs(30) {
            if takeover.is_nan() && state(&l.testbed, peer) == "master" {
                takeover = died.elapsed().as_secs_f64();
            }
            if state(&l.testbed, spare) == "standby" && tracked(&l.testbed, spare, &l.vpc) >= before
            {
                redundant = died.elapsed().as_secs_f64();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = holder.ask("check")?;
        let lost = before.saturating_sub(after);
        eprintln!(
            "re-homing {}: {active} off; {peer} master after {takeover:.3} s; {spare} standby with the sessions after {redundant:.3} s; {lost} of {before} sessions lost",
            i + 1
        );
        if redundant.is_nan() {
            bail!("{spare} did not take {active}'s place");
        }
        out.push((takeover, redundant, lost));
        l.testbed.power_on(active)?;
        let back = Instant::now();
        while state(&l.testbed, active) != "spare" {
            if back.elapsed() > Duration::from_secs(30) {
                bail!("{active} did not come back as a spare");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The pair settles (the machine that joined is past its start-up delay) before
        // the next round, as between the failovers above.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(out)
}

pub(crate) async fn run(bin: &Path, o: Opts) -> Result<()> {
    for tool in [
        "iperf3",
        "wrk",
        "nginx",
        "keepalived",
        "conntrackd",
        "nsenter",
    ] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|out| !out.status.success())
            .unwrap_or(true)
        {
            bail!("{tool} is missing (apt-get install iperf3 wrk nginx-light keepalived conntrackd util-linux)");
        }
    }
    let tag = |k: &str| format!("b{k}{}", std::process::id() % 10_000);
    println!("# vpcep-bench machines: one box, machines as namespaces on one underlay bridge\n");
    // Side by side: one machine that is everything, then client and backend on two
    // compute machines with the router on a gateway machine.
    let one = layout(bin, &tag("o"), &[("m1", "")], (&[], &[]), None).await?;
    let (one_bulk, one_rps, one_p99) = rates(&one, o.secs)?;
    drop(one);
    let across = layout(
        bin,
        &tag("a"),
        &[("c1", "compute"), ("c2", "compute"), ("g1", "gateway")],
        (&[], &[]),
        Some(("c2", "c1")),
    )
    .await?;
    let (x_bulk, x_rps, x_p99) = rates(&across, o.secs)?;
    drop(across);
    println!(
        "| through the endpoint (kernel path) | Gbit/s, 1 stream | new connections/s | p99 ms |"
    );
    println!("|---|---:|---:|---:|");
    println!("| one machine | {one_bulk:.2} | {one_rps:.0} | {one_p99:.2} |");
    println!("| client and backend on two compute machines, router on a gateway machine (VXLAN) | {x_bulk:.2} | {x_rps:.0} | {x_p99:.2} |");
    println!(
        "| ratio (across / one) | {:.2} | {:.2} | |\n",
        x_bulk / one_bulk,
        x_rps / one_rps
    );

    println!("| path | failovers | standby master after, s (p50 / p99 / max) | a new connection after, s (p50 / p99 / max) | sessions lost per failover (of {}), mean / max |", o.sessions);
    println!("|---|---:|---:|---:|---:|");
    for (name, args) in [
        ("kernel path", &[][..]),
        ("userspace path", &["--forwarding", "userspace"][..]),
    ] {
        let mut l = layout(
            bin,
            &tag(if args.is_empty() { "k" } else { "u" }),
            &[
                ("c1", "compute"),
                ("c2", "compute"),
                ("g1", "gateway"),
                ("g2", "gateway"),
            ],
            (args, &[]),
            Some(("c2", "c1")),
        )
        .await?;
        let runs = failovers(&mut l, o.failovers, o.sessions).await?;
        let sorted = |f: fn(&(f64, f64, usize)) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v
        };
        let (conn, master) = (sorted(|r| r.0), sorted(|r| r.1));
        let lost: Vec<usize> = runs.iter().map(|r| r.2).collect();
        let mean = lost.iter().sum::<usize>() as f64 / lost.len().max(1) as f64;
        let three = |v: &[f64]| {
            format!(
                "{:.3} / {:.3} / {:.3}",
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.last().copied().unwrap_or(f64::NAN)
            )
        };
        println!(
            "| {name} | {} | {} | {} | {mean:.1} / {} |",
            runs.len(),
            three(&master),
            three(&conn),
            lost.iter().max().copied().unwrap_or(0)
        );
    }

    println!("\n| kernel path, a spare (`--machine-down-after 3`) | rounds | survivor master after, s (p50 / max) | spare standby with every session after, s (p50 / max) | sessions lost per round (of {}), mean / max |", o.sessions);
    println!("|---|---:|---:|---:|---:|");
    let mut l = layout(
        bin,
        &tag("r"),
        &[
            ("c1", "compute"),
            ("c2", "compute"),
            ("g1", "gateway"),
            ("g2", "gateway"),
            ("g3", "gateway"),
        ],
        (&[], &["--machine-down-after", "3"]),
        Some(("c2", "c1")),
    )
    .await?;
    let runs = rehomes(&mut l, o.rehomes, o.sessions).await?;
    let sorted = |f: fn(&(f64, f64, usize)) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let two = |v: &[f64]| {
        format!(
            "{:.3} / {:.3}",
            percentile(v, 0.5),
            v.last().copied().unwrap_or(f64::NAN)
        )
    };
    let lost: Vec<usize> = runs.iter().map(|r| r.2).collect();
    println!(
        "| the master dies and stays down | {} | {} | {} | {:.1} / {} |",
        runs.len(),
        two(&sorted(|r| r.0)),
        two(&sorted(|r| r.1)),
        lost.iter().sum::<usize>() as f64 / lost.len().max(1) as f64,
        lost.iter().max().copied().unwrap_or(0)
    );
    Ok(())
}
