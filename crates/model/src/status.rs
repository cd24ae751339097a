//! Statuses and enumerations, with the transitions the control plane allows.

use crate::{Reason, Rejection};

/// Marker ids are allocated from here up (observed Huawei values are ≥ 2^24).
pub const MARKER_ID_BASE: i64 = 0x0100_0000;

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident, $field:literal { $($var:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($var),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$var => $s),+ }
            }

            /// Parses the exact wire spelling.
            pub fn parse(raw: &str) -> Result<Self, Rejection> {
                match raw {
                    $($s => Ok($name::$var),)+
                    _ => Err(Rejection::bad(format!(
                        "{}: {:?} is not one of {}",
                        $field,
                        raw,
                        [$($s),+].join(", ")
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        /// A string with one of the wire spellings.
        #[cfg(feature = "schema")]
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
                let object = ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some([$($s),+]))
                    .build();
                utoipa::openapi::RefOr::T(Schema::Object(object))
            }
        }

        #[cfg(feature = "schema")]
        impl utoipa::ToSchema for $name {
            fn name() -> std::borrow::Cow<'static, str> {
                std::borrow::Cow::Borrowed(stringify!($name))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                $name::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_enum!(
    /// Status of an endpoint service.
    ServiceStatus, "status" {
        Creating = "creating",
        Available = "available",
        Failed = "failed",
        Deleting = "deleting",
    }
);

string_enum!(
    /// Status of an endpoint (the provider sees the same value as its connection status).
    EndpointStatus, "status" {
        PendingAcceptance = "pendingAcceptance",
        Creating = "creating",
        Accepted = "accepted",
        Rejected = "rejected",
        Failed = "failed",
        Deleting = "deleting",
    }
);

string_enum!(ServerType, "server_type" { Vm = "VM", Lb = "LB", Vip = "VIP" });
string_enum!(ServiceType, "service_type" { Interface = "interface", Gateway = "gateway" });
string_enum!(
    TcpProxy, "tcp_proxy" {
        Close = "close",
        ToaOpen = "toa_open",
        ProxyOpen = "proxy_open",
        Open = "open",
    }
);

impl EndpointStatus {
    /// An endpoint in one of these states counts toward `connection_count` and blocks
    /// deleting its service.
    pub fn blocks_service_deletion(self) -> bool {
        matches!(self, EndpointStatus::Accepted | EndpointStatus::Creating)
    }

    /// The provider's accept/reject decision: which transitions it may make.
    pub fn decide(self, accept: bool) -> Result<EndpointStatus, Rejection> {
        use EndpointStatus::*;
        match (self, accept) {
            (PendingAcceptance | Rejected | Accepted, true) => Ok(Accepted),
            (PendingAcceptance | Accepted | Rejected, false) => Ok(Rejected),
            (Creating, _) => Err(Rejection::new(
                Reason::EndpointCreating,
                "the endpoint is still being created",
            )),
            (Deleting, _) => Err(Rejection::new(
                Reason::EndpointDeleting,
                "the endpoint is being deleted",
            )),
            (Failed, _) => Err(Rejection::new(
                Reason::EndpointFailed,
                "a failed endpoint cannot be accepted or rejected",
            )),
        }
    }

    /// Checks that the consumer may modify the endpoint in this state.
    pub fn check_modifiable(self) -> Result<(), Rejection> {
        match self {
            EndpointStatus::Creating => Err(Rejection::new(
                Reason::EndpointCreating,
                "the endpoint is still being created",
            )),
            EndpointStatus::Deleting => Err(Rejection::new(
                Reason::EndpointDeleting,
                "the endpoint is being deleted",
            )),
            EndpointStatus::Failed => Err(Rejection::new(
                Reason::EndpointFailed,
                "a failed endpoint cannot be modified, only deleted",
            )),
            _ => Ok(()),
        }
    }

    /// Where a freshly created endpoint settles once the data plane has it.
    pub fn settled(approval_enabled: bool) -> EndpointStatus {
        if approval_enabled {
            EndpointStatus::PendingAcceptance
        } else {
            EndpointStatus::Accepted
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EndpointStatus::*;

    #[test]
    fn round_trip() {
        for s in EndpointStatus::ALL {
            assert_eq!(EndpointStatus::parse(s.as_str()).unwrap(), *s);
        }
        for s in ServiceStatus::ALL {
            assert_eq!(ServiceStatus::parse(s.as_str()).unwrap(), *s);
        }
        assert!(EndpointStatus::parse("Accepted").is_err());
        assert!(ServerType::parse("vm").is_err());
        assert_eq!(ServerType::parse("LB").unwrap(), ServerType::Lb);
    }

    #[test]
    fn decisions() {
        let table = [
            (PendingAcceptance, true, Ok(Accepted)),
            (PendingAcceptance, false, Ok(Rejected)),
            (Accepted, false, Ok(Rejected)),
            (Rejected, true, Ok(Accepted)),
            (Creating, true, Err(Reason::EndpointCreating)),
            (Deleting, false, Err(Reason::EndpointDeleting)),
            (Failed, true, Err(Reason::EndpointFailed)),
        ];
        for (from, accept, want) in table {
            assert_eq!(
                from.decide(accept).map_err(|e| e.reason),
                want,
                "{from} {accept}"
            );
        }
        assert_eq!(EndpointStatus::settled(true), PendingAcceptance);
        assert_eq!(EndpointStatus::settled(false), Accepted);
        assert!(Accepted.blocks_service_deletion());
        assert!(Creating.blocks_service_deletion());
        assert!(!PendingAcceptance.blocks_service_deletion());
        assert!(!Rejected.blocks_service_deletion());
    }
}
