//! The userspace L4 gateway: for every endpoint that must forward, listeners at the
//! endpoint address inside the consumer VPC and connections out of the provider VPC from
//! the endpoint's SNAT address, TCP (with PROXY v2 on request) and UDP. Each endpoint
//! runs under its own stop signal, so changing one never disturbs another, and stopping
//! one ends its listeners and its live sessions at once.

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

/// The threads that run TCP listeners and their sessions: one single-threaded runtime
/// per core, each with its own listener on every port (`SO_REUSEPORT`), so a session
/// lives on the thread that accepted it and its wake-ups never cross threads. Should no
/// worker start, the caller's runtime serves instead.
fn workers() -> Vec<tokio::runtime::Handle> {
    static WORKERS: std::sync::OnceLock<Vec<tokio::runtime::Handle>> = std::sync::OnceLock::new();
    let started = WORKERS.get_or_init(|| {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        (0..n)
            .filter_map(|i| {
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::Builder::new()
                    .name(format!("vpcep-gw-{i}"))
                    .spawn(move || {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build();
                        match rt {
                            Ok(rt) => {
                                let _ = tx.send(Some(rt.handle().clone()));
                                rt.block_on(std::future::pending::<()>());
                            }
                            Err(e) => {
                                tracing::error!(error = %e, "gateway worker cannot start");
                                let _ = tx.send(None);
                            }
                        }
                    })
                    .ok()?;
                rx.recv().ok().flatten()
            })
            .collect()
    });
    if started.is_empty() {
        vec![tokio::runtime::Handle::current()]
    } else {
        started.clone()
    }
}

/// A metric: name, type, help, and how to read it from an endpoint's counters.
type Series = (&'static str, &'static str, &'static str, fn(&Stats) -> u64);

struct Running {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    ctx: Arc<Ctx>,
}

pub struct Gateway {
    substrate: Arc<dyn Substrate>,
    running: Mutex<HashMap<String, Running>>,
    descriptors: Arc<Slots>,
    descriptor_budget: u64,
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
        let mut tasks = Vec::new();
        for m in &spec.ports {
            let addr = SocketAddr::from(SocketAddrV4::new(listen, m.client_port));
            let started = match m.protocol {
                Protocol::Tcp => workers().iter().try_for_each(|rt| {
                    let s = self.listener(consumer, addr, Type::STREAM, SockProto::TCP)?;
                    // Registered with the worker's own reactor.
                    let l = {
                        let _in = rt.enter();
                        tokio::net::TcpListener::from_std(std::net::TcpListener::from(s))?
                    };
                    tasks.push(rt.spawn(tcp::serve(l, m.server_port, ctx.clone())));
                    Ok(())
                }),
                Protocol::Udp => self
                    .listener(consumer, addr, Type::DGRAM, SockProto::UDP)
                    .and_then(|s| {
                        let u = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(s))?;
                        tasks.push(tokio::spawn(udp::serve(u, m.server_port, ctx.clone())));
                        Ok(())
                    }),
            };
            match started {
                Ok(()) => {}
                Err(e) => {
                    let _ = stop_tx.send(true);
                    for t in tasks {
                        t.abort();
                        let _ = t.await;
                    }
                    self.release_addresses(&ctx);
                    return Err(format!("listener {addr}/{}: {e}", m.protocol));
                }
            }
        }
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                spec.id.clone(),
                Running {
                    stop: stop_tx,
                    tasks,
                    ctx,
                },
            );
        Ok(())
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
                // One listener per worker thread; the kernel spreads new connections.
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
            for t in r.tasks {
                t.abort();
                let _ = t.await;
            }
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
        let _ = writeln!(out, "# HELP vpcep_gateway_descriptors_used Descriptors held by sessions.\n# TYPE vpcep_gateway_descriptors_used gauge\nvpcep_gateway_descriptors_used {}", self.descriptors.taken());
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

    /// Out of descriptors, the gateway refuses new sessions cleanly, counts them, and keeps
    /// serving the ones it has.
    #[tokio::test]
    async fn refuses_when_the_descriptor_budget_is_spent() {
        // Blocks 200+ of 127/8 keep clear of other tests.
        let gw = Gateway::with_budget(Arc::new(Loopback::new(200)), 4);
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
        let vpcs: HashMap<String, VpcSpec> = [
            ("c".to_string(), vpc("c", 1)),
            ("p".to_string(), vpc("p", 2)),
        ]
        .into();
        let spec = EndpointSpec {
            id: "ep".into(),
            service_id: "svc".into(),
            marker_id: 0x0100_0000,
            consumer_vpc: "c".into(),
            subnet_id: "c-s".into(),
            ip: Ipv4Addr::new(10, 0, 0, 5),
            provider_vpc: Some("p".into()),
            backend_ip: Ipv4Addr::new(10, 0, 0, 9),
            ports: vec![PortMapping {
                client_port: 7000,
                server_port: port,
                protocol: Protocol::Tcp,
            }],
            tcp_proxy: TcpProxy::Close,
            whitelist: None,
            max_connections: 3000,
            snat_ip: Ipv4Addr::new(198, 19, 128, 1),
            dns_name: None,
            route: None,
        };
        gw.start(&spec, &vpcs).await.unwrap();
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
}
