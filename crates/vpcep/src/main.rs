//! `vpcep`: a self-hosted VPC Endpoint service. See `vpcep --help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde_json::{json, Value};
use tokio::sync::watch;
use vpcep::admin;
use vpcep::cli::{self, Fmt};
use vpcep::client::{ApiClient, ClientArgs};
use vpcep::gateway::GatewayConfig;
use vpcep::output::{print_json, print_table, Output};
use vpcep::serve::{Config, DataplaneMode, ForwardingMode, Server, SubstrateKind};

#[derive(Parser)]
#[command(
    name = "vpcep",
    version,
    about = "A self-hosted VPC Endpoint service (Huawei Cloud VPCEP compatible)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the service: API, store and controller in one process.
    Serve(ServeArgs),
    /// Operator commands on the data directory (work with or without a running server).
    Admin {
        #[command(subcommand)]
        cmd: AdminCmd,
    },
    /// Run a data-plane node alone, following a control plane (`serve --dataplane remote`).
    Gateway(GatewayArgs),
    /// Save the endpoint, keys and project for the other commands (mode 0600).
    Configure {
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        access_key: Option<String>,
        #[arg(long)]
        secret_key: Option<String>,
        #[arg(long)]
        project_id: Option<String>,
        /// Read the JSON that `admin account create` printed (keys and project).
        #[arg(long)]
        from_account: Option<std::path::PathBuf>,
        /// Trust only this CA certificate (PEM) for an https endpoint, e.g. the cert.pem
        /// of `admin tls self-signed`; saved as an absolute path.
        #[arg(long)]
        ca_file: Option<std::path::PathBuf>,
    },
    /// Endpoint services (provider side).
    Service {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        fmt: Fmt,
        #[command(subcommand)]
        cmd: cli::ServiceCmd,
    },
    /// Endpoints (consumer side).
    Endpoint {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        fmt: Fmt,
        #[command(subcommand)]
        cmd: cli::EndpointCmd,
    },
    /// Connections to your services: accept, reject, notes.
    Connection {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        fmt: Fmt,
        #[command(subcommand)]
        cmd: cli::ConnectionCmd,
    },
    /// Service whitelists: which accounts may connect.
    Permission {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        fmt: Fmt,
        #[command(subcommand)]
        cmd: cli::PermissionCmd,
    },
    /// Quotas: used and total.
    Quota {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        fmt: Fmt,
    },
    /// Tags of services and endpoints.
    Tag {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        fmt: Fmt,
        #[command(subcommand)]
        cmd: cli::TagCmd,
    },
    /// VPCs.
    Vpc {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        fmt: Fmt,
        #[command(subcommand)]
        cmd: cli::VpcCmd,
    },
    /// Subnets.
    Subnet {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        fmt: Fmt,
        #[command(subcommand)]
        cmd: cli::SubnetCmd,
    },
    /// Route tables of VPCs: custom routes, and where gateway endpoints route.
    Routetable {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        fmt: Fmt,
        #[command(subcommand)]
        cmd: cli::RoutetableCmd,
    },
    /// Build the user guide's scenario step by step on a fresh data directory and report.
    /// Its progress and report go to standard output; the embedded server's log lines
    /// to standard error, warnings only unless VPCEP_LOG says otherwise.
    Demo {
        #[arg(long, value_enum, default_value = "loopback")]
        substrate: SubstrateKind,
        /// Loopback substrate: the demo's VPCs use 127.(BASE+N).0.0/16.
        #[arg(long, default_value_t = 200)]
        loopback_base: u8,
        #[command(flatten)]
        log: LogArgs,
    },
    /// (Used by the demo.) A tiny HTTP backend.
    #[command(hide = true)]
    DemoBackend { addr: std::net::SocketAddr },
    /// (Used by the demo.) One HTTP GET.
    #[command(hide = true)]
    DemoFetch { addr: std::net::SocketAddr },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
    /// Hosts: stand-ins for VMs and load balancers, joined to a subnet.
    Host {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        fmt: Fmt,
        #[command(subcommand)]
        cmd: HostCmd,
    },
}

