//! `vpcep serve`: one process with the API, the store and the controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use vpcep_store::{SqliteStore, Store};

use crate::controller::{self, CommittedIsLive};

/// Everything `serve` needs, checked before anything binds.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub region: String,
    pub clock_skew_secs: i64,
}

impl Config {
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

/// A built server: the store is open and the listener bound; nothing runs yet.
pub struct Server {
    pub addr: SocketAddr,
    pub store: Arc<SqliteStore>,
    listener: TcpListener,
    config: Config,
}

impl Server {
    pub async fn build(config: Config) -> anyhow::Result<Server> {
        config.validate().map_err(anyhow::Error::msg)?;
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
            listener,
            config,
        })
    }

    /// Serves until `shutdown` turns true, then drains in-flight requests.
    pub async fn run_until_stopped(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let store: Arc<dyn Store> = self.store.clone();
        let app = vpcep_api::App::new(
            store.clone(),
            self.config.region.clone(),
            self.config.clock_skew_secs,
        );
        let ctl = tokio::spawn(controller::run(
            store,
            Arc::new(CommittedIsLive),
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
        self.store.close().await;
        Ok(())
    }
}
