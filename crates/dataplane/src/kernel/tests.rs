use super::*;
use vpcep_model::PortMapping;

fn ep(id: &str, consumer: &str, provider: &str, marker: u32) -> EndpointSpec {
    EndpointSpec {
        id: id.into(),
        service_id: "s".into(),
        marker_id: marker,
        consumer_vpc: consumer.into(),
        subnet_id: "5ub-net-1".into(),
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
        whitelist: None,
        max_connections: 3000,
        snat_ip: Ipv4Addr::new(198, 19, 128, 1),
        dns_name: None,
        route: None,
    }
}

/// VPC numbers: "c…" is 3, "p…" is 4, anything else 1.
fn seq(id: &str) -> Option<u32> {
    Some(match id.chars().next() {
        Some('c') => 3,
        Some('p') => 4,
        _ => 1,
    })
}

fn el(set: Set, key: &str, value: &str) -> Item {
    element(set, key, value)
}

fn delta_of(state: &mut KernelState, removed: &[&EndpointSpec], added: &[&EndpointSpec]) -> Delta {
    let (delta, skipped) = state.update(removed, added, seq);
    assert!(skipped.is_empty());
    delta
}

#[test]
fn an_endpoint_is_elements_a_route_and_its_link() {
    let e = ep("e", "cccccccc-1", "pppppppp-1", 16777216);
    let mut state = KernelState::default();
    let d = delta_of(&mut state, &[], &[&e]);
    assert_eq!(
        d.links_added,
        vec![("cccccccc-1".to_string(), "pppppppp-1".to_string())]
    );
    let c = &d.ns["cccccccc-1"];
    // The first endpoint of a namespace makes its table.
    assert!(c.from_empty && !c.to_empty);
    assert!(c.nft_script().contains("table ip vpcep {\n"));
    for want in [
        el(Set::MarkOf, "192.168.0.4 . tcp . 8080", "16777216"),
        el(Set::MarkOf, "192.168.0.4 . udp . 5353", "16777216"),
        el(Set::DnatOf, "192.168.0.4 . tcp . 8080", "192.168.0.10 . 80"),
        el(Set::DnatOf, "192.168.0.4 . udp . 5353", "192.168.0.10 . 53"),
        el(Set::SnatOf, "16777216", "198.19.128.1"),
        el(Set::LinkOf, "16777216", "2147483652"),
        el(Set::LimitOf, "16777216", "jump lim_3000"),
        el(Set::Sessions, "16777216", ""),
        el(Set::Bytes, "original . 16777216", ""),
        el(Set::Bytes, "reply . 16777216", ""),
        Item::Limit(3000),
        Item::Mark {
            mark: 0x8000_0004,
            dev: "kc-pppppppp".into(),
        },
        Item::Route {
            dest: Ipv4Addr::new(192, 168, 0, 4),
            dev: "lo".into(),
            hop: None,
            clear: Some("br-5ubnet1".into()),
        },
    ] {
        assert!(
            c.added.contains(&want),
            "{want:?} missing from {:?}",
            c.added
        );
    }
    assert!(!c
        .added
        .iter()
        .any(|i| matches!(i, Item::Element { set: Set::WlOn, .. })));
    // The provider only routes the SNAT address back.
    assert_eq!(
        d.ns["pppppppp-1"].added,
        vec![Item::Route {
            dest: Ipv4Addr::new(198, 19, 128, 1),
            dev: "kp-cccccccc".into(),
            hop: Some(CONSUMER_HOP),
            clear: Some("lo".into()),
        }]
    );
}

