//! The kernel fast path, as a plan: for endpoints with `tcp_proxy = close` on the netns
//! substrate, no process touches the packets. Pure: this module only computes what each
//! namespace must hold and what to send the kernel to get there; `substrate::netns`
//! applies it.
//!
//! Per (consumer VPC, provider VPC) pair there is one veth link: `kc-{provider8}` in the
//! consumer namespace, `kp-{consumer8}` in the provider namespace. All the work happens
//! once, in the consumer namespace, which the subnet bridge reaches for the endpoint IP
//! by proxy ARP (the IP is routed to `lo` there): nftables admits new sessions (endpoint
//! whitelist, `ct count` limit), marks them with the endpoint's marker id, DNATs
//! `endpoint IP:client port` to `backend:server port` and SNATs to the endpoint's
//! 198.19.128.0/20 address. The backend's address belongs to the provider's (possibly
//! overlapping) address space, so packets of the session's original direction carry a
//! firewall mark of their link and a policy rule routes them over it, ahead of the
//! namespace's own tables. The provider namespace only routes: the backend is in its
//! subnet, and the endpoint's SNAT address is routed back over the link, where conntrack
//! undoes both translations. New sessions arriving from a link are dropped on the
//! consumer side, so the provider side can never open a connection into the consumer
//! VPC; a packet to an endpoint port that is not mapped is not translated and ends at
//! the router. An endpoint in its service's own VPC needs no link.
//!
//! Scale, as kube-proxy's nftables mode does it: an endpoint is nothing but elements of a
//! fixed set of maps and sets (plus, shared by every endpoint with the same session
//! limit, one small chain and counting set), so a new connection's first packet costs
//! a few hash lookups whatever the number of endpoints, and a change is sent to the
//! kernel as the elements it adds and removes, in one transaction per namespace. Named
//! counters and per-endpoint chains are avoided on purpose: `nft` reads every object of
//! the table before each transaction, and 10,000 endpoints' chains made a one-element
//! change cost 0.3 s and a full load 49 s (BENCHMARKS.md). Counts live on the elements
//! of counting sets instead.
//!
//! [`KernelState`] counts which endpoints need each [`Item`] (a link or a limit chain is
//! shared), and [`KernelState::update`] turns a set of removed and added endpoints into
//! the [`Delta`] to apply: only what appears or disappears.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use vpcep_model::{EndpointSpec, Protocol, TcpProxy};

/// Our nftables table, in every namespace that has kernel-path state.
pub const TABLE: &str = "vpcep";
/// Link-local next hops on every link (the neighbour entries are static).
pub const CONSUMER_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 1);
pub const PROVIDER_HOP: Ipv4Addr = Ipv4Addr::new(169, 254, 0, 2);
pub const CONSUMER_MAC: &str = "02:76:70:63:00:01";
pub const PROVIDER_MAC: &str = "02:76:70:63:00:02";
/// Routes of the kernel path carry this protocol number, so they can be listed and pruned.
pub const ROUTE_PROTO: &str = "199";
/// The userspace path's local addresses are `local` routes in the local table with this
/// protocol number; the kernel path takes an endpoint's off where an earlier run left it.
pub const LOCAL_PROTO: u8 = 198;
/// The preference of the policy rules that route marked packets over links.
pub const LINK_RULE_PREF: &str = "100";

/// The firewall mark, and the number of the routing table, of a consumer's link to the
/// provider VPC number `seq` (the high bit keeps it clear of the kernel's own tables).
pub fn link_mark(provider_seq: u32) -> u32 {
    0x8000_0000 | provider_seq
}

/// The counting sets, whose elements' counters are the kernel path's metrics: an element
/// per endpoint (marker id), for bytes one per direction and endpoint.
pub const COUNTED: [&str; 4] = ["sessions", "refused_limit", "refused_whitelist", "bytes"];

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

