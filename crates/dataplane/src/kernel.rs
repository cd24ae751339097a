//! The kernel fast path, as a plan: for endpoints with `tcp_proxy = close` on the netns
//! substrate, no process touches the packets. Pure: this module only computes what each
//! namespace must hold; `substrate::netns` applies it.
//!
//! Per (consumer VPC, provider VPC) pair there is one veth link: `kc-{provider8}` in the
//! consumer namespace, `kp-{consumer8}` in the provider namespace. In the consumer
//! namespace the endpoint IP is routed over the link (the subnet bridge answers ARP for it
//! by proxy ARP); nftables there admits new sessions (endpoint whitelist, `ct count`
//! limit), marks them with the endpoint's marker id, and SNATs them to the consumer VPC's
//! link address 100.64.0.0/10 + N (N = the VPC number), which is unique on every link. In
//! the provider namespace nftables DNATs `endpoint IP:client port` arriving on that link
//! to `backend:server port` and SNATs to the endpoint's 198.19.128.0/20 address; replies
//! go back by plain routing (the link address is routed over the link) and conntrack
//! undoes both translations. New sessions arriving from a link are dropped on the
//! consumer side, so the provider side can never open a connection into the consumer VPC.

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

/// The link address of a consumer VPC: 100.64.0.0 + its number.
pub fn link_source(seq: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(Ipv4Addr::new(100, 64, 0, 0)) + seq)
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
    /// Static routes (`destination/32`, device) this namespace needs.
    pub routes: Vec<(Ipv4Addr, String)>,
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
    let mut provider: BTreeMap<String, Vec<&EndpointSpec>> = BTreeMap::new();
    let mut links = Vec::new();
    for e in endpoints {
        let Some(p) = &e.provider_vpc else { continue };
        if !vpcs.contains_key(&e.consumer_vpc) || !vpcs.contains_key(p) {
            continue;
        }
        consumer.entry(e.consumer_vpc.clone()).or_default().push(e);
        provider.entry(p.clone()).or_default().push(e);
        let pair = (e.consumer_vpc.clone(), p.clone());
        if !links.contains(&pair) {
            links.push(pair);
        }
    }
    let mut out: BTreeMap<String, NsPlan> = BTreeMap::new();
    for (vpc, eps) in &consumer {
        let seq = vpcs[vpc].seq;
        let src = link_source(seq);
        let mut sets = String::new();
        let mut admit = String::new();
        let mut snat = String::new();
        let mut count = String::new();
        let mut routes = Vec::new();
        for e in eps {
            let p = e.provider_vpc.as_deref().unwrap_or_default();
            let (kc, _) = link_names(vpc, p);
            let m = e.marker_id;
            routes.push((e.ip, kc.clone()));
            let ports: Vec<String> = e
                .ports
                .iter()
                .map(|pm| format!("{} dport {}", proto(pm.protocol), pm.client_port))
                .collect();
            for port in &ports {
                let head = format!("ip daddr {} {port} ct state new", e.ip);
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
            }
            let _ = writeln!(snat, "    oifname \"{kc}\" ct mark {m} snat to {src}");
            let _ = writeln!(
                count,
                "    oifname \"{kc}\" ct mark {m} counter name to_backend_{m}"
            );
            let _ = writeln!(
                count,
                "    iifname \"{kc}\" ct mark {m} counter name to_client_{m}"
            );
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
        let nft = format!(
            "table ip {TABLE} {{\n{counters}{sets}  chain ep_admit {{\n    type filter hook prerouting priority -150; policy accept;\n{admit}  }}\n  chain ep_guard {{\n    type filter hook forward priority 0; policy accept;\n    iifname \"kc-*\" ct state new drop\n  }}\n  chain ep_count {{\n    type filter hook forward priority 10; policy accept;\n{count}  }}\n  chain ep_guard_in {{\n    type filter hook input priority 0; policy accept;\n    iifname \"kc-*\" ct state new drop\n  }}\n  chain ep_snat {{\n    type nat hook postrouting priority 100; policy accept;\n{snat}  }}\n}}\n"
        );
        out.insert(vpc.clone(), NsPlan { nft, routes });
    }
    for (vpc, eps) in &provider {
        let mut dnat = String::new();
        let mut snat = String::new();
        let mut routes = Vec::new();
        for e in eps {
            let (_, kp) = link_names(&e.consumer_vpc, vpc);
            let m = e.marker_id;
            let src = link_source(vpcs[&e.consumer_vpc].seq);
            if !routes.iter().any(|(a, _)| *a == src) {
                routes.push((src, kp.clone()));
            }
            for pm in &e.ports {
                let _ = writeln!(
                    dnat,
                    "    iifname \"{kp}\" ip daddr {} {} dport {} ct mark set {m} dnat to {}:{}",
                    e.ip,
                    proto(pm.protocol),
                    pm.client_port,
                    e.backend_ip,
                    pm.server_port
                );
            }
            let _ = writeln!(snat, "    ct mark {m} snat to {}", e.snat_ip);
        }
        let nft = format!(
            "table ip {TABLE} {{\n  chain ep_dnat {{\n    type nat hook prerouting priority -100; policy accept;\n{dnat}  }}\n  chain ep_snat {{\n    type nat hook postrouting priority 100; policy accept;\n{snat}  }}\n}}\n"
        );
        let entry = out.entry(vpc.clone()).or_default();
        if entry.nft.is_empty() {
            entry.nft = nft;
        } else {
            // A VPC that is both consumer and provider: one table holds both roles.
            entry.nft = merge(&entry.nft, &nft);
        }
        entry.routes.extend(routes);
    }
    (out, links)
}

