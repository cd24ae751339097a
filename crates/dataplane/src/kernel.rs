//! The kernel fast path, as a plan: for endpoints with `tcp_proxy = close` on the netns
//! substrate, no process touches the packets. Pure: this module only computes what each
//! namespace must hold; `substrate::netns` applies it.
//!
//! Per (consumer VPC, provider VPC) pair there is one veth link: `kc-{provider8}` in the
//! consumer namespace, `kp-{consumer8}` in the provider namespace. All the work happens
//! once, in the consumer namespace, which the subnet bridge reaches for the endpoint IP
//! by proxy ARP: nftables admits new sessions (endpoint whitelist, `ct count` limit),
//! marks them with the endpoint's marker id, DNATs `endpoint IP:client port` to
//! `backend:server port` and SNATs to the endpoint's 198.19.128.0/20 address. The
//! backend's address belongs to the provider's (possibly overlapping) address space, so
//! packets of the session's original direction carry a firewall mark of their link and
//! a policy rule routes them over it, ahead of the namespace's own tables. The provider
//! namespace only routes: the backend is in its subnet, and the endpoint's SNAT address
//! is routed back over the link, where conntrack undoes both translations. New sessions
//! arriving from a link are dropped on the consumer side, so the provider side can never
//! open a connection into the consumer VPC. An endpoint in its service's own VPC needs no
//! link: the same rules translate, and the router forwards to the backend directly.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::Ipv4Addr;

use vpcep_model::{EndpointSpec, Protocol, TcpProxy, VpcSpec};

/// Our nftables table, in every namespace that has kernel-path state.
pub const TABLE: &str = "vpcep";
/// Link-local next hops on every link (the neighbour entries are static).
pub const CONSUMER_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
pub const PROVIDER_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
pub const CONSUMER_MAC: &str = "02:76:70:63:00:01";
pub const PROVIDER_MAC: &str = "02:76:70:63:00:02";

/// The firewall mark, and the number of the routing table, of a consumer's link to the
/// provider VPC number `seq` (the high bit keeps it clear of the kernel's own tables).
pub fn link_mark(provider_seq: u32) -> u32 {
    0x8000_0000 | provider_seq
}

/// The named counters of an endpoint (suffix `_{marker_id}`), in its consumer namespace.
pub const COUNTERS: [&str; 5] = [
    "sessions",
    "refused_limit",
    "refused_whitelist",
    "to_backend",
    "to_client",
];

/// Limits up to this many sessions are counted in one list.
const ONE_LIST: u32 = 4096;

/// How many lists an endpoint's session limit is counted in. The kernel's `ct count`
/// walks its list on every new session (at most once per tick), which at 100,000
/// sessions costs more than the forwarding itself; above [`ONE_LIST`] the count is
/// sharded by a hash of the client's address and port into a power of two of lists of
/// about 1,000, each allowed `limit / shards`. The total never exceeds the limit; near it,
/// a session whose list is full is refused slightly before the total is reached.
pub fn limit_shards(limit: u32) -> u32 {
    if limit <= ONE_LIST {
        1
    } else {
        (limit / 1024).next_power_of_two().min(128)
    }
}

/// Whether an endpoint can take the kernel path: plain L4 forwarding to a tenant backend.
pub fn eligible(e: &EndpointSpec) -> bool {
    e.tcp_proxy == TcpProxy::Close && e.provider_vpc.is_some()
}

pub fn short(id: &str) -> String {
    id.chars().filter(|c| *c != '-').take(8).collect()
}

/// The consumer end of the link to `provider`, and the provider end of the link from
/// `consumer`.
pub fn link_names(consumer: &str, provider: &str) -> (String, String) {
    (
        format!("kc-{}", short(provider)),
        format!("kp-{}", short(consumer)),
    )
}

/// Everything one namespace must hold for the kernel path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsPlan {
    /// The nftables script that replaces our table atomically.
    pub nft: String,
    /// Static routes (`destination/32`, device) this namespace needs (device `lo` for
    /// an address that only has to be answered on its subnet).
    pub routes: Vec<(Ipv4Addr, String)>,
    /// Links whose marked packets a policy rule routes over them: (mark, device).
    pub marks: Vec<(u32, String)>,
}

