//! The blob cache: read-only files that tasks mount under `/blobs/NAME` (model weights, data
//! sets), fetched once from the coordinator, checked against their sha256 and kept on disk in
//! `<data_dir>/blobs/SHA256` within a space budget.
//!
//! In memory the cache keeps what running (or waiting) tasks hold, plus the most recently used
//! blob; on disk it evicts the least recently used blobs that no task holds when a new one needs
//! the room. A file read from disk is hashed again the first time this process loads it, so a
//! corrupted cache heals itself instead of feeding tasks wrong bytes.

use runegrid_proto::is_sha256;
use runegrid_proto::worker::BlobMount;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Downloads in progress are written to `.tmp-SHA256-RANDOM` files in the cache directory.
const TEMP_PREFIX: &str = ".tmp-";

/// Why a blob is not available.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("invalid blob hash {0:?}: expected 64 lowercase hex digits")]
    InvalidHash(String),
    #[error("this worker takes no blob tasks (its blob space is 0)")]
    Disabled,
    #[error("blob {sha256} has {size} bytes, more than this worker's blob space of {space} bytes")]
    TooLarge {
        sha256: String,
        size: u64,
        space: u64,
    },
    #[error(
        "no room for blob {sha256} ({size} bytes): blobs in use fill {used} of the {space} bytes of blob space"
    )]
    NoSpace {
        sha256: String,
        size: u64,
        used: u64,
        space: u64,
    },
    #[error("blob {sha256} is not on the coordinator")]
    NotFound { sha256: String },
    #[error("blob {sha256}: the coordinator answered {status}: {message}")]
    Http {
        sha256: String,
        status: u16,
        message: String,
    },
    #[error("cannot fetch blob {sha256} from the coordinator: {message}")]
    Request { sha256: String, message: String },
    #[error(
        "blob {sha256} from the coordinator does not have the {expected} bytes announced (got {actual}): rejected"
    )]
    Size {
        sha256: String,
        expected: u64,
        actual: u64,
    },
    #[error("blob {sha256} from the coordinator has sha256 {actual}: rejected")]
    Mismatch { sha256: String, actual: String },
    #[error("blob cache {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> BlobError + '_ {
    move |source| BlobError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// A blob on disk.
struct Entry {
    size: u64,
    /// Logical time of the last use (larger: more recent).
    used: u64,
}

#[derive(Default)]
struct State {
    /// Complete, renamed blob files.
    disk: HashMap<String, Entry>,
    /// Blobs whose bytes this process has hashed (fetched, or read from disk and checked).
    verified: HashSet<String>,
    /// Blobs in memory, alive while some task (or `recent`) holds them.
    loaded: HashMap<String, Weak<[u8]>>,
    /// The most recently used blob, kept in memory even when no task holds it.
    recent: Option<(String, Arc<[u8]>)>,
    /// Bytes promised to downloads in progress.
    reserved: u64,
    clock: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Whether a task holds the blob (the `recent` reference does not count).
    fn in_use(&self, sha256: &str) -> bool {
        let strong = self.loaded.get(sha256).map_or(0, Weak::strong_count);
        let recent = matches!(&self.recent, Some((s, _)) if s == sha256);
        strong > usize::from(recent)
    }

    fn used(&self) -> u64 {
        self.disk.values().map(|e| e.size).sum::<u64>() + self.reserved
    }

    /// Records a use of a blob now in memory.
    fn remember(&mut self, sha256: &str, bytes: &Arc<[u8]>) {
        let now = self.tick();
        if let Some(e) = self.disk.get_mut(sha256) {
            e.used = now;
        }
        self.loaded.retain(|_, w| w.strong_count() > 0);
        self.loaded
            .insert(sha256.to_string(), Arc::downgrade(bytes));
        self.recent = Some((sha256.to_string(), bytes.clone()));
    }

    /// Forgets a blob entirely (its file is gone or going).
    fn forget(&mut self, sha256: &str) {
        self.disk.remove(sha256);
        self.verified.remove(sha256);
        self.loaded.remove(sha256);
        if matches!(&self.recent, Some((s, _)) if s == sha256) {
            self.recent = None;
        }
    }
}

