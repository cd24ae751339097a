//! The desired state read as what changed since a revision is the state read whole, at
//! every step of a resource's life.

use vpcep_model::{ServiceType, State};

use super::*;

/// Takes in what changed since `held` and checks that it is the whole snapshot now.
async fn follow(store: &SqlStore, held: &mut State) {
    let delta = store
        .changes_since(held.revision)
        .await
        .unwrap()
        .expect("the changes since a recent revision are known");
    assert_eq!(delta.from, held.revision);
    held.absorb(delta);
    let mut whole = State::default();
    whole.absorb(whole.delta_to(store.snapshot().await.unwrap()));
    assert_eq!(*held, whole);
}

#[tokio::test]
async fn changes_since_a_revision_reach_the_whole_snapshot() {
    let (_dir, store, caller) = setup().await;
    let mut held = State::default();
    follow(&store, &mut held).await;

    // A provider VPC with a host behind a service, a consumer VPC with an endpoint.
    let (pvpc, psub) = vpc_with_subnet(&store, &caller, "10.0.0.0/16", "10.0.0.0/24").await;
    let mut host = vm_port(&psub.id, "web", Some("10.0.0.10"));
    host.is_host = true;
    let port = store.create_port(caller.clone(), host).await.unwrap();
    let svc = store
        .create_service(caller.clone(), web_service(&pvpc.id, &port.id))
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert_eq!(held.hosts.len(), 1);
    store
        .settle_services(vec![(svc.id.clone(), Ok(()))])
        .await
        .unwrap();
    let (cvpc, csub) = vpc_with_subnet(&store, &caller, "10.0.0.0/16", "10.0.0.0/24").await;
    let ep = store
        .create_endpoint(caller.clone(), new_endpoint(&svc.id, &cvpc.id, &csub.id))
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert_eq!(
        held.endpoints.len(),
        1,
        "created without approval: it forwards"
    );

    // Settling, a whitelist, a service change, a new subnet, a data centre.
    store
        .settle_endpoints(vec![(ep.id.clone(), Ok(()))])
        .await
        .unwrap();
    follow(&store, &mut held).await;
    store
        .update_endpoint_whitelist(
            caller.clone(),
            ep.id.clone(),
            vec!["10.1.0.0/16".into()],
            true,
        )
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert!(held.endpoints[&ep.id].whitelist.is_some());
    let update = ServiceUpdate {
        tcp_proxy: Some(TcpProxy::ProxyOpen),
        ..Default::default()
    };
    store
        .update_service(caller.clone(), svc.id.clone(), update)
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert_eq!(held.endpoints[&ep.id].tcp_proxy, TcpProxy::ProxyOpen);
    let sub2 = store
        .create_subnet(
            caller.clone(),
            NewSubnet {
                vpc_id: cvpc.id.clone(),
                name: "s2".into(),
                cidr: "10.0.1.0/24".into(),
                gateway_ip: None,
                description: String::new(),
            },
        )
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert_eq!(held.vpcs[&cvpc.id].subnets.len(), 2);
    let idc = store
        .create_idc(
            caller.clone(),
            NewIdc {
                vpc_id: cvpc.id.clone(),
                name: "dc".into(),
                cidr: "172.16.0.0/24".into(),
            },
        )
        .await
        .unwrap();
    follow(&store, &mut held).await;

    // An operator's gateway service gives the cloud a name, and its endpoint a route
    // that follows the VPC's subnets and data centres.
    let obs = store
        .create_public_service(NewPublicService {
            name: "obs".into(),
            region: "r1".into(),
            service_type: ServiceType::Gateway,
            backend_ip: "127.0.0.1".parse().unwrap(),
            cidr: Some("100.125.0.0/16".into()),
            ports: vec![PortMapping {
                client_port: 80,
                server_port: 9000,
                protocol: Protocol::Tcp,
            }],
            description: String::new(),
        })
        .await
        .unwrap();
    store
        .settle_services(vec![(obs.id.clone(), Ok(()))])
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert_eq!(held.cloud_names.len(), 1);
    let tables = store
        .list_route_tables(caller.clone(), Some(cvpc.id.clone()), None)
        .await
        .unwrap();
    let mut gw = new_endpoint(&obs.id, &cvpc.id, &csub.id);
    gw.subnet_id = None;
    gw.routetables = Some(tables.iter().map(|t| t.id.clone()).collect());
    let gw = store.create_endpoint(caller.clone(), gw).await.unwrap();
    follow(&store, &mut held).await;
    let sources = |held: &State| held.endpoints[&gw.id].route.clone().unwrap().sources;
    assert_eq!(sources(&held).len(), 3, "two subnets and the data centre");
    store
        .delete_subnet(caller.clone(), cvpc.id.clone(), sub2.id.clone())
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert_eq!(sources(&held).len(), 2);
    store
        .delete_idc(caller.clone(), idc.id.clone())
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert_eq!(sources(&held).len(), 1);

    // Deletions: the endpoint stops forwarding, then its row goes; the host goes.
    for id in [&ep.id, &gw.id] {
        store
            .delete_endpoint(caller.clone(), id.clone())
            .await
            .unwrap();
    }
    follow(&store, &mut held).await;
    assert!(held.endpoints.is_empty());
    store
        .finish_deletions(vec![], vec![ep.id.clone(), gw.id.clone()])
        .await
        .unwrap();
    follow(&store, &mut held).await;
    store
        .delete_service(caller.clone(), svc.id.clone())
        .await
        .unwrap();
    store
        .finish_deletions(vec![svc.id.clone()], vec![])
        .await
        .unwrap();
    follow(&store, &mut held).await;
    store
        .delete_port(caller.clone(), port.id.clone())
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert!(held.hosts.is_empty());
    store
        .delete_subnet(caller.clone(), pvpc.id.clone(), psub.id.clone())
        .await
        .unwrap();
    store
        .delete_vpc(caller.clone(), pvpc.id.clone())
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert!(!held.vpcs.contains_key(&pvpc.id));

    // Nothing new: an empty delta; a revision the store never had: unknown.
    let now = store.changes_since(held.revision).await.unwrap().unwrap();
    assert!(now.is_empty() && now.revision == held.revision);
    assert!(store
        .changes_since(held.revision + 1)
        .await
        .unwrap()
        .is_none());
}

