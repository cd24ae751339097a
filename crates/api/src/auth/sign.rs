//! SDK-HMAC-SHA256, the request signature of the Huawei Cloud SDKs: canonical request,
//! string to sign and signature, exactly as the SDK's `Signer` builds them. Pure: the
//! same code verifies on the server and signs in the CLI and tests.

use hmac::{Hmac, Mac};
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use sha2::{Digest, Sha256};

pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// RFC 3986 unreserved characters stay; everything else is `%XX`.
const ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encode(s: &str) -> String {
    utf8_percent_encode(s, ENCODE).to_string()
}

fn decode(s: &str) -> String {
    percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// The parts of an `Authorization: SDK-HMAC-SHA256 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    pub access_key: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

impl Authorization {
    /// Parses `SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex`, tolerant of
    /// whitespace after the commas.
    pub fn parse(raw: &str) -> Option<Authorization> {
        let rest = raw.strip_prefix(ALGORITHM)?;
        if !rest.starts_with(char::is_whitespace) {
            return None;
        }
        let (mut ak, mut sh, mut sig) = (None, None, None);
        for part in rest.trim().split(',') {
            let (k, v) = part.trim().split_once('=')?;
            match k {
                "Access" => ak = Some(v),
                "SignedHeaders" => sh = Some(v),
                "Signature" => sig = Some(v),
                _ => return None,
            }
        }
        let (ak, sh, sig) = (ak?, sh?, sig?);
        let hex_ok = sig.len() == 64 && sig.bytes().all(|b| b.is_ascii_hexdigit());
        if ak.is_empty() || sh.is_empty() || !hex_ok {
            return None;
        }
        Some(Authorization {
            access_key: ak.to_owned(),
            signed_headers: sh.split(';').map(str::to_owned).collect(),
            signature: sig.to_ascii_lowercase(),
        })
    }

    pub fn header_value(&self) -> String {
        format!(
            "{ALGORITHM} Access={}, SignedHeaders={}, Signature={}",
            self.access_key,
            self.signed_headers.join(";"),
            self.signature
        )
    }
}

/// Path → decoded, split on `/`, each segment re-encoded, with a trailing `/`.
pub fn canonical_uri(raw_path: &str) -> String {
    let decoded = decode(raw_path);
    let mut out = decoded.split('/').map(encode).collect::<Vec<_>>().join("/");
    if !out.ends_with('/') {
        out.push('/');
    }
    out
}

/// Raw query → pairs decoded (a `+` stays a `+`), sorted by key then value, re-encoded.
pub fn canonical_query(raw_query: &str) -> String {
    let mut pairs: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The request as the signer sees it. `headers` maps lower-case names to raw values; the
/// caller passes only the headers named in SignedHeaders, in that order.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// The value of `X-Sdk-Content-Sha256`, if the request carries one.
    pub content_sha256: Option<&'a str>,
}

pub fn canonical_request(req: &SignedRequest<'_>) -> String {
    let mut headers = String::new();
    for (name, value) in req.headers {
        headers.push_str(name);
        headers.push(':');
        headers.push_str(value.trim());
        headers.push('\n');
    }
    let signed: Vec<&str> = req.headers.iter().map(|(n, _)| n.as_str()).collect();
    let payload = if req.body.is_empty() {
        EMPTY_SHA256.to_owned()
    } else if let Some(h) = req.content_sha256 {
        h.to_owned()
    } else {
        hex::encode(Sha256::digest(req.body))
    };
    format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        canonical_uri(req.raw_path),
        canonical_query(req.raw_query),
        headers,
        signed.join(";"),
        payload
    )
}

