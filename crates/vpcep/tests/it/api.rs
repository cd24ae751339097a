//! The API over HTTP: authentication, tenancy, the user guide's flows and its rules.

use std::collections::HashSet;

use serde_json::json;

use crate::support::{finish, spawn_app};

#[tokio::test]
async fn authentication_failures_are_401_with_request_ids() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    assert_eq!(alice.get("/v1/{p}/vpc-endpoints").await.status, 200);

    let unsigned = finish(reqwest::Client::new().get(format!(
        "{}/v1/{}/vpc-endpoints",
        alice.base, alice.acct.project_id
    )))
    .await;
    assert_eq!(
        (unsigned.status, unsigned.body["error_code"].as_str()),
        (401, Some("APIGW.0301"))
    );
    assert!(unsigned.request_id.is_some());

    let mut bad_sk = alice.clone();
    bad_sk.sk_override = Some("not-the-secret".into());
    let r = bad_sk.get("/v1/{p}/vpc-endpoints").await;
    assert_eq!((r.status, r.code()), (401, "APIGW.0301"));

    let mut old = alice.clone();
    old.sdk_date = Some("20200101T000000Z".into());
    let r = old.get("/v1/{p}/vpc-endpoints").await;
    assert_eq!((r.status, r.code()), (401, "APIGW.0303"));

    let mut unknown = alice.clone();
    unknown.acct.ak = "NOSUCHKEY00000000000".into();
    assert_eq!(unknown.get("/v1/{p}/vpc-endpoints").await.status, 401);

    // A body changed after signing no longer matches the signature.
    let signed = json!({"vpc": {"cidr": "10.0.0.0/16"}});
    let req = alice
        .request("POST", "/v1/{p}/vpcs", Some(&signed))
        .body(r#"{"vpc": {"cidr": "10.9.0.0/16"}}"#);
    let r = finish(req).await;
    assert_eq!((r.status, r.code()), (401, "APIGW.0301"));
    assert_eq!(alice.post("/v1/{p}/vpcs", signed).await.status, 200);
}

#[tokio::test]
async fn projects_are_scoped_to_their_account() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    // Alice signs correctly but names Bob's project in the path.
    let r = alice
        .get(&format!("/v1/{}/vpc-endpoints", bob.acct.project_id))
        .await;
    assert_eq!((r.status, r.code()), (403, "EndPoint.0004"));
    let r = alice.get("/v1/%7Bproject_id%7D/vpc-endpoints").await;
    assert_eq!((r.status, r.code()), (400, "EndPoint.0014"));

    // Bob's resources look exactly like missing ones to Alice.
    let (svc, _, _) = bob.service(true, 80).await;
    let theirs = alice
        .get(&format!("/v1/{{p}}/vpc-endpoint-services/{svc}"))
        .await;
    let missing = alice
        .get("/v1/{p}/vpc-endpoint-services/00000000-0000-0000-0000-000000000000")
        .await;
    assert_eq!((theirs.status, theirs.code()), (404, "EndPoint.0005"));
    assert_eq!(theirs.body["error_msg"], missing.body["error_msg"]);
    assert_eq!(theirs.status, missing.status);
    let r = alice
        .get(&format!(
            "/v1/{{p}}/vpc-endpoint-services/describe?id={svc}"
        ))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn token_login_works_like_a_signature() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    let body = json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {"name": "alice", "password": alice.acct.password}}}, "scope": {"project": {"name": "local-1"}}}});
    let resp = reqwest::Client::new()
        .post(format!("{}/v3/auth/tokens", alice.base))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let token = resp.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let r = finish(
        reqwest::Client::new()
            .get(format!(
                "{}/v1/{}/quotas",
                alice.base, alice.acct.project_id
            ))
            .header("x-auth-token", &token),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["quotas"]["resources"][0]["quota"], 20);

    let mut wrong = body.clone();
    wrong["auth"]["identity"]["password"]["user"]["password"] = json!("nope");
    let r = finish(
        reqwest::Client::new()
            .post(format!("{}/v3/auth/tokens", alice.base))
            .json(&wrong),
    )
    .await;
    assert_eq!(r.status, 401);
    let r = finish(
        reqwest::Client::new()
            .get(format!(
                "{}/v1/{}/quotas",
                alice.base, alice.acct.project_id
            ))
            .header("x-auth-token", "bogus"),
    )
    .await;
    assert_eq!(r.status, 401);
}

