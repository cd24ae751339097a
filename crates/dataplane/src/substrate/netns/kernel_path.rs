//! The kernel fast path on the netns substrate: the veth links between VPC routers, the
//! routes and policy rules that steer marked packets over them, and the nftables table
//! that `kernel` plans for each namespace.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::Ipv4Addr;
use std::process::Command;

use vpcep_model::VpcSpec;

use super::{in_ns, ip, short, KernelPath, Netns, EXISTS, GONE};
use crate::kernel::{self, Links, NsPlan};

/// Routes of the kernel path carry this protocol number, so they can be listed and pruned.
const ROUTE_PROTO: &str = "199";
/// The preference of the policy rules that route marked packets over links.
const LINK_RULE_PREF: &str = "100";

impl Netns {
    fn sysctl(ns: &str, key: &str, value: &str) -> io::Result<()> {
        in_ns(ns, "sysctl", &["-qw", &format!("{key}={value}")], None).map(|_| ())
    }

    /// The veth link between a consumer and a provider VPC, with static neighbours.
    fn ensure_link(&self, consumer: &str, provider: &str) -> io::Result<()> {
        let (cns, pns) = (self.vpc_ns(consumer), self.vpc_ns(provider));
        let (kc, kp) = kernel::link_names(consumer, provider);
        let exists = Command::new("ip")
            .args(["-n", &cns, "link", "show", &kc])
            .output()?
            .status
            .success();
        if !exists {
            ip(
                &[
                    "link",
                    "add",
                    &kc,
                    "netns",
                    &cns,
                    "address",
                    kernel::CONSUMER_MAC,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &kp,
                    "netns",
                    &pns,
                    "address",
                    kernel::PROVIDER_MAC,
                ],
                EXISTS,
            )?;
        }
        for (ns, dev, hop, mac) in [
            (&cns, &kc, kernel::PROVIDER_HOP, kernel::PROVIDER_MAC),
            (&pns, &kp, kernel::CONSUMER_HOP, kernel::CONSUMER_MAC),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"], &[])?;
            Self::big_gso(ns, &[dev]);
            Self::sysctl(ns, &format!("net.ipv4.conf.{dev}.rp_filter"), "0")?;
            // Replies come from the provider's address space, which may hold an address
            // the consumer's router owns too.
            Self::sysctl(ns, &format!("net.ipv4.conf.{dev}.accept_local"), "1")?;
            ip(
                &[
                    "-n",
                    ns,
                    "neigh",
                    "replace",
                    &hop.to_string(),
                    "lladdr",
                    mac,
                    "dev",
                    dev,
                    "nud",
                    "permanent",
                ],
                &[],
            )?;
        }
        Ok(())
    }

    /// Our kernel-path routes in a namespace become exactly `want` (each via `hop`, or
    /// straight onto the device).
    fn sync_routes(ns: &str, want: &[(Ipv4Addr, String, Option<Ipv4Addr>)]) -> io::Result<()> {
        let listed = Command::new("ip")
            .args(["-n", ns, "route", "show", "proto", ROUTE_PROTO])
            .output()?;
        for line in String::from_utf8_lossy(&listed.stdout).lines() {
            let dest = line.split_whitespace().next().unwrap_or_default();
            let keep = want
                .iter()
                .any(|(ip, dev, _)| dest == ip.to_string() && line.contains(&format!("dev {dev}")));
            if !keep && !dest.is_empty() {
                ip(
                    &["-n", ns, "route", "del", dest, "proto", ROUTE_PROTO],
                    GONE,
                )?;
            }
        }
        for (dest, dev, hop) in want {
            let dest = format!("{dest}/32");
            let mut args = vec!["-n", ns, "route", "replace", &dest];
            let hop = hop.map(|h| h.to_string());
            if let Some(h) = &hop {
                args.extend(["via", h.as_str(), "onlink"]);
            }
            args.extend(["dev", dev, "proto", ROUTE_PROTO]);
            ip(&args, &[])?;
        }
        Ok(())
    }

    /// The policy rules of a consumer namespace become exactly `marks`: packets marked
    /// for a link are routed over it (table = mark, default route via the provider's
    /// end), ahead of the local table, which moves behind them — a backend's address may
    /// be one the consumer's router owns in its own address space.
    fn sync_marks(ns: &str, marks: &[(u32, String)]) -> io::Result<()> {
        let listed = Command::new("ip")
            .args(["-n", ns, "rule", "show", "pref", LINK_RULE_PREF])
            .output()?;
        for line in String::from_utf8_lossy(&listed.stdout).lines() {
            let Some(mark) = line
                .split_whitespace()
                .skip_while(|w| *w != "fwmark")
                .nth(1)
                .and_then(|m| u32::from_str_radix(m.trim_start_matches("0x"), 16).ok())
            else {
                continue;
            };
            if !marks.iter().any(|(m, _)| *m == mark) {
                let table = mark.to_string();
                ip(
                    &[
                        "-n",
                        ns,
                        "rule",
                        "del",
                        "pref",
                        LINK_RULE_PREF,
                        "fwmark",
                        &table,
                    ],
                    GONE,
                )?;
                ip(&["-n", ns, "route", "flush", "table", &table], GONE)?;
            }
        }
        if marks.is_empty() {
            return Ok(());
        }
        ip(
            &["-n", ns, "rule", "add", "pref", "200", "lookup", "local"],
            EXISTS,
        )?;
        ip(
            &["-n", ns, "rule", "del", "pref", "0", "lookup", "local"],
            GONE,
        )?;
        for (mark, dev) in marks {
            let table = mark.to_string();
            ip(
                &[
                    "-n",
                    ns,
                    "route",
                    "replace",
                    "default",
                    "via",
                    &kernel::PROVIDER_HOP.to_string(),
                    "dev",
                    dev,
                    "onlink",
                    "table",
                    &table,
                ],
                &[],
            )?;
            ip(
                &[
                    "-n",
                    ns,
                    "rule",
                    "add",
                    "pref",
                    LINK_RULE_PREF,
                    "fwmark",
                    &table,
                    "lookup",
                    &table,
                ],
                EXISTS,
            )?;
        }
        Ok(())
    }
}

