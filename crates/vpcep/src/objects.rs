//! The object-storage stand-in of `vpcep serve --object-store ADDR`: a tiny HTTP server
//! that stores objects as files, so the user guide's OBS scenario can be shown and tested
//! without a cloud. It is not S3 (no signatures, no multipart, no XML); operators point
//! the `obs` gateway service at a real S3-compatible server instead.
//!
//! `PUT /BUCKET/KEY` stores the body, `GET` returns it, `DELETE` removes it, `GET /BUCKET`
//! lists the keys one per line, `GET /` says what this is.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Objects larger than this are refused (it is a stand-in).
const MAX_OBJECT: usize = 64 << 20;

pub struct ObjectStore {
    listener: TcpListener,
    dir: PathBuf,
}

type Reply = (StatusCode, String);

fn bucket_ok(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !b.starts_with('.')
}

/// The file of an object; `None` for names that would leave the bucket.
fn object_path(dir: &Path, bucket: &str, key: &str) -> Option<PathBuf> {
    let clean = !key.is_empty()
        && key.len() <= 1024
        && key
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..");
    (bucket_ok(bucket) && clean).then(|| dir.join(bucket).join(key))
}

fn bad_name() -> Reply {
    (
        StatusCode::BAD_REQUEST,
        "bucket: 3-63 of a-z 0-9 . -; key: non-empty segments, no . or ..\n".into(),
    )
}

async fn banner() -> &'static str {
    "vpcep object-storage stand-in (for demos and tests; not S3)\n"
}

async fn list(State(dir): State<PathBuf>, UrlPath(bucket): UrlPath<String>) -> Reply {
    if !bucket_ok(&bucket) {
        return bad_name();
    }
    let root = dir.join(&bucket);
    let mut keys = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(mut rd) = tokio::fs::read_dir(&d).await else {
            continue;
        };
        while let Ok(Some(e)) = rd.next_entry().await {
            let p = e.path();
            if e.file_type().await.is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(&root) {
                keys.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    if keys.is_empty() && !root.is_dir() {
        return (StatusCode::NOT_FOUND, format!("no bucket {bucket}\n"));
    }
    keys.sort();
    let body: String = keys.iter().map(|k| format!("{k}\n")).collect();
    (StatusCode::OK, body)
}

async fn get_object(
    State(dir): State<PathBuf>,
    UrlPath((bucket, key)): UrlPath<(String, String)>,
) -> Result<Bytes, Reply> {
    let path = object_path(&dir, &bucket, &key).ok_or_else(bad_name)?;
    match tokio::fs::read(&path).await {
        Ok(b) => Ok(Bytes::from(b)),
        Err(_) => Err((StatusCode::NOT_FOUND, format!("no object {bucket}/{key}\n"))),
    }
}

async fn put_object(
    State(dir): State<PathBuf>,
    UrlPath((bucket, key)): UrlPath<(String, String)>,
    body: Bytes,
) -> Reply {
    let Some(path) = object_path(&dir, &bucket, &key) else {
        return bad_name();
    };
    let write = async {
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        // Written aside and renamed, so a reader never sees half an object.
        let tmp = path.with_extension("vpcep-partial");
        tokio::fs::write(&tmp, &body).await?;
        tokio::fs::rename(&tmp, &path).await
    };
    match write.await {
        Ok(()) => (StatusCode::OK, format!("stored {bucket}/{key}\n")),
        Err(e) => (
            StatusCode::INSUFFICIENT_STORAGE,
            format!("cannot store {bucket}/{key}: {e}\n"),
        ),
    }
}

async fn delete_object(
    State(dir): State<PathBuf>,
    UrlPath((bucket, key)): UrlPath<(String, String)>,
) -> Reply {
    let Some(path) = object_path(&dir, &bucket, &key) else {
        return bad_name();
    };
    match tokio::fs::remove_file(&path).await {
        Ok(()) => (StatusCode::NO_CONTENT, String::new()),
        Err(_) => (StatusCode::NOT_FOUND, format!("no object {bucket}/{key}\n")),
    }
}

impl ObjectStore {
    pub async fn bind(addr: SocketAddr, dir: PathBuf) -> anyhow::Result<ObjectStore> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("--object-store {addr}: cannot listen: {e}"))?;
        tokio::fs::create_dir_all(&dir).await?;
        Ok(ObjectStore { listener, dir })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn router(dir: PathBuf) -> Router {
        Router::new()
            .route("/", get(banner))
            .route("/{bucket}", get(list))
            .route("/{bucket}/", get(list))
            .route(
                "/{bucket}/{*key}",
                get(get_object).put(put_object).delete(delete_object),
            )
            .layer(axum::extract::DefaultBodyLimit::max(MAX_OBJECT))
            .with_state(dir)
    }

    pub async fn serve(self, mut shutdown: watch::Receiver<bool>) {
        let app = ObjectStore::router(self.dir);
        let r = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.wait_for(|s| *s).await;
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "object-storage stand-in stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_in_their_bucket() {
        let d = Path::new("/x");
        assert_eq!(
            object_path(d, "photos", "2026/a.jpg"),
            Some(PathBuf::from("/x/photos/2026/a.jpg"))
        );
        assert_eq!(object_path(d, "photos", "../etc/passwd"), None);
        assert_eq!(object_path(d, "photos", "a//b"), None);
        assert_eq!(object_path(d, "..", "a"), None);
        assert_eq!(object_path(d, "Ph", "a"), None);
    }
}
