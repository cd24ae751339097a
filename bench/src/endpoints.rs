//! `vpcep-bench endpoints`: the userspace gateway with many single-port endpoints, on
//! the loopback substrate (no root): what starting and stopping one costs as the number
//! already running grows, and where the listeners' descriptors go. The substrate's own
//! work per endpoint (netns adds two addresses with `ip`) is left out on purpose.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vpcep_dataplane::{Gateway, Loopback};
use vpcep_model::{EndpointSpec, PortMapping, Protocol, SubnetSpec, TcpProxy, VpcSpec};

use crate::dataplane::rss_kb;

/// Loopback blocks 127.151-152.0.0/16 (VPC numbers 1 and 2 over this base).
const BASE: u8 = 150;
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 9);

fn vpc(id: &str, seq: u32) -> VpcSpec {
    VpcSpec {
        id: id.into(),
        seq,
        subnets: vec![SubnetSpec {
            id: format!("{id}-s"),
            cidr: "10.0.0.0/16".into(),
            gateway_ip: Ipv4Addr::new(10, 0, 0, 1),
            vni: 0,
        }],
    }
}

/// Endpoint `i`: its own address in the consumer VPC, port 8000, to the backend's `port`.
fn endpoint(i: u32, port: u16) -> EndpointSpec {
    let marker = 0x0100_0000 + i;
    EndpointSpec {
        id: format!("ep{i}"),
        service_id: "svc".into(),
        marker_id: marker,
        consumer_vpc: "c".into(),
        subnet_id: "c-s".into(),
        ip: Ipv4Addr::new(10, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8),
        provider_vpc: Some("p".into()),
        backend_ip: BACKEND,
        ports: vec![PortMapping {
            client_port: 8000,
            server_port: port,
            protocol: Protocol::Tcp,
        }],
        tcp_proxy: TcpProxy::Close,
        whitelist: None,
        max_connections: 3000,
        // Each its own source towards the provider VPC, as the store allocates them.
        snat_ip: Ipv4Addr::from(vpcep_model::SNAT_BASE + 1 + i % vpcep_model::SNAT_SIZE),
        dns_name: None,
        route: None,
    }
}

fn median_us(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v.get(v.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1e6)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// A round trip through endpoint `i` (its consumer-side address on loopback).
async fn through(i: u32) -> Result<()> {
    let o = endpoint(i, 0).ip.octets();
    let addr = SocketAddr::from((Ipv4Addr::new(127, BASE + 1, o[2], o[3]), 8000));
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"ping").await?;
    let mut b = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut b))
        .await
        .context("no answer")??;
    if &b != b"ping" {
        bail!("endpoint {i} answered {b:?}");
    }
    Ok(())
}

pub(crate) async fn run(count: u32, batch: u32) -> Result<()> {
    let gw = Gateway::new(Arc::new(Loopback::new(BASE)));
    let vpcs: HashMap<String, VpcSpec> =
        [("c".into(), vpc("c", 1)), ("p".into(), vpc("p", 2))].into();
    let o = BACKEND.octets();
    let backend =
        tokio::net::TcpListener::bind((Ipv4Addr::new(127, BASE + 2, o[2], o[3]), 0)).await?;
    let port = backend.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = backend.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 64];
                while let Ok(n) = s.read(&mut b).await {
                    if n == 0 || s.write_all(&b[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let (fds0, rss0) = (open_fds(), rss_kb(std::process::id()));
    println!("Userspace gateway, {count} single-port TCP endpoints on the loopback substrate ({} cores):", crate::cores());
    println!();
    println!("| endpoints running | start µs (median of the batch) | listeners | descriptors open | stop µs (median) |");
    println!("|---:|---:|---:|---:|---:|");
    let mut rows = Vec::new();
    for first in (0..count).step_by(batch as usize) {
        let mut took = Vec::new();
        for i in first..(first + batch).min(count) {
            let spec = endpoint(i, port);
            let t = Instant::now();
            gw.start(&spec, &vpcs)
                .await
                .map_err(|e| anyhow::anyhow!("endpoint {i}: {e}"))?;
            took.push(t.elapsed());
        }
        let last = (first + batch).min(count) - 1;
        through(last).await?;
        rows.push((last + 1, median_us(took), gw.listeners(), open_fds() - fds0));
    }
    let running = count;
    through(0).await?;
    let rss = rss_kb(std::process::id()).saturating_sub(rss0);
    let mut stops = Vec::new();
    for first in (0..count).step_by(batch as usize) {
        let mut took = Vec::new();
        for i in first..(first + batch).min(count) {
            let t = Instant::now();
            gw.stop(&format!("ep{i}")).await;
            took.push(t.elapsed());
        }
        stops.push(median_us(took));
    }
    // Stopping runs from the first endpoint on, so its batches meet the running counts
    // in reverse.
    for ((n, start, listeners, fds), stop) in rows.iter().zip(stops.iter().rev()) {
        println!("| {n} | {start:.0} | {listeners} | {fds} | {stop:.0} |");
    }
    println!();
    println!(
        "{running} endpoints: {} listener descriptors, process RSS +{} KiB; after stopping all: {} listeners, {} descriptors more than before",
        rows.last().map_or(0, |r| r.2),
        rss,
        gw.listeners(),
        open_fds().saturating_sub(fds0)
    );
    Ok(())
}
