//! The content-addressed blob store. A blob is named by the BLAKE3 of its uncompressed
//! bytes and kept zstd-compressed under `blobs/<first two hex digits>/<hash>`, in a local
//! directory or an S3-compatible bucket (through `object_store`). Reads verify the hash,
//! so a corrupt or truncated blob is reported as missing, never returned.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use crate::error::{ArtifactError, Result};

/// zstd level for every blob: level 1 is several times faster than the default 3 and
/// loses little on source trees.
const COMPRESSION_LEVEL: i32 = 1;

/// The largest blob a read will decompress. Chunks are at most 4 MiB and small files
/// 1 MiB; a directory manifest of 1,000,000 entries stays well below this.
const MAX_BLOB_BYTES: u64 = 256 << 20;

/// How old an existing blob may be before a `put` that finds it rewrites it anyway, to
/// renew its modification time (see [`BlobStore::with_refresh_after`]).
pub const DEFAULT_REFRESH_AFTER: Duration = Duration::from_secs(3600);

/// A BLAKE3 hash: the name of a blob.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The hash of `bytes`.
    pub fn of(bytes: &[u8]) -> Hash {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    /// Lowercase hex, 64 digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl FromStr for Hash {
    type Err = ArtifactError;

    /// Parses 64 lowercase hex digits; anything else is `VersionNotFound` (a root that
    /// cannot name a version).
    fn from_str(text: &str) -> Result<Hash> {
        let malformed = || ArtifactError::VersionNotFound(text.chars().take(80).collect());
        if text.len() != 64
            || text
                .bytes()
                .any(|b| !matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(malformed());
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| malformed())?;
        Ok(Hash(bytes))
    }
}

/// Where an S3-compatible bucket is and how to sign requests to it.
#[derive(Clone)]
pub struct S3Config {
    /// `https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`, ...
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Allow a plain-HTTP endpoint (local test servers).
    pub allow_http: bool,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// One stored blob, as listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    pub hash: Hash,
    /// Compressed size.
    pub size: u64,
    pub last_modified: SystemTime,
}

/// A blob compressed and named, ready to upload.
#[derive(Debug, Clone)]
pub(crate) struct PreparedBlob {
    pub hash: Hash,
    pub compressed: Bytes,
}

impl PreparedBlob {
    /// Hashes and compresses `bytes` (CPU work: call it off the async threads for
    /// anything large).
    pub fn new(bytes: &[u8]) -> Result<PreparedBlob> {
        let hash = Hash::of(bytes);
        let compressed = zstd::bulk::compress(bytes, COMPRESSION_LEVEL)
            .map_err(|e| ArtifactError::BlobStore(format!("compressing blob {hash}: {e}")))?;
        Ok(PreparedBlob {
            hash,
            compressed: Bytes::from(compressed),
        })
    }
}

/// The blob store: cheap to clone.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// The directory of a local store, for [`BlobStore::sync`].
    local_root: Option<PathBuf>,
    refresh_after: Duration,
}

impl fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobStore")
            .field("store", &self.store.to_string())
            .field("local_root", &self.local_root)
            .finish()
    }
}

fn store_error(what: impl fmt::Display, error: object_store::Error) -> ArtifactError {
    ArtifactError::BlobStore(format!("{what}: {error}"))
}

/// `blobs/ab/abcdef...`
fn location(hash: &Hash) -> ObjectPath {
    let hex = hash.to_hex();
    ObjectPath::from(format!("blobs/{}/{hex}", &hex[..2]))
}

