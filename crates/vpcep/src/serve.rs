//! `vpcep serve`: one process with the API, the store, the controller and the data plane.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use vpcep_dataplane::{Loopback, Netns, Node, Substrate};
use vpcep_store::{SqliteStore, Store};

use crate::controller;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubstrateKind {
    /// 127.N.0.0/16 per VPC; no root, no isolation.
    Loopback,
    /// Network namespaces: real, isolated VPCs and hosts (needs root).
    Netns,
}

/// Everything `serve` needs, checked before anything binds.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub region: String,
    pub clock_skew_secs: i64,
    pub substrate: SubstrateKind,
    /// Prefix of every namespace name (netns substrate).
    pub netns_prefix: String,
    /// VPC number N uses 127.(base+N).0.0/16 (loopback substrate).
    pub loopback_base: u8,
}

impl Config {
    pub fn new(data_dir: PathBuf, listen: SocketAddr) -> Config {
        Config {
            data_dir,
            listen,
            region: "local-1".into(),
            clock_skew_secs: 900,
            substrate: SubstrateKind::Loopback,
            netns_prefix: "vpcep".into(),
            loopback_base: 0,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        let ok = !self.region.is_empty()
            && self.region.len() <= 32
            && self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(format!(
                "--region {:?}: use 1-32 of lowercase letters, digits and '-' (e.g. local-1)",
                self.region
            ));
        }
        if !(0..=86_400).contains(&self.clock_skew_secs) {
            return Err(format!(
                "--clock-skew-secs {}: use 0-86400",
                self.clock_skew_secs
            ));
        }
        Ok(())
    }
}

/// The data plane as the API sees it.
struct NodeView(Arc<Node>);

impl vpcep_api::NodeInfo for NodeView {
    fn substrate(&self) -> &'static str {
        self.0.substrate().name()
    }

    fn host_netns(&self, port_id: &str) -> Option<String> {
        self.0.substrate().host_netns(port_id)
    }

    fn local_ip(&self, seq: i64, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        self.0.substrate().local_ip(seq as u32, ip)
    }

    fn metrics(&self) -> String {
        self.0.gateway().render_metrics()
    }
}

/// A built server: store open, substrate checked, listener bound; nothing runs yet.
pub struct Server {
    pub addr: SocketAddr,
    pub store: Arc<SqliteStore>,
    pub node: Arc<Node>,
    listener: TcpListener,
    config: Config,
}

impl Server {
    pub async fn build(config: Config) -> anyhow::Result<Server> {
        config.validate().map_err(anyhow::Error::msg)?;
        let substrate: Arc<dyn Substrate> = match config.substrate {
            SubstrateKind::Loopback => Arc::new(Loopback::new(config.loopback_base)),
            SubstrateKind::Netns => Arc::new(
                Netns::new(&config.netns_prefix)
                    .map_err(|e| anyhow::anyhow!("--substrate netns: {e}"))?,
            ),
        };
        let store = Arc::new(SqliteStore::open(&config.data_dir).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot open the store in {}: {e}",
                config.data_dir.display()
            )
        })?);
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
        let addr = listener.local_addr()?;
        Ok(Server {
            addr,
            store,
            node: Arc::new(Node::new(substrate)),
            listener,
            config,
        })
    }

    /// Serves until `shutdown` turns true, then drains in-flight requests.
    pub async fn run_until_stopped(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let store: Arc<dyn Store> = self.store.clone();
        let view: Arc<dyn vpcep_api::NodeInfo> = Arc::new(NodeView(self.node.clone()));
        let app = vpcep_api::App::new(
            store.clone(),
            Some(view),
            self.config.region.clone(),
            self.config.clock_skew_secs,
        );
        let ctl = tokio::spawn(controller::run(
            store,
            self.node.clone(),
            self.store.subscribe(),
            shutdown.clone(),
        ));
        let mut stop = shutdown.clone();
        axum::serve(self.listener, vpcep_api::router(app))
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await?;
        let _ = ctl.await;
        // Listeners and sessions end here; namespaces and hosts stay, and the next start
        // rebuilds forwarding from the snapshot.
        self.node.gateway().stop_all().await;
        self.store.close().await;
        Ok(())
    }
}