#[test]
fn shared_items_come_with_the_first_endpoint_and_go_with_the_last() {
    let a = ep("a", "cccccccc-1", "pppppppp-1", 16777216);
    let mut b = ep("b", "cccccccc-1", "pppppppp-1", 16777217);
    b.ip = Ipv4Addr::new(192, 168, 0, 5);
    b.snat_ip = Ipv4Addr::new(198, 19, 128, 2);
    let mut state = KernelState::default();
    delta_of(&mut state, &[], &[&a]);
    let d = delta_of(&mut state, &[], &[&b]);
    assert!(d.links_added.is_empty());
    let c = &d.ns["cccccccc-1"];
    assert!(!c.added.contains(&Item::Limit(3000)));
    assert!(!c.added.iter().any(|i| matches!(i, Item::Mark { .. })));
    assert!(c.removed.is_empty());
    let d = delta_of(&mut state, &[&a], &[]);
    assert!(d.links_removed.is_empty());
    let c = &d.ns["cccccccc-1"];
    assert!(c.added.is_empty());
    assert!(!c.removed.contains(&Item::Limit(3000)));
    assert!(c
        .removed
        .contains(&el(Set::SnatOf, "16777216", "198.19.128.1")));
    // Its element in the set counting the shared limit goes with it.
    assert!(c.nft_script().contains(
        "add element ip vpcep cl_3000 { 16777216 }\ndelete element ip vpcep cl_3000 { 16777216 }\n"
    ));
    let d = delta_of(&mut state, &[&b], &[]);
    assert_eq!(
        d.links_removed,
        vec![("cccccccc-1".to_string(), "pppppppp-1".to_string())]
    );
    assert!(d.ns["cccccccc-1"].removed.contains(&Item::Limit(3000)));
    // The last one takes the table with it.
    assert!(
        d.ns["cccccccc-1"].to_empty,
        "{:?}",
        state.items("cccccccc-1")
    );
    assert_eq!(
        d.ns["cccccccc-1"].nft_script(),
        "add table ip vpcep\ndelete table ip vpcep\n"
    );
    assert_eq!(state.namespaces().count(), 0);
    assert!(state.links_of("cccccccc-1").is_empty());
}

#[test]
fn a_change_sends_only_what_changed() {
    let old = ep("e", "cccccccc-1", "pppppppp-1", 16777216);
    let mut new = old.clone();
    new.whitelist = Some(vec![
        "10.0.0.0/8".into(),
        "10.1.0.0/16".into(),
        "172.16.0.9".into(),
    ]);
    new.backend_ip = Ipv4Addr::new(192, 168, 0, 11);
    let mut state = KernelState::default();
    delta_of(&mut state, &[], &[&old]);
    let d = delta_of(&mut state, &[&old], &[&new]);
    assert!(d.links_added.is_empty() && d.links_removed.is_empty());
    assert_eq!(d.ns.len(), 1);
    let c = &d.ns["cccccccc-1"];
    // Overlapping ranges are merged: nftables refuses overlapping intervals.
    let mut added = c.added.clone();
    added.sort();
    let mut want = vec![
        el(Set::DnatOf, "192.168.0.4 . tcp . 8080", "192.168.0.11 . 80"),
        el(Set::DnatOf, "192.168.0.4 . udp . 5353", "192.168.0.11 . 53"),
        el(Set::WlOn, "16777216", ""),
        el(Set::Wl, "16777216 . 10.0.0.0/8", ""),
        el(Set::Wl, "16777216 . 172.16.0.9/32", ""),
    ];
    want.sort();
    assert_eq!(added, want);
    assert_eq!(
        c.removed,
        vec![
            el(Set::DnatOf, "192.168.0.4 . tcp . 8080", "192.168.0.10 . 80"),
            el(Set::DnatOf, "192.168.0.4 . udp . 5353", "192.168.0.10 . 53"),
        ]
    );
    let added: Vec<&Item> = c.added.iter().collect();
    let removed: Vec<&Item> = c.removed.iter().collect();
    let script = delta_script(&added, &removed);
    assert_eq!(
        script,
        "delete element ip vpcep dnat_of { 192.168.0.4 . tcp . 8080, 192.168.0.4 . udp . 5353 }\n\
         add element ip vpcep dnat_of { 192.168.0.4 . tcp . 8080 : 192.168.0.11 . 80, 192.168.0.4 . udp . 5353 : 192.168.0.11 . 53 }\n\
         add element ip vpcep wl_on { 16777216 }\n\
         add element ip vpcep wl { 16777216 . 10.0.0.0/8, 16777216 . 172.16.0.9/32 }\n"
    );
    assert!(ip_lines(&added, &removed).is_empty());
}

