//! Durable state of vpcep. Every mutation is one transaction that also advances a
//! monotonic revision; the controller and (later) the data plane watch that revision.
//! The API talks to a [`Store`]; [`SqlStore`] implements it on SQLite (embedded) and PostgreSQL (shared by replicas).
#![forbid(unsafe_code)]

pub mod postgres;
mod records;
mod secrets;
mod sql;
mod sqlite;

use std::future::Future;
use std::pin::Pin;

pub use records::*;
pub use secrets::{sign_key_matches, MasterKey};
pub use sql::{Database, Engine, SqlStore};
use vpcep_model::Rejection;

/// Everything the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A business rule refused the change; nothing was written.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("database: {0}")]
    Db(sqlx::Error),
    #[error("data directory: {0}")]
    Io(std::io::Error),
    /// The data directory's file system is full or cannot be written (SQLite's
    /// `SQLITE_FULL` or `SQLITE_IOERR_*`, `ENOSPC`, `EDQUOT`). The transaction did not
    /// commit, nothing of it was written, and the same request succeeds once there is
    /// room again: the connection that met the failure is closed, not reused.
    #[error("storage full or failing: {0}")]
    Storage(String),
    /// The database cannot be reached (PostgreSQL down, restarting or full of
    /// connections; the pool found no connection in time). Nothing was written; the same
    /// request succeeds once it is back.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("the database has schema version {found}, newer than this vpcep knows ({known}): run the vpcep that wrote it, or restore a backup made for this one")]
    NewerSchema { found: i64, known: i64 },
}

/// `ENOSPC` and `EDQUOT`: no room left on the file system, or in the user's quota.
fn io_is_full(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(28) | Some(122)) || e.kind() == std::io::ErrorKind::StorageFull
}