impl BlobStore {
    /// A store in a local directory, created if missing. Writes are not fsynced one by
    /// one: call [`BlobStore::sync`] once a batch (a snapshot) is written.
    pub fn local(dir: impl AsRef<Path>) -> Result<BlobStore> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .map_err(|e| ArtifactError::io("creating the blob directory", dir.display(), e))?;
        let store = LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| store_error(format!("opening `{}`", dir.display()), e))?;
        let root = std::fs::canonicalize(dir)
            .map_err(|e| ArtifactError::io("resolving the blob directory", dir.display(), e))?;
        Ok(BlobStore {
            store: Arc::new(store),
            local_root: Some(root),
            refresh_after: DEFAULT_REFRESH_AFTER,
        })
    }

    /// A store in an S3-compatible bucket (path-style requests, so MinIO and other
    /// self-hosted servers work). TLS uses rustls with ring; if the process has no
    /// default rustls provider yet, ring is installed as the default.
    pub fn s3(config: S3Config) -> Result<BlobStore> {
        // Ignore the error: it means a provider is already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let store = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key_id)
            .with_secret_access_key(&config.secret_access_key)
            .with_allow_http(config.allow_http)
            .with_virtual_hosted_style_request(false)
            .build()
            .map_err(|e| store_error(format!("configuring bucket `{}`", config.bucket), e))?;
        Ok(BlobStore::from_object_store(Arc::new(store)))
    }

    /// A store over any `object_store` backend (in-memory for tests, other clouds).
    /// [`BlobStore::sync`] is a no-op for it.
    pub fn from_object_store(store: Arc<dyn ObjectStore>) -> BlobStore {
        BlobStore {
            store,
            local_root: None,
            refresh_after: DEFAULT_REFRESH_AFTER,
        }
    }

    /// A `put` that finds its blob already stored rewrites it when it is older than
    /// this, so the blob's age restarts. Garbage collection deletes only unreachable
    /// blobs older than its grace period; with a grace longer than this plus the
    /// longest snapshot, a blob that a snapshot in flight reuses is never collected
    /// under it.
    pub fn with_refresh_after(mut self, refresh_after: Duration) -> BlobStore {
        self.refresh_after = refresh_after;
        self
    }

    /// The refresh age (see [`BlobStore::with_refresh_after`]).
    pub fn refresh_after(&self) -> Duration {
        self.refresh_after
    }

    /// Stores `bytes` unless a blob with their hash exists. Returns the hash and the
    /// compressed bytes newly written (0 when the blob was already there).
    pub async fn put(&self, bytes: Bytes) -> Result<(Hash, u64)> {
        let prepared = tokio::task::spawn_blocking(move || PreparedBlob::new(&bytes))
            .await
            .map_err(|e| ArtifactError::BlobStore(format!("compression task failed: {e}")))??;
        let hash = prepared.hash;
        let written = self.put_prepared(prepared).await?;
        Ok((hash, written))
    }

    /// Uploads a prepared blob with a create-only put; when the blob exists (its
    /// content is then the same, by its name) nothing is written unless it is older
    /// than the refresh age.
    pub(crate) async fn put_prepared(&self, blob: PreparedBlob) -> Result<u64> {
        let path = location(&blob.hash);
        let size = blob.compressed.len() as u64;
        let create = PutOptions::from(PutMode::Create);
        match self
            .store
            .put_opts(&path, PutPayload::from(blob.compressed.clone()), create)
            .await
        {
            Ok(_) => Ok(size),
            Err(object_store::Error::AlreadyExists { .. }) => {
                let meta = self
                    .store
                    .head(&path)
                    .await
                    .map_err(|e| store_error(format!("reading blob {}", blob.hash), e))?;
                let age = SystemTime::now()
                    .duration_since(SystemTime::from(meta.last_modified))
                    .unwrap_or_default();
                if age < self.refresh_after {
                    return Ok(0);
                }
                self.store
                    .put(&path, PutPayload::from(blob.compressed))
                    .await
                    .map_err(|e| store_error(format!("refreshing blob {}", blob.hash), e))?;
                Ok(0)
            }
            Err(e) => Err(store_error(format!("writing blob {}", blob.hash), e)),
        }
    }

    /// The compressed bytes of a blob, unverified. Absence is `BlobMissing`.
    pub(crate) async fn get_compressed(&self, hash: &Hash) -> Result<Bytes> {
        let result = match self.store.get(&location(hash)).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(ArtifactError::missing(hash, "not in the blob store"));
            }
            Err(e) => return Err(store_error(format!("reading blob {hash}"), e)),
        };
        match result.bytes().await {
            Ok(bytes) => Ok(bytes),
            Err(object_store::Error::NotFound { .. }) => {
                Err(ArtifactError::missing(hash, "deleted while being read"))
            }
            Err(e) => Err(store_error(format!("reading blob {hash}"), e)),
        }
    }

    /// Whether this is a local-directory store.
    pub(crate) fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    /// Reads a blob's compressed bytes straight from a local store's directory, on the
    /// calling (blocking) thread: `None` for other backends. Restores use it to read,
    /// verify and write a small file in one blocking call instead of three.
    pub(crate) fn read_local(&self, hash: &Hash) -> Option<Result<Vec<u8>>> {
        let root = self.local_root.as_ref()?;
        let path = root.join(location(hash).as_ref());
        Some(std::fs::read(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                ArtifactError::missing(hash, "not in the blob store")
            } else {
                ArtifactError::BlobStore(format!("reading blob {hash}: {e}"))
            }
        }))
    }

    /// A blob's bytes, decompressed and checked against its name.
    pub async fn get(&self, hash: &Hash) -> Result<Bytes> {
        let compressed = self.get_compressed(hash).await?;
        if compressed.len() < 64 << 10 {
            return decode(hash, &compressed).map(Bytes::from);
        }
        let hash = *hash;
        tokio::task::spawn_blocking(move || decode(&hash, &compressed).map(Bytes::from))
            .await
            .map_err(|e| ArtifactError::BlobStore(format!("decompression task failed: {e}")))?
    }

    /// Whether a blob is stored (not whether it is intact).
    pub async fn contains(&self, hash: &Hash) -> Result<bool> {
        match self.store.head(&location(hash)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(store_error(format!("looking up blob {hash}"), e)),
        }
    }

    /// One blob's listing entry, or `None` if it is not stored.
    pub async fn list_one(&self, hash: &Hash) -> Result<Option<BlobInfo>> {
        match self.store.head(&location(hash)).await {
            Ok(meta) => Ok(Some(BlobInfo {
                hash: *hash,
                size: meta.size,
                last_modified: SystemTime::from(meta.last_modified),
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(store_error(format!("looking up blob {hash}"), e)),
        }
    }

    /// Every stored blob. Objects under `blobs/` whose names are not hashes are skipped.
    pub async fn list(&self) -> Result<Vec<BlobInfo>> {
        let prefix = ObjectPath::from("blobs");
        let metas: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| store_error("listing blobs", e))?;
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?;
                let hash = Hash::from_str(name).ok()?;
                (location(&hash) == meta.location).then(|| BlobInfo {
                    hash,
                    size: meta.size,
                    last_modified: SystemTime::from(meta.last_modified),
                })
            })
            .collect())
    }

    /// Deletes a blob; deleting an absent blob succeeds.
    pub async fn delete(&self, hash: &Hash) -> Result<()> {
        match self.store.delete(&location(hash)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(format!("deleting blob {hash}"), e)),
        }
    }

    /// Makes every blob written so far durable. The local backend writes without fsync
    /// (one fsync per blob would dominate a snapshot); this flushes the whole file
    /// system holding the store with one `syncfs`. S3 writes are durable when they
    /// return, so this does nothing there.
    pub async fn sync(&self) -> Result<()> {
        let Some(root) = self.local_root.clone() else {
            return Ok(());
        };
        tokio::task::spawn_blocking(move || {
            let dir = std::fs::File::open(&root)
                .map_err(|e| ArtifactError::io("opening the blob directory", root.display(), e))?;
            nix::unistd::syncfs(&dir).map_err(|errno| {
                ArtifactError::io("syncing the blob directory", root.display(), errno.into())
            })
        })
        .await
        .map_err(|e| ArtifactError::BlobStore(format!("sync task failed: {e}")))?
    }
}

/// Decompresses a blob and checks it against its name.
pub(crate) fn decode(hash: &Hash, compressed: &[u8]) -> Result<Vec<u8>> {
    let size = match zstd::zstd_safe::get_frame_content_size(compressed) {
        Ok(Some(size)) if size <= MAX_BLOB_BYTES => size,
        Ok(Some(size)) => {
            return Err(ArtifactError::missing(
                hash,
                format!("declares {size} bytes, more than a blob may hold"),
            ));
        }
        _ => return Err(ArtifactError::missing(hash, "not a zstd frame with a size")),
    };
    let bytes = zstd::bulk::decompress(compressed, size as usize)
        .map_err(|e| ArtifactError::missing(hash, format!("does not decompress: {e}")))?;
    if bytes.len() as u64 != size || Hash::of(&bytes) != *hash {
        return Err(ArtifactError::missing(
            hash,
            "content does not match its hash",
        ));
    }
    Ok(bytes)
}