/// The sets and maps of our table. An endpoint's rules are elements in them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Set {
    /// endpoint IP . protocol . client port → marker id (new sessions only).
    MarkOf,
    /// endpoint IP . protocol . client port → backend . server port.
    DnatOf,
    /// marker id → the endpoint's SNAT address.
    SnatOf,
    /// marker id → the mark (and routing table) of the link to its provider.
    LinkOf,
    /// marker id → `jump lim_{limit}`, the chain counting its sessions.
    LimitOf,
    /// Marker ids whose endpoint whitelist is enabled.
    WlOn,
    /// marker id . allowed source range.
    Wl,
    /// Counting sets: an element per endpoint (per direction for bytes).
    Sessions,
    RefusedLimit,
    RefusedWhitelist,
    Bytes,
}

impl Set {
    pub const ALL: [Set; 11] = [
        Set::MarkOf,
        Set::DnatOf,
        Set::SnatOf,
        Set::LinkOf,
        Set::LimitOf,
        Set::WlOn,
        Set::Wl,
        Set::Sessions,
        Set::RefusedLimit,
        Set::RefusedWhitelist,
        Set::Bytes,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Set::MarkOf => "mark_of",
            Set::DnatOf => "dnat_of",
            Set::SnatOf => "snat_of",
            Set::LinkOf => "link_of",
            Set::LimitOf => "limit_of",
            Set::WlOn => "wl_on",
            Set::Wl => "wl",
            Set::Sessions => "sessions",
            Set::RefusedLimit => "refused_limit",
            Set::RefusedWhitelist => "refused_whitelist",
            Set::Bytes => "bytes",
        }
    }

    fn declaration(self) -> String {
        let (kind, body) = match self {
            Set::MarkOf => ("map", "type ipv4_addr . inet_proto . inet_service : mark;"),
            Set::DnatOf => (
                "map",
                "type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;",
            ),
            Set::SnatOf => ("map", "type mark : ipv4_addr;"),
            Set::LinkOf => ("map", "type mark : mark;"),
            Set::LimitOf => ("map", "type mark : verdict;"),
            Set::WlOn => ("set", "type mark;"),
            Set::Wl => ("set", "type mark . ipv4_addr; flags interval;"),
            Set::Sessions | Set::RefusedLimit | Set::RefusedWhitelist => {
                ("set", "type mark; counter;")
            }
            Set::Bytes => ("set", "type ct_dir . mark; counter;"),
        };
        format!("  {kind} {} {{ {body} }}\n", self.name())
    }
}

/// One thing a VPC namespace holds for the kernel path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Item {
    /// An element of one of our sets or maps, in nft's syntax (`value` empty for sets).
    Element {
        set: Set,
        key: String,
        value: String,
    },
    /// The chain `lim_{n}` and dynamic set `cl_{n}` that count sessions against the limit
    /// `n`, shared by every endpoint with that limit.
    Limit(u32),
    /// A /32 route of ours (`proto 199`), via `hop` on a link or straight onto `dev`.
    /// When it is added, the userspace path's local route of the address on `clear` goes,
    /// where an earlier run may have left it (it would answer instead of the route).
    Route {
        dest: Ipv4Addr,
        dev: String,
        hop: Option<Ipv4Addr>,
        clear: Option<String>,
    },
    /// Packets with the link's mark are routed over `dev` (a policy rule and the routing
    /// table of the same number).
    Mark { mark: u32, dev: String },
}

/// A veth link between two VPC routers: (consumer VPC, provider VPC).
pub type Link = (String, String);

/// What to change in one namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NsDelta {
    pub added: Vec<Item>,
    pub removed: Vec<Item>,
    /// The namespace held nothing before (its table is made with what is added), or
    /// holds nothing after (its table goes).
    pub from_empty: bool,
    pub to_empty: bool,
}

impl NsDelta {
    /// The nftables commands of this change, in one transaction (empty when nothing of
    /// nftables changes): the whole table when it appears or goes, else what changed.
    pub fn nft_script(&self) -> String {
        let added: Vec<&Item> = self.added.iter().collect();
        let removed: Vec<&Item> = self.removed.iter().collect();
        if self.to_empty {
            full_script(&[])
        } else if self.from_empty {
            full_script(&added)
        } else {
            delta_script(&added, &removed)
        }
    }

