//! The userspace L4 gateway: for every endpoint that must forward, listeners at the
//! endpoint address inside the consumer VPC and connections out of the provider VPC from
//! the endpoint's SNAT address, TCP (with PROXY v2 on request) and UDP. Each endpoint
//! is stopped on its own, so changing one never disturbs another, and stopping one ends
//! its listeners and its live sessions at once. Listeners count against the node's
//! descriptor budget like sessions do.

pub mod limits;
mod pool;
pub mod proxy_v2;
mod tcp;
mod udp;

use std::collections::HashMap;
use std::fmt::Write;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use socket2::{Domain, Protocol as SockProto, Socket, Type};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vpcep_model::{EndpointSpec, Protocol, TcpProxy, VpcSpec};

use crate::substrate::{Local, Substrate};
use limits::{Slots, Whitelist};

/// Counters of one endpoint, exported as Prometheus metrics.
#[derive(Default)]
pub struct Stats {
    pub sessions: Slots,
    pub total: AtomicU64,
    pub refused_limit: AtomicU64,
    pub refused_whitelist: AtomicU64,
    pub refused_capacity: AtomicU64,
    pub backend_errors: AtomicU64,
    pub bytes_to_backend: AtomicU64,
    pub bytes_to_client: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// Settings that change in place, for new sessions.
struct Live {
    whitelist: Whitelist,
    max_connections: u64,
    tcp_proxy: TcpProxy,
    backend: Ipv4Addr,
}

/// What every session of one endpoint needs.
pub(crate) struct Ctx {
    spec: EndpointSpec,
    live: RwLock<Live>,
    consumer: VpcSpec,
    provider: Option<VpcSpec>,
    source: Option<Ipv4Addr>,
    stats: Arc<Stats>,
    substrate: Arc<dyn Substrate>,
    descriptors: Arc<Slots>,
    descriptor_budget: u64,
    /// Ends the UDP listener's and sessions' tasks (TCP ones end with their worker's
    /// port).
    stop: watch::Receiver<bool>,
    /// Unconnected TCP sockets already made in the provider VPC and bound to the SNAT
    /// address, so most sessions need no trip into the namespace.
    spare: Mutex<Vec<Socket>>,
}

/// How many backend sockets one trip into a namespace makes (the spares count against
/// the node's descriptor budget while they wait).
const SPARE_BATCH: u64 = 16;

impl Drop for Ctx {
    fn drop(&mut self) {
        let n = self.spare.get_mut().map(|s| s.len()).unwrap_or(0);
        self.descriptors.give(n as u64);
    }
}

impl Ctx {
    fn live(&self) -> std::sync::RwLockReadGuard<'_, Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner())
    }

    fn spares(&self) -> std::sync::MutexGuard<'_, Vec<Socket>> {
        self.spare.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn backend(&self) -> Ipv4Addr {
        self.live().backend
    }

    /// Admits a session of `fds` descriptors from `client`, or counts why not.
    fn admit(&self, client: Ipv4Addr, fds: u64) -> bool {
        let (allowed, max) = {
            let live = self.live();
            (live.whitelist.allows(client), live.max_connections)
        };
        if !allowed {
            bump(&self.stats.refused_whitelist, 1);
            return false;
        }
        if !self.stats.sessions.try_take(1, max) {
            bump(&self.stats.refused_limit, 1);
            return false;
        }
        if !self.descriptors.try_take(fds, self.descriptor_budget) {
            self.stats.sessions.give(1);
            bump(&self.stats.refused_capacity, 1);
            return false;
        }
        bump(&self.stats.total, 1);
        true
    }

    fn release(&self, fds: u64) {
        self.stats.sessions.give(1);
        self.descriptors.give(fds);
    }