/// PostgreSQL's SQLSTATEs of a server that cannot serve now: class 08 (connection
/// exception), `53300` too many connections, `57P01`-`57P03` shutting down or starting.
fn unreachable_state(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "53300" | "57P01" | "57P02" | "57P03")
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let unavailable = match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
            sqlx::Error::Io(io) => !io_is_full(io),
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.len() == 5 && unreachable_state(&c)),
            _ => false,
        };
        if unavailable {
            return StoreError::Unavailable(e.to_string());
        }
        let storage = match &e {
            // The primary result code is the low byte of SQLite's extended one:
            // SQLITE_IOERR (10, e.g. a WAL write or an fsync that failed) and
            // SQLITE_FULL (13).
            sqlx::Error::Database(db) => db
                .code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| matches!(c & 0xff, 10 | 13)),
            sqlx::Error::Io(io) => io_is_full(io),
            _ => false,
        };
        if storage {
            StoreError::Storage(e.to_string())
        } else {
            StoreError::Db(e)
        }
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if io_is_full(&e) {
            StoreError::Storage(e.to_string())
        } else {
            StoreError::Io(e)
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;
pub use vpcep_model::Outcome;
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

macro_rules! store_trait {
    ($($(#[$m:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)*) => {
        /// The operations the API and the controller need from durable state. Every
        /// query is scoped by the caller's project; a resource of another project is
        /// reported exactly as a missing one.
        pub trait Store: Send + Sync + 'static {
            $($(#[$m])* fn $name(&self $(, $arg: $ty)*) -> BoxFuture<'_, $ret>;)*
        }

        impl Store for SqlStore {
            $(fn $name(&self $(, $arg: $ty)*) -> BoxFuture<'_, $ret> {
                Box::pin(SqlStore::$name(self $(, $arg)*))
            })*
        }
    };
}

store_trait! {
    /// The current revision (advanced by every committed mutation).
    fn revision(&self) -> u64;
    fn create_account(&self, name: String, region: String) -> NewAccount;
    fn list_accounts(&self) -> Vec<Account>;
    fn set_quota(&self, name: String, services: Option<i64>, endpoints: Option<i64>) -> Account;
    /// Resolves an access key to its account and secret key.
    fn credential(&self, access_key: String) -> Option<Credential>;
    fn account_by_domain(&self, domain_id: String) -> Option<Account>;
    fn project_of(&self, domain_id: String, region: String) -> Option<String>;
    fn login(&self, name: String, password: String, region: String) -> Option<IssuedToken>;
    fn token(&self, token: String) -> Option<Caller>;

    fn create_vpc(&self, caller: Caller, vpc: NewVpc) -> Vpc;
    fn list_vpcs(&self, caller: Caller, id: Option<String>) -> Vec<Vpc>;
    fn get_vpc(&self, caller: Caller, id: String) -> Vpc;
    fn update_vpc(&self, caller: Caller, id: String, name: Option<String>, description: Option<String>) -> Vpc;
    fn delete_vpc(&self, caller: Caller, id: String) -> ();
    fn create_subnet(&self, caller: Caller, subnet: NewSubnet) -> Subnet;
    fn list_subnets(&self, caller: Caller, vpc_id: Option<String>) -> Vec<Subnet>;
    fn get_subnet(&self, caller: Caller, id: String) -> Subnet;
    fn update_subnet(&self, caller: Caller, id: String, name: Option<String>, description: Option<String>) -> Subnet;
    fn delete_subnet(&self, caller: Caller, vpc_id: String, id: String) -> ();
    fn create_port(&self, caller: Caller, port: NewPort) -> Port;
    fn list_ports(&self, caller: Caller, filter: PortFilter) -> Vec<Port>;
    fn get_port(&self, caller: Caller, id: String) -> Port;
    fn update_port(&self, caller: Caller, id: String, name: Option<String>) -> Port;
    fn delete_port(&self, caller: Caller, id: String) -> ();
    fn create_route_table(&self, caller: Caller, rt: NewRouteTable) -> RouteTable;
    fn list_route_tables(&self, caller: Caller, vpc_id: Option<String>, id: Option<String>) -> Vec<RouteTable>;
    fn get_route_table(&self, caller: Caller, id: String) -> RouteTable;
    fn update_route_table(&self, caller: Caller, id: String, update: RouteTableUpdate) -> RouteTable;
    fn delete_route_table(&self, caller: Caller, id: String) -> ();
    fn create_idc(&self, caller: Caller, idc: NewIdc) -> Idc;
    fn list_idcs(&self, caller: Caller) -> Vec<Idc>;
    fn delete_idc(&self, caller: Caller, id: String) -> ();

    fn create_service(&self, caller: Caller, svc: NewService) -> Service;
    fn create_public_service(&self, svc: NewPublicService) -> Service;
    fn list_services(&self, caller: Caller, filter: ServiceFilter, page: Page) -> (Vec<Service>, i64);
    fn get_service(&self, caller: Caller, id: String) -> Service;
    /// A service as a prospective consumer may see it: own, public, or whitelisted.
    fn describe_service(&self, caller: Caller, id: Option<String>, name: Option<String>) -> Service;
    fn list_public_services(&self, filter: ServiceFilter, page: Page) -> (Vec<Service>, i64);
    /// An operator service (by id, short or full name) changed; ports and range only
    /// while no endpoint uses it.
    fn update_public_service(&self, key: String, update: PublicServiceUpdate) -> Service;
    /// Marks an operator service for deletion (refused while endpoints are connected).
    fn delete_public_service(&self, key: String) -> Service;
    fn update_service(&self, caller: Caller, id: String, update: ServiceUpdate) -> Service;
    fn delete_service(&self, caller: Caller, id: String) -> ();
    fn add_server_resources(&self, caller: Caller, id: String, resources: Vec<String>) -> ();
    fn upgrade_service(&self, caller: Caller, id: String) -> ();

    fn list_connections(&self, caller: Caller, service_id: String, filter: ConnectionFilter, page: Page) -> (Vec<Endpoint>, i64);
    fn decide_connection(&self, caller: Caller, service_id: String, endpoint_id: String, accept: bool) -> Endpoint;
    fn describe_connections(&self, caller: Caller, service_id: String, items: Vec<(String, String)>) -> Vec<Endpoint>;

    fn list_permissions(&self, caller: Caller, service_id: String, like: Option<String>, page: Page) -> (Vec<PermissionRow>, i64);
    fn add_permissions(&self, caller: Caller, service_id: String, entries: Vec<(String, String)>) -> Vec<PermissionRow>;
    fn remove_permissions(&self, caller: Caller, service_id: String, entries: Vec<String>) -> Vec<PermissionRow>;
    fn remove_permission_ids(&self, caller: Caller, service_id: String, ids: Vec<String>) -> Vec<PermissionRow>;
    fn describe_permission(&self, caller: Caller, service_id: String, id: String, description: String) -> PermissionRow;

    fn create_endpoint(&self, caller: Caller, ep: NewEndpoint) -> Endpoint;
    fn list_endpoints(&self, caller: Caller, filter: EndpointFilter, page: Page) -> (Vec<Endpoint>, i64);
    fn get_endpoint(&self, caller: Caller, id: String) -> Endpoint;
    fn update_endpoint_whitelist(&self, caller: Caller, id: String, whitelist: Vec<String>, enable: bool) -> Endpoint;
    fn update_endpoint_policy(&self, caller: Caller, id: String, statement: Option<serde_json::Value>, document: Option<serde_json::Value>) -> Endpoint;
    fn delete_endpoint_policy(&self, caller: Caller, id: String) -> Endpoint;
    fn update_endpoint_routetables(&self, caller: Caller, id: String, routetables: Vec<String>) -> Endpoint;
    fn delete_endpoint(&self, caller: Caller, id: String) -> ();
    fn upgrade_endpoint(&self, caller: Caller, id: String) -> ();

    fn quota(&self, caller: Caller) -> Quota;

    /// The project's private DNS zones (of one VPC if given), first-named first: `offset`
    /// skipped, at most `limit` (all if negative), and how many in all.
    fn dns_zones(&self, caller: Caller, vpc_id: Option<String>, limit: i64, offset: i64) -> (Vec<DnsZone>, i64);
    /// The project's published names matching the filter, by zone (in zone order), then
    /// oldest first: `offset` skipped, at most `limit` (all if negative), and how many in all.
    fn dns_records(&self, caller: Caller, filter: DnsRecordFilter, limit: i64, offset: i64) -> (Vec<DnsRecord>, i64);

    fn tag_resource(&self, caller: Caller, kind: ResourceKind, id: String, create: bool, tags: Vec<(String, Option<String>)>) -> ();
    fn project_tags(&self, caller: Caller, kind: ResourceKind) -> Vec<(String, Vec<String>)>;
    fn tagged_resources(&self, caller: Caller, kind: ResourceKind) -> Vec<TaggedResource>;

    /// Rows the controller still has to move out of a transitional status.
    fn transitional(&self) -> Transitional;
    /// The desired state of the data plane, as of one revision.
    fn snapshot(&self) -> vpcep_model::Snapshot;
    /// What changed in the desired state after revision `from`; `None` when that is no
    /// longer known (read the snapshot whole then).
    fn changes_since(&self, from: u64) -> Option<vpcep_model::SnapshotDelta>;
    /// Services that came up (or failed to), in one transaction.
    fn settle_services(&self, outcomes: Vec<(String, Outcome)>) -> ();
    /// Endpoints that came up (or failed to), in one transaction.
    fn settle_endpoints(&self, outcomes: Vec<(String, Outcome)>) -> ();
    /// Removes services and endpoints whose deletion is complete, in one transaction.
    fn finish_deletions(&self, services: Vec<String>, endpoints: Vec<String>) -> ();

    /// Says that replica `name` (API at `address`) is alive, and whether it leads.
    fn heartbeat(&self, name: String, address: String, leader: bool) -> ();
    /// Every process that has served this database, as it last said.
    fn replicas(&self) -> Vec<Replica>;
    /// A gateway node's report (everything, or what changed), kept for every replica's
    /// controller; `false` when changes come from a node whose last report is unknown or
    /// older than `ttl_secs`.
    fn record_gateway_report(&self, node: String, revision: u64, full: bool, endpoints: Vec<(String, Option<String>)>, gone: Vec<String>, ttl_secs: u64) -> bool;
    /// What gateway nodes that reported within `ttl_secs` say of endpoints `ids`.
    fn gateway_outcomes(&self, ids: Vec<String>, ttl_secs: u64) -> Vec<(String, Outcome)>;
    /// A machine of a deployment across machines says what it is (with every report).
    fn register_machine(&self, name: String, role: vpcep_model::MachineRole, zone: String, underlay: std::net::Ipv4Addr) -> ();
    /// Every registered machine, by name.
    fn machines(&self) -> Vec<Machine>;
    /// The controller's care of the machines: those silent for longer than
    /// `down_after_secs` are declared down (when `declare`), and the gateway pair's
    /// slots pass from machines that are down to spares. Returns what changed.
    fn tend_machines(&self, down_after_secs: u64, declare: bool) -> MachinesTended;
}