    /// The routes and rules of this change, as `ip -batch` lines.
    pub fn ip_lines(&self) -> Vec<IpLine> {
        let added: Vec<&Item> = self.added.iter().collect();
        let removed: Vec<&Item> = self.removed.iter().collect();
        ip_lines(&added, &removed)
    }
}

/// What to change on the node: links appear before, and go after, the namespaces'
/// changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delta {
    pub links_added: Vec<Link>,
    pub links_removed: Vec<Link>,
    pub ns: BTreeMap<String, NsDelta>,
}

impl Delta {
    pub fn is_empty(&self) -> bool {
        self.links_added.is_empty() && self.links_removed.is_empty() && self.ns.is_empty()
    }
}

/// What the kernel path holds on this node, counted by the endpoints that need it.
#[derive(Debug, Clone, Default)]
pub struct KernelState {
    ns: BTreeMap<String, BTreeMap<Item, u32>>,
    links: BTreeMap<Link, u32>,
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn element(set: Set, key: impl Into<String>, value: impl Into<String>) -> Item {
    Item::Element {
        set,
        key: key.into(),
        value: value.into(),
    }
}

/// A whitelist as disjoint ranges: nftables refuses overlapping intervals, and a tenant
/// may well list 10.0.0.0/8 and 10.1.0.0/16 together. Entries that are not ranges are
/// left out (the API admits none).
fn disjoint(list: &[String]) -> Vec<Ipv4Net> {
    let nets: Vec<Ipv4Net> = list
        .iter()
        .filter_map(|s| {
            s.parse::<Ipv4Net>()
                .ok()
                .or_else(|| s.parse::<Ipv4Addr>().ok().map(Ipv4Net::from))
        })
        .collect();
    Ipv4Net::aggregate(&nets)
}

/// What an endpoint needs: items by VPC namespace, and its link.
pub type Needs = (Vec<(String, Item)>, Option<Link>);

/// What an endpoint needs. `provider_seq` is the provider VPC's number; `None` when the
/// endpoint cannot take the kernel path.
pub fn endpoint_items(e: &EndpointSpec, provider_seq: Option<u32>) -> Option<Needs> {
    let provider = e.provider_vpc.as_ref()?;
    let provider_seq = provider_seq?;
    let consumer = &e.consumer_vpc;
    let m = e.marker_id.to_string();
    let mut out = Vec::new();
    let mut here = |item: Item| out.push((consumer.clone(), item));
    for pm in &e.ports {
        let key = format!("{} . {} . {}", e.ip, proto(pm.protocol), pm.client_port);
        here(element(Set::MarkOf, key.clone(), m.clone()));
        here(element(
            Set::DnatOf,
            key,
            format!("{} . {}", e.backend_ip, pm.server_port),
        ));
    }
    here(element(Set::SnatOf, m.clone(), e.snat_ip.to_string()));
    here(element(
        Set::LimitOf,
        m.clone(),
        format!("jump lim_{}", e.max_connections),
    ));
    here(Item::Limit(e.max_connections));
    if let Some(list) = &e.whitelist {
        here(element(Set::WlOn, m.clone(), ""));
        for net in disjoint(list) {
            here(element(Set::Wl, format!("{m} . {net}"), ""));
        }
    }
    for set in [Set::Sessions, Set::RefusedLimit, Set::RefusedWhitelist] {
        here(element(set, m.clone(), ""));
    }
    for dir in ["original", "reply"] {
        here(element(Set::Bytes, format!("{dir} . {m}"), ""));
    }
    // The router answers ARP for the endpoint on its subnet; the address itself goes
    // nowhere (translated packets are routed by their mark).
    here(Item::Route {
        dest: e.ip,
        dev: "lo".into(),
        hop: None,
        clear: (!e.subnet_id.is_empty()).then(|| format!("br-{}", short(&e.subnet_id))),
    });
    if provider == consumer {
        return Some((out, None));
    }
    let (kc, kp) = link_names(consumer, provider);
    let mark = link_mark(provider_seq);
    here(element(Set::LinkOf, m, mark.to_string()));
    here(Item::Mark { mark, dev: kc });
    // The provider routes the endpoint's SNAT address back over the link.
    out.push((
        provider.clone(),
        Item::Route {
            dest: e.snat_ip,
            dev: kp,
            hop: Some(CONSUMER_HOP),
            clear: Some("lo".into()),
        },
    ));
    Some((out, Some((consumer.clone(), provider.clone()))))
}

impl KernelState {
    /// Counts `removed` out and `added` in, and says what appeared and what disappeared.
    /// An endpoint that changed is in both, so what it keeps is left alone. `seq` gives a
    /// VPC's number; endpoints for which it has none are left out (and said so by the
    /// second value).
    pub fn update(
        &mut self,
        removed: &[&EndpointSpec],
        added: &[&EndpointSpec],
        seq: impl Fn(&str) -> Option<u32>,
    ) -> (Delta, Vec<String>) {
        let mut net: BTreeMap<(String, Item), i64> = BTreeMap::new();
        let mut links: BTreeMap<Link, i64> = BTreeMap::new();
        let mut skipped = Vec::new();
        for (list, sign) in [(removed, -1), (added, 1)] {
            for e in list {
                let provider = e.provider_vpc.as_deref().and_then(&seq);
                let Some((items, link)) = endpoint_items(e, provider) else {
                    if sign > 0 {
                        skipped.push(e.id.clone());
                    }
                    continue;
                };
                for key in items {
                    *net.entry(key).or_default() += sign;
                }
                if let Some(link) = link {
                    *links.entry(link).or_default() += sign;
                }
            }
        }
        let mut delta = Delta::default();
        for ((ns, item), d) in net {
            if d == 0 {
                continue;
            }
            if !delta.ns.contains_key(&ns) {
                let from_empty = !self.ns.contains_key(&ns);
                delta.ns.insert(
                    ns.clone(),
                    NsDelta {
                        from_empty,
                        ..NsDelta::default()
                    },
                );
            }
            let counts = self.ns.entry(ns.clone()).or_default();
            let before = counts.get(&item).copied().unwrap_or(0);
            let after = (i64::from(before) + d).max(0) as u32;
            let change = delta.ns.entry(ns.clone()).or_default();
            match (before, after) {
                (0, 0) => {}
                (0, _) => change.added.push(item.clone()),
                (_, 0) => change.removed.push(item.clone()),
                _ => {}
            }
            if after == 0 {
                counts.remove(&item);
            } else {
                counts.insert(item, after);
            }
            if counts.is_empty() {
                self.ns.remove(&ns);
            }
        }
        for (ns, change) in delta.ns.iter_mut() {
            change.to_empty = !self.ns.contains_key(ns);
        }
        delta
            .ns
            .retain(|_, d| !d.added.is_empty() || !d.removed.is_empty());
        for (link, d) in links {
            let before = self.links.get(&link).copied().unwrap_or(0);
            let after = (i64::from(before) + d).max(0) as u32;
            match (before, after) {
                (0, 0) => {}
                (0, _) => delta.links_added.push(link.clone()),
                (_, 0) => delta.links_removed.push(link.clone()),
                _ => {}
            }
            if after == 0 {
                self.links.remove(&link);
            } else {
                self.links.insert(link, after);
            }
        }
        (delta, skipped)
    }