#[test]
fn one_more_endpoint_among_300_touches_only_its_own_elements() {
    let mut state = KernelState::default();
    let eps: Vec<EndpointSpec> = (0..301u32)
        .map(|i| {
            let mut e = ep(&format!("e{i}"), "cccccccc-1", "pppppppp-1", 16777216 + i);
            e.ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 0, 0, 10)) + i);
            e.snat_ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 19, 128, 1)) + i);
            e
        })
        .collect();
    let first: Vec<&EndpointSpec> = eps[..300].iter().collect();
    delta_of(&mut state, &[], &first);
    let d = delta_of(&mut state, &[], &[&eps[300]]);
    let c = &d.ns["cccccccc-1"];
    // Its ports (mark and DNAT), SNAT, link mark, limit, three counting sets, two byte
    // counters, its route; nothing shared, nothing of the others.
    assert_eq!(c.added.len(), 4 + 1 + 1 + 1 + 3 + 2 + 1);
    assert!(c.removed.is_empty());
    assert!(!c.from_empty && !c.to_empty);
    let script = c.nft_script();
    assert!(!script.contains("table ip vpcep {") && !script.contains("delete"));
    assert_eq!(script.lines().count(), 9, "{script}");
    assert_eq!(d.ns["pppppppp-1"].added.len(), 1);
    assert_eq!(state.items("cccccccc-1").len(), 301 * 13 + 2);
}

#[test]
fn an_endpoint_in_its_services_vpc_needs_no_link() {
    let e = ep("e", "aaaaaaaa", "aaaaaaaa", 16777216);
    let mut state = KernelState::default();
    let d = delta_of(&mut state, &[], &[&e]);
    assert!(d.links_added.is_empty());
    assert_eq!(d.ns.len(), 1);
    let a = &d.ns["aaaaaaaa"];
    assert!(!a.added.iter().any(|i| matches!(
        i,
        Item::Mark { .. }
            | Item::Element {
                set: Set::LinkOf,
                ..
            }
    )));
    assert!(a
        .added
        .contains(&el(Set::SnatOf, "16777216", "198.19.128.1")));
}

#[test]
fn endpoints_without_a_known_provider_are_skipped() {
    let e = ep("e", "cccccccc-1", "pppppppp-1", 16777216);
    let mut state = KernelState::default();
    let (d, skipped) = state.update(&[], &[&e], |_| None);
    assert!(d.is_empty());
    assert_eq!(skipped, vec!["e".to_string()]);
}

#[test]
fn full_script_declares_before_it_fills() {
    let mut e = ep("e", "cccccccc-1", "pppppppp-1", 16777216);
    e.max_connections = 100_000;
    e.whitelist = Some(vec![]);
    let mut state = KernelState::default();
    delta_of(&mut state, &[], &[&e]);
    let items = state.items("cccccccc-1");
    let script = full_script(&items);
    assert!(script.starts_with("add table ip vpcep\ndelete table ip vpcep\ntable ip vpcep {\n"));
    assert!(script.contains("  set cl_100000 { type mark . mark; size 1048576; flags dynamic; }\n"));
    assert!(script.contains(
        "  chain lim_100000 {\n    add @cl_100000 { ct mark . jhash ip saddr . th sport mod 128 ct count over 781 } jump refuse_limit\n  }\n"
    ));
    let table_end = script.find("}\nadd element").unwrap();
    assert!(script.find("chain refuse_limit").unwrap() < script.find("chain lim_100000").unwrap());
    assert!(script[table_end..]
        .contains("add element ip vpcep limit_of { 16777216 : jump lim_100000 }\n"));
    // An enabled whitelist with no entries admits nobody.
    assert!(script.contains("add element ip vpcep wl_on { 16777216 }\n"));
    assert!(!script.contains("element ip vpcep wl {"));
    assert_eq!(
        full_script(&[]),
        "add table ip vpcep\ndelete table ip vpcep\n"
    );
    let shape = Shape::of(&items);
    assert_eq!(shape.sets["mark_of"], 2);
    assert_eq!(shape.sets["wl"], 0);
    assert_eq!(shape.chains["ep_new"], 5);
    assert_eq!(shape.chains["lim_100000"], 1);
    assert_eq!(shape.marks, BTreeSet::from([0x8000_0004]));
    assert_eq!(
        shape.routes,
        BTreeSet::from([(Ipv4Addr::new(192, 168, 0, 4), "lo".to_string())])
    );
}

