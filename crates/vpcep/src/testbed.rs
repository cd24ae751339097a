//! A deployment across machines, simulated on one box (root), for the tests and the
//! benchmarks: each "machine" is a network namespace with an address on a shared
//! bridge (the underlay; the bridge itself has no address) running its own `vpcep
//! gateway --role … --underlay …` with a namespace prefix of its own; the control plane
//! (`vpcep serve --dataplane remote`, SQLite) has a machine of its own too. This process
//! reaches the API through a forwarder on 127.0.0.1 whose connections are made inside
//! the control plane's machine, so every address in use lives in a namespace the
//! testbed made. Everything it made goes when it is dropped.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sched::{setns, CloneFlags};
use serde_json::Value;
use vpcep_dataplane::substrate::netns::host_ns_name;
use vpcep_dataplane::Netns;

const TOKEN: &str = "node-token-of-the-testbed";

/// A TCP echo server on port 9000 for a host (`python3 -c ECHO`), a thread per
/// connection: what held sessions talk to.
pub const ECHO: &str = r#"
import socket, threading
def serve(c):
    while True:
        d = c.recv(4096)
        if not d: break
        c.sendall(d)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 9000)); s.listen(256)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;
const API_PORT: u16 = 9876;

/// One simulated machine.
pub struct Machine {
    pub name: String,
    /// `compute` or `gateway`; empty for the one machine that is everything.
    pub role: String,
    /// Its namespace, holding `eth0` on the underlay.
    pub ns: String,
    pub underlay: String,
    /// The namespace prefix of its `vpcep` (what it makes is named after it).
    pub prefix: String,
}