#[derive(Subcommand)]
enum HostCmd {
    /// Create a host; prints JSON with id, port_id, ip, netns (and local_ip in loopback mode).
    /// With --idc, a data centre joined to the VPC as over a VPN: its own --cidr, routed
    /// to the VPC (netns substrate).
    Create {
        /// The VPC (id).
        #[arg(long)]
        vpc: String,
        /// The subnet (id) the host joins.
        #[arg(long, required_unless_present = "idc")]
        subnet: Option<String>,
        /// Make an on-premises data centre instead of a VM (user guide 2.4).
        #[arg(long, requires = "cidr", conflicts_with_all = ["subnet", "lb", "ip"])]
        idc: bool,
        /// The data centre's own range, e.g. 172.31.0.0/24 (its machine gets the first address).
        #[arg(long)]
        cidr: Option<String>,
        /// Its address in the subnet (default: the lowest free one).
        #[arg(long)]
        ip: Option<String>,
        /// Its name.
        #[arg(long, default_value = "")]
        name: String,
        /// The compute machine to place it on, in a deployment across machines (default:
        /// the one with the fewest hosts; `vpcep admin node list` shows them).
        #[arg(long, conflicts_with = "idc")]
        node: Option<String>,
        /// The host stands for a load balancer's VIP (for services with server_type LB).
        #[arg(long)]
        lb: bool,
        /// Return as soon as the API has it, without waiting (up to 60 s) until the data
        /// plane has stood it up.
        #[arg(long)]
        no_wait: bool,
    },
    /// List hosts and data centres.
    List,
    /// Delete a host or data centre (by id or name).
    Delete { host: String },
    /// Run a command inside a host or data centre, like logging into it (netns: needs root).
    Exec {
        host: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

#[derive(Args)]
struct DataDir {
    /// Where the SQLite database and the master key live (with --database: the master
    /// key only, the same master.key on every replica).
    #[arg(long, env = "VPCEP_DATA_DIR", default_value = "./vpcep-data")]
    data_dir: PathBuf,
    /// A postgres://… URL: the store is that PostgreSQL database, which replicas share
    /// (replicas run `serve --dataplane remote`: one process with the in-process data
    /// plane must be the only one). Without it the store is SQLite in --data-dir.
    #[arg(long, env = "VPCEP_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// The region id (one project per account and region).
    #[arg(long, env = "VPCEP_REGION", default_value = "local-1")]
    region: String,
}

impl DataDir {
    fn database(&self) -> anyhow::Result<vpcep_store::Database> {
        vpcep_store::Database::new(self.database.as_deref(), self.data_dir.clone())
            .map_err(|e| vpcep::cli::UsageError(e).into())
    }
}

/// How log lines are written (always to standard error).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Text, coloured only at a terminal.
    Plain,
    /// One JSON object per line (timestamp, level, target, fields), for collectors.
    Json,
}

#[derive(Args, Clone, Copy)]
struct LogArgs {
    /// Log lines (on standard error) as plain text or one JSON object per line; their
    /// level and filters come from VPCEP_LOG.
    #[arg(long, env = "VPCEP_LOG_FORMAT", value_enum, default_value = "plain")]
    log_format: LogFormat,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    dir: DataDir,
    #[command(flatten)]
    log: LogArgs,
    /// Address of the API.
    #[arg(long, env = "VPCEP_LISTEN", default_value = "127.0.0.1:9876")]
    listen: SocketAddr,
    /// How far a request's X-Sdk-Date may be from server time, in seconds.
    #[arg(long, env = "VPCEP_CLOCK_SKEW_SECS", default_value_t = 900)]
    clock_skew_secs: i64,
    #[command(flatten)]
    node: NodeArgs,
    /// Where the data plane runs: in this process, or on gateway nodes.
    #[arg(long, env = "VPCEP_DATAPLANE", value_enum, default_value = "local")]
    dataplane: DataplaneMode,
    /// This replica's name in `vpcep admin cluster status` (default: host name and API
    /// port).
    #[arg(long, env = "VPCEP_REPLICA_NAME")]
    replica_name: Option<String>,
    /// Seconds a machine (`vpcep gateway --role`, which reports every 2 s) may be silent
    /// before it is declared down and its place in the gateway pair passes to a spare
    /// gateway machine. Longer than a node restart takes: a re-homed router starts over
    /// on the spare.
    #[arg(long, env = "VPCEP_MACHINE_DOWN_AFTER", default_value_t = 20, value_parser = clap::value_parser!(u64).range(2..=86400))]
    machine_down_after: u64,
    /// Secret that gateway nodes present (needed with --dataplane remote).
    #[arg(long, env = "VPCEP_NODE_TOKEN", hide_env_values = true)]
    node_token: Option<String>,
    /// Run the built-in object-storage stand-in here (demos and tests only, not S3):
    /// PUT/GET/DELETE /BUCKET/KEY, objects under DATA_DIR/object-store.
    #[arg(long, env = "VPCEP_OBJECT_STORE")]
    object_store: Option<SocketAddr>,
    /// Address of GET /metrics (every tenant's endpoints and traffic, so not on the API's
    /// port); `off` serves no metrics.
    #[arg(long, env = "VPCEP_METRICS_LISTEN", default_value = "127.0.0.1:9877", value_parser = parse_listen_or_off)]
    metrics_listen: ListenOrOff,
    /// Seconds a connection may take to send a complete request head, counted from its
    /// opening or from its previous response (so also the keep-alive idle timeout).
    #[arg(long, env = "VPCEP_API_HEADER_TIMEOUT", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    api_header_timeout: u64,
    /// Seconds a request body may take to arrive whole after its head (else 408).
    #[arg(long, env = "VPCEP_API_BODY_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    api_body_timeout: u64,
    /// Largest request body in bytes (else 413 APIGW.0201); Huawei's gateway takes 12 MB.
    #[arg(long, env = "VPCEP_API_MAX_BODY", default_value_t = vpcep_api::edge::DEFAULT_MAX_BODY as u64, value_parser = clap::value_parser!(u64).range(1024..=1 << 30))]
    api_max_body: u64,
    /// Open API connections at most (more are answered 503 and closed). Default: 512, or
    /// a quarter of a smaller descriptor limit; at most half the limit. The userspace
    /// gateway's descriptor budget is the limit less this and 512.
    #[arg(long, env = "VPCEP_API_MAX_CONNECTIONS")]
    api_max_connections: Option<u64>,
    /// Open API connections from one address at most (default: a quarter of
    /// --api-max-connections; behind a reverse proxy, set it to the cap).
    #[arg(long, env = "VPCEP_API_MAX_CONNECTIONS_PER_IP", value_parser = clap::value_parser!(u64).range(1..))]
    api_max_connections_per_ip: Option<u64>,
    /// Signed requests per second per access key (console tokens: per account), beyond
    /// which the API answers 429 APIGW.0308 with Retry-After; 0 turns the limit off.
    #[arg(long, env = "VPCEP_API_RATE_LIMIT", default_value_t = 1000)]
    api_rate_limit: u32,
    /// Requests one access key may send at once after a quiet spell (default: twice
    /// --api-rate-limit).
    #[arg(long, env = "VPCEP_API_RATE_BURST", value_parser = clap::value_parser!(u32).range(1..))]
    api_rate_burst: Option<u32>,
    /// Serve the API, and the gateway nodes' channel on it, over HTTPS only with this
    /// PEM certificate (chain); needs --tls-key. Without both: plain HTTP.
    #[arg(long, env = "VPCEP_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "VPCEP_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// A listen address, or `off`.
#[derive(Debug, Clone, Copy)]
struct ListenOrOff(Option<SocketAddr>);

fn parse_listen_or_off(s: &str) -> Result<ListenOrOff, String> {
    match s {
        "off" | "none" | "0" | "" => Ok(ListenOrOff(None)),
        _ => s
            .parse()
            .map(|a| ListenOrOff(Some(a)))
            .map_err(|_| format!("{s:?}: an address such as 127.0.0.1:9877, or off")),
    }
}

#[derive(Args)]
struct NodeArgs {
    /// Where VPCs become real: loopback (no root) or netns (network namespaces, root).
    #[arg(long, env = "VPCEP_SUBSTRATE", value_enum, default_value = "loopback")]
    substrate: SubstrateKind,
    /// Prefix of the namespaces the netns substrate creates.
    #[arg(long, env = "VPCEP_NETNS_PREFIX", default_value = "vpcep")]
    netns_prefix: String,
    /// Loopback substrate: VPC number N uses 127.(BASE+N).0.0/16.
    #[arg(long, env = "VPCEP_LOOPBACK_BASE", default_value_t = 0)]
    loopback_base: u8,
    /// auto: the kernel path (netns, tcp_proxy close) where possible; userspace: never.
    #[arg(long, env = "VPCEP_FORWARDING", value_enum, default_value = "auto")]
    forwarding: ForwardingMode,
    /// Port of the VPC resolvers (default 53 with netns, 10053 with loopback; 0: no DNS).
    #[arg(long, env = "VPCEP_DNS_PORT")]
    dns_port: Option<u16>,
    /// Where the resolvers forward names vpcep does not own (default: refuse them).
    #[arg(long, env = "VPCEP_DNS_UPSTREAM")]
    dns_upstream: Option<SocketAddr>,
    /// Run the cloud's internal resolver here (answers the operator's gateway services'
    /// names; the backend of a `dns` public service), e.g. 127.0.0.1:8053.
    #[arg(long, env = "VPCEP_CLOUD_DNS")]
    cloud_dns: Option<SocketAddr>,
    /// Seconds between checks that the kernel path's tables, routes and rules are as
    /// planned (a namespace changed by hand is rewritten).
    #[arg(long, env = "VPCEP_KERNEL_RESYNC", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    kernel_resync: u64,
}

impl NodeArgs {
    fn dns(&self) -> vpcep::serve::DnsSettings {
        vpcep::serve::DnsSettings {
            port: self.dns_port,
            upstream: self.dns_upstream,
            cloud: self.cloud_dns,
        }
    }
}

/// A machine's part in a deployment across machines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RoleArg {
    /// Holds hosts (the VMs' stand-ins).
    Compute,
    /// Holds the VPCs' routers, their endpoints and resolvers.
    Gateway,
}

#[derive(Args)]
struct GatewayArgs {
    /// The control plane's API URL, or several separated by commas (replicas of one
    /// database): the node follows one and moves to the next when it stops answering.
    #[arg(long, env = "VPCEP_CONTROL_PLANE", value_name = "URL[,URL...]")]
    control_plane: String,
    /// The node token the control plane was started with.
    #[arg(long, env = "VPCEP_NODE_TOKEN", hide_env_values = true)]
    token: String,
    /// This node's name in status reports (and its machine's name, with --role).
    #[arg(
        long,
        alias = "node",
        env = "VPCEP_NODE_NAME",
        default_value = "gateway-1"
    )]
    name: String,
    /// This machine's part in a deployment across machines: `compute` holds the hosts
    /// placed on it, `gateway` the VPCs' routers and their endpoints; subnets are VXLAN
    /// segments between them (needs --underlay and --substrate netns). Without it the
    /// node is the one machine that is everything.
    #[arg(long, env = "VPCEP_ROLE", value_enum, requires = "underlay")]
    role: Option<RoleArg>,
    /// This machine's address on the network between the machines: the VXLAN tunnels'
    /// endpoint (UDP 4789).
    #[arg(long, env = "VPCEP_UNDERLAY", requires = "role")]
    underlay: Option<std::net::Ipv4Addr>,
    /// This machine's availability zone (shown by `vpcep admin node list`).
    #[arg(long, env = "VPCEP_ZONE", default_value = "", requires = "role")]
    zone: String,
    /// Trust only this CA certificate (PEM) for an https control plane (default: the
    /// built-in web roots).
    #[arg(long, env = "VPCEP_CA_FILE")]
    ca_file: Option<PathBuf>,
    #[command(flatten)]
    node: NodeArgs,
    #[command(flatten)]
    log: LogArgs,
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Accounts (domains) with their AK/SK and console password.
    Account {
        #[command(subcommand)]
        cmd: AccountCmd,
    },
    /// Per-account quotas.
    Quota {
        #[command(subcommand)]
        cmd: QuotaCmd,
    },
    /// Operator-provided cloud services (e.g. dns, obs) visible to every account.
    PublicService {
        #[command(subcommand)]
        cmd: PublicServiceCmd,
    },
    /// Certificates for HTTPS (`serve --tls-cert --tls-key`).
    Tls {
        #[command(subcommand)]
        cmd: TlsCmd,
    },
    /// Bring the store to this vpcep's schema version (every start does too); prints the
    /// version before and after.
    Migrate {
        #[command(flatten)]
        dir: DataDir,
    },
    /// The processes serving the store.
    Cluster {
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// The machines of a deployment across machines (`vpcep gateway --role`).
    Node {
        #[command(subcommand)]
        cmd: NodeCmd,
    },
    /// Write a consistent copy of the SQLite store into a new FILE while servers run
    /// (restore: stop the server, put FILE in place of DATA_DIR/vpcep.db with the same
    /// master.key). A PostgreSQL store is backed up with pg_dump.
    Backup {
        /// The new file (must not exist).
        file: PathBuf,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand)]