/// The user guide's 2.3: a service with approval, a whitelist, an endpoint from another
/// account, accept, reject, and deletion rules.
#[tokio::test]
async fn cross_account_flow_with_approval() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let (svc, _, _) = alice.service(true, 8080).await;
    let (bvpc, bsub, _) = bob.network().await;
    let create =
        json!({"endpoint_service_id": svc, "vpc_id": bvpc, "subnet_id": bsub, "enable_dns": true});

    let r = bob.post("/v1/{p}/vpc-endpoints", create.clone()).await;
    assert_eq!(r.status, 404, "not whitelisted yet: {}", r.body);

    let perm = format!("iam:domain::{}", bob.acct.domain_id);
    let r = alice
        .post(
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc}/permissions/action"),
            json!({"permissions": [perm], "action": "add"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let found = bob
        .ok(
            "GET",
            &format!("/v1/{{p}}/vpc-endpoint-services/describe?id={svc}"),
            None,
        )
        .await;
    assert_eq!(found["id"], svc.as_str());
    assert!(
        found.get("port_id").is_none(),
        "no backend details for consumers"
    );

    let ep = bob
        .ok("POST", "/v1/{p}/vpc-endpoints", Some(create.clone()))
        .await;
    assert_eq!(ep["status"], "creating");
    let id = ep["id"].as_str().unwrap().to_owned();
    let shown = bob
        .wait(
            &format!("/v1/{{p}}/vpc-endpoints/{id}"),
            "pendingAcceptance",
        )
        .await;
    assert!(shown["ip"].is_null(), "no IP before acceptance");

    let conns = alice
        .ok(
            "GET",
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc}/connections"),
            None,
        )
        .await;
    assert_eq!(conns["total_count"], 1);
    assert_eq!(
        conns["connections"][0]["domain_id"],
        bob.acct.domain_id.as_str()
    );

    let two = alice
        .post(
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc}/connections/action"),
            json!({"action": "receive", "endpoints": [id, id]}),
        )
        .await;
    assert_eq!(two.code(), "EndPoint.2031");
    let acc = alice
        .ok(
            "POST",
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc}/connections/action"),
            Some(json!({"action": "receive", "endpoints": [id]})),
        )
        .await;
    assert_eq!(acc["connections"][0]["status"], "accepted");
    let shown = bob
        .ok("GET", &format!("/v1/{{p}}/vpc-endpoints/{id}"), None)
        .await;
    assert_eq!(shown["status"], "accepted");
    assert!(shown["ip"].as_str().unwrap().starts_with("192.168.0."));
    assert_eq!(shown["dns_names"].as_array().unwrap().len(), 1);

    let r = alice
        .delete(&format!("/v1/{{p}}/vpc-endpoint-services/{svc}"))
        .await;
    assert_eq!((r.status, r.code()), (400, "EndPoint.3006"));
    alice
        .ok(
            "POST",
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc}/connections/action"),
            Some(json!({"action": "reject", "endpoints": [id]})),
        )
        .await;
    assert_eq!(
        bob.ok("GET", &format!("/v1/{{p}}/vpc-endpoints/{id}"), None)
            .await["status"],
        "rejected"
    );
    // Rejected endpoints do not block deletion; they fail with the service.
    assert_eq!(
        alice
            .delete(&format!("/v1/{{p}}/vpc-endpoint-services/{svc}"))
            .await
            .status,
        204
    );
    alice
        .wait(&format!("/v1/{{p}}/vpc-endpoint-services/{svc}"), "gone")
        .await;
    assert_eq!(
        bob.ok("GET", &format!("/v1/{{p}}/vpc-endpoints/{id}"), None)
            .await["status"],
        "failed"
    );
    assert_eq!(
        bob.delete(&format!("/v1/{{p}}/vpc-endpoints/{id}"))
            .await
            .status,
        204
    );
    bob.wait(&format!("/v1/{{p}}/vpc-endpoints/{id}"), "gone")
        .await;
}

