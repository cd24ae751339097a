//! The kernel fast path on the netns substrate: the veth links between VPC routers, and
//! what `kernel` plans for each namespace — its nftables table, its routes and its policy
//! rules — applied as the elements and lines that changed (one `nft` transaction and one
//! `ip -batch` per namespace), or rewritten whole at start-up and when a listing shows
//! that someone changed it by hand.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::Ipv4Addr;

use super::{ip, Netns, EXISTS, GONE};
use crate::kernel::{self, Delta, IpLine, Item, Link, Shape, Tolerate, TABLE};
use crate::substrate::KernelPath;

impl Netns {
    /// The veth link between a consumer and a provider VPC, with static neighbours.
    fn ensure_link(&self, consumer: &str, provider: &str) -> io::Result<()> {
        let (cns, pns) = (self.vpc_ns(consumer), self.vpc_ns(provider));
        let (kc, kp) = kernel::link_names(consumer, provider);
        if !self.has_link(&cns, &kc)? {
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
            self.sysctl(ns, &format!("net/ipv4/conf/{dev}/rp_filter"), "0")?;
            // Replies come from the provider's address space, which may hold an address
            // the consumer's router owns too.
            self.sysctl(ns, &format!("net/ipv4/conf/{dev}/accept_local"), "1")?;
            let neigh = format!("neigh replace {hop} lladdr {mac} dev {dev} nud permanent");
            self.ip_batch(ns, &[line(format!("link set {dev} up")), line(neigh)])?;
            Self::big_gso(ns, &[dev]);
        }
        Ok(())
    }

    fn has_link(&self, ns: &str, dev: &str) -> io::Result<bool> {
        Ok(std::process::Command::new("ip")
            .args(["-n", ns, "link", "show", dev])
            .output()?
            .status
            .success())
    }

    /// Removes a link (both ends go with either).
    fn remove_link(&self, (consumer, provider): &Link) -> io::Result<()> {
        let (kc, kp) = kernel::link_names(consumer, provider);
        ip(&["-n", &self.vpc_ns(consumer), "link", "del", &kc], GONE)?;
        ip(&["-n", &self.vpc_ns(provider), "link", "del", &kp], GONE)
    }