impl KernelPath for Netns {
    fn apply(
        &self,
        vpcs: &BTreeMap<String, VpcSpec>,
        plans: &BTreeMap<String, NsPlan>,
        links: &Links,
    ) -> io::Result<()> {
        for (c, p) in links {
            self.ensure_link(c, p)?;
        }
        for (id, vpc) in vpcs {
            let ns = self.vpc_ns(id);
            // Links nobody needs any more go (with their routes).
            let listed = Command::new("ip")
                .args(["-n", &ns, "-o", "link", "show"])
                .output()?;
            for line in String::from_utf8_lossy(&listed.stdout).lines() {
                let Some(name) = line
                    .split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap_or(n))
                else {
                    continue;
                };
                let wanted = links.iter().any(|(c, p)| {
                    let (kc, kp) = kernel::link_names(c, p);
                    (c == id && name == kc) || (p == id && name == kp)
                });
                if (name.starts_with("kc-") || name.starts_with("kp-")) && !wanted {
                    ip(&["-n", &ns, "link", "del", name], GONE)?;
                }
            }
            let plan = plans.get(id).cloned().unwrap_or_default();
            // Towards a provider the next hop is the provider's end; back towards a
            // consumer it is the consumer's end.
            let routes: Vec<(Ipv4Addr, String, Option<Ipv4Addr>)> = plan
                .routes
                .iter()
                .map(|(dest, dev)| {
                    let hop = if dev.starts_with("kc-") {
                        Some(kernel::PROVIDER_HOP)
                    } else if dev.starts_with("kp-") {
                        Some(kernel::CONSUMER_HOP)
                    } else {
                        None
                    };
                    (*dest, dev.clone(), hop)
                })
                .collect();
            Self::sync_routes(&ns, &routes)?;
            Self::sync_marks(&ns, &plan.marks)?;
            for (dest, dev, _) in &routes {
                if dev.starts_with("kp-") {
                    // A SNAT address left on the provider's loopback by the userspace
                    // path would swallow the replies routed back over the link.
                    ip(
                        &["-n", &ns, "addr", "del", &format!("{dest}/32"), "dev", "lo"],
                        GONE,
                    )?;
                    continue;
                }
                // An endpoint IP left on a bridge by the userspace path (an earlier run)
                // would be answered by the router itself instead of by proxy ARP.
                for s in &vpc.subnets {
                    let br = format!("br-{}", short(&s.id));
                    ip(
                        &["-n", &ns, "addr", "del", &format!("{dest}/32"), "dev", &br],
                        GONE,
                    )?;
                }
            }
            if routes.iter().any(|(_, dev, _)| !dev.starts_with("kp-")) {
                // The subnet bridges answer ARP for endpoint IPs (routed elsewhere).
                for s in &vpc.subnets {
                    Self::sysctl(
                        &ns,
                        &format!("net.ipv4.conf.br-{}.proxy_arp", short(&s.id)),
                        "1",
                    )?;
                }
            }
            let script = format!(
                "add table ip {t}\ndelete table ip {t}\n{}",
                plan.nft,
                t = kernel::TABLE
            );
            in_ns(&ns, "nft", &["-f", "-"], Some(&script))?;
        }
        Ok(())
    }

    fn forget(&self, vpc_ids: &[&str], marker_id: u32) {
        for id in vpc_ids {
            // "0 flow entries" is an exit status of 1 for conntrack; nothing to report.
            let _ = in_ns(
                &self.vpc_ns(id),
                "conntrack",
                &["-D", "-m", &marker_id.to_string()],
                None,
            );
        }
    }

    fn counters(&self, vpc_id: &str) -> HashMap<String, (u64, u64)> {
        let Ok(out) = in_ns(
            &self.vpc_ns(vpc_id),
            "nft",
            &["-j", "list", "counters", "table", "ip", kernel::TABLE],
            None,
        ) else {
            return HashMap::new();
        };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) else {
            return HashMap::new();
        };
        v["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|item| {
                let c = item.get("counter")?;
                Some((
                    c["name"].as_str()?.to_owned(),
                    (c["packets"].as_u64()?, c["bytes"].as_u64()?),
                ))
            })
            .collect()
    }
}

/// Sessions of the kernel path live in conntrack; a node is meant to hold a million.
const CONNTRACK_MAX: u64 = 1 << 20;

/// Raises `net.netfilter.nf_conntrack_max` (one limit for every namespace) to at least
/// [`CONNTRACK_MAX`]; says clearly if it cannot.
pub(super) fn raise_conntrack_max() {
    let path = "/proc/sys/net/netfilter/nf_conntrack_max";
    let current: u64 = std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    if current >= CONNTRACK_MAX {
        return;
    }
    match std::fs::write(path, CONNTRACK_MAX.to_string()) {
        Ok(()) => tracing::info!(
            from = current,
            to = CONNTRACK_MAX,
            "raised nf_conntrack_max for the kernel path"
        ),
        Err(e) => {
            tracing::warn!(current, error = %e, "cannot raise net.netfilter.nf_conntrack_max to {CONNTRACK_MAX}; the kernel path holds at most {current} sessions on this node")
        }
    }
}