#[tokio::test]
async fn quotas_hold_under_concurrent_creates() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    Store::set_quota(&*app.store, "alice".into(), None, Some(3))
        .await
        .unwrap();
    let (svc, vpc, sub) = alice.service(false, 80).await;
    let body = json!({"endpoint_service_id": svc, "vpc_id": vpc, "subnet_id": sub});
    let calls = (0..10).map(|_| {
        let c = alice.clone();
        let b = body.clone();
        tokio::spawn(async move { c.post("/v1/{p}/vpc-endpoints", b).await })
    });
    let mut ok = 0;
    let mut ips = HashSet::new();
    let mut markers = HashSet::new();
    for h in calls {
        let r = h.await.unwrap();
        match r.status {
            200 => {
                ok += 1;
                markers.insert(r.body["marker_id"].as_i64().unwrap());
                ips.insert(r.body["id"].as_str().unwrap().to_owned());
            }
            400 => assert_eq!(r.code(), "Endpoint.1018"),
            other => panic!("unexpected {other}: {}", r.body),
        }
    }
    assert_eq!(ok, 3);
    assert_eq!(markers.len(), 3);
    let q = alice.ok("GET", "/v1/{p}/quotas?type=endpoint", None).await;
    assert_eq!(
        q["quotas"]["resources"][0],
        json!({"type": "endpoint", "used": 3, "quota": 3})
    );
}

#[tokio::test]
async fn bad_input_is_a_clear_400() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    let (vpc, _, port) = alice.network().await;
    let svc = |extra: serde_json::Value| {
        let mut b = json!({"vpc_id": vpc, "port_id": port, "server_type": "VM", "ports": [{"client_port": 80, "server_port": 80, "protocol": "TCP"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let many: Vec<_> = (1..=51)
        .map(|p| json!({"client_port": p, "server_port": p, "protocol": "TCP"}))
        .collect();
    let cases = [
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"service_name": "this-name-is-too-long"})),
            "EndPoint.3076",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"service_name": "a.b"})),
            "EndPoint.3076",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"ports": [{"client_port": 0, "server_port": 80}]})),
            "EndPoint.3043",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"ports": [{"client_port": 80, "server_port": 65536}]})),
            "EndPoint.3043",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"ports": many})),
            "EndPoint.3043",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"ports": [{"client_port": 80, "server_port": 80, "protocol": "SCTP"}]})),
            "EndPoint.3075",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(
                json!({"ports": [{"client_port": 80, "server_port": 80}, {"client_port": 80, "server_port": 81}]}),
            ),
            "EndPoint.3043",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"server_type": "XX"})),
            "EndPoint.3021",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"server_type": "LB"})),
            "EndPoint.3003",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"port_id": "nope"})),
            "EndPoint.3003",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"description": "<b>"})),
            "EndPoint.0002",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"approval_enabled": "yes"})),
            "EndPoint.0002",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"connection_limit": 0})),
            "EndPoint.0002",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            svc(json!({"tcp_proxy": "maybe"})),
            "EndPoint.0002",
        ),
        (
            "/v1/{p}/vpc-endpoint-services",
            json!({"vpc_id": vpc}),
            "EndPoint.0002",
        ),
        (
            "/v1/{p}/vpc-endpoints",
            json!({"vpc_id": vpc}),
            "EndPoint.2029",
        ),
        (
            "/v1/{p}/vpc-endpoints",
            json!({"endpoint_service_id": "x", "vpc_id": vpc, "port_ip": "1.2.3"}),
            "EndPoint.2041",
        ),
        (
            "/v1/{p}/subnets",
            json!({"subnet": {"vpc_id": vpc, "cidr": "192.168.1.0/24", "gateway_ip": "10.0.0.1"}}),
            "EndPoint.0002",
        ),
        (
            "/v1/{p}/vpcs",
            json!({"vpc": {"cidr": "10.0.0.1/8"}}),
            "EndPoint.3009",
        ),
    ];
    for (path, body, code) in cases {
        let r = alice.post(path, body.clone()).await;
        assert_eq!(
            (r.status, r.code()),
            (400, code),
            "{path} {body}: {}",
            r.body
        );
        assert!(!r.body["error_msg"].as_str().unwrap().is_empty());
    }
    // Not JSON at all.
    let r = alice
        .call(
            "POST",
            "/v1/{p}/vpc-endpoint-services",
            Some(&json!("just a string")),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "EndPoint.0002"));
    // Subnets may not overlap the system range.
    let vpc2 = alice
        .ok(
            "POST",
            "/v1/{p}/vpcs",
            Some(json!({"vpc": {"cidr": "198.19.0.0/16"}})),
        )
        .await;
    let r = alice
        .post(
            "/v1/{p}/subnets",
            json!({"subnet": {"vpc_id": vpc2["vpc"]["id"], "cidr": "198.19.128.0/24"}}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "EndPoint.3009"));
    // Query parameters.
    for (q, code) in [
        ("limit=1001", "EndPoint.0006"),
        ("limit=x", "EndPoint.0006"),
        ("offset=-1", "EndPoint.0010"),
        ("sort_key=name", "EndPoint.0017"),
        ("sort_dir=up", "EndPoint.0018"),
        ("status=on", "EndPoint.0019"),
    ] {
        let r = alice
            .get(&format!("/v1/{{p}}/vpc-endpoint-services?{q}"))
            .await;
        assert_eq!((r.status, r.code()), (400, code), "{q}");
    }
    let r = alice.get("/v1/{p}/widgets/tags").await;
    assert_eq!((r.status, r.code()), (400, "EndPoint.3070"));
    let r = alice.get("/v1/{p}/no/such/route/here").await;
    assert_eq!((r.status, r.code()), (404, "APIGW.0101"));
}

