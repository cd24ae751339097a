//! `vpcep gateway --control-plane URL`: a data-plane node on its own. It long-polls the
//! control plane for the desired state — whole at start, then what changed since the
//! revision it applied — applies it with the same `Node` that `vpcep serve` runs
//! in-process, and reports which endpoints are live (everything first, then what
//! changed); the control plane's controller turns those reports into statuses. Given
//! several control-plane URLs (replicas of one database, which answer alike), it follows
//! one and moves to the next when that one stops answering.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::sync::watch;
use vpcep_api::StatusReport;
use vpcep_model::{Snapshot, SnapshotDelta};

use crate::serve::SubstrateKind;
use vpcep_dataplane::substrate::netns::Machine;
use vpcep_dataplane::Node;

/// How long one snapshot request may wait for a change (the server caps it at 60 s). A
/// node reports at least this often, which keeps its report fresh.
const POLL_SECS: u64 = 20;
/// A machine of several reports at least this often: the control plane declares a
/// machine down when it stops (`vpcep serve --machine-down-after`).
const MACHINE_POLL_SECS: u64 = 2;

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
    /// The CA (PEM) the control plane's certificate must chain to (`https://` URLs);
    /// `None`: the built-in web roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// What machine this node is in a deployment across machines (`--role`), registered
    /// with every report; `None`: the one machine that is everything.
    pub machine: Option<vpcep_api::MachineReport>,
}

struct Link {
    /// Said with every report: what machine this node is.
    machine: Option<vpcep_api::MachineReport>,
    /// How long a request for changes waits (so how often the node reports).
    wait: u64,
    /// The control plane's URLs; `current` indexes the one followed.
    bases: Vec<String>,
    current: std::sync::atomic::AtomicUsize,
    token: String,
    http: reqwest::Client,
}

/// What the control plane answered to a report.
enum Reported {
    Taken,
    /// It does not know this node's earlier report: it needs everything.
    NeedFull,
}