    /// The namespaces (VPC ids) that hold something.
    pub fn namespaces(&self) -> impl Iterator<Item = &String> {
        self.ns.keys()
    }

    /// Everything the namespace of VPC `vpc` holds, in order.
    pub fn items(&self, vpc: &str) -> Vec<&Item> {
        self.ns
            .get(vpc)
            .map(|m| m.keys().collect())
            .unwrap_or_default()
    }

    /// The links with an end in VPC `vpc`.
    pub fn links_of(&self, vpc: &str) -> Vec<Link> {
        self.links
            .keys()
            .filter(|(c, p)| c == vpc || p == vpc)
            .cloned()
            .collect()
    }
}

/// A chain of our table: (name, hook line or "", rules).
type Chain = (&'static str, &'static str, &'static [&'static str]);

/// The chains every namespace's table has, whatever its endpoints.
const CHAINS: [Chain; 8] = [
    ("refuse_limit", "", &["ct mark @refused_limit", "drop"]),
    (
        "refuse_whitelist",
        "",
        &["ct mark @refused_whitelist", "drop"],
    ),
    (
        "ep_new",
        "",
        &[
            "ct mark set ip daddr . meta l4proto . th dport map @mark_of",
            "ct mark 0 return",
            "ct mark @wl_on ct mark . ip saddr != @wl jump refuse_whitelist",
            "ct mark vmap @limit_of",
            "ct mark @sessions",
        ],
    ),
    (
        "ep_admit",
        "type filter hook prerouting priority -150; policy accept;",
        &[
            "ct state new jump ep_new",
            "ct direction original meta mark set ct mark map @link_of",
        ],
    ),
    (
        "ep_dnat",
        "type nat hook prerouting priority -100; policy accept;",
        &["ct mark != 0 dnat ip to ip daddr . meta l4proto . th dport map @dnat_of"],
    ),
    // Nothing new enters from a link, neither through the router nor to it. A new
    // session to an endpoint's address that was not translated (a port that is not
    // mapped, an endpoint that is gone) would leave on `lo`: it is dropped here, before
    // conntrack keeps it — a kept entry would hold the client's next try, on an endpoint
    // that took the address meanwhile, for minutes.
    (
        "ep_guard",
        "type filter hook forward priority 0; policy accept;",
        &[
            "ct state new iifname \"kc-*\" drop",
            "ct state new oifname \"lo\" drop",
        ],
    ),
    (
        "ep_guard_in",
        "type filter hook input priority 0; policy accept;",
        &["ct state new iifname \"kc-*\" drop"],
    ),
    (
        "ep_count",
        "type filter hook forward priority 10; policy accept;",
        &["ct direction . ct mark @bytes"],
    ),
];

