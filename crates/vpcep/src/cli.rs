//! The resource commands of the CLI: one per API operation a person or a script needs,
//! signed with the same code the server verifies. Tables for people, `--output json` for
//! scripts. Exit codes: 0 done, 2 bad usage, 3 the API refused (4xx), 4 the server failed
//! (5xx), 5 the server could not be reached or the client is not configured.

use anyhow::Result;
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::admin::parse_port;
use crate::client::{ApiClient, ApiFailure};
use crate::output::{print_json, print_object, print_rows, Output};

/// A mistake in the command line that clap cannot see (exit code 2, like clap's own).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

#[derive(Args, Clone, Copy)]
pub struct Fmt {
    /// table (for people) or json (for scripts).
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub output: Output,
}

#[derive(Subcommand)]
pub enum ServiceCmd {
    /// List your endpoint services.
    List {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    Show {
        id: String,
    },
    /// Publish a backend (a port of a VM or a load balancer) as an endpoint service.
    Create {
        #[arg(long)]
        vpc: String,
        /// The backend's port id (a host's port_id).
        #[arg(long)]
        port: String,
        #[arg(long, default_value = "VM")]
        server_type: String,
        /// CLIENT:SERVER[/TCP|UDP]; repeat for more (at most 50).
        #[arg(long = "map", required = true)]
        maps: Vec<String>,
        #[arg(long)]
        name: Option<String>,
        /// Accept new endpoints without approval.
        #[arg(long)]
        no_approval: bool,
        #[arg(long)]
        tcp_proxy: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        connection_limit: Option<u32>,
    },
    /// Change approval, description, PROXY header or connection limit.
    Update {
        id: String,
        #[arg(long)]
        approval: Option<bool>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        tcp_proxy: Option<String>,
        #[arg(long)]
        connection_limit: Option<u32>,
    },
    Rename {
        id: String,
        name: String,
    },
    /// Delete a service (it goes once the data plane has let go of it).
    Delete {
        /// The service's id.
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
    /// Find a service you may connect to, by full name or id.
    Describe {
        #[arg(long, conflicts_with = "id", required_unless_present = "id")]
        name: Option<String>,
        #[arg(long)]
        id: Option<String>,
    },
    /// Cloud services offered to every account.
    Public,
}

#[derive(Subcommand)]
pub enum EndpointCmd {
    List {
        #[arg(long)]
        service_name: Option<String>,
        #[arg(long)]
        vpc: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value_t = 0)]
        offset: u32,
    },
    Show {
        id: String,
    },
    Create {
        #[arg(long)]
        service: String,
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        subnet: Option<String>,
        /// A chosen address in the subnet (else the lowest free one).
        #[arg(long)]
        ip: Option<String>,
        /// Create a private domain name.
        #[arg(long)]
        dns: bool,
        /// Source addresses or CIDRs allowed (turns the endpoint whitelist on).
        #[arg(long = "allow")]
        allow: Vec<String>,
        #[arg(long)]
        description: Option<String>,
        /// Route tables (gateway endpoints).
        #[arg(long = "routetable")]
        routetables: Vec<String>,
    },
    /// Set the endpoint whitelist (source CIDRs) and switch it on or off.
    Whitelist {
        id: String,
        #[arg(long = "allow", conflicts_with = "clear")]
        allow: Vec<String>,
        /// Empty the list (with the whitelist on, nothing may connect).
        #[arg(long)]
        clear: bool,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Replace a gateway endpoint's route tables.
    Routetables {
        id: String,
        tables: Vec<String>,
    },
    /// Delete an endpoint (it goes, and frees its address, once its listeners are down).
    Delete {
        /// The endpoint's id.
        id: String,
        #[command(flatten)]
        wait: Wait,
    },
}

/// Waiting for an asynchronous deletion to finish.
#[derive(Args, Clone, Copy)]
pub struct Wait {
    /// Return only once the resource is gone (its address and name are free again).
    #[arg(long)]
    pub wait: bool,
    /// With --wait: give up after this many seconds (exit code 5).
    #[arg(long, value_name = "SECS", default_value_t = 120, requires = "wait")]
    pub timeout: u64,
}

#[derive(Subcommand)]
pub enum ConnectionCmd {
    /// Endpoints connected to a service of yours.
    List {
        service: String,
        #[arg(long)]
        status: Option<String>,
    },
    Accept {
        service: String,
        #[arg(value_name = "ENDPOINT")]
        endpoint_id: String,
    },
    Reject {
        service: String,
        #[arg(value_name = "ENDPOINT")]
        endpoint_id: String,
    },
    /// Put a note on a connection.
    Describe {
        service: String,
        #[arg(value_name = "ENDPOINT")]
        endpoint_id: String,
        text: String,
    },
}

#[derive(Subcommand)]
pub enum PermissionCmd {
    /// The service whitelist.
    List { service: String },
    /// Allow accounts: `iam:domain::<32 hex>` or `*`.
    Add {
        service: String,
        /// `iam:domain::<account (domain) id>` or `*`; one or more.
        #[arg(required = true)]
        entries: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
    },
    Remove {
        service: String,
        /// The entries to remove, as listed; one or more.
        #[arg(required = true)]
        entries: Vec<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Kind {
    Service,
    Endpoint,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Kind::Service => "endpoint_service",
            Kind::Endpoint => "endpoint",
        }
    }
}

#[derive(Subcommand)]
pub enum TagCmd {
    /// Set tags: KEY=VALUE ...
    Add {
        kind: Kind,
        id: String,
        /// KEY=VALUE; one or more.
        #[arg(required = true)]
        tags: Vec<String>,
    },
    /// Remove tags by key.
    Remove {
        kind: Kind,
        id: String,
        /// Keys; one or more.
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Keys and values used in the project.
    List { kind: Kind },
}

#[derive(Subcommand)]
pub enum VpcCmd {
    List,
    Show {
        id: String,
    },
    Create {
        #[arg(long)]
        cidr: String,
        #[arg(long, default_value = "")]
        name: String,
    },
    Delete {
        id: String,
    },
}

#[derive(Subcommand)]
pub enum SubnetCmd {
    List {
        #[arg(long)]
        vpc: Option<String>,
    },
    Create {
        #[arg(long)]
        vpc: String,
        #[arg(long)]
        cidr: String,
        #[arg(long, default_value = "")]
        name: String,
        #[arg(long)]
        gateway: Option<String>,
    },
    Delete {
        vpc: String,
        id: String,
    },
}

const SERVICE_COLS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/service_name"),
    ("STATUS", "/status"),
    ("TYPE", "/service_type"),
    ("BACKEND", "/server_type"),
    ("APPROVAL", "/approval_enabled"),
    ("CONNECTIONS", "/connection_count"),
    ("CREATED", "/created_at"),
];
const ENDPOINT_COLS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("VPC", "/vpc_id"),
    ("SERVICE", "/endpoint_service_name"),
    ("IP", "/ip"),
    ("DOMAIN", "/dns_names"),
    ("STATUS", "/status"),
    ("TYPE", "/service_type"),
    ("CREATED", "/created_at"),
];
const CONNECTION_COLS: &[(&str, &str)] = &[
    ("ENDPOINT", "/id"),
    ("MARKER", "/marker_id"),
    ("STATUS", "/status"),
    ("ACCOUNT", "/domain_id"),
    ("NOTE", "/description"),
    ("CREATED", "/created_at"),
];
const PERMISSION_COLS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("PERMISSION", "/permission"),
    ("DESCRIPTION", "/description"),
    ("CREATED", "/created_at"),
];
const PUBLIC_COLS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/service_name"),
    ("TYPE", "/service_type"),
    ("OWNER", "/owner"),
    ("CREATED", "/created_at"),
];
const VPC_COLS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("CIDR", "/cidr"),
    ("LOOPBACK", "/loopback_block"),
    ("CREATED", "/created_at"),
];
const SUBNET_COLS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("CIDR", "/cidr"),
    ("GATEWAY", "/gateway_ip"),
    ("VPC", "/vpc_id"),
];