impl Link {
    fn new(urls: &str, token: String, http: reqwest::Client) -> Result<Link> {
        let bases: Vec<String> = urls
            .split(',')
            .map(|u| u.trim().trim_end_matches('/').to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if bases.is_empty() {
            bail!("--control-plane: give the control plane's URL, or several separated by commas");
        }
        Ok(Link {
            machine: None,
            wait: POLL_SECS,
            bases,
            current: Default::default(),
            token,
            http,
        })
    }

    fn base(&self) -> &str {
        &self.bases[self.current.load(std::sync::atomic::Ordering::Relaxed) % self.bases.len()]
    }

    /// After a failure: the next URL, if there are several. `true` when it moved.
    fn fail_over(&self) -> bool {
        if self.bases.len() < 2 {
            return false;
        }
        let was = self.base().to_owned();
        self.current
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::warn!(from = %was, to = %self.base(), "moving to the next control-plane URL");
        true
    }

    async fn get(&self, what: &str, after: i64) -> Result<reqwest::Response> {
        let url = format!(
            "{}/internal/v1/{what}?after={after}&wait={}",
            self.base(),
            self.wait
        );
        self.http
            .get(&url)
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(self.wait + 15))
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base()))
    }

    async fn snapshot(&self, after: i64) -> Result<Snapshot> {
        let resp = self.get("snapshot", after).await?;
        if !resp.status().is_success() {
            bail!(
                "{}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(resp.json().await?)
    }

    /// What changed after `after`; `None` when the control plane no longer knows.
    async fn changes(&self, after: i64) -> Result<Option<SnapshotDelta>> {
        let resp = self.get("changes", after).await?;
        if resp.status() == reqwest::StatusCode::GONE {
            return Ok(None);
        }
        if !resp.status().is_success() {
            bail!(
                "{}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(Some(resp.json().await?))
    }

    async fn report(&self, report: &StatusReport) -> Result<Reported> {
        let report = StatusReport {
            machine: self.machine.clone(),
            ..report.clone()
        };
        let resp = self
            .http
            .post(format!("{}/internal/v1/status", self.base()))
            .bearer_auth(&self.token)
            .json(&report)
            .send()
            .await?;
        if resp.status() == reqwest::StatusCode::CONFLICT {
            return Ok(Reported::NeedFull);
        }
        if !resp.status().is_success() {
            bail!(
                "{}: {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(Reported::Taken)
    }
}

/// What the control plane was told: every endpoint the node runs, and how it is.
#[derive(Default)]
struct Told(HashMap<String, Option<String>>);

impl Told {
    /// Everything, after a whole snapshot: a full report.
    fn all(&mut self, node: &Node, ids: Vec<String>, name: &str, revision: u64) -> StatusReport {
        self.0 = ids
            .into_iter()
            .filter_map(|id| node.endpoint_outcome(&id).map(|o| (id, o.err())))
            .collect();
        self.full(name, revision)
    }

    fn full(&self, name: &str, revision: u64) -> StatusReport {
        StatusReport {
            node: name.to_owned(),
            revision,
            endpoints: self.0.clone(),
            gone: Vec::new(),
            full: true,
            machine: None,
        }
    }

    /// What changed among the endpoints `ids`: a report of changes (maybe empty).
    fn changes(
        &mut self,
        node: &Node,
        ids: Vec<String>,
        name: &str,
        revision: u64,
    ) -> StatusReport {
        let mut report = StatusReport {
            node: name.to_owned(),
            revision,
            endpoints: HashMap::new(),
            gone: Vec::new(),
            full: false,
            machine: None,
        };
        for id in ids {
            match node.endpoint_outcome(&id).map(|o| o.err()) {
                Some(now) if self.0.get(&id) != Some(&now) => {
                    self.0.insert(id.clone(), now.clone());
                    report.endpoints.insert(id, now);
                }
                Some(_) => {}
                None => {
                    if self.0.remove(&id).is_some() {
                        report.gone.push(id);
                    }
                }
            }
        }
        report
    }
}

/// Follows the control plane until `shutdown` turns true.
pub async fn run(cfg: GatewayConfig, mut shutdown: watch::Receiver<bool>) -> Result<()> {
    if cfg.token.is_empty() {
        bail!("--token (VPCEP_NODE_TOKEN) is required: the node token the control plane was started with");
    }
    let http = crate::client::http_client(cfg.ca_file.as_deref())?;
    let machine = cfg.machine.as_ref().map(|m| Machine {
        name: cfg.name.clone(),
        role: m.role,
        underlay: m.underlay,
    });
    let node = std::sync::Arc::new(crate::serve::node(
        cfg.substrate,
        &cfg.netns_prefix,
        cfg.loopback_base,
        cfg.forwarding,
        &cfg.dns,
        machine,
    )?);
    let resync = tokio::spawn(
        node.clone()
            .resync_every(cfg.kernel_resync, shutdown.clone()),
    );
    let supervise = tokio::spawn(
        node.clone()
            .supervise_every(Duration::from_secs(1), shutdown.clone()),
    );
    let mut link = Link::new(&cfg.control_plane, cfg.token.clone(), http)?;
    link.machine = cfg.machine.clone();
    if link.machine.is_some() {
        link.wait = MACHINE_POLL_SECS;
    }
    let mut after = -1i64;
    let (mut told, mut lost) = (Told::default(), false);
    let mut backoff = Duration::from_millis(200);
    loop {
        // What changed since the revision applied, or everything at first.
        let got = tokio::select! {
            _ = shutdown.changed() => break,
            r = async {
                if node.applied_revision().is_some() {
                    if let Some(delta) = link.changes(after).await? {
                        let revision = delta.revision;
                        let ids: Vec<String> = delta.endpoints.iter().map(|e| e.id.clone()).chain(delta.endpoints_gone.iter().cloned()).collect();
                        if node.apply_delta(delta).await {
                            return Ok((revision, told.changes(&node, ids, &cfg.name, revision)));
                        }
                    }
                }
                let snap = link.snapshot(after).await?;
                let revision = snap.revision;
                let ids: Vec<String> = snap.endpoints.iter().map(|e| e.id.clone()).collect();
                node.apply(snap).await;
                Ok::<_, anyhow::Error>((revision, told.all(&node, ids, &cfg.name, revision)))
            } => r,
        };
        match got {
            Ok((revision, report)) => {
                backoff = Duration::from_millis(200);
                // After a report that did not arrive, only everything says it all again.
                let report = if lost {
                    told.full(&cfg.name, revision)
                } else {
                    report
                };
                let sent = match link.report(&report).await {
                    Ok(Reported::NeedFull) => link.report(&told.full(&cfg.name, revision)).await,
                    other => other,
                };
                lost = sent.is_err();
                if let Err(e) = sent {
                    tracing::warn!(error = format!("{e:#}"), "status report failed");
                    link.fail_over();
                }
                after = revision as i64;
            }
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "following the control plane failed; retrying"
                );
                // Another replica is tried at once; the same one after a growing pause.
                if !link.fail_over() {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                } else {
                    tokio::select! {
                        _ = shutdown.changed() => break,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            }
        }
        if *shutdown.borrow() {
            break;
        }
    }
    let _ = resync.await;
    let _ = supervise.await;
    node.gateway().stop_all().await;
    Ok(())
}