/// The last base chain, which translates the source on the way out.
const SNAT_CHAIN: Chain = (
    "ep_snat",
    "type nat hook postrouting priority 100; policy accept;",
    &["ct mark != 0 snat ip to ct mark map @snat_of"],
);

/// The rule of the chain that counts sessions against the limit `n`.
fn limit_rule(n: u32) -> String {
    match limit_shards(n) {
        1 => format!("add @cl_{n} {{ ct mark ct count over {n} }} jump refuse_limit"),
        s => format!(
            "add @cl_{n} {{ ct mark . jhash ip saddr . th sport mod {s} ct count over {} }} jump refuse_limit",
            n / s
        ),
    }
}

/// The elements an endpoint (marker id `m`) may have in the set counting against the
/// limit `n`: one, or one per shard.
fn count_keys(n: u32, m: &str) -> Vec<String> {
    match limit_shards(n) {
        1 => vec![m.to_owned()],
        s => (0..s).map(|shard| format!("{m} . {shard}")).collect(),
    }
}

/// The declaration of the set that counts sessions against the limit `n`.
fn limit_set(n: u32) -> String {
    let key = if limit_shards(n) == 1 {
        "mark"
    } else {
        "mark . mark"
    };
    format!("cl_{n} {{ type {key}; size 1048576; flags dynamic; }}")
}

fn chain_block(out: &mut String, (name, hook, rules): (&str, &str, &[&str])) {
    let _ = writeln!(out, "  chain {name} {{");
    if !hook.is_empty() {
        let _ = writeln!(out, "    {hook}");
    }
    for r in rules {
        let _ = writeln!(out, "    {r}");
    }
    out.push_str("  }\n");
}

