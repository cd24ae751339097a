//! `vpcep-bench resolvers`: what private DNS costs a node as VPCs come. A release
//! `vpcep serve` (loopback substrate) gets VPCs through the API, each with one subnet and
//! so one resolver address; after each count asked for, once the last VPC's resolver
//! answers, the process's threads (all, and the DNS pool's `vpcep-dns` ones),
//! descriptors and sockets are read from `/proc`. Counts, not timings: noise-free.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::dataplane::{client, spawn_serve};
use crate::{account_with_quota, Proc};

#[derive(clap::Args)]
pub(crate) struct Opts {
    /// Measure once this many VPCs exist, for each count (increasing).
    #[arg(long, value_delimiter = ',', default_value = "1,100,200")]
    pub vpcs: Vec<usize>,
    /// The vpcep binary to measure, e.g. a build of main (default: the one beside this
    /// bench).
    #[arg(long)]
    pub bin: Option<PathBuf>,
    /// `--loopback-base` of the server: VPC number N is 127.(BASE+N), so BASE plus the
    /// largest count must stay below 255.
    #[arg(long, default_value_t = 20)]
    pub loopback_base: u8,
}

/// The port of every resolver.
const PORT: u16 = 10053;

/// (threads, of them the DNS pool's, descriptors, of them sockets) of process `pid`.
fn census(pid: u32) -> Result<(usize, usize, usize, usize)> {
    let tasks: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))?
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .collect();
    let dns = tasks.iter().filter(|c| c.trim() == "vpcep-dns").count();
    let fds: Vec<PathBuf> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|f| std::fs::read_link(f.ok()?.path()).ok())
        .collect();
    let sockets = fds
        .iter()
        .filter(|l| l.to_string_lossy().starts_with("socket:"))
        .count();
    Ok((tasks.len(), dns, fds.len(), sockets))
}

pub(crate) async fn run(beside: &Path, o: Opts) -> Result<()> {
    let bin = o.bin.as_deref().unwrap_or(beside);
    let mut counts = o.vpcs.clone();
    counts.sort_unstable();
    let last = counts.last().copied().unwrap_or(0);
    if usize::from(o.loopback_base) + last > 254 {
        bail!(
            "--loopback-base {} leaves no room for {last} VPCs",
            o.loopback_base
        );
    }
    let dir = tempfile::tempdir()?;
    let acct = account_with_quota(bin, dir.path(), "meter", 10)?;
    let (base, port) = (o.loopback_base.to_string(), PORT.to_string());
    let (child, url) = spawn_serve(
        bin,
        dir.path(),
        &[
            "--substrate",
            "loopback",
            "--loopback-base",
            &base,
            "--dns-port",
            &port,
        ],
    )?;
    let pid = child.id();
    let _server = Proc(child);
    let c = client(&url, &acct);
    println!("{}", bin.display());
    println!("| VPCs | threads | of them DNS | descriptors | of them sockets |");
    println!("|---:|---:|---:|---:|---:|");
    let mut have = 0;
    for n in counts {
        let mut block = String::new();
        while have < n {
            let vpc = c
                .call(
                    "POST",
                    "/v1/{p}/vpcs",
                    Some(&json!({"vpc": {"name": "v", "cidr": "10.0.0.0/16"}})),
                )
                .await?["vpc"]
                .clone();
            let id = vpc["id"].as_str().unwrap_or_default();
            block = vpc["loopback_block"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            c.call(
                "POST",
                "/v1/{p}/subnets",
                Some(&json!({"subnet": {"name": "s", "cidr": "10.0.0.0/24", "vpc_id": id}})),
            )
            .await?;
            have += 1;
        }
        // The newest VPC's resolver, 10.0.0.2 in its block, answers once it is served.
        let second: u8 = block
            .split('.')
            .nth(1)
            .and_then(|b| b.parse().ok())
            .with_context(|| format!("no loopback block: {block:?}"))?;
        let resolver = SocketAddr::from((Ipv4Addr::new(127, second, 0, 2), PORT));
        let mut answered = false;
        for _ in 0..100 {
            let probe = vpcep_dataplane::dns::query_a(resolver, "probe.vpcep.local-1.internal");
            if matches!(probe.await, Ok(a) if a.is_empty()) {
                answered = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !answered {
            bail!("the resolver of VPC {n} at {resolver} does not answer");
        }
        let (threads, dns, fds, sockets) = census(pid)?;
        println!("| {n} | {threads} | {dns} | {fds} | {sockets} |");
    }
    Ok(())
}