enum NodeCmd {
    /// Every machine that registered: its role, zone, underlay address, hosts, and when
    /// it last reported.
    List {
        #[command(flatten)]
        dir: DataDir,
        /// table (for people) or json (for scripts).
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Every replica that has served the store: its address, version, when it was last
    /// heard of, and which one holds the controller lease.
    Status {
        #[command(flatten)]
        dir: DataDir,
        /// table (for people) or json (for scripts).
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum TlsCmd {
    /// Write a self-signed certificate (cert.pem) and its key (key.pem, mode 0600) for a
    /// first try, valid for a year for the --name values, 127.0.0.1 and localhost; prints
    /// its SHA-256 fingerprint. Clients trust it with `--ca-file cert.pem`.
    SelfSigned {
        /// Where to write cert.pem and key.pem (made if missing).
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// A host name or IP address clients use to reach the API; repeatable.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Replace cert.pem and key.pem if they exist.
        #[arg(long)]
        force: bool,
        /// table (for people) or json (for scripts).
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum AccountCmd {
    /// Create an account; prints its credentials once, as JSON.
    Create {
        name: String,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List accounts.
    List {
        #[command(flatten)]
        dir: DataDir,
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
}

#[derive(Subcommand)]
enum QuotaCmd {
    /// Set an account's quotas.
    Set {
        account: String,
        #[arg(long)]
        endpoint_services: Option<i64>,
        #[arg(long)]
        endpoints: Option<i64>,
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Subcommand)]
enum PublicServiceCmd {
    /// Register a cloud service: `--type interface` with ports, or `--type gateway` with a CIDR.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long = "type", default_value = "interface")]
        kind: String,
        /// The operator's backend address for the service.
        #[arg(long)]
        backend: String,
        /// Port mapping CLIENT:SERVER[/TCP|UDP]; repeat for more.
        #[arg(long = "port")]
        ports: Vec<String>,
        /// The service's address range (gateway services), e.g. 100.125.0.0/16.
        #[arg(long)]
        cidr: Option<String>,
        #[arg(long, default_value = "")]
        description: String,
        #[command(flatten)]
        dir: DataDir,
    },
    /// List the public services, with their status and how many endpoints use them.
    List {
        #[command(flatten)]
        dir: DataDir,
        /// table (for people) or json (for scripts).
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Change a public service's backend or description at any time; its ports or range
    /// only while no endpoint uses it.
    Update {
        /// The service's id, name (e.g. obs) or full name.
        service: String,
        /// A new backend address (new sessions go there).
        #[arg(long)]
        backend: Option<String>,
        /// Replace the port mappings (interface services): CLIENT:SERVER[/TCP|UDP]; repeatable.
        #[arg(long = "port")]
        ports: Vec<String>,
        /// A new address range (gateway services).
        #[arg(long)]
        cidr: Option<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Delete a public service (refused while endpoints are connected to it); a running
    /// server removes it.
    Delete {
        /// The service's id, name (e.g. obs) or full name.
        service: String,
        #[command(flatten)]
        dir: DataDir,
    },
}

/// Log lines go to standard error, in `format`, at `level` and above unless VPCEP_LOG
/// says otherwise.
fn init_tracing(format: LogFormat, level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VPCEP_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},hickory_server=warn,hickory_net=warn,hickory_proto=warn"
        ))
    });
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colours only for a person at a terminal: a log file or a collector gets plain text.
        LogFormat::Plain => {
            use std::io::IsTerminal;
            fmt.with_ansi(std::io::stderr().is_terminal()).init()
        }
        LogFormat::Json => fmt.json().with_ansi(false).init(),
    }
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let config = Config {
        data_dir: a.dir.data_dir,
        database: a.dir.database,
        replica_name: a.replica_name,
        listen: a.listen,
        region: a.dir.region,
        clock_skew_secs: a.clock_skew_secs,
        substrate: a.node.substrate,
        netns_prefix: a.node.netns_prefix.clone(),
        loopback_base: a.node.loopback_base,
        forwarding: a.node.forwarding,
        dns: a.node.dns(),
        dataplane: a.dataplane,
        node_token: a.node_token,
        object_store: a.object_store,
        kernel_resync: std::time::Duration::from_secs(a.node.kernel_resync),
        machine_down_after: std::time::Duration::from_secs(a.machine_down_after),
        api: vpcep::serve::ApiEdge {
            header_timeout: std::time::Duration::from_secs(a.api_header_timeout),
            max_connections: a.api_max_connections,
            max_per_ip: a.api_max_connections_per_ip,
            requests: vpcep_api::edge::RequestLimits {
                max_body: a.api_max_body as usize,
                body_timeout: std::time::Duration::from_secs(a.api_body_timeout),
                rate: (a.api_rate_limit > 0).then(|| vpcep_api::ratelimit::Rate {
                    per_sec: a.api_rate_limit as f64,
                    burst: a
                        .api_rate_burst
                        .map_or(2.0 * a.api_rate_limit as f64, |b| b as f64),
                }),
            },
        },
        metrics_listen: a.metrics_listen.0,
        tls: match (a.tls_cert, a.tls_key) {
            (Some(cert), Some(key)) => Some(vpcep::serve::TlsFiles { cert, key }),
            _ => None,
        },
    };
    let server = Server::build(config.clone()).await?;
    // Scripts read this line to find the port; a closed stdout must not stop the server.
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "vpcep listening on {}://{}",
            server.scheme(),
            server.addr
        );
        // Second, always when metrics are on: scripts read it after the first.
        if let Some(m) = server.metrics_addr {
            let _ = writeln!(out, "metrics on http://{m}/metrics");
        }
        if server.node.is_some() {
            if let Some(d) = config.dns.describe(config.substrate, config.loopback_base) {
                let _ = writeln!(out, "{d}");
            }
        }
        if let Some(a) = config.object_store {
            let _ = writeln!(
                out,
                "object-storage stand-in (for demos and tests, not S3) on http://{a}"
            );
        }
        let _ = out.flush();
    }
    tracing::info!(addr = %server.addr, metrics = ?server.metrics_addr, api_connections = server.api_connections, gateway_budget = server.gateway_budget, data_dir = %config.data_dir.display(), region = %config.region, substrate = ?config.substrate, "serving");
    server.run_until_stopped(shutdown_watch()).await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn is_404(e: &anyhow::Error) -> bool {
    e.downcast_ref::<vpcep::client::ApiFailure>()
        .is_some_and(|f| f.status == 404)
}

/// A host, or else a data centre, by id or name: (API path, its JSON). Neither is
/// "host not found" (404, exit 3).
async fn host_or_idc(api: &ApiClient, key: &str) -> anyhow::Result<(String, Value)> {
    let path = format!("/v1/{{p}}/hosts/{key}");
    match api.call("GET", &path, None).await {
        Ok(v) => Ok((path, v["host"].clone())),
        Err(e) if is_404(&e) => {
            let path = format!("/v1/{{p}}/idcs/{key}");
            match api.call("GET", &path, None).await {
                Ok(v) => Ok((path, v["idc"].clone())),
                Err(e) if is_404(&e) => Err(vpcep::client::ApiFailure {
                    status: 404,
                    code: "EndPoint.0005".into(),
                    msg: format!("host {key} not found"),
                }
                .into()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Polls `path` (a host's or data centre's, whose JSON is under `key`) until the data
/// plane has stood it up: its JSON then. A `status` of null means the data plane runs
/// on gateway nodes, which this server cannot see: it is returned as it is.
async fn wait_up(api: &ApiClient, path: &str, key: &str, mut v: Value) -> anyhow::Result<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        match v["status"].as_str() {
            Some("creating") => {}
            Some("failed") => {
                return Err(vpcep::client::ApiFailure {
                    status: 500,
                    code: "EndPoint.0001".into(),
                    msg: format!(
                        "{} {} could not be stood up: {}",
                        key,
                        v["id"].as_str().unwrap_or("?"),
                        v["error"].as_str().unwrap_or("no reason given")
                    ),
                }
                .into())
            }
            _ => return Ok(v),
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!(
                "{key} {} is still being created after 60 s (see `vpcep host list`)",
                v["id"].as_str().unwrap_or("?")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        v = api.call("GET", path, None).await?[key].clone();
    }
}

async fn host(client: &ClientArgs, output: Output, cmd: HostCmd) -> anyhow::Result<()> {
    let api = ApiClient::new(client)?;
    match cmd {
        HostCmd::Create {
            vpc,
            idc: true,
            cidr,
            name,
            no_wait,
            ..
        } => {
            let body = json!({"idc": {"vpc_id": vpc, "cidr": cidr, "name": name}});
            let mut v = api.call("POST", "/v1/{p}/idcs", Some(&body)).await?["idc"].take();
            if !no_wait {
                let path = format!("/v1/{{p}}/idcs/{}", v["id"].as_str().unwrap_or_default());
                v = wait_up(&api, &path, "idc", v).await?;
            }
            print_json(&v);
        }
        HostCmd::Create {
            vpc,
            subnet,
            ip,
            name,
            lb,
            node,
            no_wait,
            ..
        } => {
            let body = json!({"host": {"vpc_id": vpc, "subnet_id": subnet, "ip": ip, "name": name, "lb": lb, "node": node}});
            let mut v = api.call("POST", "/v1/{p}/hosts", Some(&body)).await?["host"].take();
            if !no_wait {
                let path = format!("/v1/{{p}}/hosts/{}", v["id"].as_str().unwrap_or_default());
                v = wait_up(&api, &path, "host", v).await?;
            }
            print_json(&v);
        }
        HostCmd::List => {
            let v = api.call("GET", "/v1/{p}/hosts", None).await?;
            let mut hosts = v["hosts"].as_array().cloned().unwrap_or_default();
            let d = api.call("GET", "/v1/{p}/idcs", None).await?;
            for mut i in d["idcs"].as_array().cloned().unwrap_or_default() {
                i["type"] = json!("IDC");
                hosts.push(i);
            }
            if output == Output::Json {
                print_json(&Value::Array(hosts));
            } else {
                let s = |h: &Value, k: &str| h[k].as_str().unwrap_or("-").to_owned();
                let rows: Vec<Vec<String>> = hosts
                    .iter()
                    .map(|h| {
                        let kind = match (h["type"].as_str(), h["lb"] == true) {
                            (Some(t), _) => format!("{t} {}", s(h, "cidr")),
                            (None, true) => "LB".into(),
                            (None, false) => "VM".into(),
                        };
                        vec![
                            s(h, "id"),
                            s(h, "name"),
                            s(h, "ip"),
                            s(h, "vpc_id"),
                            kind,
                            h["netns"]
                                .as_str()
                                .or(h["local_ip"].as_str())
                                .unwrap_or("-")
                                .to_owned(),
                        ]
                    })
                    .collect();
                print_table(
                    &["ID", "NAME", "IP", "VPC", "TYPE", "NETNS / LOCAL IP"],
                    &rows,
                );
            }
        }
        HostCmd::Delete { host } => {
            let (path, _) = host_or_idc(&api, &host).await?;
            api.call("DELETE", &path, None).await?;
        }
        HostCmd::Exec { host, cmd } => {
            let (_, h) = host_or_idc(&api, &host).await?;
            let mut command = match h["netns"].as_str() {
                Some(ns) => {
                    let mut c = std::process::Command::new("ip");
                    c.args(["netns", "exec", ns]).args(&cmd);
                    c
                }
                None => {
                    // Loopback: a host is an address on this machine; run the command here.
                    let mut c = std::process::Command::new(&cmd[0]);
                    c.args(&cmd[1..]);
                    if let Some(ip) = h["local_ip"].as_str() {
                        c.env("VPCEP_HOST_IP", ip);
                    }
                    c
                }
            };
            let status = command
                .status()
                .map_err(|e| anyhow::anyhow!("cannot run {:?}: {e}", cmd[0]))?;
            std::process::exit(status.code().unwrap_or(1));
        }
    }
    Ok(())
}

/// Turns true on SIGINT or SIGTERM.
fn shutdown_watch() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = tx.send(true);
    });
    rx
}

async fn gateway(a: GatewayArgs) -> anyhow::Result<()> {
    let cfg = GatewayConfig {
        control_plane: a.control_plane,
        token: a.token,
        name: a.name,
        substrate: a.node.substrate,
        netns_prefix: a.node.netns_prefix.clone(),
        loopback_base: a.node.loopback_base,
        forwarding: a.node.forwarding,
        dns: a.node.dns(),
        kernel_resync: std::time::Duration::from_secs(a.node.kernel_resync),
        ca_file: a.ca_file,
        machine: match (a.role, a.underlay) {
            (Some(role), Some(underlay)) => Some(vpcep_api::MachineReport {
                role: match role {
                    RoleArg::Compute => vpcep_model::MachineRole::Compute,
                    RoleArg::Gateway => vpcep_model::MachineRole::Gateway,
                },
                zone: a.zone,
                underlay,
            }),
            _ => None,
        },
    };
    tracing::info!(control_plane = %cfg.control_plane, node = %cfg.name, substrate = ?cfg.substrate, machine = ?cfg.machine, "gateway node following the control plane");
    vpcep::gateway::run(cfg, shutdown_watch()).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve(a) => serve(a).await,
        Cmd::Gateway(a) => gateway(a).await,
        Cmd::Host { client, fmt, cmd } => host(&client, fmt.output, cmd).await,
        Cmd::Configure {
            endpoint,
            access_key,
            secret_key,
            project_id,
            from_account,
            ca_file,
        } => configure(
            endpoint,
            access_key,
            secret_key,
            project_id,
            from_account,
            ca_file,
        ),
        Cmd::Service { client, fmt, cmd } => {
            cli::service(&ApiClient::new(&client)?, fmt, cmd).await
        }
        Cmd::Endpoint { client, fmt, cmd } => {
            cli::endpoint(&ApiClient::new(&client)?, fmt, cmd).await
        }
        Cmd::Connection { client, fmt, cmd } => {
            cli::connection(&ApiClient::new(&client)?, fmt, cmd).await
        }
        Cmd::Permission { client, fmt, cmd } => {
            cli::permission(&ApiClient::new(&client)?, fmt, cmd).await
        }
        Cmd::Quota { client, fmt } => cli::quota(&ApiClient::new(&client)?, fmt).await,
        Cmd::Tag { client, fmt, cmd } => cli::tag(&ApiClient::new(&client)?, fmt, cmd).await,
        Cmd::Vpc { client, fmt, cmd } => cli::vpc(&ApiClient::new(&client)?, fmt, cmd).await,
        Cmd::Subnet { client, fmt, cmd } => cli::subnet(&ApiClient::new(&client)?, fmt, cmd).await,
        Cmd::Routetable { client, fmt, cmd } => {
            cli::routetable(&ApiClient::new(&client)?, fmt, cmd).await
        }
        Cmd::Demo {
            substrate,
            loopback_base,
            ..
        } => vpcep::demo::run(substrate, loopback_base).await,
        Cmd::DemoBackend { addr } => vpcep::demo::backend(addr).await,
        Cmd::DemoFetch { addr } => {
            println!("{}", vpcep::demo::fetch(addr).await?.trim_end());
            Ok(())
        }
        Cmd::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "vpcep", &mut script);
            // A closed pipe (`| head`) is the reader's choice, not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            Ok(())
        }
        Cmd::Admin { cmd } => match cmd {
            AdminCmd::Account {
                cmd: AccountCmd::Create { name, dir },
            } => {
                print_json(&admin::create_account(&dir.database()?, &name, &dir.region).await?);
                Ok(())
            }
            AdminCmd::Account {
                cmd: AccountCmd::List { dir, output },
            } => {
                let list = admin::list_accounts(&dir.database()?).await?;
                if output == Output::Json {
                    print_json(&serde_json::Value::Array(
                        list.iter().map(admin::account_json).collect(),
                    ));
                } else {
                    let rows: Vec<Vec<String>> = list
                        .iter()
                        .map(|a| {
                            let projects: Vec<String> = a
                                .project_ids
                                .iter()
                                .map(|(r, p)| format!("{r}:{p}"))
                                .collect();
                            vec![
                                a.name.clone(),
                                a.domain_id.clone(),
                                projects.join(","),
                                a.service_quota.to_string(),
                                a.endpoint_quota.to_string(),
                            ]
                        })
                        .collect();
                    print_table(
                        &[
                            "NAME",
                            "DOMAIN ID",
                            "PROJECTS",
                            "SERVICE QUOTA",
                            "ENDPOINT QUOTA",
                        ],
                        &rows,
                    );
                }
                Ok(())
            }
            AdminCmd::Quota {
                cmd:
                    QuotaCmd::Set {
                        account,
                        endpoint_services,
                        endpoints,
                        dir,
                    },
            } => {
                let a = admin::set_quota(&dir.database()?, &account, endpoint_services, endpoints)
                    .await?;
                print_json(&admin::account_json(&a));
                Ok(())
            }
            AdminCmd::PublicService {
                cmd:
                    PublicServiceCmd::Create {
                        name,
                        kind,
                        backend,
                        ports,
                        cidr,
                        description,
                        dir,
                    },
            } => {
                let spec = admin::PublicService {
                    name: &name,
                    kind: &kind,
                    backend: &backend,
                    ports: &ports,
                    cidr: cidr.as_deref(),
                    description: &description,
                };
                print_json(
                    &admin::create_public_service(&dir.database()?, &dir.region, spec).await?,
                );
                Ok(())
            }
            AdminCmd::PublicService {
                cmd: PublicServiceCmd::List { dir, output },
            } => {
                let list = admin::list_public_services(&dir.database()?).await?;
                let rows: Vec<Value> = list.iter().map(admin::public_service_json).collect();
                match output {
                    Output::Json => print_json(&Value::Array(rows)),
                    Output::Table => vpcep::output::print_rows(
                        &rows.iter().map(with_ports_text).collect::<Vec<_>>(),
                        &[
                            ("ID", "/id"),
                            ("NAME", "/service_name"),
                            ("TYPE", "/service_type"),
                            ("STATUS", "/status"),
                            ("BACKEND", "/backend"),
                            ("CIDR", "/cidr"),
                            ("PORTS", "/ports_text"),
                            ("CONNECTIONS", "/connections"),
                        ],
                    ),
                }
                Ok(())
            }
            AdminCmd::PublicService {
                cmd:
                    PublicServiceCmd::Update {
                        service,
                        backend,
                        ports,
                        cidr,
                        description,
                        dir,
                    },
            } => {
                let change = admin::PublicServiceChange {
                    backend: backend.as_deref(),
                    ports: &ports,
                    cidr: cidr.as_deref(),
                    description: description.as_deref(),
                };
                let svc = admin::update_public_service(&dir.database()?, &service, change).await?;
                print_json(&admin::public_service_json(&svc));
                Ok(())
            }
            AdminCmd::PublicService {
                cmd: PublicServiceCmd::Delete { service, dir },
            } => {
                let svc = admin::delete_public_service(&dir.database()?, &service).await?;
                print_json(&admin::public_service_json(&svc));
                Ok(())
            }
            AdminCmd::Migrate { dir } => {
                print_json(&admin::migrate(&dir.database()?).await?);
                Ok(())
            }
            AdminCmd::Backup { file, dir } => {
                print_json(&admin::backup(&dir.database()?, &file).await?);
                Ok(())
            }
            AdminCmd::Node {
                cmd: NodeCmd::List { dir, output },
            } => {
                let list = admin::machines(&dir.database()?).await?;
                match output {
                    Output::Json => print_json(&serde_json::to_value(&list)?),
                    Output::Table => print_table(
                        &[
                            "NAME",
                            "ROLE",
                            "ZONE",
                            "UNDERLAY",
                            "STATUS",
                            "PAIR",
                            "HOSTS",
                            "LAST REPORT",
                        ],
                        &list
                            .iter()
                            .map(|m| {
                                vec![
                                    m.name.clone(),
                                    m.role.clone(),
                                    m.zone.clone(),
                                    m.underlay.clone(),
                                    if m.down { "down" } else { "up" }.to_owned(),
                                    match (m.slot, m.role.as_str()) {
                                        (Some(s), _) => format!("slot {s}"),
                                        (None, "gateway") => "spare".to_owned(),
                                        (None, _) => "-".to_owned(),
                                    },
                                    m.hosts.to_string(),
                                    format!("{:.0} s ago", m.seen_secs_ago),
                                ]
                            })
                            .collect::<Vec<_>>(),
                    ),
                }
                Ok(())
            }
            AdminCmd::Cluster {
                cmd: ClusterCmd::Status { dir, output },
            } => {
                let list = admin::cluster_status(&dir.database()?).await?;
                match output {
                    Output::Json => print_json(&serde_json::to_value(&list)?),
                    Output::Table => print_table(
                        &["NAME", "ADDRESS", "VERSION", "LAST SEEN", "LEADER"],
                        &list
                            .iter()
                            .map(|r| {
                                vec![
                                    r.name.clone(),
                                    r.address.clone(),
                                    r.version.clone(),
                                    format!("{:.0} s ago", r.seen_secs_ago),
                                    if r.leader {
                                        "yes".into()
                                    } else {
                                        String::new()
                                    },
                                ]
                            })
                            .collect::<Vec<_>>(),
                    ),
                }
                Ok(())
            }
            AdminCmd::Tls {
                cmd:
                    TlsCmd::SelfSigned {
                        out,
                        names,
                        force,
                        output,
                    },
            } => {
                let made = vpcep::tls::self_signed(&out, &names, force)?;
                match output {
                    Output::Json => print_json(&made.json()),
                    Output::Table => print_table(
                        &["FIELD", "VALUE"],
                        &[
                            vec!["certificate".into(), made.cert.display().to_string()],
                            vec!["key".into(), made.key.display().to_string()],
                            vec!["sha256 fingerprint".into(), made.fingerprint.clone()],
                            vec!["names".into(), made.names.join(",")],
                        ],
                    ),
                }
                Ok(())
            }
        },
    }
}

