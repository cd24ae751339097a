//! Ranges that would be routed twice, whitelist entries that name a project, and the
//! operator's public services: list, change, delete.

use crate::sql::numbered;
use std::net::Ipv4Addr;

use vpcep_model::{Reason, ServiceType};

use super::{new_endpoint, reason, setup, subnet, vpc};
use crate::*;

fn idc(vpc_id: &str, cidr: &str) -> NewIdc {
    NewIdc {
        vpc_id: vpc_id.to_owned(),
        name: "dc".into(),
        cidr: cidr.into(),
    }
}

fn subnet_in(vpc_id: &str, cidr: &str) -> NewSubnet {
    NewSubnet {
        vpc_id: vpc_id.to_owned(),
        name: "s".into(),
        cidr: cidr.into(),
        gateway_ip: None,
        description: String::new(),
    }
}

/// An available operator gateway service routing `cidr`.
async fn gateway_service(store: &SqlStore, name: &str, cidr: &str) -> Service {
    let svc = store
        .create_public_service(NewPublicService {
            name: name.into(),
            region: "r1".into(),
            service_type: ServiceType::Gateway,
            backend_ip: Ipv4Addr::new(127, 0, 0, 1),
            cidr: Some(cidr.into()),
            ports: vec![],
            description: String::new(),
        })
        .await
        .unwrap();
    store
        .settle_services(vec![(svc.id.clone(), Ok(()))])
        .await
        .unwrap();
    svc
}

fn gateway_endpoint(service_id: &str, vpc_id: &str) -> NewEndpoint {
    NewEndpoint {
        subnet_id: None,
        ..new_endpoint(service_id, vpc_id, "")
    }
}

#[tokio::test]
async fn a_data_centre_range_is_never_also_local_to_its_vpc() {
    let (_d, store, caller) = setup().await;
    let v = vpc(&store, &caller, "192.168.0.0/16").await;
    subnet(&store, &caller, &v, "192.168.0.0/24", None).await;

    // Inside the VPC's own CIDR, though clear of every subnet: refused.
    let e = store
        .create_idc(caller.clone(), idc(&v.id, "192.168.5.0/24"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("192.168.0.0/16"), "{e}");
    assert_eq!(reason(e), Reason::BadCidr);
    // Containing the VPC: refused too.
    let e = store
        .create_idc(caller.clone(), idc(&v.id, "192.0.0.0/8"))
        .await
        .unwrap_err();
    assert_eq!(reason(e), Reason::BadCidr);
    // Outside it: a data centre.
    store
        .create_idc(caller.clone(), idc(&v.id, "172.31.0.0/24"))
        .await
        .unwrap();
    // Nothing was written by the refusals.
    assert_eq!(store.list_idcs(caller.clone()).await.unwrap().len(), 1);
}

/// A data centre inside its VPC's CIDR can only come from before that was refused: a
/// subnet created in its range later is refused all the same.
#[tokio::test]
async fn a_subnet_may_not_overlap_a_data_centre_of_its_vpc() {
    let (_d, store, caller) = setup().await;
    let v = vpc(&store, &caller, "192.168.0.0/16").await;
    let other = vpc(&store, &caller, "192.168.0.0/16").await;
    sqlx::query(&numbered("INSERT INTO idcs (id, project_id, vpc_id, name, cidr, ip, created_at) VALUES ('old-dc', ?, ?, 'old', '192.168.5.0/24', '192.168.5.1', 0)"))
        .bind(&caller.project_id)
        .bind(&v.id)
        .execute(store.pool())
        .await
        .unwrap();

    for cidr in ["192.168.5.0/24", "192.168.5.128/25", "192.168.0.0/20"] {
        let e = store
            .create_subnet(caller.clone(), subnet_in(&v.id, cidr))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("data centre old"), "{cidr}: {e}");
        assert_eq!(reason(e), Reason::BadCidr);
    }
    assert!(store
        .list_subnets(caller.clone(), Some(v.id.clone()))
        .await
        .unwrap()
        .is_empty());
    // Beside it, and in another VPC, the range is free.
    store
        .create_subnet(caller.clone(), subnet_in(&v.id, "192.168.6.0/24"))
        .await
        .unwrap();
    store
        .create_subnet(caller.clone(), subnet_in(&other.id, "192.168.5.0/24"))
        .await
        .unwrap();
}

/// A gateway endpoint routes its service's range in the VPC: a VPC (or data centre)
/// using that range cannot have one, and a data centre cannot take a range one routes.
#[tokio::test]
async fn a_gateway_endpoint_needs_a_vpc_clear_of_its_range() {
    let (_d, store, caller) = setup().await;
    let obs = gateway_service(&store, "obs", "100.125.0.0/16").await;
    let files = gateway_service(&store, "files", "172.30.0.0/16").await;

    let inside = vpc(&store, &caller, "100.125.0.0/17").await;
    let e = store
        .create_endpoint(caller.clone(), gateway_endpoint(&obs.id, &inside.id))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("100.125.0.0/16"), "{e}");
    assert_eq!(reason(e), Reason::BadCidr);
    let around = vpc(&store, &caller, "100.0.0.0/8").await;
    let e = store
        .create_endpoint(caller.clone(), gateway_endpoint(&obs.id, &around.id))
        .await
        .unwrap_err();
    assert_eq!(reason(e), Reason::BadCidr);

    // A data centre of the VPC in the service's range.
    let v = vpc(&store, &caller, "10.0.0.0/16").await;
    store
        .create_idc(caller.clone(), idc(&v.id, "172.30.1.0/24"))
        .await
        .unwrap();
    let e = store
        .create_endpoint(caller.clone(), gateway_endpoint(&files.id, &v.id))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("data centre dc"), "{e}");
    assert_eq!(reason(e), Reason::BadCidr);
    assert_eq!(
        store
            .list_endpoints(caller.clone(), EndpointFilter::default(), Page::default())
            .await
            .unwrap()
            .1,
        0
    );

    // Clear of both: endpoints; then a data centre in a routed range is refused.
    store
        .create_endpoint(caller.clone(), gateway_endpoint(&obs.id, &v.id))
        .await
        .unwrap();
    let w = vpc(&store, &caller, "10.1.0.0/16").await;
    store
        .create_endpoint(caller.clone(), gateway_endpoint(&files.id, &w.id))
        .await
        .unwrap();
    let e = store
        .create_idc(caller.clone(), idc(&w.id, "172.30.9.0/24"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("files"), "{e}");
    assert_eq!(reason(e), Reason::BadCidr);
}

