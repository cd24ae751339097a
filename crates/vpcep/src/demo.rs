//! `vpcep demo`: the user guide's scenario built step by step on a fresh data directory —
//! two accounts, two VPCs with the same CIDR, a backend host serving HTTP, a service with
//! approval and a whitelist, an endpoint found by name, the provider's acceptance, and a
//! request through the endpoint — then a short report of what was verified.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use vpcep_store::Store;

use crate::client::ApiClient;
use crate::serve::{Config, Server, SubstrateKind};

struct Demo {
    step: usize,
    total: usize,
    verified: Vec<String>,
}

impl Demo {
    fn start(&mut self, what: &str) -> Instant {
        self.step += 1;
        // Progress is the demo's output (standard output); log lines go to standard error.
        print!("[{}/{}] {what} … ", self.step, self.total);
        let _ = std::io::Write::flush(&mut std::io::stdout());
        Instant::now()
    }

    fn done(&mut self, t: Instant, note: &str) {
        println!(
            "ok ({} ms){}",
            t.elapsed().as_millis(),
            if note.is_empty() {
                String::new()
            } else {
                format!(" — {note}")
            }
        );
    }
}

struct Kill(Vec<Child>);

impl Drop for Kill {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn wait_for(api: &ApiClient, path: &str, want: &str) -> Result<Value> {
    for _ in 0..400 {
        let v = api.call("GET", path, None).await?;
        if v["status"] == want {
            return Ok(v);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("{path} never became {want}")
}

/// The tiny HTTP backend the demo runs on its host (`vpcep demo-backend ADDR`).
pub async fn backend(addr: SocketAddr) -> Result<()> {
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("bind {addr}"))?;
    loop {
        let (mut s, peer) = l.accept().await?;
        tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let body = format!(
                "hello from the backend at {addr}; you came from {}\n",
                peer.ip()
            );
            let resp = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        });
    }
}

/// `vpcep demo-fetch ADDR`: one HTTP GET, body to stdout.
pub async fn fetch(addr: SocketAddr) -> Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
        .await
        .context("connect timed out")??;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut out))
        .await
        .context("read timed out")??;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    if body.is_empty() {
        bail!("no answer from {addr}");
    }
    Ok(body)
}

fn me() -> Result<String> {
    Ok(std::env::current_exe()?.display().to_string())
}