/// 2: bad usage (clap's own, or `UsageError`); 3: the API refused the request (4xx), or
/// the store refused an `admin` command's change; 4: the server failed (5xx); 5: anything
/// else (unreachable server, missing configuration, local failures).
fn exit_code(e: &anyhow::Error) -> i32 {
    if e.downcast_ref::<vpcep::cli::UsageError>().is_some() {
        return 2;
    }
    if let Some(vpcep_store::StoreError::Rejected(_)) = e.downcast_ref() {
        return 3;
    }
    match e.downcast_ref::<vpcep::client::ApiFailure>() {
        Some(f) if f.status < 500 => 3,
        Some(_) => 4,
        None => 5,
    }
}

/// The error and its causes, each said once: a cause whose text the error before it
/// already includes (`#[error("database: {0}")]` with `#[from]`) is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    let mut before = out.clone();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !before.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        before = text;
    }
    out
}

fn configure(
    endpoint: Option<String>,
    access_key: Option<String>,
    secret_key: Option<String>,
    project_id: Option<String>,
    from_account: Option<std::path::PathBuf>,
    ca_file: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let mut p = vpcep::client::Profile::load().unwrap_or_default();
    if let Some(path) = from_account {
        let usage = |e: &dyn std::fmt::Display| {
            cli::UsageError(format!("--from-account {}: {e}", path.display()))
        };
        let raw = std::fs::read(&path).map_err(|e| usage(&e))?;
        let a: serde_json::Value = serde_json::from_slice(&raw).map_err(|e| usage(&e))?;
        let s = |k: &str| a[k].as_str().map(str::to_owned);
        p.access_key = s("access_key").or(p.access_key);
        p.secret_key = s("secret_key").or(p.secret_key);
        p.project_id = s("project_id").or(p.project_id);
    }
    p.endpoint = endpoint.or(p.endpoint);
    p.access_key = access_key.or(p.access_key);
    p.secret_key = secret_key.or(p.secret_key);
    p.project_id = project_id.or(p.project_id);
    if let Some(ca) = ca_file {
        // Checked now, and saved absolute: later commands run from anywhere.
        let usage =
            |e: &dyn std::fmt::Display| cli::UsageError(format!("--ca-file {}: {e}", ca.display()));
        let abs = std::fs::canonicalize(&ca).map_err(|e| usage(&e))?;
        vpcep::client::http_client(Some(&abs)).map_err(|e| usage(&e))?;
        p.ca_file = Some(abs.display().to_string());
    }
    let path = p.save()?;
    println!("saved {}", path.display());
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let (format, level) = match &cli.cmd {
        Cmd::Serve(a) => (a.log.log_format, "info"),
        Cmd::Gateway(a) => (a.log.log_format, "info"),
        // The demo's own lines are its output; the server it embeds keeps quiet unless
        // something is wrong.
        Cmd::Demo { log, .. } => (log.log_format, "warn"),
        _ => (LogFormat::Plain, "info"),
    };
    init_tracing(format, level);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vpcep: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("vpcep: {}", message(&e));
        std::process::exit(exit_code(&e));
    }
}

