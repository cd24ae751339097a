//! `/openapi.json`: every operation the API serves, from one table that a test also checks
//! against the router, so the document cannot drift from the routes. The request and
//! response schemas come from the types the handlers themselves deserialize and
//! serialize (`utoipa::ToSchema` derives): each route module maps its operation ids to
//! those types in an `io` function, and a test checks that every operation has them.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use crate::routes;

/// (method, path, operation id, success status, summary).
pub const OPERATIONS: &[(&str, &str, &str, u16, &str)] = &[
    ("POST", "/v1/{project_id}/vpc-endpoint-services", "create_endpoint_service", 200, "Create an endpoint service (interface) for a VM or LB backend"),
    ("GET", "/v1/{project_id}/vpc-endpoint-services", "list_endpoint_service", 200, "List the caller's endpoint services"),
    ("GET", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}", "list_service_details", 200, "Show an endpoint service"),
    ("PUT", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}", "update_endpoint_service", 200, "Update an endpoint service (port mappings are immutable)"),
    ("DELETE", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}", "delete_endpoint_service", 204, "Delete an endpoint service (refused while endpoints are connected)"),
    ("PUT", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/name", "update_endpoint_service_name", 200, "Rename an endpoint service"),
    ("GET", "/v1/{project_id}/vpc-endpoint-services/describe", "list_service_describe_details", 200, "Find a service a consumer may connect to, by name or id"),
    ("GET", "/v1/{project_id}/vpc-endpoint-services/public", "list_service_public_details", 200, "List the operator's cloud services"),
    ("GET", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/connections", "list_service_connections", 200, "List the endpoints connected to a service"),
    ("POST", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/connections/action", "accept_or_reject_endpoint", 200, "Accept (receive) or reject one endpoint"),
    ("PUT", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/connections/description", "update_endpoint_connections_desc", 200, "Set the provider's note on connections"),
    ("GET", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/permissions", "list_service_permissions_details", 200, "List the service whitelist"),
    ("POST", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/permissions/action", "add_or_remove_service_permissions", 200, "Add or remove whitelist entries"),
    ("POST", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/permissions/batch-create", "batch_add_endpoint_service_permissions", 200, "Add whitelist entries with descriptions"),
    ("POST", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/permissions/batch-delete", "batch_remove_endpoint_service_permissions", 200, "Remove whitelist entries by id"),
    ("PUT", "/v1/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/permissions/{permission_id}", "update_endpoint_service_permission_desc", 200, "Describe a whitelist entry"),
    ("POST", "/v1/{project_id}/vpc-endpoints", "create_endpoint", 200, "Create an endpoint"),
    ("GET", "/v1/{project_id}/vpc-endpoints", "list_endpoints", 200, "List the caller's endpoints"),
    ("GET", "/v1/{project_id}/vpc-endpoints/{vpc_endpoint_id}", "list_endpoint_info_details", 200, "Show an endpoint"),
    ("PUT", "/v1/{project_id}/vpc-endpoints/{vpc_endpoint_id}", "update_endpoint_white", 200, "Set an endpoint's source whitelist"),
    ("DELETE", "/v1/{project_id}/vpc-endpoints/{vpc_endpoint_id}", "delete_endpoint", 204, "Delete an endpoint"),
    ("PUT", "/v1/{project_id}/vpc-endpoints/{vpc_endpoint_id}/policy", "update_endpoint_policy", 200, "Set a gateway endpoint's policy"),
    ("DELETE", "/v1/{project_id}/vpc-endpoints/{vpc_endpoint_id}/policy", "delete_endpoint_policy", 200, "Remove an endpoint's policy"),
    ("PUT", "/v1/{project_id}/vpc-endpoints/{vpc_endpoint_id}/routetables", "update_endpoint_routetable", 200, "Replace a gateway endpoint's route tables"),
    ("GET", "/v1/{project_id}/quotas", "list_quota_details", 200, "Quotas: used and total"),
    ("POST", "/v1/{project_id}/{resource_type}/{resource_id}/tags/action", "batch_add_or_remove_resource_instance", 204, "Tag or untag a resource"),
    ("GET", "/v1/{project_id}/{resource_type}/tags", "list_query_project_resource_tags", 200, "Tags used in the project"),
    ("POST", "/v1/{project_id}/{resource_type}/resource_instances/action", "list_resource_instances", 200, "Filter or count resources by tags"),
    ("GET", "/", "list_version_details", 200, "API versions"),
    ("GET", "/{version}", "list_specified_version_details", 200, "One API version"),
    ("POST", "/v2/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/add-server-resources", "add_endpoint_service_server_resource", 204, "Add load-balancer backends"),
    ("POST", "/v2/{project_id}/vpc-endpoint-services/{vpc_endpoint_service_id}/upgrade", "upgrade_endpoint_service", 204, "Let a service serve professional endpoints"),
    ("POST", "/v2/{project_id}/vpc-endpoints/{vpc_endpoint_id}/upgrade", "upgrade_endpoint", 202, "Make an endpoint professional"),
    ("POST", "/v1/{project_id}/vpcs", "create_vpc", 200, "Create a VPC (with its default route table)"),
    ("GET", "/v1/{project_id}/vpcs", "list_vpcs", 200, "List VPCs"),
    ("GET", "/v1/{project_id}/vpcs/{vpc_id}", "show_vpc", 200, "Show a VPC"),
    ("PUT", "/v1/{project_id}/vpcs/{vpc_id}", "update_vpc", 200, "Rename or describe a VPC"),
    ("DELETE", "/v1/{project_id}/vpcs/{vpc_id}", "delete_vpc", 204, "Delete an empty VPC"),
    ("POST", "/v1/{project_id}/subnets", "create_subnet", 200, "Create a subnet (must not overlap 198.19.128.0/17)"),
    ("GET", "/v1/{project_id}/subnets", "list_subnets", 200, "List subnets"),
    ("GET", "/v1/{project_id}/subnets/{subnet_id}", "show_subnet", 200, "Show a subnet"),
    ("PUT", "/v1/{project_id}/vpcs/{vpc_id}/subnets/{subnet_id}", "update_subnet", 200, "Rename or describe a subnet"),
    ("DELETE", "/v1/{project_id}/vpcs/{vpc_id}/subnets/{subnet_id}", "delete_subnet", 204, "Delete an empty subnet"),
    ("POST", "/v1/{project_id}/ports", "create_port", 200, "Create a port (a VM NIC, or an LB VIP with device_owner neutron:LOADBALANCERV2)"),
    ("GET", "/v1/{project_id}/ports", "list_ports", 200, "List ports"),
    ("GET", "/v1/{project_id}/ports/{port_id}", "show_port", 200, "Show a port"),
    ("PUT", "/v1/{project_id}/ports/{port_id}", "update_port", 200, "Rename a port"),
    ("DELETE", "/v1/{project_id}/ports/{port_id}", "delete_port", 204, "Delete a port not backing a service"),
    ("POST", "/v1/{project_id}/routetables", "create_route_table", 200, "Create a route table"),
    ("GET", "/v1/{project_id}/routetables", "list_route_tables", 200, "List route tables"),
    ("GET", "/v1/{project_id}/routetables/{routetable_id}", "show_route_table", 200, "Show a route table"),
    ("PUT", "/v1/{project_id}/routetables/{routetable_id}", "update_route_table", 200, "Add, change or delete routes"),
    ("DELETE", "/v1/{project_id}/routetables/{routetable_id}", "delete_route_table", 204, "Delete a route table"),
    ("POST", "/v1/{project_id}/hosts", "create_host", 200, "Create a host (VM or LB stand-in) joined to a subnet; netns substrate: a namespace"),
    ("GET", "/v1/{project_id}/hosts", "list_hosts", 200, "List hosts"),
    ("GET", "/v1/{project_id}/hosts/{host_id}", "show_host", 200, "Show a host (by id or name)"),
    ("DELETE", "/v1/{project_id}/hosts/{host_id}", "delete_host", 204, "Delete a host not backing a service"),
    ("POST", "/v1/{project_id}/idcs", "create_idc", 200, "Attach a data centre (its own range, routed to the VPC as over a VPN); netns substrate: a namespace"),
    ("GET", "/v1/{project_id}/idcs", "list_idcs", 200, "List attached data centres"),
    ("GET", "/v1/{project_id}/idcs/{idc_id}", "show_idc", 200, "Show a data centre (by id or name)"),
    ("DELETE", "/v1/{project_id}/idcs/{idc_id}", "delete_idc", 204, "Detach and remove a data centre"),
    ("GET", "/v2/zones", "list_private_zones", 200, "DNS v2 (read-only): the private zones of the VPCs with named endpoints (?type=private)"),
    ("GET", "/v2/zones/{zone_id}", "show_private_zone", 200, "DNS v2 (read-only): one private zone"),
    ("GET", "/v2/zones/{zone_id}/recordsets", "list_record_sets_by_zone", 200, "DNS v2 (read-only): the A records of a zone's endpoints"),
    ("GET", "/v2/zones/{zone_id}/recordsets/{recordset_id}", "show_record_set", 200, "DNS v2 (read-only): one record set"),
    ("GET", "/v2/recordsets", "list_record_sets", 200, "DNS v2 (read-only): every record set of the project"),
    ("POST", "/v3/auth/tokens", "keystone_create_user_token_by_password", 201, "Password login; the token comes back in X-Subject-Token"),
    ("GET", "/v3/projects", "keystone_list_projects", 200, "The caller's project in this region"),
    ("GET", "/internal/v1/snapshot", "node_snapshot", 200, "Gateway nodes: the desired state, long-polled with ?after=REVISION&wait=SECONDS (Bearer node token)"),
    ("GET", "/internal/v1/changes", "node_changes", 200, "Gateway nodes: what changed after ?after=REVISION, long-polled with wait=SECONDS; 410 when that is no longer kept (Bearer node token)"),
    ("POST", "/internal/v1/status", "node_status", 204, "Gateway nodes: which endpoints are live (Bearer node token)"),
    ("GET", "/openapi.json", "openapi", 200, "This document"),
];

/// A named body type: its component name and how to collect its schema and the schemas it
/// refers to.
#[derive(Clone, Copy)]
pub(crate) struct Body {
    name: fn() -> String,
    collect: fn(&mut Vec<(String, RefOr<Schema>)>),
}

/// The body type `T`.
pub(crate) fn body<T: ToSchema>() -> Option<Body> {
    Some(Body {
        name: || T::name().into_owned(),
        collect: |out| {
            out.push((T::name().into_owned(), T::schema()));
            T::schemas(out);
        },
    })
}

/// What one operation reads and answers: its JSON request body (None: it takes none) and
/// the JSON body of its success status (None: that status has no body).
pub(crate) struct Io {
    pub(crate) request: Option<Body>,
    pub(crate) response: Option<Body>,
}

/// The bodies of an operation, from the route module that serves it; None for an
/// operation whose bodies are not typed (the document then shows no schema for it).
pub(crate) fn io(op: &str) -> Option<Io> {
    routes::io(op).or_else(|| crate::nodes::io(op))
}

/// The query parameters an operation reads (its handler reads them by name through
/// `extract::Params`): name and schema. All are optional.
fn query(op: &str) -> Vec<(&'static str, Value)> {
    let int = || json!({"type": "integer"});
    let string = || json!({"type": "string"});
    let page = || {
        vec![
            ("limit", int()),
            ("offset", int()),
            (
                "sort_key",
                json!({"type": "string", "enum": ["create_at", "created_at", "update_at", "updated_at"]}),
            ),
            (
                "sort_dir",
                json!({"type": "string", "enum": ["asc", "desc"]}),
            ),
        ]
    };
    let vpc_page = || vec![("limit", int()), ("marker", string())];
    let dns_page = || vec![("limit", int()), ("offset", int())];
    let node = || vec![("after", int()), ("wait", int())];
    let with = |mut a: Vec<(&'static str, Value)>, b: Vec<(&'static str, Value)>| {
        a.extend(b);
        a
    };
    match op {
        "list_endpoint_service" => with(
            vec![
                ("endpoint_service_name", string()),
                ("id", string()),
                ("status", string()),
            ],
            page(),
        ),
        "list_service_describe_details" => {
            vec![("endpoint_service_name", string()), ("id", string())]
        }
        "list_service_public_details" => with(
            vec![("endpoint_service_name", string()), ("id", string())],
            page(),
        ),
        "list_service_connections" => with(
            vec![("id", string()), ("marker_id", int()), ("status", string())],
            page(),
        ),
        "list_service_permissions_details" => with(vec![("permission", string())], page()),
        "list_endpoints" => with(
            vec![
                ("endpoint_service_name", string()),
                ("vpc_id", string()),
                ("id", string()),
            ],
            page(),
        ),
        "list_quota_details" => vec![(
            "type",
            json!({"type": "string", "enum": ["endpoint_service", "endpoint"]}),
        )],
        "list_vpcs" => with(vec![("id", string())], vpc_page()),
        "list_subnets" => with(vec![("vpc_id", string())], vpc_page()),
        "list_ports" => with(
            vec![
                ("id", string()),
                ("network_id", string()),
                ("device_owner", string()),
                ("device_id", string()),
            ],
            vpc_page(),
        ),
        "list_route_tables" => with(vec![("vpc_id", string()), ("id", string())], vpc_page()),
        "list_private_zones" => with(
            vec![
                (
                    "type",
                    json!({"type": "string", "enum": ["private", "public"]}),
                ),
                ("name", string()),
                ("id", string()),
            ],
            dns_page(),
        ),
        "list_record_sets_by_zone" => with(
            vec![("type", string()), ("name", string()), ("status", string())],
            dns_page(),
        ),
        "list_record_sets" => with(
            vec![
                (
                    "zone_type",
                    json!({"type": "string", "enum": ["private", "public"]}),
                ),
                ("type", string()),
                ("name", string()),
                ("status", string()),
            ],
            dns_page(),
        ),
        "keystone_list_projects" => vec![("name", string())],
        "node_snapshot" | "node_changes" => node(),
        _ => vec![],
    }
}

fn schema_ref(b: &Body) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", (b.name)())})
}

/// Every component schema the operations use, by name; an error names a type whose name
/// two different schemas share.
pub(crate) fn components() -> Result<BTreeMap<String, Value>, String> {
    let mut all = Vec::new();
    crate::error::body_schema(&mut all);
    for (_, _, op, _, _) in OPERATIONS {
        if let Some(io) = io(op) {
            for b in io.request.iter().chain(io.response.iter()) {
                (b.collect)(&mut all);
            }
        }
    }
    let mut out = BTreeMap::new();
    for (name, schema) in all {
        let v = serde_json::to_value(&schema).map_err(|e| e.to_string())?;
        match out.get(&name) {
            Some(prev) if *prev != v => return Err(format!("two schemas are named {name}")),
            _ => {
                out.insert(name, v);
            }
        }
    }
    Ok(out)
}

/// An OpenAPI 3.1 document (this one).
#[derive(Serialize, ToSchema)]
pub(crate) struct Document {
    openapi: String,
    #[schema(value_type = Object)]
    info: Value,
    #[schema(value_type = Object)]
    paths: Value,
    #[schema(value_type = Object)]
    components: Value,
    #[schema(value_type = Vec<Object>)]
    security: Value,
}

fn build() -> Document {
    let mut paths: Map<String, Value> = Map::new();
    for (method, path, op, status, summary) in OPERATIONS {
        let mut params: Vec<Value> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        params.extend(
            query(op)
                .into_iter()
                .map(|(name, schema)| json!({"name": name, "in": "query", "required": false, "schema": schema})),
        );
        let io = io(op);
        let mut ok = json!({"description": "success"});
        if let Some(b) = io.as_ref().and_then(|io| io.response.as_ref()) {
            ok["content"] = json!({"application/json": {"schema": schema_ref(b)}});
        }
        let mut operation = json!({
            "operationId": op,
            "summary": summary,
            "parameters": params,
            "responses": {
                status.to_string(): ok,
                "default": {"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            },
        });
        if let Some(b) = io.as_ref().and_then(|io| io.request.as_ref()) {
            // An empty body reads as `{}`.
            operation["requestBody"] = json!({
                "required": false,
                "content": {"application/json": {"schema": schema_ref(b)}},
            });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method.to_lowercase()] = operation;
    }
    let schemas: Map<String, Value> = components()
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .collect();
    Document {
        openapi: "3.1.0".to_owned(),
        info: json!({"title": "vpcep API (Huawei Cloud VPCEP compatible)", "version": env!("CARGO_PKG_VERSION")}),
        paths: Value::Object(paths),
        components: json!({
            "schemas": schemas,
            "securitySchemes": {
                "sdkHmac": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "SDK-HMAC-SHA256 Access=AK, SignedHeaders=…, Signature=…"},
                "token": {"type": "apiKey", "in": "header", "name": "X-Auth-Token"},
            },
        }),
        security: json!([{"sdkHmac": []}, {"token": []}]),
    }
}

/// The document (built once).
pub(crate) fn document() -> &'static Document {
    static DOC: OnceLock<Document> = OnceLock::new();
    DOC.get_or_init(build)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operations whose bodies are not typed. Keep this empty.
    const UNTYPED: &[&str] = &[];

    #[test]
    fn every_operation_has_its_schemas() {
        for (method, _, op, status, _) in OPERATIONS {
            let Some(io) = io(op) else {
                assert!(UNTYPED.contains(op), "{op}: no schemas");
                continue;
            };
            assert!(!UNTYPED.contains(op), "{op} is typed: take it off UNTYPED");
            let takes_body = matches!(*method, "POST" | "PUT");
            assert_eq!(io.request.is_some(), takes_body, "{op}: request body");
            assert_eq!(io.response.is_some(), *status != 204, "{op}: response body");
        }
    }

    #[test]
    fn query_parameters_belong_to_operations() {
        let ids: Vec<&str> = OPERATIONS.iter().map(|o| o.2).collect();
        for op in [
            "list_endpoint_service",
            "list_service_describe_details",
            "list_service_public_details",
            "list_service_connections",
            "list_service_permissions_details",
            "list_endpoints",
            "list_quota_details",
            "list_vpcs",
            "list_subnets",
            "list_ports",
            "list_route_tables",
            "list_private_zones",
            "list_record_sets_by_zone",
            "list_record_sets",
            "keystone_list_projects",
            "node_snapshot",
            "node_changes",
        ] {
            assert!(ids.contains(&op), "{op}");
            assert!(!query(op).is_empty(), "{op}");
        }
    }

    #[test]
    fn schemas_are_consistent() {
        let schemas = components().unwrap();
        assert!(schemas.contains_key("Error"));
        let doc = serde_json::to_string(document()).unwrap();
        // Every reference resolves.
        for part in doc.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "dangling reference to {name}");
        }
    }
}