    /// The links of namespace `ns` (`kc-*` and `kp-*`).
    fn links_in(&self, ns: &str) -> io::Result<Vec<String>> {
        let out = std::process::Command::new("ip")
            .args(["-n", ns, "-o", "link", "show"])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_owned())
            .filter(|n| n.starts_with("kc-") || n.starts_with("kp-"))
            .collect())
    }

    /// Our routes in `ns` as (destination, device).
    fn our_routes(&self, ns: &str) -> io::Result<BTreeSet<(Ipv4Addr, String)>> {
        let out = self.run_in(
            ns,
            "ip",
            &["-o", "route", "show", "proto", kernel::ROUTE_PROTO],
            None,
        )?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let dest = words.next()?.parse().ok()?;
                let dev = words.skip_while(|w| *w != "dev").nth(1)?;
                Some((dest, dev.to_owned()))
            })
            .collect())
    }

    /// The userspace path's local addresses in `ns` (its `local` routes) with their devices.
    fn local_routes(&self, ns: &str) -> io::Result<Vec<(Ipv4Addr, String)>> {
        let proto = kernel::LOCAL_PROTO.to_string();
        let args = ["-o", "route", "show", "table", "local", "proto", &proto];
        let out = self.run_in(ns, "ip", &args, None)?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let mut words = l.split_whitespace().skip_while(|w| *w == "local");
                let addr = words.next()?.split('/').next()?.parse().ok()?;
                let dev = words.skip_while(|w| *w != "dev").nth(1)?;
                Some((addr, dev.to_owned()))
            })
            .collect())
    }

    /// The link marks our policy rules in `ns` route.
    fn our_marks(&self, ns: &str) -> io::Result<BTreeSet<u32>> {
        let out = self.run_in(
            ns,
            "ip",
            &["rule", "show", "pref", kernel::LINK_RULE_PREF],
            None,
        )?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let m = l.split_whitespace().skip_while(|w| *w != "fwmark").nth(1)?;
                u32::from_str_radix(m.trim_start_matches("0x"), 16).ok()
            })
            .collect())
    }

    /// Our table in `ns` as `nft -j` lists it (`None` when there is none).
    fn our_table(&self, ns: &str) -> io::Result<Option<serde_json::Value>> {
        match self.run_in(ns, "nft", &["-j", "list", "table", "ip", TABLE], None) {
            Ok(out) => serde_json::from_str(&out)
                .map(Some)
                .map_err(|e| io::Error::other(format!("nft -j in {ns}: {e}"))),
            // No table: nft says "No such file or directory".
            Err(e) if e.to_string().contains("No such file") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn line(line: String) -> IpLine {
    IpLine {
        line,
        tolerate: Tolerate::Nothing,
    }
}

/// The shape of our table, as `nft -j list table` gives it (the dynamic sets that count
/// sessions change by themselves and are left out).
fn table_shape(listing: &serde_json::Value) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut sets = BTreeMap::new();
    let mut chains = BTreeMap::new();
    for obj in listing["nftables"].as_array().into_iter().flatten() {
        if let Some(set) = obj.get("set").or_else(|| obj.get("map")) {
            let name = set["name"].as_str().unwrap_or_default();
            if !name.starts_with("cl_") {
                let n = set["elem"].as_array().map_or(0, Vec::len);
                sets.insert(name.to_owned(), n);
            }
        } else if let Some(chain) = obj.get("chain") {
            chains
                .entry(chain["name"].as_str().unwrap_or_default().to_owned())
                .or_insert(0);
        } else if let Some(rule) = obj.get("rule") {
            *chains
                .entry(rule["chain"].as_str().unwrap_or_default().to_owned())
                .or_insert(0) += 1;
        }
    }
    (sets, chains)
}

impl KernelPath for Netns {
    fn apply(&self, delta: &Delta) -> BTreeMap<String, String> {
        let mut failed = BTreeMap::new();
        for link in &delta.links_added {
            if let Err(e) = self.ensure_link(&link.0, &link.1) {
                failed.insert(link.0.clone(), e.to_string());
                failed.insert(link.1.clone(), e.to_string());
            }
        }
        for (vpc, change) in &delta.ns {
            if failed.contains_key(vpc) {
                continue;
            }
            let ns = self.vpc_ns(vpc);
            let script = change.nft_script();
            let done = if script.is_empty() {
                Ok(())
            } else {
                self.nft(&ns, &script)
            }
            .and_then(|()| self.ip_batch(&ns, &change.ip_lines()));
            if let Err(e) = done {
                failed.insert(vpc.clone(), e.to_string());
            }
        }
        for link in &delta.links_removed {
            if let Err(e) = self.remove_link(link) {
                tracing::warn!(link = ?link, error = %e, "an unused link could not be removed");
            }
        }
        failed
    }

    fn rewrite(&self, vpc: &str, items: &[&Item], links: &[Link]) -> io::Result<()> {
        let ns = self.vpc_ns(vpc);
        for (c, p) in links {
            self.ensure_link(c, p)?;
        }
        // Links nobody needs any more go (with their routes).
        let wanted: BTreeSet<String> = links
            .iter()
            .map(|(c, p)| {
                let (kc, kp) = kernel::link_names(c, p);
                if c == vpc {
                    kc
                } else {
                    kp
                }
            })
            .collect();
        for dev in self.links_in(&ns)? {
            if !wanted.contains(&dev) {
                ip(&["-n", &ns, "link", "del", &dev], GONE)?;
            }
        }
        self.nft(&ns, &kernel::full_script(items))?;
        // Routes and rules that are there but not wanted go; every wanted one is (re)made.
        let shape = Shape::of(items);
        let stale: Vec<Item> = self
            .our_routes(&ns)?
            .into_iter()
            .filter(|r| !shape.routes.contains(r))
            .map(|(dest, dev)| Item::Route {
                dest,
                dev,
                hop: None,
                clear: None,
            })
            .chain(
                self.our_marks(&ns)?
                    .into_iter()
                    .filter(|m| !shape.marks.contains(m))
                    .map(|mark| Item::Mark {
                        mark,
                        dev: String::new(),
                    }),
            )
            .collect();
        let stale: Vec<&Item> = stale.iter().collect();
        // Local addresses an earlier run's userspace path left where a route now answers
        // are taken off — those that are there, not every route's on the off chance.
        let mut lines: Vec<IpLine> = kernel::ip_lines(items, &stale)
            .into_iter()
            .filter(|l| !l.line.starts_with("route del local"))
            .collect();
        let clears: BTreeSet<(Ipv4Addr, &str)> = items
            .iter()
            .filter_map(|i| match i {
                Item::Route {
                    dest,
                    clear: Some(dev),
                    ..
                } => Some((*dest, dev.as_str())),
                _ => None,
            })
            .collect();
        for (addr, dev) in self.local_routes(&ns)? {
            if clears.contains(&(addr, dev.as_str())) {
                lines.push(line(format!(
                    "route del local {addr}/32 dev {dev} table local proto {}",
                    kernel::LOCAL_PROTO
                )));
            }
        }
        self.ip_batch(&ns, &lines)
    }

    fn drift(&self, vpc: &str, want: &Shape) -> io::Result<Option<String>> {
        let ns = self.vpc_ns(vpc);
        let (sets, chains) = match self.our_table(&ns)? {
            Some(listing) => table_shape(&listing),
            None => Default::default(),
        };
        if sets != want.sets {
            return Ok(Some(format!("sets {sets:?}, expected {:?}", want.sets)));
        }
        if chains != want.chains {
            return Ok(Some(format!(
                "chains {chains:?}, expected {:?}",
                want.chains
            )));
        }
        let routes = self.our_routes(&ns)?;
        if routes != want.routes {
            return Ok(Some(format!(
                "{} routes, expected {}",
                routes.len(),
                want.routes.len()
            )));
        }
        let marks = self.our_marks(&ns)?;
        if marks != want.marks {
            return Ok(Some(format!(
                "link marks {marks:?}, expected {:?}",
                want.marks
            )));
        }
        Ok(None)
    }

    fn clear(&self, vpc: &str) -> io::Result<()> {
        let ns = self.vpc_ns(vpc);
        // Listed without its elements: only whether it is there matters.
        let held = match self.run_in(&ns, "nft", &["-t", "list", "table", "ip", TABLE], None) {
            Ok(_) => true,
            Err(e) if e.to_string().contains("No such file") => false,
            Err(e) => return Err(e),
        };
        self.rewrite(vpc, &[], &[])?;
        if held {
            // One flush of the VPC router's conntrack table rather than a `conntrack -D`
            // per endpoint (a table dump each: 10,000 endpoints took a minute). What
            // else the router tracks, routed flows between its subnets, is picked up
            // again by the next packet.
            self.run_in(&ns, "conntrack", &["-F"], None)?;
        }
        Ok(())
    }

    fn forget(&self, vpc_id: &str, marker_id: u32) {
        // "0 flow entries" is an exit status of 1 for conntrack; nothing to report.
        let _ = self.run_in(
            &self.vpc_ns(vpc_id),
            "conntrack",
            &["-D", "-m", &marker_id.to_string()],
            None,
        );
    }

    fn counters(&self, vpc_id: &str) -> HashMap<String, (u64, u64)> {
        let Ok(Some(listing)) = self.our_table(&self.vpc_ns(vpc_id)) else {
            return HashMap::new();
        };
        let mut out = HashMap::new();
        for obj in listing["nftables"].as_array().into_iter().flatten() {
            let Some(set) = obj.get("set") else { continue };
            let name = set["name"].as_str().unwrap_or_default();
            if !kernel::COUNTED.contains(&name) {
                continue;
            }
            for elem in set["elem"].as_array().into_iter().flatten() {
                let elem = &elem["elem"];
                let (Some(packets), Some(bytes)) = (
                    elem["counter"]["packets"].as_u64(),
                    elem["counter"]["bytes"].as_u64(),
                ) else {
                    continue;
                };
                let key = match &elem["val"] {
                    serde_json::Value::Number(m) => format!("{name}_{m}"),
                    // bytes: direction . marker id
                    v => {
                        let parts = v["concat"].as_array();
                        let dir = parts.and_then(|p| p.first()).and_then(|d| d.as_str());
                        let m = parts.and_then(|p| p.get(1)).and_then(|m| m.as_u64());
                        match (dir, m) {
                            (Some("original"), Some(m)) => format!("to_backend_{m}"),
                            (Some("reply"), Some(m)) => format!("to_client_{m}"),
                            _ => continue,
                        }
                    }
                };
                out.insert(key, (packets, bytes));
            }
        }
        out
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
