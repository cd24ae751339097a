//! A client of the vpcep API for the CLI: requests signed with the same SDK-HMAC-SHA256
//! code the server verifies, errors turned into readable messages.

use anyhow::{Context, Result};
use serde_json::Value;
use vpcep_api::auth::sign;

/// Where the API is and who is calling: flags, then `VPCEP_*` environment variables,
/// then the profile `vpcep configure` wrote.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    #[arg(long, env = "VPCEP_ENDPOINT", global = true)]
    pub endpoint: Option<String>,
    #[arg(long, env = "VPCEP_ACCESS_KEY", hide_env_values = true, global = true)]
    pub access_key: Option<String>,
    #[arg(long, env = "VPCEP_SECRET_KEY", hide_env_values = true, global = true)]
    pub secret_key: Option<String>,
    #[arg(long, env = "VPCEP_PROJECT_ID", global = true)]
    pub project_id: Option<String>,
    /// Trust only this CA (PEM) for an https endpoint, instead of the built-in roots
    /// (default: the profile's, from `vpcep configure --ca-file`).
    #[arg(long, env = "VPCEP_CA_FILE", global = true)]
    pub ca_file: Option<std::path::PathBuf>,
}

/// An HTTP client that, over HTTPS, trusts only the CA certificates in `ca_file` (PEM)
/// when given, else the built-in web roots (Mozilla's, via webpki-roots).
pub fn http_client(ca_file: Option<&std::path::Path>) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder();
    if let Some(path) = ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("--ca-file {}: cannot read it", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca-file {}: not a PEM certificate", path.display()))?;
        if certs.is_empty() {
            anyhow::bail!("--ca-file {}: no PEM certificate in it", path.display());
        }
        b = b.tls_built_in_root_certs(false);
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    b.build().context("cannot set up the HTTP client")
}

/// The API refused a request (it answered with an error).
#[derive(Debug)]
pub struct ApiFailure {
    pub status: u16,
    pub code: String,
    pub msg: String,
}

impl std::fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.code, self.msg)
    }
}

impl std::error::Error for ApiFailure {}

/// What `vpcep configure` saves (mode 0600): `$VPCEP_CONFIG`, else
/// `$HOME/.config/vpcep/profile.json`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Profile {
    pub endpoint: Option<String>,
    pub access_key: Option<String>,
    pub secret_key: Option<String>,
    pub project_id: Option<String>,
    pub region: Option<String>,
    /// The CA (PEM) an https endpoint's certificate must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
}

impl Profile {
    pub fn path() -> Option<std::path::PathBuf> {
        if let Some(p) = std::env::var_os("VPCEP_CONFIG") {
            return Some(p.into());
        }
        std::env::var_os("HOME")
            .map(|h| std::path::Path::new(&h).join(".config/vpcep/profile.json"))
    }

    pub fn load() -> Option<Profile> {
        let raw = std::fs::read(Self::path()?).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    /// Writes the profile readable by its owner only.
    pub fn save(&self) -> Result<std::path::PathBuf> {
        use std::io::Write;
        let path =
            Self::path().context("no HOME and no VPCEP_CONFIG: nowhere to save the profile")?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        #[cfg(unix)]
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        Ok(path)
    }
}

pub struct ApiClient {
    base: String,
    ak: String,
    sk: String,
    pub project: String,
    http: reqwest::Client,
    /// What the configuration lacks, said at the first request: a command's own usage
    /// mistakes (exit 2) are found before it.
    missing: Option<String>,
}

impl ApiClient {
    pub fn with_keys(
        base: &str,
        access_key: &str,
        secret_key: &str,
        project_id: &str,
    ) -> ApiClient {
        ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            ak: access_key.to_owned(),
            sk: secret_key.to_owned(),
            project: project_id.to_owned(),
            http: reqwest::Client::new(),
            missing: None,
        }
    }

    pub fn new(a: &ClientArgs) -> Result<ApiClient> {
        let profile = Profile::load().unwrap_or_default();
        let mut missing = None;
        let mut pick = |flag: &Option<String>, saved: &Option<String>, name: &str| {
            let v = flag
                .clone()
                .or_else(|| saved.clone())
                .filter(|s| !s.is_empty());
            if v.is_none() && missing.is_none() {
                missing = Some(format!(
                    "set {name}, pass the flag, or run `vpcep configure`"
                ));
            }
            v.unwrap_or_default()
        };
        let endpoint = a
            .endpoint
            .clone()
            .or(profile.endpoint.clone())
            .unwrap_or_else(|| "http://127.0.0.1:9876".into());
        let (ak, sk, project) = (
            pick(&a.access_key, &profile.access_key, "VPCEP_ACCESS_KEY"),
            pick(&a.secret_key, &profile.secret_key, "VPCEP_SECRET_KEY"),
            pick(&a.project_id, &profile.project_id, "VPCEP_PROJECT_ID"),
        );
        let ca_file = a
            .ca_file
            .clone()
            .or_else(|| profile.ca_file.clone().map(Into::into));
        Ok(ApiClient {
            missing,
            http: http_client(ca_file.as_deref())?,
            ..ApiClient::with_keys(&endpoint, &ak, &sk, &project)
        })
    }

    /// Sends `method path` (`{p}` stands for the project): the status and the JSON body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
        if let Some(m) = &self.missing {
            anyhow::bail!("{m}");
        }
        let path = path.replace("{p}", &self.project);
        let bytes = body
            .map(serde_json::to_vec)
            .transpose()?
            .unwrap_or_default();
        let host = self
            .base
            .split("://")
            .nth(1)
            .unwrap_or(&self.base)
            .split('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let date = sign::sdk_date_now();
        let out = sign::Outgoing {
            method,
            path_and_query: &path,
            host: &host,
            project_id: &self.project,
            body: &bytes,
            sdk_date: &date,
        };
        let mut req = self
            .http
            .request(method.parse()?, format!("{}{}", self.base, path));
        for (name, value) in sign::sign_headers(&out, &self.ak, &self.sk) {
            req = req.header(name, value);
        }
        let resp = req
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Ok((status, v))
    }

    /// Calls `method path` and returns the JSON body; an API error becomes a readable error.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let (status, v) = self.send(method, path, body).await?;
        if status >= 300 {
            let code = v["error_code"].as_str().unwrap_or("").to_owned();
            let msg = v["error_msg"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            return Err(ApiFailure { status, code, msg }.into());
        }
        Ok(v)
    }
}
