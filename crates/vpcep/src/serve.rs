//! `vpcep serve`: one process with the API, the store, the controller and the data plane.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use vpcep_api::NodeReports;
use vpcep_dataplane::substrate::netns::Machine;
use vpcep_dataplane::{Loopback, Netns, Node, Substrate};
use vpcep_store::{Database, SqlStore, Store};

use crate::controller;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubstrateKind {
    /// 127.N.0.0/16 per VPC; no root, no isolation.
    Loopback,
    /// Network namespaces: real, isolated VPCs and hosts (needs root).
    Netns,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataplaneMode {
    /// The data plane runs in this process.
    Local,
    /// Gateway nodes (`vpcep gateway --control-plane URL`) run it and report back.
    Remote,
}

/// The substrate of a data-plane node; `netns` is checked (root, `ip`, `nft`, and
/// `conntrack` unless forwarding is userspace only) here.
pub fn substrate(
    kind: SubstrateKind,
    netns_prefix: &str,
    loopback_base: u8,
    forwarding: ForwardingMode,
    machine: Option<Machine>,
) -> anyhow::Result<Arc<dyn Substrate>> {
    Ok(match (kind, machine) {
        (SubstrateKind::Loopback, None) => Arc::new(Loopback::new(loopback_base)),
        (SubstrateKind::Loopback, Some(_)) => {
            anyhow::bail!("--role (a machine of several, joined by VXLAN) needs --substrate netns")
        }
        (SubstrateKind::Netns, machine) => {
            let netns = Netns::with_kernel_path(netns_prefix, forwarding == ForwardingMode::Auto)
                .map_err(|e| anyhow::anyhow!("--substrate netns: {e}"))?;
            Arc::new(match machine {
                Some(m) => netns
                    .on_machine(m)
                    .map_err(|e| anyhow::anyhow!("--role: {e}"))?,
                None => netns,
            })
        }
    })
}

/// Private DNS of a data-plane node.
#[derive(Debug, Clone, Default)]
pub struct DnsSettings {
    /// Port of the VPC resolvers: 53 in namespaces and 10053 on loopback by default;
    /// 0 turns private DNS off.
    pub port: Option<u16>,
    /// Where names vpcep does not own are forwarded (otherwise REFUSED).
    pub upstream: Option<SocketAddr>,
    /// The cloud's internal resolver (the backend of an operator's `dns` service).
    pub cloud: Option<SocketAddr>,
}

impl DnsSettings {
    pub fn config(&self, kind: SubstrateKind) -> Option<vpcep_dataplane::DnsConfig> {
        let port = self.port.unwrap_or(match kind {
            SubstrateKind::Netns => 53,
            SubstrateKind::Loopback => LOOPBACK_DNS_PORT,
        });
        (port != 0).then_some(vpcep_dataplane::DnsConfig {
            port,
            upstream: self.upstream,
            cloud_listen: self.cloud,
        })
    }

    /// Where the resolvers are, for people.
    pub fn describe(&self, kind: SubstrateKind, loopback_base: u8) -> Option<String> {
        let c = self.config(kind)?;
        let vpcs = match kind {
            SubstrateKind::Netns => format!("each VPC's resolver is the second reserved address of its subnets (e.g. 192.168.0.2), port {}", c.port),
            SubstrateKind::Loopback => format!("VPC number N resolves at 127.({loopback_base}+N).X.Y:{} where X.Y are the low bytes of its subnets' second reserved address (e.g. 192.168.0.2 -> 127.{}.0.2)", c.port, loopback_base as u32 + 1),
        };
        let cloud = c
            .cloud_listen
            .map(|a| format!("; cloud DNS on {a}"))
            .unwrap_or_default();
        let upstream = c
            .upstream
            .map(|a| format!("; other names go to {a}"))
            .unwrap_or_else(|| "; other names are refused".into());
        Some(format!("private DNS: {vpcs}{cloud}{upstream}"))
    }
}

/// The VPC resolvers' port on the loopback substrate (53 needs privileges).
pub const LOOPBACK_DNS_PORT: u16 = 10053;

/// A data-plane node with its substrate and, unless turned off, private DNS (not on a
/// compute machine: the resolvers are with the routers).
pub fn node(
    kind: SubstrateKind,
    netns_prefix: &str,
    loopback_base: u8,
    forwarding: ForwardingMode,
    dns: &DnsSettings,
    machine: Option<Machine>,
) -> anyhow::Result<Node> {
    let compute = machine
        .as_ref()
        .is_some_and(|m| m.role == vpcep_model::MachineRole::Compute);
    let node = Node::with_forwarding(
        substrate(kind, netns_prefix, loopback_base, forwarding, machine)?,
        forwarding.into(),
    );
    Ok(match dns.config(kind).filter(|_| !compute) {
        Some(c) => node.with_dns(c),
        None => node,
    })
}

/// Everything `serve` needs, checked before anything binds.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    /// A PostgreSQL URL shared with other replicas; `None`: SQLite in `data_dir`.
    pub database: Option<String>,
    /// This replica's name among those of its database (`None`: host name and port).
    pub replica_name: Option<String>,
    pub listen: SocketAddr,
    pub region: String,
    pub clock_skew_secs: i64,
    pub substrate: SubstrateKind,
    /// Prefix of every namespace name (netns substrate).
    pub netns_prefix: String,
    /// VPC number N uses 127.(base+N).0.0/16 (loopback substrate).
    pub loopback_base: u8,
    pub dataplane: DataplaneMode,
    /// The secret gateway nodes present (enables `/internal/v1`).
    pub node_token: Option<String>,
    pub forwarding: ForwardingMode,
    pub dns: DnsSettings,
    /// Where the built-in object-storage stand-in listens, if it runs.
    pub object_store: Option<SocketAddr>,
    /// How often the kernel path is checked for drift (changes made by hand).
    pub kernel_resync: std::time::Duration,
    /// How long a machine may go without reporting before the controller declares it
    /// down and gives its place in the gateway pair to a spare.
    pub machine_down_after: std::time::Duration,
    /// The API's connections and requests: timeouts, caps, the body limit, the rate.
    pub api: ApiEdge,
    /// Where `/metrics` is served (`None`: nowhere). Never on the API's port: it names
    /// every tenant's endpoints.
    pub metrics_listen: Option<SocketAddr>,
    /// Serve the API (and so the gateway nodes' channel, `/internal/v1`) over HTTPS
    /// only, with this PEM certificate chain and key; `None`: plain HTTP.
    pub tls: Option<TlsFiles>,
}