/// The controller's care of the machines, on the engine under test: the pair chosen and
/// kept, a silent machine declared down and its slot passed to a spare, each step a
/// change of the desired state that a follower receives.
#[tokio::test]
async fn a_silent_machine_is_declared_down_and_its_slot_passes_to_a_spare() {
    use vpcep_model::MachineRole;
    let (_dir, store, _) = setup().await;
    let mut held = State::default();
    follow(&store, &mut held).await;
    for (name, role, last) in [
        ("c1", MachineRole::Compute, 1),
        ("g1", MachineRole::Gateway, 11),
        ("g2", MachineRole::Gateway, 12),
        ("g3", MachineRole::Gateway, 13),
    ] {
        let underlay = std::net::Ipv4Addr::new(10, 0, 0, last);
        store
            .register_machine(name.into(), role, String::new(), underlay)
            .await
            .unwrap();
    }
    let slots = |held: &State| -> Vec<(String, Option<u8>, bool)> {
        held.machines
            .iter()
            .map(|m| (m.name.clone(), m.slot, m.down))
            .collect()
    };
    let want = |list: &[(&str, Option<u8>, bool)]| -> Vec<(String, Option<u8>, bool)> {
        list.iter()
            .map(|(n, s, d)| (n.to_string(), *s, *d))
            .collect()
    };
    let t = store.tend_machines(30, true).await.unwrap();
    assert!(t.down.is_empty());
    follow(&store, &mut held).await;
    assert_eq!(
        slots(&held),
        want(&[
            ("c1", None, false),
            ("g1", Some(0), false),
            ("g2", Some(1), false),
            ("g3", None, false)
        ])
    );
    let revision = store.revision().await.unwrap();
    assert!(store.tend_machines(30, true).await.unwrap().is_empty());
    assert_eq!(
        store.revision().await.unwrap(),
        revision,
        "nothing to do, no write"
    );

    // g1 has been silent for a minute: down, and g3 takes its slot; g2 keeps its own.
    sqlx::query("UPDATE machines SET seen_at = seen_at - 60000000 WHERE name = 'g1'")
        .execute(&store.pool)
        .await
        .unwrap();
    assert!(
        store.tend_machines(30, false).await.unwrap().is_empty(),
        "not declared before the controller could have heard it"
    );
    let t = store.tend_machines(30, true).await.unwrap();
    assert_eq!(t.down, ["g1"]);
    assert_eq!(
        t.slots,
        [("g1".to_owned(), None), ("g3".to_owned(), Some(0))]
    );
    follow(&store, &mut held).await;
    assert_eq!(
        slots(&held),
        want(&[
            ("c1", None, false),
            ("g1", None, true),
            ("g2", Some(1), false),
            ("g3", Some(0), false)
        ])
    );
    let listed = store.machines().await.unwrap();
    assert!(listed
        .iter()
        .any(|m| m.name == "g1" && m.down && m.slot.is_none()));

    // g1 reports again: up, a spare.
    store
        .register_machine(
            "g1".into(),
            MachineRole::Gateway,
            String::new(),
            std::net::Ipv4Addr::new(10, 0, 0, 11),
        )
        .await
        .unwrap();
    follow(&store, &mut held).await;
    assert_eq!(slots(&held)[1], ("g1".to_owned(), None, false));
}
