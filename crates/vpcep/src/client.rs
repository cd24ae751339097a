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

    /// Calls `method path` (`{p}` stands for the project) and returns the JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let path = path.replace("{p}", &self.project);
        let (raw_path, raw_query) = path.split_once('?').unwrap_or((&path, ""));
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
        let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
        let date = time::OffsetDateTime::now_utc().format(fmt)?;
        let ct = if body.is_some() {
            "application/json;charset=utf-8"
        } else {
            "application/json"
        };
        let headers: Vec<(String, String)> = [
            ("content-type", ct),
            ("host", host.as_str()),
            ("x-project-id", self.project.as_str()),
            ("x-sdk-date", date.as_str()),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let canonical = sign::canonical_request(&sign::SignedRequest {
            method,
            raw_path,
            raw_query,
            headers: &headers,
            body: &bytes,
            content_sha256: None,
        });
        let auth = sign::Authorization {
            access_key: self.ak.clone(),
            signed_headers: headers.iter().map(|(n, _)| n.clone()).collect(),
            signature: sign::signature(&self.sk, &sign::string_to_sign(&date, &canonical)),
        };
        let resp = self
            .http
            .request(method.parse()?, format!("{}{}", self.base, path))
            .header("content-type", ct)
            .header("x-project-id", &self.project)
            .header("x-sdk-date", &date)
            .header("authorization", auth.header_value())
            .body(bytes)
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.base))?;
        let status = resp.status();
        let text = resp.text().await?;
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let code = v["error_code"].as_str().unwrap_or("");
            let msg = v["error_msg"]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            bail!("{} {code}: {msg}", status.as_u16());
        }
        Ok(v)
    }
}
