//! A client of the vpcep API for the CLI: requests signed with the same SDK-HMAC-SHA256
//! code the server verifies, errors turned into readable messages.

use anyhow::{bail, Context, Result};
use serde_json::Value;
use vpcep_api::auth::sign;

/// Where the API is and who is calling. Flags override `VPCEP_*` environment variables.
#[derive(clap::Args, Clone, Debug)]
pub struct ClientArgs {
    #[arg(long, env = "VPCEP_ENDPOINT", default_value = "http://127.0.0.1:9876")]
    pub endpoint: String,
    #[arg(long, env = "VPCEP_ACCESS_KEY", hide_env_values = true)]
    pub access_key: Option<String>,
    #[arg(long, env = "VPCEP_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,
    #[arg(long, env = "VPCEP_PROJECT_ID")]
    pub project_id: Option<String>,
}

pub struct ApiClient {
    base: String,
    ak: String,
    sk: String,
    pub project: String,
    http: reqwest::Client,
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
        }
    }

    pub fn new(a: &ClientArgs) -> Result<ApiClient> {
        let need = |v: &Option<String>, name: &str| {
            v.clone()
                .filter(|s| !s.is_empty())
                .with_context(|| format!("set {name} (or pass the flag)"))
        };
        Ok(ApiClient {
            base: a.endpoint.trim_end_matches('/').to_owned(),
            ak: need(&a.access_key, "VPCEP_ACCESS_KEY")?,
            sk: need(&a.secret_key, "VPCEP_SECRET_KEY")?,
            project: need(&a.project_id, "VPCEP_PROJECT_ID")?,
            http: reqwest::Client::new(),
        })
    }

    /// Sends `method path` (`{p}` stands for the project): the status and the JSON body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value)> {
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
            let code = v["error_code"].as_str().unwrap_or("");
            let msg = v["error_msg"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            bail!("{status} {code}: {msg}");
        }
        Ok(v)
    }
}
