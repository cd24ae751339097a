//! `vpcep`: a self-hosted VPC Endpoint service. See `vpcep --help`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde_json::{json, Value};
use tokio::sync::watch;
use vpcep::admin;
use vpcep::client::{ApiClient, ClientArgs};
use vpcep::gateway::GatewayConfig;
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
    /// Hosts: stand-ins for VMs and load balancers, joined to a subnet.
    Host {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        cmd: HostCmd,
    },
}

#[derive(Subcommand)]
enum HostCmd {
    /// Create a host; prints JSON with id, port_id, ip, netns (and local_ip in loopback mode).
    Create {
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        subnet: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
        /// The host stands for a load balancer's VIP (for services with server_type LB).
        #[arg(long)]
        lb: bool,
    },
    /// List hosts.
    List {
        #[arg(long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Delete a host (by id or name).
    Delete { host: String },
    /// Run a command inside a host, like logging into the VM (netns: needs root).
    Exec {
        host: String,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

#[derive(Args)]
struct DataDir {
    /// Where the SQLite database and the master key live.
    #[arg(long, env = "VPCEP_DATA_DIR", default_value = "./vpcep-data")]
    data_dir: PathBuf,
    /// The region id (one project per account and region).
    #[arg(long, env = "VPCEP_REGION", default_value = "local-1")]
    region: String,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    dir: DataDir,
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
    /// Secret that gateway nodes present (needed with --dataplane remote).
    #[arg(long, env = "VPCEP_NODE_TOKEN", hide_env_values = true)]
    node_token: Option<String>,
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
}

#[derive(Args)]
struct GatewayArgs {
    /// The control plane's API URL.
    #[arg(long, env = "VPCEP_CONTROL_PLANE")]
    control_plane: String,
    /// The node token the control plane was started with.
    #[arg(long, env = "VPCEP_NODE_TOKEN", hide_env_values = true)]
    token: String,
    /// This node's name in status reports.
    #[arg(long, env = "VPCEP_NODE_NAME", default_value = "gateway-1")]
    name: String,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
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
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Prints rows as an aligned table.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let parts: Vec<String> = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("VPCEP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn serve(a: ServeArgs) -> anyhow::Result<()> {
    let config = Config {
        data_dir: a.dir.data_dir,
        listen: a.listen,
        region: a.dir.region,
        clock_skew_secs: a.clock_skew_secs,
        substrate: a.node.substrate,
        netns_prefix: a.node.netns_prefix,
        loopback_base: a.node.loopback_base,
        forwarding: a.node.forwarding,
        dataplane: a.dataplane,
        node_token: a.node_token,
    };
    let server = Server::build(config.clone()).await?;
    // Scripts read this line to find the port; a closed stdout must not stop the server.
    {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "vpcep listening on http://{}", server.addr);
        let _ = out.flush();
    }
    tracing::info!(addr = %server.addr, data_dir = %config.data_dir.display(), region = %config.region, substrate = ?config.substrate, "serving");
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

async fn host(client: &ClientArgs, cmd: HostCmd) -> anyhow::Result<()> {
    let api = ApiClient::new(client)?;
    match cmd {
        HostCmd::Create {
            vpc,
            subnet,
            ip,
            name,
            lb,
        } => {
            let body = json!({"host": {"vpc_id": vpc, "subnet_id": subnet, "ip": ip, "name": name, "lb": lb}});
            let v = api.call("POST", "/v1/{p}/hosts", Some(&body)).await?;
            print_json(&v["host"]);
        }
        HostCmd::List { output } => {
            let v = api.call("GET", "/v1/{p}/hosts", None).await?;
            let hosts = v["hosts"].as_array().cloned().unwrap_or_default();
            if output == Output::Json {
                print_json(&Value::Array(hosts));
            } else {
                let s = |h: &Value, k: &str| h[k].as_str().unwrap_or("-").to_owned();
                let rows: Vec<Vec<String>> = hosts
                    .iter()
                    .map(|h| {
                        vec![
                            s(h, "id"),
                            s(h, "name"),
                            s(h, "ip"),
                            s(h, "vpc_id"),
                            if h["lb"] == true {
                                "LB".into()
                            } else {
                                "VM".into()
                            },
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
            api.call("DELETE", &format!("/v1/{{p}}/hosts/{host}"), None)
                .await?;
        }
        HostCmd::Exec { host, cmd } => {
            let v = api
                .call("GET", &format!("/v1/{{p}}/hosts/{host}"), None)
                .await?;
            let mut command = match v["host"]["netns"].as_str() {
                Some(ns) => {
                    let mut c = std::process::Command::new("ip");
                    c.args(["netns", "exec", ns]).args(&cmd);
                    c
                }
                None => {
                    // Loopback: a host is an address on this machine; run the command here.
                    let mut c = std::process::Command::new(&cmd[0]);
                    c.args(&cmd[1..]);
                    if let Some(ip) = v["host"]["local_ip"].as_str() {
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
        netns_prefix: a.node.netns_prefix,
        loopback_base: a.node.loopback_base,
        forwarding: a.node.forwarding,
    };
    tracing::info!(control_plane = %cfg.control_plane, node = %cfg.name, substrate = ?cfg.substrate, "gateway node following the control plane");
    vpcep::gateway::run(cfg, shutdown_watch()).await
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Serve(a) => serve(a).await,
        Cmd::Gateway(a) => gateway(a).await,
        Cmd::Host { client, cmd } => host(&client, cmd).await,
        Cmd::Admin { cmd } => match cmd {
            AdminCmd::Account {
                cmd: AccountCmd::Create { name, dir },
            } => {
                print_json(&admin::create_account(&dir.data_dir, &name, &dir.region).await?);
                Ok(())
            }
            AdminCmd::Account {
                cmd: AccountCmd::List { dir, output },
            } => {
                let list = admin::list_accounts(&dir.data_dir).await?;
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
                let a =
                    admin::set_quota(&dir.data_dir, &account, endpoint_services, endpoints).await?;
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
                print_json(&admin::create_public_service(&dir.data_dir, &dir.region, spec).await?);
                Ok(())
            }
        },
    }
}

fn main() {
    let cli = Cli::parse();
    init_tracing();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vpcep: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run(cli)) {
        eprintln!("vpcep: {e:#}");
        std::process::exit(1);
    }
}
