//! `vpcep gateway --control-plane URL`: a data-plane node on its own. It long-polls the
//! control plane for the desired-state snapshot, applies it with the same `Node` that
//! `vpcep serve` runs in-process, and reports which endpoints are live; the control
//! plane's controller turns those reports into statuses.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::watch;
use vpcep_api::StatusReport;
use vpcep_model::Snapshot;

use crate::serve::SubstrateKind;

/// How long one snapshot request may wait for a change (the server caps it at 60 s). A
/// node reports at least this often, which keeps its report fresh.
const POLL_SECS: u64 = 20;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub control_plane: String,
    pub token: String,
    pub name: String,
    pub substrate: SubstrateKind,
    pub netns_prefix: String,
    pub loopback_base: u8,
    pub forwarding: crate::serve::ForwardingMode,
    pub dns: crate::serve::DnsSettings,
    /// How often the kernel path is checked for drift.
    pub kernel_resync: Duration,
}

struct Link {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Link {
    async fn snapshot(&self, after: i64) -> Result<Snapshot> {
        let url = format!(
            "{}/internal/v1/snapshot?after={after}&wait={POLL_SECS}",
            self.base
        );
        let resp = self
            .http
            .get(&url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(POLL_SECS + 15))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        if !resp.status().is_success() {
            bail!(
                "{}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(resp.json().await?)
    }

    async fn report(&self, report: &StatusReport) -> Result<()> {
        let resp = self
            .http
            .post(format!("{}/internal/v1/status", self.base))
            .bearer_auth(&self.token)
            .json(report)
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!(
                "{}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }
}

/// Follows the control plane until `shutdown` turns true.
pub async fn run(cfg: GatewayConfig, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    if cfg.token.is_empty() {
        bail!("--token (VPCEP_NODE_TOKEN) is required: the node token the control plane was started with");
    }
    let node = std::sync::Arc::new(crate::serve::node(
        cfg.substrate,
        &cfg.netns_prefix,
        cfg.loopback_base,
        cfg.forwarding,
        &cfg.dns,
    )?);
    let resync = tokio::spawn(
        node.clone()
            .resync_every(cfg.kernel_resync, shutdown.clone()),
    );
    let link = Link {
        base: cfg.control_plane.trim_end_matches('/').to_owned(),
        token: cfg.token.clone(),
        http: reqwest::Client::new(),
    };
    let mut after = -1i64;
    let mut backoff = Duration::from_millis(200);
    loop {
        let got = tokio::select! {
            _ = shutdown.changed() => break,
            r = link.snapshot(after) => r,
        };
        match got {
            Ok(snap) => {
                backoff = Duration::from_millis(200);
                let revision = snap.revision;
                let ids: Vec<String> = snap.endpoints.iter().map(|e| e.id.clone()).collect();
                node.apply(snap).await;
                let endpoints: HashMap<String, Option<String>> = ids
                    .into_iter()
                    .filter_map(|id| node.endpoint_outcome(&id).map(|o| (id, o.err())))
                    .collect();
                let report = StatusReport {
                    node: cfg.name.clone(),
                    revision,
                    endpoints,
                };
                if let Err(e) = link.report(&report).await {
                    tracing::warn!(error = %e, "status report failed");
                }
                after = revision as i64;
            }
            Err(e) => {
                tracing::warn!(error = %e, "snapshot request failed; retrying");
                tokio::select! {
                    _ = shutdown.changed() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
    let _ = resync.await;
    node.gateway().stop_all().await;
    Ok(())
}