/// What a command prints: a list under `key` with table columns, one object, or nothing.
enum Shown {
    List(Value, &'static str, &'static [(&'static str, &'static str)]),
    One(Value),
    Done(Value),
}

fn show(fmt: Fmt, s: Shown) {
    match (fmt.output, s) {
        (Output::Json, Shown::List(v, _, _) | Shown::One(v) | Shown::Done(v)) => print_json(&v),
        (Output::Table, Shown::List(v, key, cols)) => {
            let rows = v[key].as_array().cloned().unwrap_or_default();
            print_rows(&rows, cols);
            if let Some(total) = v["total_count"].as_i64() {
                println!("({} of {total})", rows.len());
            }
        }
        (Output::Table, Shown::One(v)) => print_object(&v),
        (Output::Table, Shown::Done(_)) => println!("ok"),
    }
}

/// `GET path?params`, shown as the list under `key` in the columns `cols`.
async fn get_list(
    api: &ApiClient,
    path: &str,
    params: &[(&str, Option<String>)],
    key: &'static str,
    cols: &'static [(&'static str, &'static str)],
) -> Result<Shown> {
    let v = api
        .call("GET", &format!("{path}{}", query(params)), None)
        .await?;
    Ok(Shown::List(v, key, cols))
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", percent(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn ports(maps: &[String]) -> Result<Value> {
    let list: Vec<Value> = maps
        .iter()
        .map(|m| {
            parse_port(m)
                .map(|(c, s, p)| json!({"client_port": c, "server_port": s, "protocol": p}))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| UsageError(format!("--map {e}")))?;
    Ok(Value::Array(list))
}

/// Adds optional fields that are set.
fn with(mut v: Value, fields: &[(&str, Option<Value>)]) -> Value {
    for (k, val) in fields {
        if let Some(val) = val {
            v[*k] = val.clone();
        }
    }
    v
}

const SVC: &str = "/v1/{p}/vpc-endpoint-services";
const EP: &str = "/v1/{p}/vpc-endpoints";

pub async fn service(api: &ApiClient, fmt: Fmt, cmd: ServiceCmd) -> Result<()> {
    let shown = match cmd {
        ServiceCmd::List {
            name,
            status,
            limit,
            offset,
        } => {
            let params = [
                ("endpoint_service_name", name),
                ("status", status),
                ("limit", Some(limit.to_string())),
                ("offset", Some(offset.to_string())),
            ];
            get_list(api, SVC, &params, "endpoint_services", SERVICE_COLS).await?
        }
        ServiceCmd::Show { id } => Shown::One(api.call("GET", &format!("{SVC}/{id}"), None).await?),
        ServiceCmd::Create {
            vpc,
            port,
            server_type,
            maps,
            name,
            no_approval,
            tcp_proxy,
            description,
            connection_limit,
        } => {
            let body = with(
                json!({"vpc_id": vpc, "port_id": port, "server_type": server_type, "ports": ports(&maps)?, "approval_enabled": !no_approval}),
                &[
                    ("service_name", name.map(Value::from)),
                    ("tcp_proxy", tcp_proxy.map(Value::from)),
                    ("description", description.map(Value::from)),
                    ("connection_limit", connection_limit.map(Value::from)),
                ],
            );
            Shown::One(api.call("POST", SVC, Some(&body)).await?)
        }
        ServiceCmd::Update {
            id,
            approval,
            description,
            tcp_proxy,
            connection_limit,
        } => {
            if approval.is_none()
                && description.is_none()
                && tcp_proxy.is_none()
                && connection_limit.is_none()
            {
                return Err(UsageError(
                    "give --approval, --description, --tcp-proxy or --connection-limit".into(),
                )
                .into());
            }
            let body = with(
                json!({}),
                &[
                    ("approval_enabled", approval.map(Value::from)),
                    ("description", description.map(Value::from)),
                    ("tcp_proxy", tcp_proxy.map(Value::from)),
                    ("connection_limit", connection_limit.map(Value::from)),
                ],
            );
            Shown::One(api.call("PUT", &format!("{SVC}/{id}"), Some(&body)).await?)
        }
        ServiceCmd::Rename { id, name } => Shown::One(
            api.call(
                "PUT",
                &format!("{SVC}/{id}/name"),
                Some(&json!({"endpoint_service_name": name})),
            )
            .await?,
        ),
        ServiceCmd::Delete { id, wait } => {
            let path = format!("{SVC}/{id}");
            let v = api.call("DELETE", &path, None).await?;
            wait_gone(api, &path, &format!("service {id}"), wait).await?;
            Shown::Done(v)
        }
        ServiceCmd::Describe { name, id } => {
            let q = query(&[("endpoint_service_name", name), ("id", id)]);
            Shown::One(api.call("GET", &format!("{SVC}/describe{q}"), None).await?)
        }
        ServiceCmd::Public => {
            let params = [("limit", Some("1000".into()))];
            let path = format!("{SVC}/public");
            get_list(api, &path, &params, "endpoint_services", PUBLIC_COLS).await?
        }
    };
    show(fmt, shown);
    Ok(())
}

pub async fn endpoint(api: &ApiClient, fmt: Fmt, cmd: EndpointCmd) -> Result<()> {
    let shown = match cmd {
        EndpointCmd::List {
            service_name,
            vpc,
            limit,
            offset,
        } => {
            let params = [
                ("endpoint_service_name", service_name),
                ("vpc_id", vpc),
                ("limit", Some(limit.to_string())),
                ("offset", Some(offset.to_string())),
            ];
            get_list(api, EP, &params, "endpoints", ENDPOINT_COLS).await?
        }
        EndpointCmd::Show { id } => Shown::One(api.call("GET", &format!("{EP}/{id}"), None).await?),
        EndpointCmd::Create {
            service,
            vpc,
            subnet,
            ip,
            dns,
            allow,
            description,
            routetables,
        } => {
            let body = with(
                json!({"endpoint_service_id": service, "vpc_id": vpc, "enable_dns": dns}),
                &[
                    ("subnet_id", subnet.map(Value::from)),
                    ("port_ip", ip.map(Value::from)),
                    ("description", description.map(Value::from)),
                    ("whitelist", (!allow.is_empty()).then(|| json!(allow))),
                    (
                        "enable_whitelist",
                        (!allow.is_empty()).then_some(Value::Bool(true)),
                    ),
                    (
                        "routetables",
                        (!routetables.is_empty()).then(|| json!(routetables)),
                    ),
                ],
            );
            Shown::One(api.call("POST", EP, Some(&body)).await?)
        }
        EndpointCmd::Whitelist {
            id,
            allow,
            clear,
            enable,
            disable,
        } => {
            if allow.is_empty() && !clear && !enable && !disable {
                return Err(UsageError(
                    "give --allow CIDR (repeatable), --clear, --enable or --disable".into(),
                )
                .into());
            }
            let body = with(
                json!({}),
                &[
                    (
                        "whitelist",
                        (!allow.is_empty() || clear).then(|| json!(allow)),
                    ),
                    (
                        "enable_whitelist",
                        (enable || disable).then_some(Value::Bool(enable)),
                    ),
                ],
            );
            Shown::One(api.call("PUT", &format!("{EP}/{id}"), Some(&body)).await?)
        }
        EndpointCmd::Routetables { id, tables } => Shown::One(
            api.call(
                "PUT",
                &format!("{EP}/{id}/routetables"),
                Some(&json!({"routetables": tables})),
            )
            .await?,
        ),
        EndpointCmd::Delete { id, wait } => {
            let path = format!("{EP}/{id}");
            let v = api.call("DELETE", &path, None).await?;
            wait_gone(api, &path, &format!("endpoint {id}"), wait).await?;
            Shown::Done(v)
        }
    };
    show(fmt, shown);
    Ok(())
}

pub async fn connection(api: &ApiClient, fmt: Fmt, cmd: ConnectionCmd) -> Result<()> {
    let decide = |service: String, endpoint: String, action: &str| {
        (
            format!("{SVC}/{service}/connections/action"),
            json!({"action": action, "endpoints": [endpoint]}),
        )
    };
    let shown = match cmd {
        ConnectionCmd::List { service, status } => {
            let params = [("status", status), ("limit", Some("1000".into()))];
            let path = format!("{SVC}/{service}/connections");
            get_list(api, &path, &params, "connections", CONNECTION_COLS).await?
        }
        ConnectionCmd::Accept {
            service,
            endpoint_id,
        } => {
            let (path, body) = decide(service, endpoint_id, "receive");
            Shown::List(
                api.call("POST", &path, Some(&body)).await?,
                "connections",
                CONNECTION_COLS,
            )
        }
        ConnectionCmd::Reject {
            service,
            endpoint_id,
        } => {
            let (path, body) = decide(service, endpoint_id, "reject");
            Shown::List(
                api.call("POST", &path, Some(&body)).await?,
                "connections",
                CONNECTION_COLS,
            )
        }
        ConnectionCmd::Describe {
            service,
            endpoint_id,
            text,
        } => {
            let body = json!({"connections": [{"id": endpoint_id, "description": text}]});
            Shown::List(
                api.call(
                    "PUT",
                    &format!("{SVC}/{service}/connections/description"),
                    Some(&body),
                )
                .await?,
                "connections",
                CONNECTION_COLS,
            )
        }
    };
    show(fmt, shown);
    Ok(())
}

pub async fn permission(api: &ApiClient, fmt: Fmt, cmd: PermissionCmd) -> Result<()> {
    let shown = match cmd {
        PermissionCmd::List { service } => {
            let params = [("limit", Some("500".into()))];
            let path = format!("{SVC}/{service}/permissions");
            get_list(api, &path, &params, "permissions", PERMISSION_COLS).await?
        }
        PermissionCmd::Add {
            service,
            entries,
            description,
        } => {
            if let Some(e) = entries.iter().find(|e| {
                !api.project.is_empty() && e.strip_prefix("iam:domain::") == Some(&api.project)
            }) {
                return Err(UsageError(format!(
                    "{e}: that is your project id, not an account id; a whitelist entry names an account (domain): use iam:domain::<its domain_id>, as `vpcep admin account create` printed it"
                ))
                .into());
            }
            let items: Vec<Value> = entries
                .iter()
                .map(|e| json!({"permission": e, "description": description}))
                .collect();
            Shown::List(
                api.call(
                    "POST",
                    &format!("{SVC}/{service}/permissions/batch-create"),
                    Some(&json!({"permissions": items})),
                )
                .await?,
                "permissions",
                PERMISSION_COLS,
            )
        }
        PermissionCmd::Remove { service, entries } => {
            let body = json!({"permissions": entries, "action": "remove"});
            Shown::Done(
                api.call(
                    "POST",
                    &format!("{SVC}/{service}/permissions/action"),
                    Some(&body),
                )
                .await?,
            )
        }
    };
    show(fmt, shown);
    Ok(())
}

pub async fn quota(api: &ApiClient, fmt: Fmt) -> Result<()> {
    let v = api.call("GET", "/v1/{p}/quotas", None).await?;
    let wrapped = json!({"resources": v["quotas"]["resources"].clone()});
    match fmt.output {
        Output::Json => print_json(&v),
        Output::Table => print_rows(
            wrapped["resources"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or(&[]),
            &[("TYPE", "/type"), ("USED", "/used"), ("QUOTA", "/quota")],
        ),
    }
    Ok(())
}

pub async fn tag(api: &ApiClient, fmt: Fmt, cmd: TagCmd) -> Result<()> {
    let shown = match cmd {
        TagCmd::Add { kind, id, tags } => {
            let list: Vec<Value> = tags
                .iter()
                .map(|t| {
                    t.split_once('=')
                        .map(|(k, v)| json!({"key": k, "value": v}))
                        .ok_or_else(|| UsageError(format!("{t:?}: use KEY=VALUE")).into())
                })
                .collect::<Result<_>>()?;
            Shown::Done(
                api.call(
                    "POST",
                    &format!("/v1/{{p}}/{}/{id}/tags/action", kind.path()),
                    Some(&json!({"action": "create", "tags": list})),
                )
                .await?,
            )
        }
        TagCmd::Remove { kind, id, keys } => {
            let list: Vec<Value> = keys.iter().map(|k| json!({"key": k})).collect();
            Shown::Done(
                api.call(
                    "POST",
                    &format!("/v1/{{p}}/{}/{id}/tags/action", kind.path()),
                    Some(&json!({"action": "delete", "tags": list})),
                )
                .await?,
            )
        }
        TagCmd::List { kind } => {
            let path = format!("/v1/{{p}}/{}/tags", kind.path());
            get_list(
                api,
                &path,
                &[],
                "tags",
                &[("KEY", "/key"), ("VALUES", "/values")],
            )
            .await?
        }
    };
    show(fmt, shown);
    Ok(())
}

pub async fn vpc(api: &ApiClient, fmt: Fmt, cmd: VpcCmd) -> Result<()> {
    let shown = match cmd {
        VpcCmd::List => get_list(api, "/v1/{p}/vpcs", &[], "vpcs", VPC_COLS).await?,
        VpcCmd::Show { id } => Shown::One(
            api.call("GET", &format!("/v1/{{p}}/vpcs/{id}"), None)
                .await?["vpc"]
                .clone(),
        ),
        VpcCmd::Create { cidr, name } => Shown::One(
            api.call(
                "POST",
                "/v1/{p}/vpcs",
                Some(&json!({"vpc": {"cidr": cidr, "name": name}})),
            )
            .await?["vpc"]
                .clone(),
        ),
        VpcCmd::Delete { id } => Shown::Done(
            api.call("DELETE", &format!("/v1/{{p}}/vpcs/{id}"), None)
                .await?,
        ),
    };
    show(fmt, shown);
    Ok(())
}

pub async fn subnet(api: &ApiClient, fmt: Fmt, cmd: SubnetCmd) -> Result<()> {
    let shown = match cmd {
        SubnetCmd::List { vpc } => {
            let params = [("vpc_id", vpc)];
            get_list(api, "/v1/{p}/subnets", &params, "subnets", SUBNET_COLS).await?
        }
        SubnetCmd::Create {
            vpc,
            cidr,
            name,
            gateway,
        } => {
            let body = json!({"subnet": with(json!({"vpc_id": vpc, "cidr": cidr, "name": name}), &[("gateway_ip", gateway.map(Value::from))])});
            Shown::One(api.call("POST", "/v1/{p}/subnets", Some(&body)).await?["subnet"].clone())
        }
        SubnetCmd::Delete { vpc, id } => Shown::Done(
            api.call(
                "DELETE",
                &format!("/v1/{{p}}/vpcs/{vpc}/subnets/{id}"),
                None,
            )
            .await?,
        ),
    };
    show(fmt, shown);
    Ok(())
}

/// Polls `path` until it answers 404, when `wait` asks for it, telling a person what it
/// waits for when that takes more than a moment.
async fn wait_gone(api: &ApiClient, path: &str, what: &str, wait: Wait) -> Result<()> {
    if !wait.wait {
        return Ok(());
    }
    let start = std::time::Instant::now();
    let mut told = 0;
    loop {
        let status = match api.call("GET", path, None).await {
            Ok(v) => v["status"].as_str().unwrap_or("?").to_owned(),
            Err(e)
                if e.downcast_ref::<ApiFailure>()
                    .is_some_and(|f| f.status == 404) =>
            {
                return Ok(())
            }
            Err(e) => return Err(e),
        };
        let secs = start.elapsed().as_secs();
        if secs >= wait.timeout {
            anyhow::bail!(
                "{what} is still {status} after {} s; it may go later (see `show`), or something keeps it",
                wait.timeout
            );
        }
        if secs >= 3 && secs / 5 >= told {
            told = secs / 5 + 1;
            eprintln!("waiting for {what} to go: {status} after {secs} s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[derive(Subcommand)]
pub enum RoutetableCmd {
    /// Route tables (every VPC has a default one; its subnets use it).
    List {
        /// Only the tables of this VPC.
        #[arg(long)]
        vpc: Option<String>,
    },
    /// One route table: its routes (yours, and those gateway endpoints put there).
    Show {
        /// The route table's id.
        id: String,
    },
    /// A custom route table in a VPC.
    Create {
        /// The VPC the table belongs to.
        #[arg(long)]
        vpc: String,
        /// Up to 64 characters.
        #[arg(long, default_value = "")]
        name: String,
        /// A route DESTINATION=NEXTHOP[,TYPE] (TYPE defaults to ecs); repeatable.
        #[arg(long = "route", value_name = "DEST=NEXTHOP[,TYPE]")]
        routes: Vec<String>,
        /// Free text, no < or >.
        #[arg(long)]
        description: Option<String>,
    },
    /// Rename a table, or add, change and remove its routes.
    Update {
        /// The route table's id.
        id: String,
        /// A new name.
        #[arg(long)]
        name: Option<String>,
        /// A new description.
        #[arg(long)]
        description: Option<String>,
        /// Add a route DESTINATION=NEXTHOP[,TYPE]; repeatable.
        #[arg(long = "add-route", value_name = "DEST=NEXTHOP[,TYPE]")]
        add: Vec<String>,
        /// Change the route to DESTINATION: DESTINATION=NEXTHOP[,TYPE]; repeatable.
        #[arg(long = "mod-route", value_name = "DEST=NEXTHOP[,TYPE]")]
        modify: Vec<String>,
        /// Remove the route to DESTINATION; repeatable.
        #[arg(long = "del-route", value_name = "DEST")]
        del: Vec<String>,
    },
    /// Delete a custom table (not a VPC's default one, nor one a gateway endpoint uses).
    Delete {
        /// The route table's id.
        id: String,
    },
}

const RT: &str = "/v1/{p}/routetables";
const ROUTETABLE_COLS: &[(&str, &str)] = &[
    ("ID", "/id"),
    ("NAME", "/name"),
    ("VPC", "/vpc_id"),
    ("DEFAULT", "/default"),
    ("ROUTES", "/routes"),
    ("SUBNETS", "/subnets"),
];

/// `DEST=NEXTHOP[,TYPE]` as the API takes a route.
fn route(raw: &str) -> Result<Value> {
    let (dest, rest) = raw
        .split_once('=')
        .filter(|(d, n)| !d.is_empty() && !n.is_empty())
        .ok_or_else(|| {
            UsageError(format!(
                "{raw:?}: use DESTINATION=NEXTHOP[,TYPE], e.g. 10.8.0.0/16=192.168.0.10"
            ))
        })?;
    let (nexthop, kind) = rest.split_once(',').unwrap_or((rest, "ecs"));
    Ok(json!({"destination": dest, "nexthop": nexthop, "type": kind}))
}

fn routes(raw: &[String]) -> Result<Vec<Value>> {
    raw.iter().map(|r| route(r)).collect()
}

/// A route table as a person reads it: routes as `DEST via NEXTHOP (TYPE)`, subnets by id.
fn readable_table(mut t: Value) -> Value {
    let routes: Vec<Value> = t["routes"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|r| {
                    let f = |k: &str| r[k].as_str().unwrap_or("-").to_owned();
                    json!(format!(
                        "{} via {} ({})",
                        f("destination"),
                        f("nexthop"),
                        f("type")
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let subnets: Vec<Value> = t["subnets"]
        .as_array()
        .map(|a| a.iter().map(|s| s["id"].clone()).collect())
        .unwrap_or_default();
    t["routes"] = Value::Array(routes);
    t["subnets"] = Value::Array(subnets);
    t
}

pub async fn routetable(api: &ApiClient, fmt: Fmt, cmd: RoutetableCmd) -> Result<()> {
    let one = |v: Value| match fmt.output {
        Output::Json => Shown::One(v),
        Output::Table => Shown::One(readable_table(v)),
    };
    let shown = match cmd {
        RoutetableCmd::List { vpc } => {
            let mut v = api
                .call("GET", &format!("{RT}{}", query(&[("vpc_id", vpc)])), None)
                .await?;
            if fmt.output == Output::Table {
                if let Some(list) = v["routetables"].as_array_mut() {
                    for t in list.iter_mut() {
                        *t = readable_table(t.take());
                    }
                }
            }
            Shown::List(v, "routetables", ROUTETABLE_COLS)
        }
        RoutetableCmd::Show { id } => {
            one(api.call("GET", &format!("{RT}/{id}"), None).await?["routetable"].clone())
        }
        RoutetableCmd::Create {
            vpc,
            name,
            routes: list,
            description,
        } => {
            let body = json!({"routetable": with(
                json!({"vpc_id": vpc, "name": name, "routes": routes(&list)?}),
                &[("description", description.map(Value::from))],
            )});
            one(api.call("POST", RT, Some(&body)).await?["routetable"].clone())
        }
        RoutetableCmd::Update {
            id,
            name,
            description,
            add,
            modify,
            del,
        } => {
            if name.is_none()
                && description.is_none()
                && add.is_empty()
                && modify.is_empty()
                && del.is_empty()
            {
                return Err(UsageError(
                    "give --name, --description, --add-route, --mod-route or --del-route".into(),
                )
                .into());
            }
            let mut changes = json!({});
            if !add.is_empty() {
                changes["add"] = json!(routes(&add)?);
            }
            if !modify.is_empty() {
                changes["mod"] = json!(routes(&modify)?);
            }
            if !del.is_empty() {
                changes["del"] = json!(del
                    .iter()
                    .map(|d| json!({"destination": d}))
                    .collect::<Vec<_>>());
            }
            let mut t = with(
                json!({}),
                &[
                    ("name", name.map(Value::from)),
                    ("description", description.map(Value::from)),
                ],
            );
            if changes.as_object().is_some_and(|c| !c.is_empty()) {
                t["routes"] = changes;
            }
            let body = json!({"routetable": t});
            one(api.call("PUT", &format!("{RT}/{id}"), Some(&body)).await?["routetable"].clone())
        }
        RoutetableCmd::Delete { id } => {
            Shown::Done(api.call("DELETE", &format!("{RT}/{id}"), None).await?)
        }
    };
    show(fmt, shown);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_ports() {
        assert_eq!(
            query(&[("a", Some("x y/z".into())), ("b", None)]),
            "?a=x%20y%2Fz"
        );
        assert_eq!(query(&[("b", None)]), "");
        assert_eq!(
            ports(&["8080:80".into(), "53:53/udp".into()]).unwrap(),
            json!([{"client_port": 8080, "server_port": 80, "protocol": "TCP"}, {"client_port": 53, "server_port": 53, "protocol": "UDP"}])
        );
        let bad = ports(&["8080-80".into()]).unwrap_err();
        assert!(bad.downcast_ref::<UsageError>().is_some(), "{bad}");
        assert_eq!(
            route("10.8.0.0/16=192.168.0.10").unwrap(),
            json!({"destination": "10.8.0.0/16", "nexthop": "192.168.0.10", "type": "ecs"})
        );
        assert_eq!(route("0.0.0.0/0=x,vpn").unwrap()["type"], "vpn");
        for bad in ["10.8.0.0/16", "=1.2.3.4", "10.8.0.0/16="] {
            assert!(route(bad)
                .unwrap_err()
                .downcast_ref::<UsageError>()
                .is_some());
        }
    }
}