/// Where the API's certificate and key are (PEM).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How the API's listener treats connections and requests.
#[derive(Debug, Clone)]
pub struct ApiEdge {
    /// A request head must be complete this long after a connection opens or after its
    /// previous response (the keep-alive idle timeout).
    pub header_timeout: std::time::Duration,
    /// Open API connections at most; `None`: [`default_api_connections`] of the
    /// process's descriptor limit.
    pub max_connections: Option<u64>,
    /// Open API connections from one address at most; `None`: a quarter of the cap.
    pub max_per_ip: Option<u64>,
    pub requests: vpcep_api::edge::RequestLimits,
}

impl Default for ApiEdge {
    fn default() -> Self {
        ApiEdge {
            header_timeout: vpcep_api::edge::DEFAULT_HEADER_TIMEOUT,
            max_connections: None,
            max_per_ip: None,
            requests: vpcep_api::edge::RequestLimits::default(),
        }
    }
}

/// Descriptors kept for everything that is neither an API connection nor the userspace
/// gateway's: the store (8 SQLite connections with their WAL), the runtime, the API,
/// metrics, DNS and object-store listeners, standard streams, and the VPC resolvers'
/// sockets (two per resolver address).
pub const DESCRIPTOR_RESERVE: u64 = 512;

/// The API's connection cap unless set: 512, or a quarter of a small limit.
pub fn default_api_connections(nofile: u64) -> u64 {
    (nofile / 4).clamp(16, 512)
}

/// How the process's descriptors are shared: (API connections, gateway budget). The
/// limit is `api + gateway + DESCRIPTOR_RESERVE`; with the defaults and a limit of 20,000
/// that is 512 + 18,976 + 512, the gateway's budget as it was before the API had a cap.
pub fn descriptor_split(nofile: u64, api: Option<u64>) -> Result<(u64, u64), String> {
    let api = api.unwrap_or_else(|| default_api_connections(nofile));
    if api == 0 || api > nofile / 2 {
        return Err(format!(
            "--api-max-connections {api}: use 1-{} (at most half of the {nofile} descriptors this process may hold; the data plane needs the rest)",
            nofile / 2
        ));
    }
    let gateway = nofile.saturating_sub(DESCRIPTOR_RESERVE + api).max(64);
    Ok((api, gateway))
}