/// `add element` (or `delete element`) commands for these elements, one per set.
fn elements(out: &mut String, verb: &str, items: &[&Item]) {
    let mut by_set: BTreeMap<Set, Vec<String>> = BTreeMap::new();
    for item in items {
        if let Item::Element { set, key, value } = item {
            let text = if value.is_empty() || verb == "delete" {
                key.clone()
            } else {
                format!("{key} : {value}")
            };
            by_set.entry(*set).or_default().push(text);
        }
    }
    for (set, list) in by_set {
        let _ = writeln!(
            out,
            "{verb} element ip {TABLE} {} {{ {} }}",
            set.name(),
            list.join(", ")
        );
    }
}

fn limits(items: &[&Item]) -> Vec<u32> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Limit(n) => Some(*n),
            _ => None,
        })
        .collect()
}

/// The nftables script that replaces our table with one holding exactly `items`, in one
/// transaction (an empty list leaves no table at all).
pub fn full_script(items: &[&Item]) -> String {
    let mut out = format!("add table ip {TABLE}\ndelete table ip {TABLE}\n");
    if items.is_empty() {
        return out;
    }
    let _ = writeln!(out, "table ip {TABLE} {{");
    for set in Set::ALL {
        out.push_str(&set.declaration());
    }
    for n in limits(items) {
        let _ = writeln!(out, "  set {}", limit_set(n));
    }
    // The limit chains come first: the map `limit_of` and `ep_new` jump to them.
    for (name, hook, rules) in CHAINS.iter().take(2) {
        chain_block(&mut out, (name, hook, rules));
    }
    for n in limits(items) {
        let rule = limit_rule(n);
        chain_block(&mut out, (&format!("lim_{n}"), "", &[rule.as_str()]));
    }
    for (name, hook, rules) in CHAINS.iter().skip(2).chain([&SNAT_CHAIN]) {
        chain_block(&mut out, (name, hook, rules));
    }
    out.push_str("}\n");
    elements(&mut out, "add", items);
    out
}

/// The nftables commands that take a table from holding `removed` to holding `added`
/// instead (everything else stays), in one transaction; empty when nothing of nftables
/// changes. Elements go first, so that the limit chains they jump to can go; limit
/// chains come before the elements that jump to them.
pub fn delta_script(added: &[&Item], removed: &[&Item]) -> String {
    let mut out = String::new();
    elements(&mut out, "delete", removed);
    // The set that counted a leaving endpoint's sessions keeps its element until the
    // kernel's garbage collection finds its count at zero; it goes now, unless the whole
    // set does. Adding first makes the deletion succeed whether the endpoint ever had a
    // session or not (nft 1.0.6 has no `destroy`).
    let gone_limits = limits(removed);
    for item in removed {
        if let Item::Element {
            set: Set::LimitOf,
            key,
            value,
        } = item
        {
            let Some(n) = value
                .strip_prefix("jump lim_")
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if !gone_limits.contains(&n) {
                let keys = count_keys(n, key).join(", ");
                let _ = writeln!(out, "add element ip {TABLE} cl_{n} {{ {keys} }}");
                let _ = writeln!(out, "delete element ip {TABLE} cl_{n} {{ {keys} }}");
            }
        }
    }
    for n in gone_limits {
        let _ = writeln!(out, "delete chain ip {TABLE} lim_{n}");
        let _ = writeln!(out, "delete set ip {TABLE} cl_{n}");
    }
    for n in limits(added) {
        let _ = writeln!(out, "add set ip {TABLE} {}", limit_set(n));
        let _ = writeln!(out, "add chain ip {TABLE} lim_{n}");
        let _ = writeln!(out, "add rule ip {TABLE} lim_{n} {}", limit_rule(n));
    }
    elements(&mut out, "add", added);
    out
}

/// One `ip -batch` line, and which failure means it was already so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpLine {
    pub line: String,
    pub tolerate: Tolerate,
}