#[tokio::test]
async fn a_whitelist_entry_naming_a_project_is_refused() {
    let (_d, store, alice) = setup().await;
    let bob = store
        .create_account("bob".into(), "r1".into())
        .await
        .unwrap();
    let svc = super::service(&store, &alice).await;
    let add = |id: &str| {
        store.add_permissions(
            alice.clone(),
            svc.id.clone(),
            vec![(format!("iam:domain::{id}"), String::new())],
        )
    };
    let e = add(&bob.project_id).await.unwrap_err();
    assert!(e.to_string().contains("project id"), "{e}");
    assert!(!e.to_string().contains(&bob.domain_id), "leaks: {e}");
    assert_eq!(reason(e), Reason::BadPermission);
    // Her own project: she is told her account id.
    let e = add(&alice.project_id).await.unwrap_err();
    assert!(e.to_string().contains(&alice.domain_id), "{e}");
    assert_eq!(reason(e), Reason::BadPermission);
    // One bad entry among good ones writes nothing.
    let e = store
        .add_permissions(
            alice.clone(),
            svc.id.clone(),
            vec![
                (format!("iam:domain::{}", bob.domain_id), String::new()),
                (format!("iam:domain::{}", bob.project_id), String::new()),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(reason(e), Reason::BadPermission);
    let (rows, _) = store
        .list_permissions(alice.clone(), svc.id.clone(), None, Page::default())
        .await
        .unwrap();
    assert!(rows.is_empty());
    // Account ids, unknown ones (another cloud's accounts) and * are entries.
    add(&bob.domain_id).await.unwrap();
    add(&"ab".repeat(16)).await.unwrap();
    store
        .add_permissions(
            alice.clone(),
            svc.id.clone(),
            vec![("*".into(), String::new())],
        )
        .await
        .unwrap();
}

fn dns_ports() -> Vec<vpcep_model::PortMapping> {
    vec![vpcep_model::PortMapping {
        client_port: 53,
        server_port: 53,
        protocol: vpcep_model::Protocol::Udp,
    }]
}

#[tokio::test]
async fn the_operator_changes_and_deletes_public_services() {
    let (_d, store, caller) = setup().await;
    let dns = store
        .create_public_service(NewPublicService {
            name: "dns".into(),
            region: "r1".into(),
            service_type: ServiceType::Interface,
            backend_ip: Ipv4Addr::new(10, 0, 0, 53),
            cidr: None,
            ports: dns_ports(),
            description: String::new(),
        })
        .await
        .unwrap();
    store
        .settle_services(vec![(dns.id.clone(), Ok(()))])
        .await
        .unwrap();
    let obs = gateway_service(&store, "obs", "100.125.0.0/16").await;

    // By short name, full name or id.
    let changed = store
        .update_public_service(
            "dns".into(),
            PublicServiceUpdate {
                backend_ip: Some(Ipv4Addr::new(10, 0, 0, 54)),
                description: Some("resolver".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (changed.backend_ip.as_str(), changed.description.as_str()),
        ("10.0.0.54", "resolver")
    );
    assert_eq!(changed.ports, dns_ports());
    let e = store
        .update_public_service(
            dns.service_name.clone(),
            PublicServiceUpdate {
                cidr: Some("100.126.0.0/16".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reason(e), Reason::BadParameter);
    let e = store
        .update_public_service("nosuch".into(), PublicServiceUpdate::default())
        .await
        .unwrap_err();
    assert_eq!(reason(e), Reason::NotFound);

    // A range changes while no endpoint routes it, not after.
    store
        .update_public_service(
            obs.id.clone(),
            PublicServiceUpdate {
                cidr: Some("100.126.0.0/16".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let v = vpc(&store, &caller, "10.0.0.0/16").await;
    let ep = store
        .create_endpoint(caller.clone(), gateway_endpoint(&obs.id, &v.id))
        .await
        .unwrap();
    let e = store
        .update_public_service(
            "obs".into(),
            PublicServiceUpdate {
                cidr: Some("100.125.0.0/16".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(reason(e), Reason::ServiceInUse);
    // Deleting waits for the endpoint to go.
    let e = store.delete_public_service("obs".into()).await.unwrap_err();
    assert_eq!(reason(e), Reason::ServiceInUse);
    store
        .delete_endpoint(caller.clone(), ep.id.clone())
        .await
        .unwrap();
    store
        .finish_deletions(vec![], vec![ep.id.clone()])
        .await
        .unwrap();
    let gone = store.delete_public_service("obs".into()).await.unwrap();
    assert_eq!(gone.status, vpcep_model::ServiceStatus::Deleting);
    store
        .finish_deletions(vec![obs.id.clone()], vec![])
        .await
        .unwrap();
    let (left, total) = store
        .list_public_services(ServiceFilter::default(), Page::default())
        .await
        .unwrap();
    assert_eq!((total, left[0].id.as_str()), (1, dns.id.as_str()));
}