pub struct Testbed {
    bin: PathBuf,
    bridge: String,
    cp: Machine,
    machines: Vec<Machine>,
    /// Extra arguments of every `vpcep gateway` (e.g. `--forwarding userspace`).
    node_args: Vec<String>,
    children: Vec<Child>,
    /// The `vpcep gateway` of each machine, by its name.
    nodes: Vec<(String, Child)>,
    dir: tempfile::TempDir,
    forwarder: Option<tokio::task::JoinHandle<()>>,
    /// The API, through the forwarder.
    pub base: String,
    /// The control plane's API on the underlay (what the nodes follow).
    url: String,
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.diagnose();
        }
        if let Some(f) = self.forwarder.take() {
            f.abort();
        }
        // Everything running in the machines (keepalived and conntrackd too), then the
        // routers' HA files: once every node is gone, none can write them again (a
        // node that outlives its keepalived by a moment closes its gate).
        for m in &self.machines {
            kill_inside(m);
        }
        for c in self
            .children
            .iter_mut()
            .chain(self.nodes.iter_mut().map(|(_, c)| c))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        for m in &self.machines {
            kill_inside(m);
            let mine = format!("{}-", m.prefix);
            for d in std::fs::read_dir("/run/vpcep-ha")
                .into_iter()
                .flatten()
                .flatten()
            {
                if d.file_name().to_string_lossy().starts_with(&mine) {
                    let _ = std::fs::remove_dir_all(d.path());
                }
            }
        }
        for (i, m) in self.machines.iter().chain([&self.cp]).enumerate() {
            // Its underlay port first: a machine's namespace may outlive its name while
            // the kernel still closes its sockets to machines that died (orphaned TCP
            // connections retrying their FIN), and the port with it.
            let _ = Command::new("ip")
                .args(["link", "del", &format!("{}p{i}", self.bridge)])
                .stderr(Stdio::null())
                .status();
            // What its node made, until nothing comes back (a last apply may still run).
            if let Ok(netns) = Netns::new(&m.prefix) {
                for _ in 0..20 {
                    let _ = netns.remove_all();
                    if netns.namespaces().is_ok_and(|l| l.is_empty()) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &m.ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip").args(args).output()?;
    if !out.status.success() {
        bail!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A command run in machine namespace `ns`'s network only. Not `ip netns exec`, which
/// gives the program a mount namespace of its own too: the namespaces it then makes
/// would not be visible (nor enterable) from outside it.
fn in_machine(ns: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/run/netns/{ns}")).arg("--");
    cmd
}

/// A TCP connection made inside namespace `ns` (the socket stays there).
fn connect_in(ns: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let target = File::open(format!("/run/netns/{ns}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            setns(&target, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::other)?;
            TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        })
        .join()
        .expect("the connecting thread")
    })
}

/// SIGKILL to every process in machine `m`'s namespaces.
fn kill_inside(m: &Machine) {
    use std::os::unix::fs::MetadataExt;
    let mut inodes: Vec<u64> = Netns::new(&m.prefix)
        .and_then(|n| n.namespaces())
        .unwrap_or_default()
        .iter()
        .chain([&m.ns])
        .filter_map(|ns| std::fs::metadata(format!("/run/netns/{ns}")).ok())
        .map(|m| m.ino())
        .collect();
    inodes.sort_unstable();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let inside = std::fs::metadata(format!("/proc/{pid}/ns/net"))
            .is_ok_and(|m| inodes.binary_search(&m.ino()).is_ok());
        if inside && pid != std::process::id() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

impl Testbed {
    /// The control plane and `machines` (name, role; an empty role makes the one machine
    /// that is everything) on one underlay, all named after `tag` (unique per testbed,
    /// at most 10 characters). `bin` is the `vpcep` binary; `node_args` go to every
    /// `vpcep gateway`, `serve_args` to the control plane's `vpcep serve`. Ready when
    /// every machine with a role has registered.
    pub async fn start(
        bin: &Path,
        tag: &str,
        machines: &[(&str, &str)],
        node_args: &[&str],
        serve_args: &[&str],
    ) -> Result<Testbed> {
        Netns::new(&format!("{tag}cp"))?;
        let machine = |name: &str, role: &str, last: u8| Machine {
            name: name.to_owned(),
            role: role.to_owned(),
            ns: format!("{tag}-{name}"),
            underlay: format!("10.99.0.{last}"),
            prefix: format!("{tag}{name}"),
        };
        let mut t = Testbed {
            bin: bin.to_owned(),
            bridge: format!("{tag}u"),
            cp: machine("cp", "", 1),
            machines: machines
                .iter()
                .enumerate()
                .map(|(i, (name, role))| machine(name, role, 11 + i as u8))
                .collect(),
            node_args: node_args.iter().map(|a| a.to_string()).collect(),
            children: Vec::new(),
            nodes: Vec::new(),
            dir: tempfile::tempdir()?,
            forwarder: None,
            base: String::new(),
            url: String::new(),
        };
        ip(&["link", "add", &t.bridge, "type", "bridge"])?;
        ip(&["link", "set", &t.bridge, "up"])?;
        for (i, m) in t.machines.iter().chain([&t.cp]).enumerate() {
            let port = format!("{}p{i}", t.bridge);
            ip(&["netns", "add", &m.ns])?;
            ip(&["-n", &m.ns, "link", "set", "lo", "up"])?;
            ip(&[
                "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &m.ns,
            ])?;
            ip(&["link", "set", &port, "master", &t.bridge, "up"])?;
            let addr = format!("{}/24", m.underlay);
            ip(&["-n", &m.ns, "addr", "add", &addr, "dev", "eth0"])?;
            ip(&["-n", &m.ns, "link", "set", "eth0", "up"])?;
        }
        let cp_addr: SocketAddr = format!("{}:{API_PORT}", t.cp.underlay).parse()?;
        let serve = in_machine(&t.cp.ns)
            .arg(&t.bin)
            .arg("serve")
            .args(["--listen", &cp_addr.to_string(), "--metrics-listen", "off"])
            .args(["--dataplane", "remote", "--node-token", TOKEN])
            .args(["--substrate", "netns", "--netns-prefix", &t.cp.prefix])
            .args(serve_args)
            .arg("--data-dir")
            .arg(t.data_dir())
            .env("VPCEP_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the control plane")?;
        t.children.push(serve);
        t.url = format!("http://{cp_addr}");
        for (name, _) in machines {
            t.start_node(name)?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        t.base = format!("http://{}", listener.local_addr()?);
        let cp_ns = t.cp.ns.clone();
        t.forwarder = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let ns = cp_ns.clone();
                tokio::spawn(async move {
                    let Ok(Ok(out)) =
                        tokio::task::spawn_blocking(move || connect_in(&ns, cp_addr)).await
                    else {
                        return;
                    };
                    if out.set_nonblocking(true).is_err() {
                        return;
                    }
                    if let Ok(mut out) = tokio::net::TcpStream::from_std(out) {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
            }
        }));
        let with_roles = machines.iter().filter(|(_, r)| !r.is_empty()).count();
        for _ in 0..150 {
            let registered = t
                .admin(&["node", "list", "--output", "json"])
                .ok()
                .and_then(|v| v.as_array().map(Vec::len));
            if registered == Some(with_roles) {
                return Ok(t);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("the machines did not all register")
    }

    /// The control plane's data directory (SQLite), for `vpcep admin`.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("cp")
    }

    /// `vpcep admin ARGS` on the control plane's store, as JSON.
    pub fn admin(&self, args: &[&str]) -> Result<Value> {
        let out = Command::new(&self.bin)
            .arg("admin")
            .args(args)
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()?;
        if !out.status.success() {
            bail!(
                "vpcep admin {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub fn machine(&self, name: &str) -> &Machine {
        self.machines
            .iter()
            .find(|m| m.name == name)
            .expect("a machine of the testbed")
    }

    /// The namespace of `host` (as the hosts API shows it) on the machine that holds
    /// it: its `node`, or the first machine.
    pub fn host_ns(&self, host: &Value) -> String {
        let on = match host["node"].as_str() {
            Some(name) => self.machine(name),
            None => &self.machines[0],
        };
        host_ns_name(&on.prefix, host["port_id"].as_str().unwrap_or_default())
    }

    /// Starts machine `name`'s `vpcep gateway` (again).
    pub fn start_node(&mut self, name: &str) -> Result<()> {
        let m = self.machine(name);
        let mut cmd = in_machine(&m.ns);
        cmd.arg(&self.bin)
            .arg("gateway")
            .args([
                "--control-plane",
                &self.url,
                "--token",
                TOKEN,
                "--node",
                name,
            ])
            .args(["--substrate", "netns", "--netns-prefix", &m.prefix])
            .args(&self.node_args);
        if !m.role.is_empty() {
            cmd.args(["--role", &m.role, "--underlay", &m.underlay]);
        }
        let node = cmd
            .env("VPCEP_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start machine {name}'s node"))?;
        self.nodes.retain(|(n, _)| n != name);
        self.nodes.push((name.to_owned(), node));
        Ok(())
    }

    /// Machine `name` goes dark, as when it loses power: its underlay link goes down
    /// first (nothing it still sends gets out, keepalived's last words included), then
    /// every process in its namespaces is killed (SIGKILL: its node, keepalived,
    /// conntrackd, servers); what it made stays, as on a disk.
    pub fn power_off(&mut self, name: &str) -> Result<()> {
        ip(&["-n", &self.machine(name).ns, "link", "set", "eth0", "down"])?;
        kill_inside(self.machine(name));
        if let Some((_, child)) = self.nodes.iter_mut().find(|(n, _)| n == name) {
            let _ = child.wait();
        }
        Ok(())
    }

    /// Machine `name` comes back: its link up, its node started again.
    pub fn power_on(&mut self, name: &str) -> Result<()> {
        ip(&["-n", &self.machine(name).ns, "link", "set", "eth0", "up"])?;
        self.start_node(name)
    }

    /// Machine `name` dies for good: everything on it goes, its namespaces too.
    pub fn destroy(&mut self, name: &str) {
        kill_inside(self.machine(name));
        if let Some((_, child)) = self.nodes.iter_mut().find(|(n, _)| n == name) {
            let _ = child.wait();
        }
        let m = self.machine(name);
        if let Ok(netns) = Netns::new(&m.prefix) {
            let _ = netns.remove_all();
        }
        let _ = Command::new("ip").args(["netns", "del", &m.ns]).status();
    }

    /// Starts `args` in namespace `ns` (a host's, say); it stops with the testbed.
    pub fn spawn_in(&mut self, ns: &str, args: &[&str]) -> Result<()> {
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children.push(child);
        Ok(())
    }

    /// Prints what a failed test needs to be understood: the machines as the control
    /// plane sees them, and every router's HA state with the end of its keepalived log.
    pub fn diagnose(&self) {
        eprintln!("--- testbed {}: machines", self.bridge);
        if let Ok(list) = self.admin(&["node", "list", "--output", "json"]) {
            eprintln!("{list}");
        }
        for m in &self.machines {
            let mine = format!("{}-", m.prefix);
            for d in std::fs::read_dir("/run/vpcep-ha")
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = d.file_name().to_string_lossy().into_owned();
                if !name.starts_with(&mine) {
                    continue;
                }
                let read = |f: &str| std::fs::read_to_string(d.path().join(f)).unwrap_or_default();
                let log = read("keepalived.log");
                let tail: Vec<&str> = log.lines().rev().take(8).collect();
                eprintln!(
                    "--- {name}: state {:?}\n{}",
                    read("state").trim(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
    }

    /// The state of the router of `vpc` on gateway machine `name`: `master`, `standby`,
    /// `starting`, `spare`, or empty when it is alone.
    pub fn ha_state(&self, name: &str, vpc: &str) -> String {
        let ns = match Netns::new(&self.machine(name).prefix) {
            Ok(n) => n.vpc_ns(vpc),
            Err(_) => return String::new(),
        };
        std::fs::read_to_string(format!("/run/vpcep-ha/{ns}/state"))
            .unwrap_or_default()
            .trim()
            .to_owned()
    }
}