/// The failure of an `ip` command that counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tolerate {
    Nothing,
    /// "already there" (adding)
    Exists,
    /// "not there" (removing)
    Gone,
}

fn line(line: String, tolerate: Tolerate) -> IpLine {
    IpLine { line, tolerate }
}

/// The `ip` commands for the routes and policy rules among `added` and `removed`
/// (removed first: a route may move to another device).
pub fn ip_lines(added: &[&Item], removed: &[&Item]) -> Vec<IpLine> {
    let mut out = Vec::new();
    for item in removed {
        match item {
            Item::Route { dest, dev, .. } => out.push(line(
                format!("route del {dest}/32 dev {dev} proto {ROUTE_PROTO}"),
                Tolerate::Gone,
            )),
            Item::Mark { mark, .. } => {
                out.push(line(
                    format!("rule del pref {LINK_RULE_PREF} fwmark {mark}"),
                    Tolerate::Gone,
                ));
                out.push(line(format!("route flush table {mark}"), Tolerate::Gone));
            }
            _ => {}
        }
    }
    for item in added {
        match item {
            Item::Route {
                dest,
                dev,
                hop,
                clear,
            } => {
                let via = hop.map(|h| format!(" via {h} onlink")).unwrap_or_default();
                out.push(line(
                    format!("route replace {dest}/32{via} dev {dev} proto {ROUTE_PROTO}"),
                    Tolerate::Nothing,
                ));
                if let Some(clear) = clear {
                    out.push(line(
                        format!(
                            "route del local {dest}/32 dev {clear} table local proto {LOCAL_PROTO}"
                        ),
                        Tolerate::Gone,
                    ));
                }
            }
            Item::Mark { mark, dev } => {
                // A backend's address may be one the consumer's router owns in its own
                // address space: the marked packets are routed ahead of the local table,
                // which moves behind them.
                out.push(line(
                    "rule add pref 200 lookup local".into(),
                    Tolerate::Exists,
                ));
                out.push(line("rule del pref 0 lookup local".into(), Tolerate::Gone));
                out.push(line(
                    format!(
                        "route replace default via {PROVIDER_HOP} dev {dev} onlink table {mark}"
                    ),
                    Tolerate::Nothing,
                ));
                out.push(line(
                    format!("rule add pref {LINK_RULE_PREF} fwmark {mark} lookup {mark}"),
                    Tolerate::Exists,
                ));
            }
            _ => {}
        }
    }
    out
}

/// What a namespace's table, routes and rules look like when they hold `items`, in the
/// terms a listing gives: the number of elements of each set, the number of rules of each
/// chain, the routes (destination, device) and the link marks. A listing that differs
/// has drifted (someone changed it by hand): the namespace is then rewritten.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    pub sets: BTreeMap<String, usize>,
    pub chains: BTreeMap<String, usize>,
    pub routes: BTreeSet<(Ipv4Addr, String)>,
    pub marks: BTreeSet<u32>,
}

impl Shape {
    pub fn of(items: &[&Item]) -> Shape {
        let mut shape = Shape::default();
        if items.is_empty() {
            return shape;
        }
        for set in Set::ALL {
            shape.sets.insert(set.name().to_owned(), 0);
        }
        for (name, _, rules) in CHAINS.iter().chain([&SNAT_CHAIN]) {
            shape.chains.insert((*name).to_owned(), rules.len());
        }
        for item in items {
            match item {
                Item::Element { set, .. } => {
                    *shape.sets.entry(set.name().to_owned()).or_default() += 1
                }
                Item::Limit(n) => {
                    shape.chains.insert(format!("lim_{n}"), 1);
                }
                Item::Route { dest, dev, .. } => {
                    shape.routes.insert((*dest, dev.clone()));
                }
                Item::Mark { mark, .. } => {
                    shape.marks.insert(*mark);
                }
            }
        }
        shape
    }
}

#[cfg(test)]
mod tests;
