//! Test harness: an in-process server and a signing HTTP client.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio::sync::watch;
use vpcep::serve::{Config, Server};
use vpcep_api::auth::sign;
use vpcep_store::Store;

pub(crate) struct TestApp {
    pub(crate) addr: SocketAddr,
    /// Where `/metrics` is served (a port of its own).
    pub(crate) metrics_addr: Option<SocketAddr>,
    pub(crate) store: std::sync::Arc<vpcep_store::SqlStore>,
    pub(crate) dir: std::sync::Arc<tempfile::TempDir>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub(crate) config: Config,
    /// `http://ADDR`, or `https://ADDR` when the server speaks TLS.
    pub(crate) base: String,
    /// An HTTP client that trusts the server's certificate (its own CA) if it has one.
    pub(crate) http: reqwest::Client,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Loopback blocks handed to the servers of this test binary, so that tests running in
/// parallel never share 127.N addresses: a block is held by a data directory (a server
/// restarted on it keeps it), and handed out again only once every block has been used
/// and that directory has been gone for [`BLOCK_REST`].
static BLOCKS: std::sync::Mutex<Vec<Option<Holder>>> = std::sync::Mutex::new(Vec::new());

/// Who holds a block: a data directory, and since when it is known to be gone.
struct Holder {
    dir: std::path::PathBuf,
    gone_since: Option<std::time::Instant>,
}

/// How long a block rests after its directory went: the stopped server's gateway
/// threads may still hold its addresses for a moment.
const BLOCK_REST: Duration = Duration::from_secs(3);
const BLOCKS_PER_APP: u8 = 12;
/// The blocks from here up belong to servers the tests run as processes: 228 (`edge`)
/// and 240 (`durability`).
const SERVED_BY_PROCESSES: u8 = 228;

/// A server's configuration on port 0, without a loopback block (netns servers).
pub(crate) fn bare_config(dir: &tempfile::TempDir) -> Config {
    Config::new(dir.path().to_owned(), "127.0.0.1:0".parse().unwrap())
}

pub(crate) fn test_config(dir: &tempfile::TempDir) -> Config {
    let mut config = bare_config(dir);
    let waited = std::time::Instant::now();
    let free = loop {
        let mut blocks = BLOCKS.lock().unwrap_or_else(|p| p.into_inner());
        blocks.resize_with((SERVED_BY_PROCESSES / BLOCKS_PER_APP) as usize, || None);
        for h in blocks.iter_mut().flatten() {
            if h.gone_since.is_none() && !h.dir.exists() {
                h.gone_since = Some(std::time::Instant::now());
            }
        }
        // A block never used first, else the one rested longest.
        let free = blocks.iter().position(Option::is_none).or_else(|| {
            blocks
                .iter()
                .enumerate()
                .filter_map(|(i, h)| Some((i, h.as_ref()?.gone_since?)))
                .filter(|(_, since)| since.elapsed() >= BLOCK_REST)
                .min_by_key(|(_, since)| *since)
                .map(|(i, _)| i)
        });
        if let Some(i) = free {
            blocks[i] = Some(Holder {
                dir: dir.path().to_owned(),
                gone_since: None,
            });
            break i;
        }
        drop(blocks);
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "more servers at once than loopback blocks"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    config.loopback_base = free as u8 * BLOCKS_PER_APP;
    config
}

pub(crate) async fn spawn_app() -> TestApp {
    let dir = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let config = test_config(&dir);
    spawn_with(dir, config).await
}

/// Starts a server with `config` on the data directory `dir` (kept alive by the app).
pub(crate) async fn spawn_with(dir: std::sync::Arc<tempfile::TempDir>, config: Config) -> TestApp {
    let server = Server::build(config.clone()).await.unwrap();
    let (stop, rx) = watch::channel(false);
    let addr = server.addr;
    let metrics_addr = server.metrics_addr;
    let store = server.store.clone();
    let task = Some(tokio::spawn(server.run_until_stopped(rx)));
    let base = format!("{}://{addr}", server_scheme(&config));
    let http = vpcep::client::http_client(config.tls.as_ref().map(|t| t.cert.as_path())).unwrap();
    TestApp {
        base,
        http,
        addr,
        metrics_addr,
        store,
        dir,
        stop,
        task,
        config,
    }
}

fn server_scheme(config: &Config) -> &'static str {
    if config.tls.is_some() {
        "https"
    } else {
        "http"
    }
}

impl TestApp {
    /// The server's Prometheus text, from its metrics listener.
    pub(crate) async fn metrics(&self) -> String {
        let addr = self.metrics_addr.expect("the server serves no metrics");
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops the server and waits until it has let go of everything.
    pub(crate) async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

#[derive(Clone)]
pub(crate) struct Account {
    pub(crate) domain_id: String,
    pub(crate) project_id: String,
    pub(crate) ak: String,
    pub(crate) sk: String,
    pub(crate) password: String,
}

#[derive(Clone)]
pub(crate) struct Client {
    pub(crate) base: String,
    pub(crate) acct: Account,
    http: reqwest::Client,
    /// Overrides for negative tests.
    pub(crate) sdk_date: Option<String>,
    pub(crate) sk_override: Option<String>,
}

pub(crate) struct Resp {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) request_id: Option<String>,
    pub(crate) retry_after: Option<String>,
}

impl Resp {
    /// Asserts an error response and returns its code.
    pub(crate) fn code(&self) -> &str {
        self.body["error_code"].as_str().unwrap_or("")
    }
}

impl TestApp {
    pub(crate) async fn account(&self, name: &str) -> Client {
        let a = Store::create_account(&*self.store, name.into(), "local-1".into())
            .await
            .unwrap();
        let acct = Account {
            domain_id: a.domain_id,
            project_id: a.project_id,
            ak: a.access_key,
            sk: a.secret_key,
            password: a.password,
        };
        Client::with_http(self.base.clone(), acct, self.http.clone())
    }
}

impl Client {
    pub(crate) fn new(base: String, acct: Account) -> Client {
        Client::with_http(base, acct, reqwest::Client::new())
    }

