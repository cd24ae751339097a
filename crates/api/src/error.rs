//! The one mapping from failures to the wire: `{"error_code", "error_msg", "request_id"}`
//! with an honest HTTP status. Internal failures are logged in full and reach the client
//! only as a generic message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use vpcep_model::{Reason, Rejection};
use vpcep_store::StoreError;

tokio::task_local! {
    /// The id of the request being served, for error bodies.
    pub(crate) static REQUEST_ID: String;
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub msg: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            msg: msg.into(),
        }
    }

    pub fn bad(code: &'static str, msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, code, msg)
    }

    pub fn param(msg: impl Into<String>) -> Self {
        ApiError::bad("EndPoint.0002", msg)
    }

    pub fn unauthorized(code: &'static str, msg: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, code, msg)
    }

    pub fn not_found(what: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "EndPoint.0005",
            format!("{what} not found"),
        )
    }

    pub fn no_route() -> Self {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "APIGW.0101",
            "the API does not exist or has not been published",
        )
    }

    pub fn internal() -> Self {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "EndPoint.0001",
            "internal error; please retry",
        )
    }
}

impl ApiError {
    /// The data directory's disk is full or failing: nothing was written, and the same
    /// request succeeds once the operator has made room (no restart needed).
    pub fn storage_full() -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "EndPoint.0015",
            "the server's storage is full; nothing was changed; retry later",
        )
    }
}

/// The HTTP status and Huawei error code of each domain reason.
fn wire(reason: Reason) -> (StatusCode, &'static str) {
    use Reason::*;
    let bad = StatusCode::BAD_REQUEST;
    match reason {
        BadParameter | BadDescription | Unsupported => (bad, "EndPoint.0002"),
        BadServiceName => (bad, "EndPoint.3076"),
        BadPortMapping | PortMappingsImmutable => (bad, "EndPoint.3043"),
        BadProtocol => (bad, "EndPoint.3075"),
        BadServerType => (bad, "EndPoint.3021"),
        BadPortId => (bad, "EndPoint.3003"),
        PortNotInVpc => (bad, "EndPoint.3042"),
        BadVpcId => (bad, "EndPoint.0020"),
        BadSubnetId => (bad, "EndPoint.0023"),
        SubnetNotInVpc => (bad, "EndPoint.2037"),
        BadCidr | CidrOverlapsSystemRange => (bad, "EndPoint.3009"),
        BadPortIp => (bad, "EndPoint.2041"),
        PortIpOutsideSubnet => (bad, "EndPoint.2043"),
        PortIpInUse => (bad, "EndPoint.2042"),
        SubnetFull => (bad, "EndPoint.2022"),
        BadEndpointWhitelist => (bad, "EndPoint.2044"),
        EndpointWhitelistFull => (bad, "EndPoint.2045"),
        BadPermission => (bad, "EndPoint.3002"),
        EmptyPermissionList => (bad, "EndPoint.3036"),
        PermissionListFull => (bad, "EndPoint.3049"),
        BadAction => (bad, "EndPoint.0007"),
        OneEndpointPerAction => (bad, "EndPoint.2031"),
        EndpointNotConnected => (bad, "EndPoint.2013"),
        NotWhitelisted => (bad, "EndPoint.2012"),
        ServiceNotAvailable => (bad, "EndPoint.2004"),
        ServiceInUse => (bad, "EndPoint.3006"),
        SystemServiceImmutable => (StatusCode::FORBIDDEN, "EndPoint.0004"),
        PortMappingConflict => (bad, "EndPoint.3044"),
        StateForbids => (bad, "EndPoint.3045"),
        EndpointCreating => (bad, "EndPoint.2019"),
        EndpointDeleting => (bad, "EndPoint.2018"),
        EndpointFailed => (bad, "EndPoint.2047"),
        QuotaExceeded => (bad, "Endpoint.1018"),
        DnsAlreadyEnabled => (bad, "EndPoint.2034"),
        BadTag => (bad, "EndPoint.3068"),
        DuplicateTagKey => (bad, "EndPoint.3067"),
        TagLimit => (bad, "EndPoint.3069"),
        BadResourceType => (bad, "EndPoint.3070"),
        BadRouteTable => (bad, "EndPoint.1019"),
        RouteTableInUse => (bad, "EndPoint.2039"),
        NotGatewayEndpoint => (bad, "EndPoint.2040"),
        BadPolicy => (bad, "EndPoint.2048"),
        NoPolicy => (bad, "EndPoint.2049"),
        NotFound => (StatusCode::NOT_FOUND, "EndPoint.0005"),
        InUse => (StatusCode::CONFLICT, "VPC.0409"),
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        let (status, code) = wire(r.reason);
        ApiError::new(status, code, r.msg)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Rejected(r) => r.into(),
            StoreError::Storage(detail) => {
                tracing::error!(error = %detail, "store cannot write: storage full or failing");
                ApiError::storage_full()
            }
            StoreError::Unavailable(detail) => {
                tracing::error!(error = %detail, "the store's database cannot be reached");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "EndPoint.0015",
                    "the service's database cannot be reached; nothing was changed; retry later",
                )
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal()
            }
        }
    }
}

/// The body of every error response.
#[derive(Serialize, ToSchema)]
#[schema(as = Error)]
pub(crate) struct ErrorBody {
    /// `EndPoint.NNNN`, `APIGW.NNNN`, `DNS.NNNN`, …
    error_code: String,
    error_msg: String,
    /// The id of the request, also sent as `X-Request-Id`.
    request_id: String,
}

/// The `Error` schema of `/openapi.json`.
pub(crate) fn body_schema(out: &mut Vec<(String, RefOr<Schema>)>) {
    out.push((ErrorBody::name().into_owned(), ErrorBody::schema()));
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = REQUEST_ID.try_with(Clone::clone).unwrap_or_default();
        let body = ErrorBody {
            error_code: self.code.to_owned(),
            error_msg: self.msg,
            request_id,
        };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            // The store's storage is full or failing, or its database cannot be
            // reached: a client backs off this long.
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static(STORAGE_RETRY_AFTER),
            );
        }
        response
    }
}

/// Seconds a client waits before retrying a 503 of the store (`Retry-After`).
const STORAGE_RETRY_AFTER: &str = "5";

pub(crate) type ApiResult<T> = Result<T, ApiError>;