#[tokio::test]
async fn port_mappings_are_immutable_and_pages_walk_once() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    let (svc, _, _) = alice.service(false, 80).await;
    let path = format!("/v1/{{p}}/vpc-endpoint-services/{svc}");
    let same = json!({"ports": [{"client_port": 80, "server_port": 80, "protocol": "TCP"}], "description": "ok"});
    assert_eq!(alice.put(&path, same).await.status, 200);
    let other = json!({"ports": [{"client_port": 81, "server_port": 80, "protocol": "TCP"}]});
    let r = alice.put(&path, other).await;
    assert_eq!(r.status, 400);
    assert!(r.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("cannot be changed"));
    let renamed = alice
        .ok(
            "PUT",
            &format!("{path}/name"),
            Some(json!({"endpoint_service_name": "web2"})),
        )
        .await;
    assert_eq!(
        renamed["endpoint_service_name"],
        format!("local-1.web2.{svc}")
    );

    // Seven more services on fresh ports; walk them three at a time.
    let (vpc, sub, _) = alice.network().await;
    for i in 0..7 {
        let port = alice
            .ok(
                "POST",
                "/v1/{p}/ports",
                Some(json!({"port": {"network_id": sub}})),
            )
            .await;
        alice.ok("POST", "/v1/{p}/vpc-endpoint-services", Some(json!({"vpc_id": vpc, "port_id": port["port"]["id"], "server_type": "VM", "service_name": format!("s{i}"), "ports": [{"client_port": 80, "server_port": 80}]}))).await;
    }
    let mut seen = HashSet::new();
    for offset in (0..8).step_by(3) {
        let page = alice
            .ok(
                "GET",
                &format!("/v1/{{p}}/vpc-endpoint-services?limit=3&offset={offset}&sort_dir=asc"),
                None,
            )
            .await;
        assert_eq!(page["total_count"], 8);
        for s in page["endpoint_services"].as_array().unwrap() {
            assert!(seen.insert(s["id"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(seen.len(), 8);
    let hits = alice
        .ok(
            "GET",
            "/v1/{p}/vpc-endpoint-services?endpoint_service_name=S3",
            None,
        )
        .await;
    assert_eq!(hits["total_count"], 1);
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = spawn_app().await;
    let alice = app.account("alice").await;
    for (method, path, op, _, _) in vpcep_api::OPERATIONS {
        let path = path
            .replace("{project_id}", "{p}")
            .replace("{resource_type}", "endpoint")
            .replace("{version}", "v1");
        let path: String = path
            .split('/')
            .map(|s| {
                if s.starts_with('{') && s != "{p}" {
                    "00000000-0000-0000-0000-000000000000"
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let body = (*method != "GET" && *method != "DELETE").then(|| json!({}));
        let r = alice.call(method, &path, body.as_ref()).await;
        assert_ne!(
            r.code(),
            "APIGW.0101",
            "{op}: {method} {path} is not routed"
        );
        assert!(r.status < 500, "{op}: {}", r.body);
        assert!(r.request_id.is_some());
    }
}

use vpcep_store::Store;

/// Issue 17, findings 5 and 6: a range routed twice, and a project id given as an
/// account id, are refused with a 400 in the API's error format and nothing written.
#[tokio::test]
async fn ranges_routed_twice_and_project_ids_as_accounts_are_refused() {
    // Data centres need a network of their own: no local data plane here.
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut config = crate::support::test_config(&dir);
    config.dataplane = vpcep::serve::DataplaneMode::Remote;
    config.node_token = Some("node-token-for-tests".into());
    config.substrate = vpcep::serve::SubstrateKind::Netns;
    let app = crate::support::spawn_with(dir, config).await;
    let alice = app.account("alice").await;
    let bob = app.account("bob").await;
    let (vpc, _) = alice.network_of("192.168.0.0/16", "192.168.0.0/24").await;

    let r = alice
        .post(
            "/v1/{p}/idcs",
            json!({"idc": {"vpc_id": vpc, "cidr": "192.168.5.0/24", "name": "dc"}}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "EndPoint.3009"), "{}", r.body);
    assert!(r.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("192.168.0.0/16"));
    assert!(r.request_id.is_some());
    assert_eq!(alice.get("/v1/{p}/idcs").await.body["idcs"], json!([]));

    // An operator's gateway service whose range is this VPC's.
    use vpcep_store::Store;
    let obs = app
        .store
        .create_public_service(vpcep_store::NewPublicService {
            name: "obs".into(),
            region: "local-1".into(),
            service_type: vpcep_model::ServiceType::Gateway,
            backend_ip: "127.0.0.1".parse().unwrap(),
            cidr: Some("192.168.128.0/17".into()),
            ports: vec![],
            description: String::new(),
        })
        .await
        .unwrap();
    app.store
        .settle_services(vec![(obs.id.clone(), Ok(()))])
        .await
        .unwrap();
    let r = alice
        .post(
            "/v1/{p}/vpc-endpoints",
            json!({"endpoint_service_id": obs.id, "vpc_id": vpc}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "EndPoint.3009"), "{}", r.body);
    assert!(r.body["error_msg"]
        .as_str()
        .unwrap()
        .contains("192.168.128.0/17"));
    let (other, _) = alice.network_of("10.0.0.0/16", "10.0.0.0/24").await;
    let ep = alice
        .post(
            "/v1/{p}/vpc-endpoints",
            json!({"endpoint_service_id": obs.id, "vpc_id": other}),
        )
        .await;
    assert_eq!(ep.status, 200, "{}", ep.body);

    // Bob's project id where his account id belongs.
    let (svc_vpc, _, port) = alice.network().await;
    let svc = alice
        .ok(
            "POST",
            "/v1/{p}/vpc-endpoint-services",
            Some(
                json!({"vpc_id": svc_vpc, "port_id": port, "server_type": "VM",
                "ports": [{"client_port": 80, "server_port": 80, "protocol": "TCP"}]}),
            ),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/{{p}}/vpc-endpoint-services/{svc}/permissions/batch-create");
    let entry = |id: &str| json!({"permissions": [{"permission": format!("iam:domain::{id}")}]});
    let r = alice.post(&path, entry(&bob.acct.project_id)).await;
    assert_eq!((r.status, r.code()), (400, "EndPoint.3002"), "{}", r.body);
    assert!(r.body["error_msg"].as_str().unwrap().contains("project id"));
    let r = alice
        .post(
            &format!("/v1/{{p}}/vpc-endpoint-services/{svc}/permissions/action"),
            json!({"action": "add", "permissions": [format!("iam:domain::{}", bob.acct.project_id)]}),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "EndPoint.3002"), "{}", r.body);
    assert_eq!(
        alice.post(&path, entry(&bob.acct.domain_id)).await.status,
        200
    );
}