/// Blobs on disk and in memory, fetched from the coordinator when missing.
pub struct BlobCache {
    dir: PathBuf,
    space: u64,
    /// `http://HOST:PORT`, without a trailing slash: the coordinator the worker is connected
    /// to (it changes when the worker moves to another coordinator).
    base: Mutex<String>,
    token: String,
    client: reqwest::Client,
    state: Mutex<State>,
    /// One lock per blob being loaded, so that concurrent `get`s share one fetch.
    loading: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Bytes fetched from the coordinator since the cache opened.
    fetched: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for BlobCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobCache")
            .field("dir", &self.dir)
            .field("space", &self.space)
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

/// Removes a download's temporary file unless it was renamed into place.
struct TempFile {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Space promised to one download; given back when it ends, however it ends.
struct Reservation<'a> {
    cache: &'a BlobCache,
    size: u64,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut st = self.cache.state();
        st.reserved = st.reserved.saturating_sub(self.size);
    }
}

impl BlobCache {
    /// Fetches from the coordinator at `coordinator` from now on.
    pub fn set_coordinator(&self, coordinator: &str) {
        *self.base.lock().unwrap_or_else(|e| e.into_inner()) = http_base(coordinator);
    }

    /// Opens (creating it if needed) the cache in `dir`, holding at most `space` bytes of blobs,
    /// fetched from the coordinator at `coordinator` (its base url, `http://HOST:PORT`) with the
    /// worker's `token`. Leftover temporary files are removed; if the blobs already on disk
    /// exceed `space`, the least recently modified ones are evicted.
    pub fn open(
        dir: impl Into<PathBuf>,
        space: u64,
        coordinator: &str,
        token: &str,
    ) -> Result<BlobCache, BlobError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let mut state = State::default();
        for (sha, size) in scan(&dir)? {
            let used = state.tick();
            state.disk.insert(sha, Entry { size, used });
        }
        let base = http_base(coordinator);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| BlobError::Request {
                sha256: String::new(),
                message: error_chain(&e),
            })?;
        let cache = BlobCache {
            dir,
            space,
            base: Mutex::new(base),
            token: token.to_string(),
            client,
            state: Mutex::new(state),
            loading: Mutex::new(HashMap::new()),
            fetched: std::sync::atomic::AtomicU64::new(0),
        };
        {
            let mut st = cache.state();
            while st.used() > space {
                let Some(victim) = lru_victim(&st) else { break };
                cache.evict(&mut st, &victim)?;
            }
        }
        tracing::info!(
            dir = %cache.dir.display(),
            blobs = cache.state().disk.len(),
            space,
            "blob cache open"
        );
        Ok(cache)
    }

    /// The blob space in bytes (0: this worker takes no blob tasks).
    pub fn space(&self) -> u64 {
        self.space
    }

    /// Bytes fetched from the coordinator (checked and kept) since the cache opened.
    pub fn fetched_bytes(&self) -> u64 {
        self.fetched.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The sha256 of every blob on disk, sorted.
    pub fn held(&self) -> Vec<String> {
        let mut held: Vec<String> = self.state().disk.keys().cloned().collect();
        held.sort();
        held
    }

    /// The blob's bytes: from memory, else from disk (hashed on the first load in this
    /// process; a corrupted file is deleted and fetched again), else fetched from the
    /// coordinator, checked and stored. Concurrent calls for one blob share one fetch.
    pub async fn get(&self, mount: &BlobMount) -> Result<Arc<[u8]>, BlobError> {
        let sha = mount.sha256.as_str();
        if !is_sha256(sha) {
            return Err(BlobError::InvalidHash(mount.sha256.clone()));
        }
        if let Some(bytes) = self.in_memory(sha) {
            return Ok(bytes);
        }
        let lock = self
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(sha.to_string())
            .or_default()
            .clone();
        let guard = lock.lock().await;
        let result = self.load(mount).await;
        drop(guard);
        // The last one through takes the lock out of the map.
        let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = loading.get(sha)
            && Arc::ptr_eq(l, &lock)
            && Arc::strong_count(&lock) <= 2
        {
            loading.remove(sha);
        }
        result
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    fn in_memory(&self, sha256: &str) -> Option<Arc<[u8]>> {
        let mut st = self.state();
        let bytes = st.loaded.get(sha256)?.upgrade()?;
        st.remember(sha256, &bytes);
        Some(bytes)
    }

    /// `get` under the blob's lock.
    async fn load(&self, mount: &BlobMount) -> Result<Arc<[u8]>, BlobError> {
        let sha = mount.sha256.as_str();
        if let Some(bytes) = self.in_memory(sha) {
            return Ok(bytes);
        }
        let (on_disk, verified) = {
            let st = self.state();
            (st.disk.contains_key(sha), st.verified.contains(sha))
        };
        if on_disk {
            let read = if verified {
                self.read(sha).await.map(Some)
            } else {
                self.read_verified(sha).await
            };
            match read {
                Ok(Some(bytes)) => {
                    let bytes: Arc<[u8]> = bytes.into();
                    let mut st = self.state();
                    st.verified.insert(sha.to_string());
                    st.remember(sha, &bytes);
                    return Ok(bytes);
                }
                Ok(None) => {
                    tracing::warn!(blob = %sha, "cached blob is corrupted; deleted, fetching it again");
                    self.state().forget(sha);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(blob = %sha, "cached blob vanished from disk; fetching it again");
                    self.state().forget(sha);
                }
                Err(e) => return Err(io_error(&self.path(sha))(e)),
            }
        }
        self.fetch(mount).await
    }

    /// A blob's file (hashed before, in this process), read off the runtime.
    async fn read(&self, sha256: &str) -> std::io::Result<Vec<u8>> {
        let path = self.path(sha256);
        blocking(move || std::fs::read(&path)).await
    }

    /// A blob's file, read and hashed off the runtime; deleted (`None`) when it does not
    /// match its name.
    async fn read_verified(&self, sha256: &str) -> std::io::Result<Option<Vec<u8>>> {
        let path = self.path(sha256);
        let expected = sha256.to_string();
        blocking(move || {
            let bytes = std::fs::read(&path)?;
            if hex::encode(Sha256::digest(&bytes)) != expected {
                let _ = std::fs::remove_file(&path);
                return Ok(None);
            }
            Ok(Some(bytes))
        })
        .await
    }

    /// Makes room for `size` more bytes, evicting unused blobs, least recently used first.
    fn reserve(&self, sha256: &str, size: u64) -> Result<Reservation<'_>, BlobError> {
        if self.space == 0 {
            return Err(BlobError::Disabled);
        }
        if size > self.space {
            return Err(BlobError::TooLarge {
                sha256: sha256.to_string(),
                size,
                space: self.space,
            });
        }
        let mut st = self.state();
        while st.used() + size > self.space {
            let Some(victim) = lru_victim(&st) else {
                return Err(BlobError::NoSpace {
                    sha256: sha256.to_string(),
                    size,
                    used: st.used(),
                    space: self.space,
                });
            };
            self.evict(&mut st, &victim)?;
        }
        st.reserved += size;
        Ok(Reservation { cache: self, size })
    }

    fn evict(&self, st: &mut State, sha256: &str) -> Result<(), BlobError> {
        let path = self.path(sha256);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error(&path)(e)),
        }
        let size = st.disk.get(sha256).map_or(0, |e| e.size);
        st.forget(sha256);
        tracing::info!(blob = %sha256, size, "evicted blob from the cache");
        Ok(())
    }

    /// Fetches the blob from the coordinator into a temporary file while hashing it; renames
    /// it into place only when its size and hash are right.
    async fn fetch(&self, mount: &BlobMount) -> Result<Arc<[u8]>, BlobError> {
        let sha = mount.sha256.as_str();
        let size = mount.size;
        let reservation = self.reserve(sha, size)?;
        tracing::info!(blob = %sha, size, "fetching blob from the coordinator");
        let started = std::time::Instant::now();
        let resp = self.request(sha, size).await?;
        let (tmp, bytes) = self.download(resp, sha, size).await?;
        let bytes = self.install(sha, size, tmp, bytes).await?;
        drop(reservation);
        self.fetched
            .fetch_add(size, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(
            blob = %sha,
            size,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "fetched blob"
        );
        Ok(bytes)
    }

    /// `GET /v1/blobs/{sha256}`: a successful answer that does not announce another size.
    async fn request(&self, sha: &str, size: u64) -> Result<reqwest::Response, BlobError> {
        let url = format!(
            "{}/v1/blobs/{sha}",
            self.base.lock().unwrap_or_else(|e| e.into_inner())
        );
        let resp = self
            .client
            .get(&url)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(request_error(sha))?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(BlobError::NotFound {
                sha256: sha.to_string(),
            });
        }
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(BlobError::Http {
                sha256: sha.to_string(),
                status: status.as_u16(),
                message: error_message(&body),
            });
        }
        if let Some(len) = resp.content_length()
            && len != size
        {
            return Err(BlobError::Size {
                sha256: sha.to_string(),
                expected: size,
                actual: len,
            });
        }
        Ok(resp)
    }

    /// Streams the answer's body into a temporary file (synced) and memory while hashing it;
    /// fails unless it has `size` bytes and the hash `sha`.
    async fn download(
        &self,
        mut resp: reqwest::Response,
        sha: &str,
        size: u64,
    ) -> Result<(TempFile, Vec<u8>), BlobError> {
        let tmp = TempFile {
            path: self
                .dir
                .join(format!("{TEMP_PREFIX}{sha}-{:016x}", rand::random::<u64>())),
            keep: false,
        };
        let mut file = tokio::fs::File::create(&tmp.path)
            .await
            .map_err(io_error(&tmp.path))?;
        let mut hasher = Sha256::new();
        let mut bytes = Vec::with_capacity(usize::try_from(size.min(1 << 30)).unwrap_or(0));
        let wrong_size = |actual: u64| BlobError::Size {
            sha256: sha.to_string(),
            expected: size,
            actual,
        };
        while let Some(chunk) = resp.chunk().await.map_err(request_error(sha))? {
            let got = bytes.len() as u64 + chunk.len() as u64;
            if got > size {
                return Err(wrong_size(got));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io_error(&tmp.path))?;
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() as u64 != size {
            return Err(wrong_size(bytes.len() as u64));
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha {
            tracing::warn!(blob = %sha, %actual, "blob from the coordinator does not match its hash; rejected");
            return Err(BlobError::Mismatch {
                sha256: sha.to_string(),
                actual,
            });
        }
        file.sync_all().await.map_err(io_error(&tmp.path))?;
        Ok((tmp, bytes))
    }

    /// Renames a checked download into place and records the blob as on disk, verified and
    /// just used.
    async fn install(
        &self,
        sha: &str,
        size: u64,
        mut tmp: TempFile,
        bytes: Vec<u8>,
    ) -> Result<Arc<[u8]>, BlobError> {
        let path = self.path(sha);
        tokio::fs::rename(&tmp.path, &path)
            .await
            .map_err(io_error(&path))?;
        tmp.keep = true;
        let bytes: Arc<[u8]> = bytes.into();
        let mut st = self.state();
        let used = st.tick();
        st.disk.insert(sha.to_string(), Entry { size, used });
        st.verified.insert(sha.to_string());
        st.remember(sha, &bytes);
        Ok(bytes)
    }
}

/// Runs file work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

fn request_error(sha: &str) -> impl Fn(reqwest::Error) -> BlobError + '_ {
    move |e| BlobError::Request {
        sha256: sha.to_string(),
        message: error_chain(&e),
    }
}