/// Merges two of our table scripts (chain names do not collide between the roles, except
/// `snat`, whose rules are concatenated).
fn merge(a: &str, b: &str) -> String {
    let body = |s: &str| {
        s.trim_end()
            .trim_end_matches('}')
            .trim_start_matches(&format!("table ip {TABLE} {{\n"))
            .to_owned()
    };
    let (a, b) = (body(a), body(b));
    let snat_a = a.find("  chain ep_snat {");
    let snat_b = b.find("  chain ep_snat {");
    let (Some(ia), Some(ib)) = (snat_a, snat_b) else {
        return format!("table ip {TABLE} {{\n{a}{b}}}\n");
    };
    let rules = |s: &str, i: usize| -> String {
        let chain = &s[i..];
        chain
            .lines()
            .filter(|l| l.starts_with("    ") && !l.contains("type nat"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let snat_rules = format!("{}{}", rules(&a, ia), rules(&b, ib));
    let before_a = &a[..ia];
    let before_b = &b[..ib];
    format!("table ip {TABLE} {{\n{before_a}{before_b}  chain ep_snat {{\n    type nat hook postrouting priority 100; policy accept;\n{snat_rules}  }}\n}}\n")
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
            snat_ip: vpcep_model::snat_ip(marker),
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
        assert!(c.nft.contains("ip daddr 192.168.0.4 tcp dport 8080 ct state new add @cl_16777216 { ip daddr ct count over 3000 } counter name refused_limit_16777216 drop"));
        assert!(c.nft.contains("ip saddr != @wl_16777216"));
        assert_eq!(c.nft.matches("set wl_16777216").count(), 1);
        assert!(c
            .nft
            .contains("oifname \"kc-pppppppp\" ct mark 16777216 snat to 100.64.0.3"));
        assert!(c
            .nft
            .contains("iifname \"kc-pppppppp\" ct mark 16777216 counter name to_client_16777216"));
        let p = &plans["pppppppp-1"];
        assert_eq!(
            p.routes,
            vec![(Ipv4Addr::new(100, 64, 0, 3), "kp-cccccccc".to_string())]
        );
        assert!(p.nft.contains("iifname \"kp-cccccccc\" ip daddr 192.168.0.4 udp dport 5353 ct mark set 16777216 dnat to 192.168.0.10:53"));
        assert!(p.nft.contains("ct mark 16777216 snat to 198.19.128.1"));
    }

    #[test]
    fn a_vpc_can_be_both_sides() {
        let vpcs: BTreeMap<_, _> = [vpc("aaaaaaaa", 1), vpc("bbbbbbbb", 2)].into();
        let e1 = ep("e1", "aaaaaaaa", "bbbbbbbb", 16777216, None);
        let e2 = ep("e2", "bbbbbbbb", "aaaaaaaa", 16777217, None);
        let (plans, links) = plan(&vpcs, &[&e1, &e2]);
        assert_eq!(links.len(), 2);
        let a = &plans["aaaaaaaa"].nft;
        assert_eq!(a.matches("table ip vpcep").count(), 1);
        assert_eq!(a.matches("chain ep_snat").count(), 1);
        assert!(a.contains("snat to 100.64.0.1") && a.contains("snat to 198.19.128.2"));
        assert!(a.contains("chain ep_dnat") && a.contains("chain ep_admit"));
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