/// How often a node checks its kernel path for drift, by default.
pub const DEFAULT_KERNEL_RESYNC: std::time::Duration = std::time::Duration::from_secs(300);
/// `--machine-down-after`'s default: ten of a machine's reports missed.
pub const DEFAULT_MACHINE_DOWN_AFTER: std::time::Duration = std::time::Duration::from_secs(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ForwardingMode {
    /// The kernel path (nftables NAT between namespaces) for endpoints without PROXY
    /// headers on the netns substrate; the userspace gateway for the rest.
    Auto,
    /// The userspace gateway for every endpoint.
    Userspace,
}

impl From<ForwardingMode> for vpcep_dataplane::Forwarding {
    fn from(m: ForwardingMode) -> Self {
        match m {
            ForwardingMode::Auto => vpcep_dataplane::Forwarding::Auto,
            ForwardingMode::Userspace => vpcep_dataplane::Forwarding::Userspace,
        }
    }
}

impl Config {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Config {
        Config {
            data_dir,
            database: None,
            replica_name: None,
            listen,
            region: "local-1".into(),
            clock_skew_secs: 900,
            substrate: SubstrateKind::Loopback,
            netns_prefix: "vpcep".into(),
            loopback_base: 0,
            dataplane: DataplaneMode::Local,
            node_token: None,
            forwarding: ForwardingMode::Auto,
            dns: DnsSettings::default(),
            object_store: None,
            kernel_resync: DEFAULT_KERNEL_RESYNC,
            machine_down_after: DEFAULT_MACHINE_DOWN_AFTER,
            api: ApiEdge::default(),
            // A port of its own, chosen by the kernel, so that servers side by side
            // (tests, demos) never collide; `vpcep serve` defaults to 127.0.0.1:9877.
            metrics_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            tls: None,
        }
    }

    /// Where the store is.
    pub fn database(&self) -> anyhow::Result<Database> {
        Database::new(self.database.as_deref(), self.data_dir.clone()).map_err(anyhow::Error::msg)
    }

    pub fn validate(&self) -> Result<(), String> {
        let ok = !self.region.is_empty()
            && self.region.len() <= 32
            && self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!(
                "--region {:?}: use 1-32 of lowercase letters, digits and '-' (e.g. local-1)",
                self.region
            ));
        }
        if self.dataplane == DataplaneMode::Remote
            && self.node_token.as_deref().is_none_or(|t| t.len() < 16)
        {
            return Err("--dataplane remote needs --node-token (VPCEP_NODE_TOKEN) of at least 16 characters, for the gateway nodes".into());
        }
        if !(0..=86_400).contains(&self.clock_skew_secs) {
            return Err(format!(
                "--clock-skew-secs {}: use 0-86400",
                self.clock_skew_secs
            ));
        }
        Ok(())
    }
}

/// The data plane as the API sees it.
struct NodeView(Arc<Node>);

/// The data plane of gateway nodes, as far as the control plane knows it: the substrate
/// they were told to use (`vpcep gateway` takes the same flags).
struct RemoteView {
    kind: SubstrateKind,
    netns_prefix: String,
    loopback: Loopback,
}

impl vpcep_api::NodeInfo for RemoteView {
    fn substrate(&self) -> &'static str {
        match self.kind {
            SubstrateKind::Loopback => "loopback",
            SubstrateKind::Netns => "netns",
        }
    }

    fn host_netns(&self, port_id: &str) -> Option<String> {
        (self.kind == SubstrateKind::Netns)
            .then(|| vpcep_dataplane::substrate::netns::host_ns_name(&self.netns_prefix, port_id))
    }

    fn local_ip(&self, seq: i64, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        match self.kind {
            SubstrateKind::Loopback => self.loopback.local_ip(seq as u32, ip),
            SubstrateKind::Netns => None,
        }
    }

    fn metrics(&self) -> String {
        String::new()
    }

    fn idc_netns(&self, idc_id: &str) -> Option<String> {
        (self.kind == SubstrateKind::Netns)
            .then(|| vpcep_dataplane::substrate::netns::idc_ns_name(&self.netns_prefix, idc_id))
    }
}