/// The blobs in the cache directory, least recently modified first, as (sha256, size); leftover
/// downloads are removed, other files ignored.
fn scan(dir: &Path) -> Result<Vec<(String, u64)>, BlobError> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with(TEMP_PREFIX) {
            let _ = std::fs::remove_file(entry.path());
            continue;
        }
        if !is_sha256(name) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
        found.push((modified, name.to_string(), meta.len()));
    }
    found.sort();
    Ok(found
        .into_iter()
        .map(|(_, sha, size)| (sha, size))
        .collect())
}

/// The coordinator's HTTP base URL (`http://HOST:PORT`, no trailing slash), also from a
/// `ws://` one.
fn http_base(coordinator: &str) -> String {
    let base = coordinator.trim_end_matches('/');
    if let Some(rest) = base.strip_prefix("ws://") {
        format!("http://{rest}")
    } else if let Some(rest) = base.strip_prefix("wss://") {
        format!("https://{rest}")
    } else {
        base.to_string()
    }
}

/// The least recently used blob on disk that no task holds.
fn lru_victim(st: &State) -> Option<String> {
    st.disk
        .iter()
        .filter(|(sha, _)| !st.in_use(sha))
        .min_by_key(|(_, e)| e.used)
        .map(|(sha, _)| sha.clone())
}