/// The veth links, as (consumer VPC, provider VPC).
pub type Links = Vec<(String, String)>;

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The plan for every VPC namespace, from the kernel-path endpoints.
pub fn plan(
    vpcs: &BTreeMap<String, VpcSpec>,
    endpoints: &[&EndpointSpec],
) -> (BTreeMap<String, NsPlan>, Links) {
    let mut consumer: BTreeMap<String, Vec<&EndpointSpec>> = BTreeMap::new();
    let mut links = Vec::new();
    let mut out: BTreeMap<String, NsPlan> = BTreeMap::new();
    for e in endpoints {
        let Some(p) = &e.provider_vpc else { continue };
        if !vpcs.contains_key(&e.consumer_vpc) || !vpcs.contains_key(p) {
            continue;
        }
        consumer.entry(e.consumer_vpc.clone()).or_default().push(e);
        if *p == e.consumer_vpc {
            continue;
        }
        let pair = (e.consumer_vpc.clone(), p.clone());
        if !links.contains(&pair) {
            links.push(pair);
        }
        // The provider routes the endpoint's SNAT address back over the link.
        let (_, kp) = link_names(&e.consumer_vpc, p);
        out.entry(p.clone())
            .or_default()
            .routes
            .push((e.snat_ip, kp));
    }
    for (vpc, eps) in &consumer {
        let mut sets = String::new();
        let mut admit = String::new();
        let mut dnat = String::new();
        let mut snat = String::new();
        let mut count = Vec::new();
        let mut link_of = Vec::new();
        let mut routes = Vec::new();
        let mut marks = Vec::new();
        for e in eps {
            let p = e.provider_vpc.as_deref().unwrap_or_default();
            let m = e.marker_id;
            if p == vpc {
                // No link: the endpoint IP only has to be answered on its subnet.
                routes.push((e.ip, "lo".to_owned()));
            } else {
                let (kc, _) = link_names(vpc, p);
                let mark = link_mark(vpcs[p].seq);
                routes.push((e.ip, kc.clone()));
                if !marks.iter().any(|(k, _)| *k == mark) {
                    marks.push((mark, kc));
                }
                link_of.push(format!("{m} : {mark}"));
            }
            for pm in &e.ports {
                let port = format!("{} dport {}", proto(pm.protocol), pm.client_port);
                let head = format!("ip daddr {} {port}", e.ip);
                if let Some(list) = &e.whitelist {
                    let _ = write!(sets, "  set wl_{m} {{ type ipv4_addr; flags interval;");
                    if !list.is_empty() {
                        let _ = write!(sets, " elements = {{ {} }}", list.join(", "));
                    }
                    sets.push_str(" }\n");
                    let _ = writeln!(
                        admit,
                        "    {head} ip saddr != @wl_{m} counter name refused_whitelist_{m} drop"
                    );
                }
                // One set per endpoint, shared by the rules of all its ports, so the
                // limit counts the endpoint's sessions, not each port's.
                let (key_type, key) = match limit_shards(e.max_connections) {
                    1 => ("ipv4_addr", "ip daddr".to_owned()),
                    n => ("mark", format!("jhash ip saddr . th sport mod {n}")),
                };
                let _ = writeln!(
                    sets,
                    "  set cl_{m} {{ type {key_type}; size 65535; flags dynamic; }}"
                );
                let limit = format!(
                    "add @cl_{m} {{ {key} ct count over {} }}",
                    e.max_connections / limit_shards(e.max_connections)
                );
                let _ = writeln!(
                    admit,
                    "    {head} {limit} counter name refused_limit_{m} drop"
                );
                let _ = writeln!(
                    admit,
                    "    {head} ct mark set {m} counter name sessions_{m}"
                );
                let _ = writeln!(
                    dnat,
                    "    ct mark {m} {head} dnat to {}:{}",
                    e.backend_ip, pm.server_port
                );
            }
            let _ = writeln!(snat, "    ct mark {m} snat to {}", e.snat_ip);
            count.push(format!(
                "original . {m} : \"to_backend_{m}\", reply . {m} : \"to_client_{m}\""
            ));
        }
        let counters: String = eps
            .iter()
            .flat_map(|e| COUNTERS.map(|k| format!("  counter {k}_{} {{}}\n", e.marker_id)))
            .collect();
        // Sets are declared once even when an endpoint has several ports.
        let mut seen = std::collections::BTreeSet::new();
        let sets: String = sets
            .lines()
            .filter(|l| seen.insert(l.to_string()))
            .map(|l| format!("{l}\n"))
            .collect();
        let elements = |list: &[String]| {
            if list.is_empty() {
                String::new()
            } else {
                format!(" elements = {{ {} }};", list.join(", "))
            }
        };
        let (link_of, count) = (elements(&link_of), elements(&count));
        // Nothing new enters from a link, neither through the router nor to it.
        let guards: String = [("ep_guard", "forward"), ("ep_guard_in", "input")]
            .map(|(chain, hook)| {
                format!("  chain {chain} {{\n    type filter hook {hook} priority 0; policy accept;\n    ct state new iifname \"kc-*\" drop\n  }}\n")
            })
            .concat();
        let nft = format!(
            "table ip {TABLE} {{
{counters}{sets}  map link_of {{ type mark : mark;{link_of} }}
  map count_of {{ type ct_dir . mark : counter;{count} }}
  chain ep_admit {{
    type filter hook prerouting priority -150; policy accept;
    ct state new jump ep_new
    ct direction original meta mark set ct mark map @link_of
  }}
  chain ep_new {{
{admit}  }}
  chain ep_dnat {{
    type nat hook prerouting priority -100; policy accept;
{dnat}  }}
{guards}  chain ep_count {{
    type filter hook forward priority 10; policy accept;
    counter name ct direction . ct mark map @count_of
  }}
  chain ep_snat {{
    type nat hook postrouting priority 100; policy accept;
{snat}  }}
}}
"
        );
        let entry = out.entry(vpc.clone()).or_default();
        entry.nft = nft;
        entry.routes.extend(routes);
        entry.marks = marks;
    }
    (out, links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vpcep_model::PortMapping;

    fn vpc(id: &str, seq: u32) -> (String, VpcSpec) {
        (
            id.into(),
            VpcSpec {
                id: id.into(),
                seq,
                subnets: vec![],
            },
        )
    }

    fn ep(
        id: &str,
        consumer: &str,
        provider: &str,
        marker: u32,
        whitelist: Option<Vec<String>>,
    ) -> EndpointSpec {
        EndpointSpec {
            id: id.into(),
            service_id: "s".into(),
            marker_id: marker,
            consumer_vpc: consumer.into(),
            subnet_id: "sub".into(),
            ip: Ipv4Addr::new(192, 168, 0, 4),
            provider_vpc: Some(provider.into()),
            backend_ip: Ipv4Addr::new(192, 168, 0, 10),
            ports: vec![
                PortMapping {
                    client_port: 8080,
                    server_port: 80,
                    protocol: Protocol::Tcp,
                },
                PortMapping {
                    client_port: 5353,
                    server_port: 53,
                    protocol: Protocol::Udp,
                },
            ],
            tcp_proxy: TcpProxy::Close,
            whitelist,
            max_connections: 3000,
            snat_ip: Ipv4Addr::new(198, 19, 128, 1 + (marker & 0xff) as u8),
            dns_name: None,
            route: None,
        }
    }

    #[test]
    fn plans_both_sides() {
        let vpcs: BTreeMap<_, _> = [vpc("cccccccc-1", 3), vpc("pppppppp-1", 4)].into();
        let e = ep(
            "e",
            "cccccccc-1",
            "pppppppp-1",
            16777216,
            Some(vec!["10.0.0.0/8".into()]),
        );
        let (plans, links) = plan(&vpcs, &[&e]);
        assert_eq!(
            links,
            vec![("cccccccc-1".to_string(), "pppppppp-1".to_string())]
        );
        let c = &plans["cccccccc-1"];
        assert_eq!(
            c.routes,
            vec![(Ipv4Addr::new(192, 168, 0, 4), "kc-pppppppp".to_string())]
        );
        assert_eq!(c.marks, vec![(0x8000_0004, "kc-pppppppp".to_string())]);
        assert!(c.nft.contains("ip daddr 192.168.0.4 tcp dport 8080 add @cl_16777216 { ip daddr ct count over 3000 } counter name refused_limit_16777216 drop"));
        assert!(c.nft.contains("ip saddr != @wl_16777216"));
        assert_eq!(c.nft.matches("set wl_16777216").count(), 1);
        assert!(c
            .nft
            .contains("map link_of { type mark : mark; elements = { 16777216 : 2147483652 }; }"));
        assert!(c.nft.contains(
            "ct mark 16777216 ip daddr 192.168.0.4 udp dport 5353 dnat to 192.168.0.10:53"
        ));
        assert!(c.nft.contains("ct mark 16777216 snat to 198.19.128.1"));
        assert!(c.nft.contains("map count_of { type ct_dir . mark : counter; elements = { original . 16777216 : \"to_backend_16777216\", reply . 16777216 : \"to_client_16777216\" }; }"));
        assert!(c
            .nft
            .contains("counter name ct direction . ct mark map @count_of"));
        // The provider only routes the SNAT address back.
        let p = &plans["pppppppp-1"];
        assert_eq!(
            p.routes,
            vec![(Ipv4Addr::new(198, 19, 128, 1), "kp-cccccccc".to_string())]
        );
        assert!(p.nft.is_empty() && p.marks.is_empty());
    }

    #[test]
    fn a_vpc_can_be_both_sides() {
        let vpcs: BTreeMap<_, _> = [vpc("aaaaaaaa", 1), vpc("bbbbbbbb", 2)].into();
        let e1 = ep("e1", "aaaaaaaa", "bbbbbbbb", 16777216, None);
        let e2 = ep("e2", "bbbbbbbb", "aaaaaaaa", 16777217, None);
        let (plans, links) = plan(&vpcs, &[&e1, &e2]);
        assert_eq!(links.len(), 2);
        let a = &plans["aaaaaaaa"];
        assert_eq!(a.nft.matches("table ip vpcep").count(), 1);
        assert!(a.nft.contains("snat to 198.19.128.1"));
        assert!(a
            .routes
            .contains(&(Ipv4Addr::new(198, 19, 128, 2), "kp-bbbbbbbb".to_string())));
    }

    #[test]
    fn an_endpoint_in_its_services_vpc_needs_no_link() {
        let vpcs: BTreeMap<_, _> = [vpc("aaaaaaaa", 1)].into();
        let e = ep("e", "aaaaaaaa", "aaaaaaaa", 16777216, None);
        let (plans, links) = plan(&vpcs, &[&e]);
        assert!(links.is_empty());
        let a = &plans["aaaaaaaa"];
        assert_eq!(
            a.routes,
            vec![(Ipv4Addr::new(192, 168, 0, 4), "lo".to_string())]
        );
        assert!(a.marks.is_empty());
        assert!(a.nft.contains("map link_of { type mark : mark; }"));
        assert!(a.nft.contains("dnat to 192.168.0.10:80"));
    }

    #[test]
    fn large_limits_are_sharded() {
        assert_eq!(limit_shards(3000), 1);
        assert_eq!(limit_shards(4096), 1);
        assert_eq!(limit_shards(5000), 4);
        assert_eq!(limit_shards(100_000), 128);
        let v: BTreeMap<String, VpcSpec> = [vpc("a", 1), vpc("b", 2)].into_iter().collect();
        let mut e = ep("e1", "a", "b", 0x0100_0000, None);
        e.max_connections = 100_000;
        let (plans, _) = plan(&v, &[&e]);
        let c = &plans["a"];
        assert!(c
            .nft
            .contains("set cl_16777216 { type mark; size 65535; flags dynamic; }"));
        assert!(c.nft.contains("add @cl_16777216 { jhash ip saddr . th sport mod 128 ct count over 781 } counter name refused_limit_16777216 drop"));
    }

    #[test]
    fn eligibility() {
        let mut e = ep("e", "c", "p", 16777216, None);
        assert!(eligible(&e));
        e.tcp_proxy = TcpProxy::ProxyOpen;
        assert!(!eligible(&e));
        e.tcp_proxy = TcpProxy::Close;
        e.provider_vpc = None;
        assert!(!eligible(&e));
    }
}