impl vpcep_api::NodeInfo for NodeView {
    fn substrate(&self) -> &'static str {
        self.0.substrate().name()
    }

    fn host_netns(&self, port_id: &str) -> Option<String> {
        self.0.substrate().host_netns(port_id)
    }

    fn local_ip(&self, seq: i64, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.0.substrate().local_ip(seq as u32, ip)
    }

    fn metrics(&self) -> String {
        self.0.render_metrics()
    }

    fn idc_netns(&self, idc_id: &str) -> Option<String> {
        self.0.substrate().idc_netns(idc_id)
    }

    fn host_status(&self, id: &str) -> Option<vpcep_api::HostStatus> {
        use vpcep_api::HostStatus;
        Some(match self.0.standing(id) {
            None => HostStatus::Creating,
            Some(Ok(())) => HostStatus::Up,
            Some(Err(e)) => HostStatus::Failed(e),
        })
    }
}

/// Connections the metrics listener takes at once (scrapers are few); they come out of
/// [`DESCRIPTOR_RESERVE`].
pub const METRICS_CONNECTIONS: usize = 16;

/// A built server: store open, substrate checked, listener bound; nothing runs yet.
pub struct Server {
    pub addr: SocketAddr,
    /// Where `/metrics` is served, if anywhere.
    pub metrics_addr: Option<SocketAddr>,
    /// Open API connections at most, and what the userspace gateway may spend.
    pub api_connections: u64,
    pub gateway_budget: u64,
    pub store: Arc<SqlStore>,
    /// The in-process data plane (`None` with `--dataplane remote`).
    pub node: Option<Arc<Node>>,
    /// The API's certificate, when it speaks HTTPS.
    tls: Option<vpcep_api::edge::Tls>,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: Config,
    object_store: Option<crate::objects::ObjectStore>,
    /// The data directory is this server's until it stops.
    _lock: crate::lock::DataDirLock,
}