    /// Makes a non-blocking socket bound to the endpoint's SNAT address (a TCP socket's
    /// port is chosen at connect time, so spares hold no port; Nagle is off from the
    /// start, like the accepted side, which inherits it from its listener).
    fn maker(&self, kind: Type, proto: SockProto) -> impl Fn() -> io::Result<Socket> {
        let source = self.source;
        move || {
            let s = Socket::new(Domain::IPV4, kind.nonblocking(), Some(proto))?;
            if kind == Type::STREAM {
                s.set_tcp_nodelay(true)?;
            }
            if let Some(src) = source {
                if kind == Type::STREAM {
                    nix::sys::socket::setsockopt(
                        &s,
                        nix::sys::socket::sockopt::IpBindAddressNoPort,
                        &true,
                    )?;
                }
                s.bind(&SocketAddr::from(SocketAddrV4::new(src, 0)).into())?;
            }
            Ok(s)
        }
    }

    /// A UDP socket in the provider VPC, bound to the endpoint's SNAT address.
    fn backend_dgram(&self) -> io::Result<Socket> {
        self.substrate.make_socket(
            self.provider.as_ref(),
            &self.maker(Type::DGRAM, SockProto::UDP),
        )
    }

    /// A TCP socket in the provider VPC, bound to the endpoint's SNAT address: a spare,
    /// or the first of a new batch whose rest become spares.
    fn backend_stream(&self) -> io::Result<Socket> {
        if let Some(sock) = self.spares().pop() {
            // The session's own descriptors were admitted already; a spare's were taken
            // when it was made, so handing one over gives those back.
            self.descriptors.give(1);
            return Ok(sock);
        }
        let extra = SPARE_BATCH - 1;
        let taken = if self.descriptors.try_take(extra, self.descriptor_budget) {
            extra
        } else {
            0
        };
        let made = self.substrate.make_sockets(
            self.provider.as_ref(),
            taken as usize + 1,
            &self.maker(Type::STREAM, SockProto::TCP),
        );
        let mut batch = match made {
            Ok(b) => b,
            Err(e) => {
                self.descriptors.give(taken);
                return Err(e);
            }
        };
        let first = batch
            .pop()
            .ok_or_else(|| io::Error::other("no socket made"))?;
        self.descriptors
            .give(taken - (batch.len() as u64).min(taken));
        self.spares().append(&mut batch);
        Ok(first)
    }
}

/// The threads that run TCP listeners and their sessions, one per core, each an event
/// loop of its own (`tcp.rs`): a session lives on the thread that accepted it.
fn workers() -> Result<&'static [tcp::Worker], String> {
    static WORKERS: std::sync::OnceLock<Vec<tcp::Worker>> = std::sync::OnceLock::new();
    let started = WORKERS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n)
            .filter_map(|i| {
                tcp::Worker::spawn(format!("vpcep-gw-{i}"))
                    .inspect_err(|e| tracing::error!(error = %e, "gateway worker cannot start"))
                    .ok()
            })
            .collect()
    });
    if started.is_empty() {
        Err("no gateway worker thread could start".into())
    } else {
        Ok(started)
    }
}

/// Listeners take one descriptor per core for each TCP port (the kernel spreads a port's
/// connections over the workers) while all listeners together hold at most this share
/// of the descriptor budget; beyond it, a port gets one listener, on the workers in turn,
/// so that 10,000 endpoints still leave most of the budget to sessions.
const PER_CORE_SHARE: u64 = 8;