#[test]
fn limit_chains_go_after_the_elements_that_jump_to_them() {
    let old = ep("e", "cccccccc-1", "pppppppp-1", 16777216);
    let mut new = old.clone();
    new.max_connections = 5000;
    let mut state = KernelState::default();
    delta_of(&mut state, &[], &[&old]);
    let d = delta_of(&mut state, &[&old], &[&new]);
    let c = &d.ns["cccccccc-1"];
    let added: Vec<&Item> = c.added.iter().collect();
    let removed: Vec<&Item> = c.removed.iter().collect();
    assert_eq!(
        delta_script(&added, &removed),
        "delete element ip vpcep limit_of { 16777216 }\n\
         delete chain ip vpcep lim_3000\n\
         delete set ip vpcep cl_3000\n\
         add set ip vpcep cl_5000 { type mark . mark; size 1048576; flags dynamic; }\n\
         add chain ip vpcep lim_5000\n\
         add rule ip vpcep lim_5000 add @cl_5000 { ct mark . jhash ip saddr . th sport mod 4 ct count over 1250 } jump refuse_limit\n\
         add element ip vpcep limit_of { 16777216 : jump lim_5000 }\n"
    );
}

#[test]
fn routes_and_marks_as_ip_lines() {
    let e = ep("e", "cccccccc-1", "pppppppp-1", 16777216);
    let mut state = KernelState::default();
    let d = delta_of(&mut state, &[], &[&e]);
    let added: Vec<&Item> = d.ns["cccccccc-1"].added.iter().collect();
    let lines: Vec<String> = ip_lines(&added, &[]).into_iter().map(|l| l.line).collect();
    assert_eq!(
        lines,
        vec![
            "route replace 192.168.0.4/32 dev lo proto 199",
            "route del local 192.168.0.4/32 dev br-5ubnet1 table local proto 198",
            "rule add pref 200 lookup local",
            "rule del pref 0 lookup local",
            "route replace default via 169.254.0.2 dev kc-pppppppp onlink table 2147483652",
            "rule add pref 100 fwmark 2147483652 lookup 2147483652",
        ]
    );
    let removed: Vec<&Item> = d.ns["pppppppp-1"].added.iter().collect();
    let lines: Vec<String> = ip_lines(&[], &removed)
        .into_iter()
        .map(|l| l.line)
        .collect();
    assert_eq!(
        lines,
        vec!["route del 198.19.128.1/32 dev kp-cccccccc proto 199"]
    );
}

#[test]
fn large_limits_are_sharded() {
    assert_eq!(limit_shards(3000), 1);
    assert_eq!(limit_shards(4096), 1);
    assert_eq!(limit_shards(5000), 4);
    assert_eq!(limit_shards(100_000), 128);
    assert_eq!(
        limit_rule(3000),
        "add @cl_3000 { ct mark ct count over 3000 } jump refuse_limit"
    );
}

#[test]
fn eligibility() {
    let mut e = ep("e", "c", "p", 16777216);
    assert!(eligible(&e));
    e.tcp_proxy = TcpProxy::ProxyOpen;
    assert!(!eligible(&e));
    e.tcp_proxy = TcpProxy::Close;
    e.provider_vpc = None;
    assert!(!eligible(&e));
}