    /// A client whose HTTP client is built as the test needs (e.g. its source address).
    pub(crate) fn with_http(base: String, acct: Account, http: reqwest::Client) -> Client {
        Client {
            base,
            acct,
            http,
            sdk_date: None,
            sk_override: None,
        }
    }

    /// Like [`Client::call`], but `None` when the server cannot be reached.
    pub(crate) async fn try_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Option<Resp> {
        let req = self.request(method, path, body);
        send(req).await.ok()
    }

    /// Sends `method path?query` with a JSON body, signed with SDK-HMAC-SHA256.
    pub(crate) async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        let req = self.request(method, path, body);
        finish(req).await
    }

    pub(crate) fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> reqwest::RequestBuilder {
        let path = path.replace("{p}", &self.acct.project_id);
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let host = self.base.split("://").last().unwrap_or_default().to_owned();
        let date = self.sdk_date.clone().unwrap_or_else(sign::sdk_date_now);
        let sk = self.sk_override.as_deref().unwrap_or(&self.acct.sk);
        let out = sign::Outgoing {
            method,
            path_and_query: &path,
            host: &host,
            project_id: &self.acct.project_id,
            body: &bytes,
            sdk_date: &date,
        };
        let mut req = self.http.request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{}{}", self.base, path),
        );
        for (name, value) in sign::sign_headers(&out, &self.acct.ak, sk) {
            req = req.header(name, value);
        }
        if !bytes.is_empty() {
            req = req.body(bytes);
        }
        req
    }

    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, None).await
    }

    pub(crate) async fn post(&self, path: &str, body: Value) -> Resp {
        self.call("POST", path, Some(&body)).await
    }

    pub(crate) async fn put(&self, path: &str, body: Value) -> Resp {
        self.call("PUT", path, Some(&body)).await
    }

    pub(crate) async fn delete(&self, path: &str) -> Resp {
        self.call("DELETE", path, None).await
    }

    /// Asserts success and returns the body.
    pub(crate) async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let r = self.call(method, path, body.as_ref()).await;
        assert!(r.status < 300, "{method} {path}: {} {}", r.status, r.body);
        r.body
    }

    /// A VPC 192.168.0.0/16 with subnet 192.168.0.0/24 and one VM port: (vpc, subnet, port).
    pub(crate) async fn network(&self) -> (String, String, String) {
        let (vpc_id, sub_id) = self.network_of("192.168.0.0/16", "192.168.0.0/24").await;
        let port = self
            .ok(
                "POST",
                "/v1/{p}/ports",
                Some(json!({"port": {"network_id": sub_id}})),
            )
            .await;
        (
            vpc_id,
            sub_id,
            port["port"]["id"].as_str().unwrap().to_owned(),
        )
    }

    /// A VPC `cidr` with one subnet `subnet`: (vpc, subnet).
    pub(crate) async fn network_of(&self, cidr: &str, subnet: &str) -> (String, String) {
        let vpc = self
            .ok(
                "POST",
                "/v1/{p}/vpcs",
                Some(json!({"vpc": {"name": "v", "cidr": cidr}})),
            )
            .await;
        let vpc_id = vpc["vpc"]["id"].as_str().unwrap().to_owned();
        let sub = self
            .ok(
                "POST",
                "/v1/{p}/subnets",
                Some(json!({"subnet": {"name": "s", "cidr": subnet, "vpc_id": vpc_id}})),
            )
            .await;
        (vpc_id, sub["subnet"]["id"].as_str().unwrap().to_owned())
    }

    /// A service with approval as given, already `available`.
    pub(crate) async fn service(
        &self,
        approval: bool,
        client_port: u16,
    ) -> (String, String, String) {
        let (vpc, sub, port) = self.network().await;
        let svc = self
            .ok(
                "POST",
                "/v1/{p}/vpc-endpoint-services",
                Some(json!({"vpc_id": vpc, "port_id": port, "server_type": "VM", "approval_enabled": approval,
                    "ports": [{"client_port": client_port, "server_port": 80, "protocol": "TCP"}]})),
            )
            .await;
        let id = svc["id"].as_str().unwrap().to_owned();
        self.wait(
            &format!("/v1/{{p}}/vpc-endpoint-services/{id}"),
            "available",
        )
        .await;
        (id, vpc, sub)
    }

    /// Polls `path` until its `status` is `want` (or the path is gone, for `"gone"`).
    pub(crate) async fn wait(&self, path: &str, want: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..200 {
            let r = self.get(path).await;
            if want == "gone" && r.status == 404 {
                return r.body;
            }
            if r.body["status"] == want {
                return r.body;
            }
            last = r.body;
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{path} never reached {want}; last seen: {last}");
    }
}

pub(crate) async fn finish(req: reqwest::RequestBuilder) -> Resp {
    match send(req).await {
        Ok(r) => r,
        Err(e) => panic!("request does not reach the server: {e:?}"),
    }
}

async fn send(req: reqwest::RequestBuilder) -> Result<Resp, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (request_id, retry_after) = (header("x-request-id"), header("retry-after"));
    let text = resp.text().await?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Ok(Resp {
        status,
        body,
        request_id,
        retry_after,
    })
}