impl Server {
    pub async fn build(config: Config) -> anyhow::Result<Server> {
        config.validate().map_err(anyhow::Error::msg)?;
        // A wrong certificate or key is refused before anything starts.
        let tls = match &config.tls {
            Some(t) => Some(
                vpcep_api::edge::Tls::from_pem_files(&t.cert, &t.key)
                    .map_err(anyhow::Error::msg)?,
            ),
            None => None,
        };
        // Before anything else touches the directory, or the node touches namespaces a
        // server already running on it holds.
        let mut lock = crate::lock::DataDirLock::acquire(&config.data_dir)?;
        let nofile = vpcep_dataplane::gateway::limits::nofile_limit();
        let (api_connections, gateway_budget) =
            descriptor_split(nofile, config.api.max_connections).map_err(anyhow::Error::msg)?;
        let node = match config.dataplane {
            DataplaneMode::Local => Some(Arc::new(
                node(
                    config.substrate,
                    &config.netns_prefix,
                    config.loopback_base,
                    config.forwarding,
                    &config.dns,
                    None,
                )?
                .with_gateway_budget(gateway_budget),
            )),
            DataplaneMode::Remote => None,
        };
        let database = config.database()?;
        let store = Arc::new(SqlStore::open(&database).await.map_err(|e| {
            anyhow::anyhow!("cannot open the store ({}): {e}", database.describe())
        })?);
        let listener = vpcep_api::edge::bind(config.listen)
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr()?;
        lock.record(&format!("pid {}, listening on {addr}", std::process::id()))?;
        let metrics_listener = match config.metrics_listen {
            Some(a) => Some(
                vpcep_api::edge::bind(a)
                    .map_err(|e| anyhow::anyhow!("cannot listen on {a} (--metrics-listen): {e}"))?,
            ),
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        tracing::info!(
            nofile,
            api_connections,
            gateway_budget,
            reserve = DESCRIPTOR_RESERVE,
            "descriptors: API connections + gateway budget + reserve"
        );
        let object_store = match config.object_store {
            Some(a) => Some(
                crate::objects::ObjectStore::bind(a, config.data_dir.join("object-store")).await?,
            ),
            None => None,
        };
        Ok(Server {
            addr,
            metrics_addr,
            api_connections,
            gateway_budget,
            store,
            node,
            tls,
            listener,
            metrics_listener,
            config,
            object_store,
            _lock: lock,
        })
    }

    /// This process's name among the replicas of its database: `--replica-name`, or the
    /// host's name and the API's port.
    pub fn replica_name(&self) -> String {
        self.config.replica_name.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}:{}", self.addr.port())
        })
    }

    /// `https` when the API speaks TLS, else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// Serves until `shutdown` turns true, then drains in-flight requests.
    pub async fn run_until_stopped(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let store: Arc<dyn Store> = self.store.clone();
        let view: Arc<dyn vpcep_api::NodeInfo> = match &self.node {
            Some(n) => Arc::new(NodeView(n.clone())),
            None => Arc::new(RemoteView {
                kind: self.config.substrate,
                netns_prefix: self.config.netns_prefix.clone(),
                loopback: Loopback::new(self.config.loopback_base),
            }),
        };
        let reports = Arc::new(NodeReports::default());
        let lease_url = self.config.database.clone();
        let role = Arc::new(vpcep_api::Role {
            name: self.replica_name(),
            // Replicas share the gateway nodes' reports; an in-process data plane
            // answers for itself.
            shared_reports: lease_url.is_some() && self.node.is_none(),
            ..Default::default()
        });
        let api_stats = Arc::new(vpcep_api::edge::EdgeStats::default());
        let app = vpcep_api::App::new(vpcep_api::AppConfig {
            store: store.clone(),
            node: Some(view),
            region: self.config.region.clone(),
            clock_skew_secs: self.config.clock_skew_secs,
            node_token: self.config.node_token.clone(),
            reports: reports.clone(),
            revision: self.store.subscribe(),
            limits: self.config.api.requests.clone(),
            connections: Some((api_stats.clone(), self.api_connections as usize)),
            role: role.clone(),
        });
        let plane: Arc<dyn controller::DataPlane> = match &self.node {
            Some(n) => n.clone(),
            None => reports.clone(),
        };
        let wiring = {
            let (store, local, sql) = (store.clone(), self.node.clone(), self.store.clone());
            let shared_reports = role.shared_reports;
            let machine_down_after = self.config.machine_down_after;
            move |shutdown| controller::Wiring {
                store: store.clone(),
                plane: plane.clone(),
                local: local.clone(),
                revision: sql.subscribe(),
                reports: reports.subscribe(),
                shared_reports,
                machine_down_after,
                shutdown,
            }
        };
        let ctl = tokio::spawn(crate::cluster::lead(
            lease_url,
            role.clone(),
            wiring,
            shutdown.clone(),
        ));
        let beat = tokio::spawn(crate::cluster::heartbeat(
            store,
            role,
            format!("{}://{}", self.scheme(), self.addr),
            shutdown.clone(),
        ));
        if let Some(objects) = self.object_store {
            tokio::spawn(objects.serve(shutdown.clone()));
        }
        let resync = self
            .node
            .clone()
            .map(|n| tokio::spawn(n.resync_every(self.config.kernel_resync, shutdown.clone())));
        let metrics = self.metrics_listener.map(|l| {
            tokio::spawn(vpcep_api::edge::serve(
                l,
                vpcep_api::metrics_router(app.clone()),
                vpcep_api::edge::ConnLimits {
                    header_timeout: self.config.api.header_timeout,
                    max_connections: METRICS_CONNECTIONS,
                    max_per_ip: METRICS_CONNECTIONS,
                    tls: None,
                },
                Arc::default(),
                shutdown.clone(),
            ))
        });
        vpcep_api::edge::serve(
            self.listener,
            vpcep_api::router(app),
            vpcep_api::edge::ConnLimits {
                header_timeout: self.config.api.header_timeout,
                max_connections: self.api_connections as usize,
                max_per_ip: self
                    .config
                    .api
                    .max_per_ip
                    .unwrap_or((self.api_connections / 4).max(1))
                    as usize,
                tls: self.tls,
            },
            api_stats,
            shutdown.clone(),
        )
        .await?;
        if let Some(m) = metrics {
            let _ = m.await;
        }
        let _ = ctl.await;
        let _ = beat.await;
        if let Some(r) = resync {
            let _ = r.await;
        }
        // Listeners and sessions end here; namespaces and hosts stay, and the next start
        // rebuilds forwarding from the snapshot.
        if let Some(n) = &self.node {
            n.gateway().stop_all().await;
        }
        self.store.close().await;
        Ok(())
    }
}