/// A metric: name, type, help, and how to read it from an endpoint's counters.
type Series = (&'static str, &'static str, &'static str, fn(&Stats) -> u64);

struct Running {
    /// Ends the UDP tasks.
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// This start's TCP listeners and sessions: its key, and the workers holding them.
    key: u64,
    workers: Vec<usize>,
    /// Descriptors held by its listeners.
    listeners: u64,
    ctx: Arc<Ctx>,
}

pub struct Gateway {
    substrate: Arc<dyn Substrate>,
    running: Mutex<HashMap<String, Running>>,
    /// Descriptors held by listeners, sessions and spare backend sockets.
    descriptors: Arc<Slots>,
    descriptor_budget: u64,
    /// Descriptors held by listeners alone.
    listeners: Slots,
}

impl Gateway {
    pub fn new(substrate: Arc<dyn Substrate>) -> Gateway {
        Gateway::with_budget(substrate, limits::descriptor_budget())
    }

    /// A gateway that spends at most `descriptors` descriptors on sessions.
    pub fn with_budget(substrate: Arc<dyn Substrate>, descriptors: u64) -> Gateway {
        Gateway {
            substrate,
            running: Mutex::default(),
            descriptors: Arc::default(),
            descriptor_budget: descriptors,
            listeners: Slots::default(),
        }
    }

    /// Brings an endpoint's listeners up. On error nothing of it is left running.
    pub async fn start(
        &self,
        spec: &EndpointSpec,
        vpcs: &HashMap<String, VpcSpec>,
    ) -> Result<(), String> {
        self.stop(&spec.id).await;
        let consumer = vpcs
            .get(&spec.consumer_vpc)
            .ok_or_else(|| format!("consumer VPC {} is not realised", spec.consumer_vpc))?;
        let provider = match &spec.provider_vpc {
            Some(p) => Some(
                vpcs.get(p)
                    .ok_or_else(|| format!("provider VPC {p} is not realised"))?
                    .clone(),
            ),
            None => None,
        };
        let err = |what: &str, e: std::io::Error| format!("{what}: {e}");
        let listen = self
            .substrate
            .add_local(consumer, &spec.subnet_id, spec.ip, Local::Endpoint)
            .map_err(|e| err("endpoint address", e))?
            .unwrap_or(spec.ip);
        let (source, backend) = match &provider {
            Some(p) => (
                self.substrate
                    .add_local(p, "", spec.snat_ip, Local::Snat)
                    .map_err(|e| err("SNAT address", e))?,
                self.substrate.map_remote(p, spec.backend_ip),
            ),
            None => (None, spec.backend_ip),
        };
        let (stop_tx, stop_rx) = watch::channel(false);
        let ctx = Arc::new(Ctx {
            spec: spec.clone(),
            live: RwLock::new(Live {
                whitelist: Whitelist::new(spec.whitelist.as_deref()),
                max_connections: spec.max_connections as u64,
                tcp_proxy: spec.tcp_proxy,
                backend,
            }),
            consumer: consumer.clone(),
            provider,
            source,
            stats: Arc::default(),
            substrate: self.substrate.clone(),
            descriptors: self.descriptors.clone(),
            descriptor_budget: self.descriptor_budget,
            stop: stop_rx,
            spare: Mutex::default(),
        });
        match self.open_ports(&ctx, consumer, listen, stop_tx) {
            Ok(running) => {
                self.running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(spec.id.clone(), running);
                Ok(())
            }
            Err(e) => {
                self.release_addresses(&ctx);
                Err(e)
            }
        }
    }

    /// Opens the endpoint's listeners, within the descriptor budget, and hands them to
    /// the workers (TCP) or the runtime (UDP). Every socket is made before any is handed
    /// over, so a failure leaves nothing running.
    fn open_ports(
        &self,
        ctx: &Arc<Ctx>,
        consumer: &VpcSpec,
        listen: Ipv4Addr,
        stop: watch::Sender<bool>,
    ) -> Result<Running, String> {
        let workers = workers()?;
        let spec = &ctx.spec;
        let tcp = spec
            .ports
            .iter()
            .filter(|m| m.protocol == Protocol::Tcp)
            .count() as u64;
        let cores = workers.len() as u64;
        let each =
            if self.listeners.taken() + tcp * cores <= self.descriptor_budget / PER_CORE_SHARE {
                cores
            } else {
                1
            };
        let need = tcp * each + (spec.ports.len() as u64 - tcp);
        if !self.descriptors.try_take(need, self.descriptor_budget) {
            return Err(format!(
                "no descriptors left for {need} listeners ({} of {} in use)",
                self.descriptors.taken(),
                self.descriptor_budget
            ));
        }
        self.listeners.try_take(need, u64::MAX);
        // Numbers each start among all gateways of the process (they share the workers),
        // and picks the worker of each single listener in turn.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let key = NEXT.fetch_add(1, Ordering::Relaxed);
        let mut tcp_listeners = Vec::new();
        let mut udp_sockets = Vec::new();
        for m in &spec.ports {
            let addr = SocketAddr::from(SocketAddrV4::new(listen, m.client_port));
            let made = match m.protocol {
                Protocol::Tcp => {
                    let header: Arc<[u8]> = proxy_v2::encode(&proxy_v2::Header {
                        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0),
                        dst: SocketAddrV4::new(spec.ip, m.client_port),
                        endpoint_id: spec.id.clone(),
                        marker_id: spec.marker_id,
                        service_id: spec.service_id.clone(),
                    })
                    .into();
                    (0..each).try_for_each(|i| {
                        let worker = if each == cores { i } else { key % cores } as usize;
                        let s = self.listener(consumer, addr, Type::STREAM, SockProto::TCP)?;
                        let listen = tcp::Listen {
                            key,
                            listener: std::net::TcpListener::from(s),
                            server_port: m.server_port,
                            ctx: ctx.clone(),
                            header: header.clone(),
                        };
                        tcp_listeners.push((worker, listen));
                        Ok(())
                    })
                }
                Protocol::Udp => self
                    .listener(consumer, addr, Type::DGRAM, SockProto::UDP)
                    .and_then(|s| {
                        let u = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))?;
                        udp_sockets.push((u, m.server_port));
                        Ok(())
                    }),
            };
            if let Err(e) = made {
                self.give_listeners(need);
                return Err(format!("listener {addr}/{}: {e}", m.protocol));
            }
        }
        let mut used = Vec::new();
        for (worker, listen) in tcp_listeners {
            workers[worker].listen(listen);
            if !used.contains(&worker) {
                used.push(worker);
            }
        }
        let tasks = udp_sockets
            .into_iter()
            .map(|(u, server_port)| tokio::spawn(udp::serve(u, server_port, ctx.clone())))
            .collect();
        Ok(Running {
            stop,
            tasks,
            key,
            workers: used,
            listeners: need,
            ctx: ctx.clone(),
        })
    }

    fn give_listeners(&self, n: u64) {
        self.listeners.give(n);
        self.descriptors.give(n);
    }

    /// Descriptors held by listeners now.
    pub fn listeners(&self) -> u64 {
        self.listeners.taken()
    }

    fn listener(
        &self,
        vpc: &VpcSpec,
        addr: SocketAddr,
        kind: Type,
        proto: SockProto,
    ) -> std::io::Result<Socket> {
        self.substrate.make_socket(Some(vpc), &|| {
            let s = Socket::new(Domain::IPV4, kind, Some(proto))?;
            s.set_reuse_address(true)?;
            if kind == Type::STREAM {
                // A port may have a listener on each worker; the kernel spreads new
                // connections over them.
                s.set_reuse_port(true)?;
            }
            s.bind(&addr.into())?;
            if kind == Type::STREAM {
                // Accepted sockets inherit it: no setsockopt per session.
                s.set_tcp_nodelay(true)?;
                s.listen(1024)?;
            }
            s.set_nonblocking(true)?;
            Ok(s)
        })
    }

    /// Removes the endpoint's own addresses (its node IP and its SNAT address).
    fn release_addresses(&self, c: &Ctx) {
        let _ =
            self.substrate
                .remove_local(&c.consumer, &c.spec.subnet_id, c.spec.ip, Local::Endpoint);
        if let Some(p) = &c.provider {
            let _ = self
                .substrate
                .remove_local(p, "", c.spec.snat_ip, Local::Snat);
        }
    }

    /// Applies new settings of a running endpoint to its next sessions; live sessions
    /// carry on. Starts it if it is not running.
    pub async fn update(
        &self,
        spec: &EndpointSpec,
        vpcs: &HashMap<String, VpcSpec>,
    ) -> Result<(), String> {
        let ctx = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&spec.id)
            .map(|r| r.ctx.clone());
        let Some(ctx) = ctx else {
            return self.start(spec, vpcs).await;
        };
        let backend = match &ctx.provider {
            Some(p) => self.substrate.map_remote(p, spec.backend_ip),
            None => spec.backend_ip,
        };
        *ctx.live.write().unwrap_or_else(|p| p.into_inner()) = Live {
            whitelist: Whitelist::new(spec.whitelist.as_deref()),
            max_connections: spec.max_connections as u64,
            tcp_proxy: spec.tcp_proxy,
            backend,
        };
        Ok(())
    }

    /// Stops an endpoint: its listeners are closed and its sessions ended when this returns.
    pub async fn stop(&self, id: &str) {
        let gone = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        if let Some(r) = gone {
            let _ = r.stop.send(true);
            let closing: Vec<_> = match workers() {
                Ok(all) => r.workers.iter().map(|&w| all[w].stop(r.key)).collect(),
                Err(_) => Vec::new(),
            };
            for c in closing {
                // A worker that is gone has closed everything of its own already.
                let _ = c.await;
            }
            for t in r.tasks {
                t.abort();
                let _ = t.await;
            }
            self.give_listeners(r.listeners);
            self.release_addresses(&r.ctx);
            tracing::debug!(endpoint = %id, "endpoint stopped");
        }
    }

    /// Stops every endpoint (the node is going away).
    pub async fn stop_all(&self) {
        for id in self.running() {
            self.stop(&id).await;
        }
    }

    pub fn running(&self) -> Vec<String> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Per-endpoint counters in the Prometheus text format.
    /// `kernel` adds samples of kernel-path endpoints: (metric, endpoint id, value).
    pub fn render_metrics(&self, kernel: &[(&'static str, String, u64)]) -> String {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let series: [Series; 8] = [
            (
                "vpcep_gateway_sessions_active",
                "gauge",
                "Sessions open now.",
                |s| s.sessions.taken(),
            ),
            (
                "vpcep_gateway_sessions_total",
                "counter",
                "Sessions admitted.",
                |s| s.total.load(Ordering::Relaxed),
            ),
            (
                "vpcep_gateway_refused_limit_total",
                "counter",
                "Sessions refused by the endpoint's connection limit.",
                |s| s.refused_limit.load(Ordering::Relaxed),
            ),
            (
                "vpcep_gateway_refused_whitelist_total",
                "counter",
                "Sessions refused by the endpoint whitelist.",
                |s| s.refused_whitelist.load(Ordering::Relaxed),
            ),
            (
                "vpcep_gateway_refused_capacity_total",
                "counter",
                "Sessions refused because the node is out of descriptors.",
                |s| s.refused_capacity.load(Ordering::Relaxed),
            ),
            (
                "vpcep_gateway_backend_errors_total",
                "counter",
                "Sessions whose backend could not be reached.",
                |s| s.backend_errors.load(Ordering::Relaxed),
            ),
            (
                "vpcep_gateway_bytes_to_backend_total",
                "counter",
                "Bytes from clients to the backend.",
                |s| s.bytes_to_backend.load(Ordering::Relaxed),
            ),
            (
                "vpcep_gateway_bytes_to_client_total",
                "counter",
                "Bytes from the backend to clients.",
                |s| s.bytes_to_client.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (id, r) in running.iter() {
                let _ = writeln!(
                    out,
                    "{name}{{endpoint=\"{id}\",path=\"userspace\"}} {}",
                    get(&r.ctx.stats)
                );
            }
            for (metric, id, value) in kernel.iter().filter(|(m, _, _)| *m == name) {
                let _ = writeln!(out, "{metric}{{endpoint=\"{id}\",path=\"kernel\"}} {value}");
            }
        }
        let _ = writeln!(out, "# HELP vpcep_gateway_descriptors_used Descriptors held by listeners and sessions.\n# TYPE vpcep_gateway_descriptors_used gauge\nvpcep_gateway_descriptors_used {}", self.descriptors.taken());
        let _ = writeln!(out, "# HELP vpcep_gateway_listeners Descriptors held by listeners.\n# TYPE vpcep_gateway_listeners gauge\nvpcep_gateway_listeners {}", self.listeners.taken());
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use vpcep_model::{PortMapping, SubnetSpec};

    use super::*;
    use crate::Loopback;

    fn vpc(id: &str, seq: u32) -> VpcSpec {
        let subnets = vec![SubnetSpec {
            id: format!("{id}-s"),
            cidr: "10.0.0.0/24".into(),
            gateway_ip: Ipv4Addr::new(10, 0, 0, 1),
            vni: 0,
        }];
        VpcSpec {
            id: id.into(),
            seq,
            subnets,
        }
    }

    /// The gateway sets no TCP_NODELAY per session: accepted sockets inherit it from
    /// their listener, and backend sockets are made with it.
    #[test]
    fn sessions_start_with_nagle_off() {
        let gw = Gateway::with_budget(Arc::new(Loopback::new(204)), 64);
        let any = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));
        let listener = gw
            .listener(&vpc("c", 1), any, Type::STREAM, SockProto::TCP)
            .unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        listener.set_nonblocking(false).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(
            accepted.tcp_nodelay().unwrap(),
            "accepted socket inherits it"
        );
    }

    fn vpcs() -> HashMap<String, VpcSpec> {
        [
            ("c".to_string(), vpc("c", 1)),
            ("p".to_string(), vpc("p", 2)),
        ]
        .into()
    }

    /// An endpoint of VPC `c` (at 10.0.0.5) towards the backend 10.0.0.9 of VPC `p`.
    fn endpoint(id: &str, client_port: u16, server_port: u16, tcp_proxy: TcpProxy) -> EndpointSpec {
        EndpointSpec {
            id: id.into(),
            service_id: "svc".into(),
            marker_id: 0x0100_0000,
            consumer_vpc: "c".into(),
            subnet_id: "c-s".into(),
            ip: Ipv4Addr::new(10, 0, 0, 5),
            provider_vpc: Some("p".into()),
            backend_ip: Ipv4Addr::new(10, 0, 0, 9),
            ports: vec![PortMapping {
                client_port,
                server_port,
                protocol: Protocol::Tcp,
            }],
            tcp_proxy,
            whitelist: None,
            max_connections: 3000,
            snat_ip: Ipv4Addr::new(198, 19, 128, 1),
            dns_name: None,
            route: None,
        }
    }

    /// Out of descriptors, the gateway refuses new sessions cleanly, counts them, and keeps
    /// serving the ones it has.
    #[tokio::test]
    async fn refuses_when_the_descriptor_budget_is_spent() {
        // Blocks 200+ of 127/8 keep clear of other tests. The budget holds the one
        // listener (a budget this small gives none per core) and two sessions.
        let gw = Gateway::with_budget(Arc::new(Loopback::new(200)), 5);
        let backend = TcpListener::bind("127.202.0.9:0").await.unwrap();
        let port = backend.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = backend.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut b = [0u8; 64];
                    while let Ok(n) = s.read(&mut b).await {
                        if n == 0 || s.write_all(&b[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let spec = endpoint("ep", 7000, port, TcpProxy::Close);
        gw.start(&spec, &vpcs()).await.unwrap();
        let node = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::new(127, 201, 0, 5), 7000));
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut c = TcpStream::connect(node).await.unwrap();
            c.write_all(b"a").await.unwrap();
            let mut b = [0u8; 1];
            c.read_exact(&mut b).await.unwrap();
            held.push(c);
        }
        let mut third = TcpStream::connect(node).await.unwrap();
        let _ = third.write_all(b"a").await;
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), third.read(&mut b))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "the third session is closed");
        assert!(gw.render_metrics(&[]).contains(
            "vpcep_gateway_refused_capacity_total{endpoint=\"ep\",path=\"userspace\"} 1"
        ));
        held[0].write_all(b"b").await.unwrap();
        held[0].read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"b");
        drop(held);
        gw.stop_all().await;
        assert!(TcpStream::connect(node).await.is_err());
    }

    /// Listeners count against the descriptor budget: one per core for each port while
    /// they hold a small share of it, then one per port; a start that would exceed the
    /// budget fails and leaves nothing behind, and stopping gives everything back.
    #[tokio::test]
    async fn listeners_stay_within_the_descriptor_budget() {
        let budget = 400;
        let gw = Gateway::with_budget(Arc::new(Loopback::new(206)), budget);
        let cores = workers().unwrap().len() as u64;
        let mut started = Vec::new();
        for i in 0..budget {
            let id = format!("ep{i}");
            let before = gw.listeners();
            match gw
                .start(
                    &endpoint(&id, 20000 + i as u16, 9, TcpProxy::Close),
                    &vpcs(),
                )
                .await
            {
                Ok(()) => started.push(gw.listeners() - before),
                Err(e) => {
                    assert!(e.contains("no descriptors left"), "{e}");
                    assert_eq!(gw.listeners(), before, "a failed start holds nothing");
                    assert!(!gw.running().contains(&id));
                    break;
                }
            }
        }
        assert_eq!(gw.listeners(), started.iter().sum::<u64>());
        assert_eq!(
            gw.listeners(),
            budget,
            "every descriptor went to a listener"
        );
        assert_eq!(gw.descriptors.taken(), budget);
        if cores > 1 {
            let per_core = started.iter().take_while(|&&n| n == cores).count();
            assert_eq!(per_core as u64, budget / PER_CORE_SHARE / cores);
            assert!(started[per_core..].iter().all(|&n| n == 1));
        }
        gw.stop_all().await;
        assert_eq!((gw.listeners(), gw.descriptors.taken()), (0, 0));
    }

    /// Reads from `s` until `enough` says what came is enough; what came.
    async fn read_until(s: &mut TcpStream, enough: impl Fn(&[u8]) -> bool) -> Vec<u8> {
        let mut got = Vec::new();
        while !enough(&got) {
            let mut buf = [0u8; 512];
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "the backend got {got:?} and then the end");
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// With PROXY v2, the header goes first and intact, and the client's bytes follow it
    /// unchanged, whether they left in the header's write or after it.
    #[tokio::test]
    async fn the_proxy_header_precedes_the_clients_bytes() {
        let gw = Gateway::with_budget(Arc::new(Loopback::new(210)), 64);
        let backend = TcpListener::bind("127.212.0.9:0").await.unwrap();
        let port = backend.local_addr().unwrap().port();
        let spec = endpoint("pp", 7100, port, TcpProxy::ProxyOpen);
        gw.start(&spec, &vpcs()).await.unwrap();
        let node = SocketAddr::from(SocketAddrV4::new(Ipv4Addr::new(127, 211, 0, 5), 7100));
        for _ in 0..20 {
            let mut client = TcpStream::connect(node).await.unwrap();
            client.write_all(b"hello, backend").await.unwrap();
            let (mut s, _) = backend.accept().await.unwrap();
            let got = read_until(&mut s, |g| {
                proxy_v2::decode(g).is_some_and(|(_, n)| g.len() >= n + 14)
            })
            .await;
            let (h, n) = proxy_v2::decode(&got).unwrap();
            assert_eq!(SocketAddr::V4(h.src), client.local_addr().unwrap());
            assert_eq!(h.dst, SocketAddrV4::new(spec.ip, 7100));
            assert_eq!(
                (h.endpoint_id.as_str(), h.marker_id),
                ("pp", spec.marker_id)
            );
            assert_eq!(&got[n..], b"hello, backend");
        }
        // A client that waits for the server to speak first: the header goes alone.
        let _silent = TcpStream::connect(node).await.unwrap();
        let (mut s, _) = backend.accept().await.unwrap();
        read_until(&mut s, |g| proxy_v2::decode(g).is_some()).await;
        gw.stop_all().await;
    }
}