/// A public service's row with its ports as `CLIENT:SERVER/PROTOCOL` cells, for tables.
fn with_ports_text(row: &Value) -> Value {
    let port = |p: &Value| {
        let protocol = p["protocol"].as_str().unwrap_or("TCP");
        json!(format!(
            "{}:{}/{protocol}",
            p["client_port"], p["server_port"]
        ))
    };
    let mut row = row.clone();
    let ports: Vec<Value> = row["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(port)
        .collect();
    row["ports_text"] = Value::Array(ports);
    row
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// A cause is said once, whether or not its parent's message includes it.
    #[test]
    fn messages_say_each_cause_once() {
        #[derive(Debug)]
        struct Wraps(std::io::Error);
        impl std::fmt::Display for Wraps {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "data directory: {}", self.0)
            }
        }
        impl std::error::Error for Wraps {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let io = || std::io::Error::other("disk full");
        let e = anyhow::Error::new(Wraps(io()));
        assert_eq!(super::message(&e), "data directory: disk full");
        let e = anyhow::Error::new(io()).context("cannot save");
        assert_eq!(super::message(&e), "cannot save: disk full");
        let e = anyhow::Error::new(vpcep_store::StoreError::Io(io())).context("admin");
        assert_eq!(super::message(&e), "admin: data directory: disk full");
    }

    /// clap's own consistency checks: no clashing argument ids or flags.
    #[test]
    fn the_command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
