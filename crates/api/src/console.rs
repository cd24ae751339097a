//! The web console: static files from `console/` at the repository root, compiled into
//! the binary and served at `/console/`. The pages talk to the same public API as the
//! SDK, with the `X-Auth-Token` of a password login; nothing here needs credentials.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;
use crate::App;

macro_rules! asset {
    ($name:literal, $mime:literal) => {
        (
            $name,
            $mime,
            include_str!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../console/",
                $name
            )),
        )
    };
}

/// Every file of the console: name, content type, contents.
const FILES: &[(&str, &str, &str)] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", "text/javascript; charset=utf-8"),
    asset!("api.js", "text/javascript; charset=utf-8"),
    asset!("i18n.js", "text/javascript; charset=utf-8"),
    asset!("ui.js", "text/javascript; charset=utf-8"),
    asset!("endpoints.js", "text/javascript; charset=utf-8"),
    asset!("services.js", "text/javascript; charset=utf-8"),
    asset!("quotas.js", "text/javascript; charset=utf-8"),
    asset!("openapi.js", "text/javascript; charset=utf-8"),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The pages load only their own files and call only this origin.
const CSP: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

pub(crate) fn router() -> Router<App> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(|| async { file("index.html") }))
        .route(
            "/console/{file}",
            get(|Path(name): Path<String>| async move { file(&name) }),
        )
}

fn file(name: &str) -> Response {
    let Some(&(_, mime, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "APIGW.0101",
            format!("the console has no file {name:?}"),
        )
        .into_response();
    };
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::FILES;

    #[test]
    fn every_file_is_listed_once_and_index_links_only_listed_files() {
        let mut names: Vec<_> = FILES.iter().map(|(n, _, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), FILES.len());
        // Every module an ES import names must be served, or the console breaks at load.
        for (name, _, body) in FILES {
            for part in body.split("from './").skip(1) {
                let target = part.split('\'').next().unwrap_or_default();
                assert!(
                    names.contains(&target),
                    "{name} imports {target}, which is not in FILES"
                );
            }
        }
    }
}