/// Runs `vpcep demo-fetch` in a host (netns) or here (loopback); `None` if refused.
fn fetch_from(netns: Option<&str>, addr: SocketAddr) -> Result<Option<String>> {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(me()?);
            c
        }
        None => Command::new(me()?),
    };
    let out = cmd
        .args(["demo-fetch", &addr.to_string()])
        .stderr(Stdio::null())
        .output()?;
    Ok(out
        .status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

pub async fn run(substrate: SubstrateKind, loopback_base: u8) -> Result<()> {
    let mut d = Demo {
        step: 0,
        total: 13,
        verified: Vec::new(),
    };
    let dir = tempfile::tempdir()?;
    let t = d.start("starting vpcep on a fresh data directory");
    let mut config = Config::new(dir.path().to_owned(), "127.0.0.1:0".parse()?);
    config.substrate = substrate;
    config.netns_prefix = format!("demo{}", std::process::id() % 100_000);
    config.loopback_base = loopback_base;
    let server = Server::build(config.clone()).await?;
    let (url, store) = (format!("http://{}", server.addr), server.store.clone());
    let (stop, rx) = watch::channel(false);
    let serving = tokio::spawn(server.run_until_stopped(rx));
    d.done(t, &format!("{url}, substrate {substrate:?}"));
    let result = scenario(&mut d, &url, store).await;
    let _ = stop.send(true);
    let _ = serving.await;
    if substrate == SubstrateKind::Netns {
        if let Ok(n) = vpcep_dataplane::Netns::new(&config.netns_prefix) {
            let _ = n.remove_all();
        }
    }
    let verified = result?;
    println!("\nvpcep demo report ({substrate:?} substrate)");
    for v in &verified {
        println!("  ✓ {v}");
    }
    println!("{} checks passed", verified.len());
    Ok(())
}

async fn scenario(
    d: &mut Demo,
    url: &str,
    store: Arc<vpcep_store::SqlStore>,
) -> Result<Vec<String>> {
    let t = d.start("creating two accounts (provider and consumer)");
    let client = |a: &vpcep_store::NewAccount| {
        ApiClient::with_keys(url, &a.access_key, &a.secret_key, &a.project_id)
    };
    let pa = Store::create_account(&*store, "demo-provider".into(), "local-1".into()).await?;
    let ca = Store::create_account(&*store, "demo-consumer".into(), "local-1".into()).await?;
    let (provider, consumer) = (client(&pa), client(&ca));
    d.done(t, "");

    let t = d.start("creating a VPC 192.168.0.0/16 in each account (the same CIDR)");
    let mut nets = Vec::new();
    for api in [&provider, &consumer] {
        let vpc = api
            .call(
                "POST",
                "/v1/{p}/vpcs",
                Some(&json!({"vpc": {"name": "demo", "cidr": "192.168.0.0/16"}})),
            )
            .await?["vpc"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let sub = api
            .call(
                "POST",
                "/v1/{p}/subnets",
                Some(&json!({"subnet": {"name": "demo", "cidr": "192.168.0.0/24", "vpc_id": vpc}})),
            )
            .await?["subnet"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        nets.push((vpc, sub));
    }
    d.done(t, "");
    d.verified
        .push("two VPCs with the same CIDR 192.168.0.0/16 coexist".into());

    let t = d.start("starting a backend host in the provider VPC, serving HTTP on :80");
    let host = provider.call("POST", "/v1/{p}/hosts", Some(&json!({"host": {"vpc_id": nets[0].0, "subnet_id": nets[0].1, "ip": "192.168.0.10", "name": "web"}}))).await?["host"].clone();
    let netns = host["netns"].as_str().map(str::to_owned);
    let backend_ip: Ipv4Addr = host["local_ip"]
        .as_str()
        .or(host["ip"].as_str())
        .unwrap_or_default()
        .parse()?;
    let mut cmd = match &netns {
        Some(ns) => {
            // The namespace appears when the data plane has applied the host.
            for _ in 0..200 {
                if Command::new("ip")
                    .args(["netns", "exec", ns, "ip", "addr", "show", "eth0"])
                    .output()?
                    .status
                    .success()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(me()?);
            c
        }
        None => Command::new(me()?),
    };
    let child = cmd
        .args([
            "demo-backend",
            &SocketAddr::from((backend_ip, 80)).to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _backend = Kill(vec![child]);
    d.done(
        t,
        &format!(
            "host web {} {}",
            host["ip"].as_str().unwrap_or(""),
            netns
                .as_deref()
                .map(|n| format!("in namespace {n}"))
                .unwrap_or_else(|| format!("at {backend_ip}"))
        ),
    );

    let t = d.start("publishing it as an endpoint service with connection approval");
    let svc = provider
        .call("POST", "/v1/{p}/vpc-endpoint-services", Some(&json!({"vpc_id": nets[0].0, "port_id": host["port_id"], "server_type": "VM", "service_name": "demo-web", "approval_enabled": true, "ports": [{"client_port": 8080, "server_port": 80, "protocol": "TCP"}]})))
        .await?;
    let sid = svc["id"].as_str().unwrap_or_default().to_owned();
    let name = svc["service_name"].as_str().unwrap_or_default().to_owned();
    wait_for(
        &provider,
        &format!("/v1/{{p}}/vpc-endpoint-services/{sid}"),
        "available",
    )
    .await?;
    d.done(t, &name);

    let t = d.start("checking that the consumer cannot see it before the whitelist");
    let hidden = consumer
        .call(
            "GET",
            &format!("/v1/{{p}}/vpc-endpoint-services/describe?endpoint_service_name={name}"),
            None,
        )
        .await
        .is_err();
    if !hidden {
        bail!("the service is visible to an account that is not on its whitelist");
    }
    d.done(t, "not found, as for a missing service");
    d.verified
        .push("a service is invisible to accounts not on its whitelist".into());

    let t = d.start("adding the consumer account to the service whitelist");
    provider
        .call(
            "POST",
            &format!("/v1/{{p}}/vpc-endpoint-services/{sid}/permissions/action"),
            Some(
                &json!({"permissions": [format!("iam:domain::{}", ca.domain_id)], "action": "add"}),
            ),
        )
        .await?;
    d.done(t, &format!("iam:domain::{}", ca.domain_id));

    let t = d.start("consumer: finding the service by name and creating an endpoint");
    let found = consumer
        .call(
            "GET",
            &format!("/v1/{{p}}/vpc-endpoint-services/describe?endpoint_service_name={name}"),
            None,
        )
        .await?;
    let ep = consumer.call("POST", "/v1/{p}/vpc-endpoints", Some(&json!({"endpoint_service_id": found["id"], "vpc_id": nets[1].0, "subnet_id": nets[1].1, "enable_dns": true}))).await?;
    let eid = ep["id"].as_str().unwrap_or_default().to_owned();
    wait_for(
        &consumer,
        &format!("/v1/{{p}}/vpc-endpoints/{eid}"),
        "pendingAcceptance",
    )
    .await?;
    d.done(t, "pendingAcceptance (待接受)");
    d.verified
        .push("the endpoint waits for the provider's approval".into());

    let t = d.start("provider: accepting the connection");
    provider
        .call(
            "POST",
            &format!("/v1/{{p}}/vpc-endpoint-services/{sid}/connections/action"),
            Some(&json!({"action": "receive", "endpoints": [eid]})),
        )
        .await?;
    let ep = wait_for(
        &consumer,
        &format!("/v1/{{p}}/vpc-endpoints/{eid}"),
        "accepted",
    )
    .await?;
    let node = ep["ip"].as_str().unwrap_or_default().to_owned();
    d.done(
        t,
        &format!(
            "accepted (已接受), node IP {node}, marker id {}",
            ep["marker_id"]
        ),
    );
    d.verified.push(format!(
        "the endpoint is accepted with node IP {node} in the consumer VPC"
    ));

    let t = d.start("consumer: requesting http://<node IP>:8080/ through the endpoint");
    let (client_ns, target) = match &netns {
        Some(_) => {
            let c = consumer.call("POST", "/v1/{p}/hosts", Some(&json!({"host": {"vpc_id": nets[1].0, "subnet_id": nets[1].1, "ip": "192.168.0.20", "name": "client"}}))).await?["host"].clone();
            (
                c["netns"].as_str().map(str::to_owned),
                node.parse::<Ipv4Addr>()?,
            )
        }
        None => {
            let vpc = consumer
                .call("GET", &format!("/v1/{{p}}/vpcs/{}", nets[1].0), None)
                .await?;
            let block = vpc["vpc"]["loopback_block"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let n: u8 = block.split('.').nth(1).unwrap_or("0").parse()?;
            let o = node.parse::<Ipv4Addr>()?.octets();
            (None, Ipv4Addr::new(127, n, o[2], o[3]))
        }
    };
    let mut body = None;
    for _ in 0..100 {
        if let Some(b) = fetch_from(client_ns.as_deref(), SocketAddr::from((target, 8080)))? {
            body = Some(b);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let body = body.context("the request through the endpoint got no answer")?;
    d.done(t, &body);
    d.verified.push(format!(
        "a request through the endpoint reached the backend: \"{body}\""
    ));
    if netns.is_some() {
        if !body.contains("came from 198.19.1") {
            bail!("the backend did not see a 198.19.128.0/20 source: {body}");
        }
        d.verified
            .push("the backend sees the endpoint's 198.19.128.0/20 address, not the client".into());
    }

    let dns = ep["dns_names"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let t = d.start("consumer: resolving the endpoint's private domain name");
    let resolved = match &client_ns {
        // A host of the VPC asks its resolver (its resolv.conf), as any program would.
        Some(ns) => {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "getent", "ahostsv4", &dns])
                .output()?;
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned()
        }
        // The VPC resolver sits at the subnet's .2, mapped like every VPC address.
        None => {
            let o = target.octets();
            let resolver = SocketAddr::from((
                Ipv4Addr::new(127, o[1], 0, 2),
                crate::serve::LOOPBACK_DNS_PORT,
            ));
            vpcep_dataplane::dns::query_a(resolver, &dns)
                .await?
                .first()
                .map(|a| a.to_string())
                .unwrap_or_default()
        }
    };
    if resolved != node {
        bail!("{dns} resolved to {resolved:?} in the consumer VPC, not the node IP {node}");
    }
    d.done(t, &format!("{dns} -> {resolved}"));
    d.verified.push(format!(
        "the private domain name {dns} resolves to the node IP in the consumer VPC"
    ));

    let t = d.start("checking that traffic goes one way only");
    if let Some(ns) = &netns {
        if fetch_from(
            Some(ns),
            SocketAddr::from((node.parse::<Ipv4Addr>()?, 8080)),
        )?
        .is_some()
        {
            bail!("the provider's host reached the endpoint address");
        }
        d.done(t, "the provider's host cannot reach the consumer side");
        d.verified
            .push("the provider side cannot reach into the consumer VPC".into());
    } else {
        d.done(
            t,
            "skipped: the loopback substrate has no isolation (use --substrate netns)",
        );
    }

    let t = d.start("deleting the endpoint; forwarding stops");
    consumer
        .call("DELETE", &format!("/v1/{{p}}/vpc-endpoints/{eid}"), None)
        .await?;
    for _ in 0..200 {
        if consumer
            .call("GET", &format!("/v1/{{p}}/vpc-endpoints/{eid}"), None)
            .await
            .is_err()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if fetch_from(client_ns.as_deref(), SocketAddr::from((target, 8080)))?.is_some() {
        bail!("a deleted endpoint still forwards");
    }
    d.done(t, "");
    d.verified
        .push("a deleted endpoint stops forwarding at once".into());
    Ok(std::mem::take(&mut d.verified))
}