pub fn string_to_sign(sdk_date: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

pub fn signature(secret_key: &str, string_to_sign: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()).expect("any key length");
    mac.update(string_to_sign.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Checks a hex signature in constant time.
pub fn verify(secret_key: &str, string_to_sign: &str, hex_signature: &str) -> bool {
    let Ok(sig) = hex::decode(hex_signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret_key.as_bytes()).expect("any key length");
    mac.update(string_to_sign.as_bytes());
    mac.verify_slice(&sig).is_ok()
}

/// `X-Sdk-Date` for now: `20250101T120000Z`.
pub fn sdk_date_now() -> String {
    let fmt = time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");
    time::OffsetDateTime::now_utc()
        .format(fmt)
        .unwrap_or_default()
}

/// A request a client is about to send.
pub struct Outgoing<'a> {
    pub method: &'a str,
    /// Path with the query string, as it goes on the wire.
    pub path_and_query: &'a str,
    /// `host[:port]` as in the URL.
    pub host: &'a str,
    pub project_id: &'a str,
    pub body: &'a [u8],
    pub sdk_date: &'a str,
}

/// The headers that sign `req` with AK/SK exactly as the official SDK does: content type,
/// project, date and `Authorization` (the HTTP client adds `Host` itself).
pub fn sign_headers(
    req: &Outgoing<'_>,
    access_key: &str,
    secret_key: &str,
) -> Vec<(&'static str, String)> {
    let (raw_path, raw_query) = req
        .path_and_query
        .split_once('?')
        .unwrap_or((req.path_and_query, ""));
    let ct = if req.body.is_empty() {
        "application/json"
    } else {
        "application/json;charset=utf-8"
    };
    let signed: Vec<(String, String)> = [
        ("content-type", ct),
        ("host", req.host),
        ("x-project-id", req.project_id),
        ("x-sdk-date", req.sdk_date),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), v.to_string()))
    .collect();
    let canonical = canonical_request(&SignedRequest {
        method: req.method,
        raw_path,
        raw_query,
        headers: &signed,
        body: req.body,
        content_sha256: None,
    });
    let auth = Authorization {
        access_key: access_key.to_owned(),
        signed_headers: signed.iter().map(|(n, _)| n.clone()).collect(),
        signature: signature(secret_key, &string_to_sign(req.sdk_date, &canonical)),
    };
    vec![
        ("content-type", ct.to_owned()),
        ("x-project-id", req.project_id.to_owned()),
        ("x-sdk-date", req.sdk_date.to_owned()),
        ("authorization", auth.header_value()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const SK: &str = "exampleSecretKey0123456789abcdefEXAMPLE0";
    const PROJECT: &str = "0605767a3300d5762fb7c0186d9d8d5f";

    fn headers(content_type: &str) -> Vec<(String, String)> {
        [
            ("content-type", content_type),
            ("host", "vpcep.cn-north-4.myhuaweicloud.com"),
            ("user-agent", "huaweicloud-usdk-python/3.0"),
            ("x-project-id", PROJECT),
            ("x-sdk-date", "20250101T120000Z"),
        ]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
    }

    /// Vector A of the spec (§1.4): a POST with a JSON body.
    #[test]
    fn spec_vector_a() {
        let body = br#"{"endpoint_service_id": "b8f7a2d4-0c1e-4f8a-9d2b-3c4e5f6a7b8c", "vpc_id": "4189d3c2-8882-4871-a3c2-d380272eed83", "subnet_id": "7f0c6a5e-1b2d-4c3e-8f9a-0b1c2d3e4f5a", "enable_dns": true}"#;
        let h = headers("application/json;charset=utf-8");
        let path = format!("/v1/{PROJECT}/vpc-endpoints");
        let req = SignedRequest {
            method: "POST",
            raw_path: &path,
            raw_query: "",
            headers: &h,
            body,
            content_sha256: None,
        };
        let canonical = canonical_request(&req);
        assert!(
            canonical.ends_with("4fa2fb2bd06a4fda919d92ac845a40cc81bf7cf0aec6e19b0caceb092e91b8f9")
        );
        assert_eq!(
            hex::encode(Sha256::digest(canonical.as_bytes())),
            "a377ae28c9dcb7ae97dcef242183e399e235273cb1328e19c30a912207a83307"
        );
        let sts = string_to_sign("20250101T120000Z", &canonical);
        let sig = signature(SK, &sts);
        assert_eq!(
            sig,
            "81e5d54dd6bb14340468e338457bff171afc97a0641136ad567fe9cbdc2b8d7a"
        );
        assert!(verify(SK, &sts, &sig));
        assert!(!verify("other", &sts, &sig));
    }

    /// Vector B of the spec: a GET whose query needs sorting and encoding.
    #[test]
    fn spec_vector_b() {
        let h = headers("application/json");
        let path = format!("/v1/{PROJECT}/vpc-endpoint-services");
        let req = SignedRequest {
            method: "GET",
            raw_path: &path,
            raw_query: "status=available&limit=20&endpoint_service_name=my%20svc%2F1&offset=0",
            headers: &h,
            body: b"",
            content_sha256: None,
        };
        let canonical = canonical_request(&req);
        assert_eq!(
            hex::encode(Sha256::digest(canonical.as_bytes())),
            "898c155d9d6e39570e614756ab6484feb75fd1a0b857185dffc23585542f047a"
        );
        let sig = signature(SK, &string_to_sign("20250101T120000Z", &canonical));
        assert_eq!(
            sig,
            "bb06215d54b3ce51dd7bb1c79ba21c774db3bfc6ee8892cceb4d2a3e4504c7f1"
        );
    }

    #[test]
    fn canonical_parts() {
        for (raw, want) in [
            ("/", "/"),
            ("/v1", "/v1/"),
            ("/v1/p/x/", "/v1/p/x/"),
            ("/v1/a%20b/c*d", "/v1/a%20b/c%2Ad/"),
            ("/v1/%E5%90%8D", "/v1/%E5%90%8D/"),
        ] {
            assert_eq!(canonical_uri(raw), want, "{raw}");
        }
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("k=a+b"), "k=a%2Bb");
        assert_eq!(canonical_query("k"), "k=");
    }

    #[test]
    fn authorization_header() {
        let sig = "a".repeat(64);
        let raw =
            format!("SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host;x-sdk-date, Signature={sig}");
        let a = Authorization::parse(&raw).unwrap();
        assert_eq!(a.access_key, "AK1");
        assert_eq!(a.signed_headers, vec!["host", "x-sdk-date"]);
        assert_eq!(a.header_value(), raw);
        let tight = format!("SDK-HMAC-SHA256 Access=AK1,SignedHeaders=host,Signature={sig}");
        assert!(Authorization::parse(&tight).is_some());
        for bad in [
            "".to_string(),
            "Bearer x".to_string(),
            format!(
                "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host, Signature=zz{}",
                &sig[2..]
            ),
            format!("SDK-HMAC-SHA256 Access=AK1, Signature={sig}"),
            format!("SDK-HMAC-SHA256Access=AK1, SignedHeaders=host, Signature={sig}"),
        ] {
            assert!(Authorization::parse(&bad).is_none(), "{bad}");
        }
    }
}