/// An error with its causes (reqwest's own message leaves them out).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The message of a coordinator error body (`{"error":{"code","message"}}`), else the body.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| {
            let body = body.trim();
            let mut end = body.len().min(200);
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            body[..end].to_string()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::{Path as UrlPath, State};
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use tokio::sync::{Semaphore, watch};

    const TOKEN: &str = "secret";

    /// A stand-in for the coordinator's `GET /v1/blobs/{sha256}`.
    #[derive(Clone)]
    struct Server {
        /// What the server answers for each hash (possibly the wrong bytes).
        blobs: Arc<Mutex<HashMap<String, Vec<u8>>>>,
        /// Requests received so far.
        requests: Arc<watch::Sender<usize>>,
        /// Each answer takes a permit (tests that hold answers back start with none).
        gate: Arc<Semaphore>,
    }

    async fn serve_blob(
        State(s): State<Server>,
        UrlPath(sha): UrlPath<String>,
        headers: HeaderMap,
    ) -> Response {
        s.requests.send_modify(|n| *n += 1);
        let auth = headers.get("authorization").and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {TOKEN}")) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        let _permit = s.gate.acquire().await.expect("gate open");
        let bytes = s.blobs.lock().unwrap().get(&sha).cloned();
        match bytes {
            Some(b) => b.into_response(),
            None => (
                StatusCode::NOT_FOUND,
                axum::Json(serde_json::json!({
                    "error": {"code": "not_found", "message": "no such blob"}
                })),
            )
                .into_response(),
        }
    }

    struct Fixture {
        dir: tempfile::TempDir,
        base: String,
        server: Server,
    }

    impl Fixture {
        async fn start(permits: usize) -> Fixture {
            let server = Server {
                blobs: Arc::default(),
                requests: Arc::new(watch::channel(0).0),
                gate: Arc::new(Semaphore::new(permits)),
            };
            let app = axum::Router::new()
                .route("/v1/blobs/{sha}", axum::routing::get(serve_blob))
                .with_state(server.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            Fixture {
                dir: tempfile::tempdir().unwrap(),
                base,
                server,
            }
        }

        /// A blob the server holds.
        fn add(&self, seed: u8, len: usize) -> (BlobMount, Vec<u8>) {
            let bytes: Vec<u8> = (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect();
            let m = mount(&bytes);
            self.server
                .blobs
                .lock()
                .unwrap()
                .insert(m.sha256.clone(), bytes.clone());
            (m, bytes)
        }

        fn cache(&self, space: u64) -> BlobCache {
            BlobCache::open(self.blob_dir(), space, &self.base, TOKEN).unwrap()
        }

        fn blob_dir(&self) -> PathBuf {
            self.dir.path().join("blobs")
        }

        fn requests(&self) -> usize {
            *self.server.requests.borrow()
        }

        fn files(&self) -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(self.blob_dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
    }

    fn mount(bytes: &[u8]) -> BlobMount {
        BlobMount {
            name: "data.bin".into(),
            sha256: hex::encode(Sha256::digest(bytes)),
            size: bytes.len() as u64,
        }
    }

    #[tokio::test]
    async fn fetches_checks_stores_and_reuses() {
        let f = Fixture::start(Semaphore::MAX_PERMITS).await;
        // Big enough to arrive in several chunks.
        let (m, bytes) = f.add(1, 3 << 20);
        let cache = f.cache(1 << 30);
        assert!(cache.held().is_empty());
        let got = cache.get(&m).await.unwrap();
        assert_eq!(&got[..], &bytes[..]);
        assert_eq!(f.requests(), 1);
        assert_eq!(cache.held(), vec![m.sha256.clone()]);
        assert_eq!(f.files(), vec![m.sha256.clone()]);
        assert_eq!(std::fs::read(f.blob_dir().join(&m.sha256)).unwrap(), bytes);
        // From memory.
        drop(got);
        let again = cache.get(&m).await.unwrap();
        assert_eq!(&again[..], &bytes[..]);
        assert_eq!(f.requests(), 1);
        drop((again, cache));
        // A new process finds it on disk.
        let cache = f.cache(1 << 30);
        assert_eq!(cache.held(), vec![m.sha256.clone()]);
        let from_disk = cache.get(&m).await.unwrap();
        assert_eq!(&from_disk[..], &bytes[..]);
        assert_eq!(f.requests(), 1);
    }

    #[tokio::test]
    async fn wrong_bytes_are_rejected_and_never_cached() {
        let f = Fixture::start(Semaphore::MAX_PERMITS).await;
        let (m, _) = f.add(1, 1000);
        let (_, other) = f.add(2, 1000);
        f.server
            .blobs
            .lock()
            .unwrap()
            .insert(m.sha256.clone(), other.clone());
        let cache = f.cache(1 << 20);
        let err = cache.get(&m).await.unwrap_err();
        assert!(matches!(err, BlobError::Mismatch { .. }), "{err:?}");
        let actual = hex::encode(Sha256::digest(&other));
        assert_eq!(
            err.to_string(),
            format!(
                "blob {} from the coordinator has sha256 {actual}: rejected",
                m.sha256
            )
        );
        assert!(cache.held().is_empty());
        assert!(f.files().is_empty(), "{:?}", f.files());
        // Not cached: asking again asks the coordinator again.
        assert!(cache.get(&m).await.is_err());
        assert_eq!(f.requests(), 2);
        // A size other than announced is rejected too.
        let short = BlobMount {
            size: m.size + 1,
            ..m.clone()
        };
        let err = cache.get(&short).await.unwrap_err();
        assert!(matches!(err, BlobError::Size { .. }), "{err:?}");
        assert!(f.files().is_empty(), "{:?}", f.files());
    }

    #[tokio::test]
    async fn a_corrupted_file_is_fetched_again() {
        let f = Fixture::start(Semaphore::MAX_PERMITS).await;
        let (m, bytes) = f.add(1, 5000);
        let cache = f.cache(1 << 20);
        cache.get(&m).await.unwrap();
        drop(cache);
        let path = f.blob_dir().join(&m.sha256);
        let mut bad = bytes.clone();
        bad[100] ^= 1;
        std::fs::write(&path, &bad).unwrap();
        let cache = f.cache(1 << 20);
        let got = cache.get(&m).await.unwrap();
        assert_eq!(&got[..], &bytes[..]);
        assert_eq!(f.requests(), 2);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        assert_eq!(cache.held(), vec![m.sha256.clone()]);
    }

    #[tokio::test]
    async fn concurrent_gets_share_one_fetch() {
        let f = Fixture::start(0).await;
        let (m, bytes) = f.add(1, 100_000);
        let cache = f.cache(1 << 20);
        let mut seen = f.server.requests.subscribe();
        let release = async {
            seen.wait_for(|n| *n >= 1).await.unwrap();
            f.server.gate.add_permits(100);
        };
        // `join!` polls both gets before the server may answer the first request.
        let (a, b, ()) = tokio::join!(cache.get(&m), cache.get(&m), release);
        assert_eq!(&a.unwrap()[..], &bytes[..]);
        assert_eq!(&b.unwrap()[..], &bytes[..]);
        assert_eq!(f.requests(), 1);
        assert!(cache.loading.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn evicts_least_recently_used_blobs_no_task_holds() {
        let f = Fixture::start(Semaphore::MAX_PERMITS).await;
        let (a, _) = f.add(1, 100);
        let (b, _) = f.add(2, 100);
        let (c, _) = f.add(3, 100);
        let (d, _) = f.add(4, 100);
        let (big, _) = f.add(5, 300);
        let cache = f.cache(250);
        let held = |v: &[&BlobMount]| {
            let mut v: Vec<String> = v.iter().map(|m| m.sha256.clone()).collect();
            v.sort();
            v
        };
        let a_bytes = cache.get(&a).await.unwrap(); // a task holds a
        drop(cache.get(&b).await.unwrap());
        cache.get(&c).await.unwrap();
        // b is older than c but a is in use.
        assert_eq!(cache.held(), held(&[&a, &c]));
        drop(a_bytes);
        // Now a is the least recently used.
        let d_bytes = cache.get(&d).await.unwrap();
        assert_eq!(cache.held(), held(&[&c, &d]));
        let c_bytes = cache.get(&c).await.unwrap();
        // c and d are both in use: no room for a.
        let err = cache.get(&a).await.unwrap_err();
        assert!(matches!(err, BlobError::NoSpace { .. }), "{err:?}");
        assert_eq!(cache.held(), held(&[&c, &d]));
        drop((c_bytes, d_bytes));
        let err = cache.get(&big).await.unwrap_err();
        assert!(matches!(err, BlobError::TooLarge { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!(
                "blob {} has 300 bytes, more than this worker's blob space of 250 bytes",
                big.sha256
            )
        );
        let mut files = f.files();
        files.retain(|n| !n.starts_with(TEMP_PREFIX));
        assert_eq!(files, held(&[&c, &d]));
        // A worker without blob space takes no blob.
        let none = BlobCache::open(f.dir.path().join("none"), 0, &f.base, TOKEN).unwrap();
        assert!(matches!(none.get(&a).await, Err(BlobError::Disabled)));
    }

    #[tokio::test]
    async fn an_unknown_blob_is_a_clear_error() {
        let f = Fixture::start(Semaphore::MAX_PERMITS).await;
        let cache = f.cache(1 << 20);
        let m = mount(b"never uploaded");
        let err = cache.get(&m).await.unwrap_err();
        assert!(matches!(err, BlobError::NotFound { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            format!("blob {} is not on the coordinator", m.sha256)
        );
        assert!(cache.held().is_empty());
        assert!(f.files().is_empty());
        // Other refusals carry the coordinator's message.
        let stranger = BlobCache::open(f.dir.path().join("x"), 1 << 20, &f.base, "nope").unwrap();
        let err = stranger.get(&m).await.unwrap_err();
        assert!(
            matches!(err, BlobError::Http { status: 401, .. }),
            "{err:?}"
        );
        let bad = BlobMount {
            sha256: "../etc/passwd".into(),
            ..m
        };
        assert!(matches!(
            cache.get(&bad).await,
            Err(BlobError::InvalidHash(_))
        ));
    }

    #[test]
    fn open_ignores_garbage_and_removes_leftover_downloads() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".tmp-abc-0123"), b"half").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        std::fs::create_dir(dir.path().join("a".repeat(64))).unwrap();
        let blob = b"hello";
        let sha = hex::encode(Sha256::digest(blob));
        std::fs::write(dir.path().join(&sha), blob).unwrap();
        let cache = BlobCache::open(dir.path(), 1000, "http://127.0.0.1:1/", TOKEN).unwrap();
        assert_eq!(cache.held(), vec![sha]);
        assert!(!dir.path().join(".tmp-abc-0123").exists());
        assert!(dir.path().join("notes.txt").exists());
        assert_eq!(*cache.base.lock().unwrap(), "http://127.0.0.1:1");
        cache.set_coordinator("ws://127.0.0.2:2/");
        assert_eq!(*cache.base.lock().unwrap(), "http://127.0.0.2:2");
    }
}
