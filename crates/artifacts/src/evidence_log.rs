//! The decision-evidence log: one append-only RFC 6962 tree per tenant, written through
//! a batching writer and signed with the deployment's key.
//!
//! An entry is sealed (payload fields committed by salted hash, see
//! `cordon_evidence::entry`), redacted first (a stored secret's value becomes
//! `[REDACTED:<name>]`), then appended in batches: one durable store write per batch,
//! the store assigning each tenant's indexes. After a batch the writer extends its
//! in-memory copy of each touched tenant's leaf hashes and signs a checkpoint of the new
//! tree head (at most one a second per tenant; [`EvidenceLog::checkpoint`] signs one on
//! demand). Proofs are computed from those leaf hashes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cordon_core::{
    EvidenceCheckpoint, EvidenceFilter, NewEvidenceEntry, ReasonCode, SessionId, TenantId,
    Timestamp,
};
use cordon_evidence::entry::{Draft, SealedField, seal};
use cordon_evidence::merkle::{self, Hash};
use cordon_evidence::{Checkpoint, MerkleTree, Signer};
use cordon_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// How many entries one store write takes at most.
const MAX_BATCH: usize = 4096;
/// A tenant's tree head is signed at most this often by the writer itself.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("index {index} is not below the tree size {size}")]
    OutOfRange { index: u64, size: u64 },
    #[error("the evidence writer has stopped")]
    Stopped,
    #[error("{0}")]
    Internal(String),
}

impl EvidenceError {
    pub fn reason(&self) -> ReasonCode {
        match self {
            EvidenceError::Store(error) => error.reason(),
            EvidenceError::OutOfRange { .. } => ReasonCode::EvidenceOutOfRange,
            EvidenceError::Stopped | EvidenceError::Internal(_) => ReasonCode::Internal,
        }
    }
}

/// Something that decided or acted, to be recorded.
#[derive(Debug, Clone)]
pub struct Record {
    pub tenant_id: TenantId,
    pub session_id: Option<SessionId>,
    /// `lifecycle`, `authz`, `egress`, `exec`, `lease.issue`, `lease.revoke`,
    /// `checkpoint`, `restore`, `fork`, `upload`, `promotion`, `retention`.
    pub kind: String,
    /// A key id, or `system`.
    pub actor: String,
    pub fields: BTreeMap<String, serde_json::Value>,
}

impl Record {
    pub fn new(
        tenant_id: TenantId,
        session_id: Option<SessionId>,
        kind: &str,
        actor: &str,
    ) -> Self {
        Self {
            tenant_id,
            session_id,
            kind: kind.to_owned(),
            actor: actor.to_owned(),
            fields: BTreeMap::new(),
        }
    }

    /// Adds a payload field.
    pub fn field(mut self, name: &str, value: impl Into<serde_json::Value>) -> Self {
        self.fields.insert(name.to_owned(), value.into());
        self
    }
}

/// The values to keep out of evidence: each tenant's stored secrets, by name.
#[async_trait::async_trait]
pub trait Redactor: Send + Sync + std::fmt::Debug {
    /// `(secret name, plaintext value)` of the tenant's live secrets.
    async fn secrets(&self, tenant_id: TenantId) -> Vec<(String, String)>;
}

/// Replaces every occurrence of a secret's value in `value`'s strings (keys included)
/// by `[REDACTED:<name>]`. Longer values first, so a secret containing another is
/// replaced whole.
pub fn redact(value: &mut serde_json::Value, secrets: &[(String, String)]) {
    fn scrub(text: &str, secrets: &[(String, String)]) -> Option<String> {
        let mut out: Option<String> = None;
        for (name, secret) in secrets {
            let current = out.as_deref().unwrap_or(text);
            if current.contains(secret.as_str()) {
                out = Some(current.replace(secret.as_str(), &format!("[REDACTED:{name}]")));
            }
        }
        out
    }
    match value {
        serde_json::Value::String(text) => {
            if let Some(clean) = scrub(text, secrets) {
                *text = clean;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|v| redact(v, secrets)),
        serde_json::Value::Object(map) => {
            let taken = std::mem::take(map);
            for (key, mut item) in taken {
                redact(&mut item, secrets);
                map.insert(scrub(&key, secrets).unwrap_or(key), item);
            }
        }
        _ => {}
    }
}

/// [`redact`] for plain text (captured tool output): `secrets` as the redactor gives
/// them, in any order.
pub fn redact_text(text: &str, secrets: &[(String, String)]) -> String {
    let ordered = redaction_order(secrets.to_vec());
    let mut value = serde_json::Value::String(text.to_owned());
    redact(&mut value, &ordered);
    match value {
        serde_json::Value::String(clean) => clean,
        _ => text.to_owned(),
    }
}

/// Sorts secrets so that longer values are replaced first; drops empty values.
fn redaction_order(mut secrets: Vec<(String, String)>) -> Vec<(String, String)> {
    secrets.retain(|(_, value)| !value.is_empty());
    secrets.sort_by_key(|(_, value)| std::cmp::Reverse(value.len()));
    secrets
}

enum Job {
    Append {
        record: Record,
        done: Option<oneshot::Sender<Result<u64, String>>>,
    },
    /// Only marks a point in the queue: answered once everything before it is durable.
    Flush(oneshot::Sender<Result<u64, String>>),
}

/// One tenant's tree as this node knows it: every leaf hash, in index order, with
/// its complete subtrees' roots (heads and proofs in O(log² n)).
#[derive(Debug, Default)]
struct Tree {
    leaves: MerkleTree,
    loaded: bool,
    last_signed: Option<Instant>,
    signed_size: u64,
}

/// The evidence log. Cheap to clone.
#[derive(Clone)]
pub struct EvidenceLog {
    tx: mpsc::Sender<Job>,
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EvidenceLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvidenceLog")
            .field("origin", &self.inner.origin)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn Store>,
    signer: Arc<Signer>,
    /// Checkpoints name the log `<origin>/<tenant id>`.
    origin: String,
    redactor: Option<Arc<dyn Redactor>>,
    trees: tokio::sync::Mutex<HashMap<TenantId, Tree>>,
    appended: Mutex<u64>,
}

impl EvidenceLog {
    /// Starts the writer task. `origin` names the deployment's logs (checkpoints say
    /// `<origin>/<tenant id>`); it is also the signing key's name.
    pub fn spawn(
        store: Arc<dyn Store>,
        signer: Arc<Signer>,
        origin: &str,
        redactor: Option<Arc<dyn Redactor>>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(MAX_BATCH * 4);
        let inner = Arc::new(Inner {
            store,
            signer,
            origin: origin.to_owned(),
            redactor,
            trees: tokio::sync::Mutex::new(HashMap::new()),
            appended: Mutex::new(0),
        });
        tokio::spawn(writer(Arc::clone(&inner), rx));
        Self { tx, inner }
    }

    /// The public key in the signed-note verifier format, for offline verification.
    pub fn verifier_text(&self) -> String {
        self.inner.signer.verifier().to_text()
    }

    /// The log name of a tenant, as checkpoints carry it.
    pub fn origin_of(&self, tenant_id: TenantId) -> String {
        format!("{}/{tenant_id}", self.inner.origin)
    }

    /// Appends and waits until the entry is durable; returns its index.
    pub async fn append(&self, record: Record) -> Result<u64, EvidenceError> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Append {
                record,
                done: Some(done),
            })
            .await
            .map_err(|_| EvidenceError::Stopped)?;
        wait.await
            .map_err(|_| EvidenceError::Stopped)?
            .map_err(EvidenceError::Internal)
    }

    /// Queues an entry without waiting (it is durable with its batch, moments later).
    /// When the queue is full, the caller waits for room instead of dropping evidence.
    pub async fn record(&self, record: Record) {
        if self
            .tx
            .send(Job::Append { record, done: None })
            .await
            .is_err()
        {
            tracing::error!("the evidence writer has stopped; an entry was not recorded");
        }
    }

    /// Queues an entry from code that cannot wait (a synchronous caller): when the
    /// queue is full, a task waits for room instead, so nothing is dropped.
    pub fn record_detached(&self, record: Record) {
        match self.tx.try_send(Job::Append { record, done: None }) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(job)) => {
                let tx = self.tx.clone();
                tokio::spawn(async move {
                    if tx.send(job).await.is_err() {
                        tracing::error!(
                            "the evidence writer has stopped; an entry was not recorded"
                        );
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                tracing::error!("the evidence writer has stopped; an entry was not recorded");
            }
        }
    }

    /// How many entries this node has appended since it started.
    pub fn appended(&self) -> u64 {
        self.inner.appended.lock().map(|n| *n).unwrap_or(0)
    }

    /// Waits until every entry queued before the call is durable.
    pub async fn flush(&self) -> Result<(), EvidenceError> {
        // The channel is FIFO and the writer answers a batch only once it is durable.
        let (done, wait) = oneshot::channel();
        self.tx
            .send(Job::Flush(done))
            .await
            .map_err(|_| EvidenceError::Stopped)?;
        wait.await
            .map_err(|_| EvidenceError::Stopped)?
            .map(|_| ())
            .map_err(EvidenceError::Internal)
    }

    /// A signed checkpoint of the tenant's whole log as it is now (signing a new one if
    /// the log grew since the last). `None` while the log is empty.
    pub async fn checkpoint(
        &self,
        tenant_id: TenantId,
    ) -> Result<Option<EvidenceCheckpoint>, EvidenceError> {
        let mut trees = self.inner.trees.lock().await;
        let tree = self.inner.tree(&mut trees, tenant_id).await?;
        if tree.leaves.is_empty() {
            return Ok(None);
        }
        let size = tree.leaves.len();
        if let Some(stored) = self
            .inner
            .store
            .latest_evidence_checkpoint(tenant_id)
            .await?
            && stored.size >= size
        {
            return Ok(Some(stored));
        }
        Ok(Some(self.inner.sign(tenant_id, tree).await?))
    }

    /// The inclusion proof of entry `index` in the tree of `size` leaves.
    pub async fn inclusion_proof(
        &self,
        tenant_id: TenantId,
        index: u64,
        size: u64,
    ) -> Result<(Hash, Vec<Hash>, Hash), EvidenceError> {
        let mut trees = self.inner.trees.lock().await;
        let tree = self.inner.tree(&mut trees, tenant_id).await?;
        let have = tree.leaves.len();
        if size > have || size == 0 {
            return Err(EvidenceError::OutOfRange {
                index: size,
                size: have,
            });
        }
        if index >= size {
            return Err(EvidenceError::OutOfRange { index, size });
        }
        let internal = |e: merkle::ProofError| EvidenceError::Internal(e.to_string());
        let proof = tree.leaves.inclusion_proof(index, size).map_err(internal)?;
        let leaf = tree
            .leaves
            .leaf(index)
            .ok_or(EvidenceError::OutOfRange { index, size })?;
        Ok((leaf, proof, tree.leaves.root(size).map_err(internal)?))
    }

    /// The consistency proof between the trees of `from` and `to` leaves.
    pub async fn consistency_proof(
        &self,
        tenant_id: TenantId,
        from: u64,
        to: u64,
    ) -> Result<(Vec<Hash>, Hash, Hash), EvidenceError> {
        let mut trees = self.inner.trees.lock().await;
        let tree = self.inner.tree(&mut trees, tenant_id).await?;
        let have = tree.leaves.len();
        if to > have {
            return Err(EvidenceError::OutOfRange {
                index: to,
                size: have,
            });
        }
        if from > to || from == 0 {
            return Err(EvidenceError::OutOfRange {
                index: from,
                size: to,
            });
        }
        let internal = |e: merkle::ProofError| EvidenceError::Internal(e.to_string());
        Ok((
            tree.leaves.consistency_proof(from, to).map_err(internal)?,
            tree.leaves.root(from).map_err(internal)?,
            tree.leaves.root(to).map_err(internal)?,
        ))
    }

    /// An offline-verifiable bundle (JSON) of the tenant's entries, or of one session's:
    /// the entries with their remaining payloads and inclusion proofs against a fresh
    /// checkpoint, and every stored checkpoint up to it with consistency proofs.
    pub async fn export(
        &self,
        tenant_id: TenantId,
        session_id: Option<SessionId>,
    ) -> Result<Vec<u8>, EvidenceError> {
        self.flush().await?;
        let Some(last) = self.checkpoint(tenant_id).await? else {
            return Err(EvidenceError::OutOfRange { index: 0, size: 0 });
        };
        let store = &self.inner.store;
        let mut entries = Vec::new();
        let mut from_index = 0;
        loop {
            let page = store
                .list_evidence(
                    tenant_id,
                    &EvidenceFilter {
                        session_id,
                        kind: None,
                        from_index,
                        limit: 1000,
                    },
                )
                .await?;
            let Some(tail) = page.last() else { break };
            from_index = tail.index + 1;
            let full = page.len() < 1000;
            for entry in page {
                if entry.index >= last.size {
                    continue;
                }
                let fields = entry
                    .fields
                    .into_iter()
                    .map(|field| SealedField {
                        name: field.name,
                        salt: field.salt,
                        value: field.value,
                    })
                    .collect();
                entries.push((entry.index, entry.leaf, fields));
            }
            if full {
                break;
            }
        }
        // The stored checkpoints from the first that covers an exported entry up to
        // `last`, thinned to at most 64 so the bundle stays small: each link is proven
        // consistent with the one before it.
        let first_size = entries.first().map_or(last.size, |(index, _, _)| index + 1);
        let mut notes: Vec<EvidenceCheckpoint> = store
            .list_evidence_checkpoints(tenant_id, first_size, last.size)
            .await?;
        if notes.len() > 64 {
            let step = notes.len().div_ceil(63);
            let tail = notes.pop();
            notes = notes.into_iter().step_by(step).chain(tail).collect();
        }
        if notes.last().map(|c| c.size) != Some(last.size) {
            notes.push(last.clone());
        }
        // Proofs come from the tree as it is: O((entries + notes) log² n) under the lock.
        let bundle = {
            let mut trees = self.inner.trees.lock().await;
            let tree = self.inner.tree(&mut trees, tenant_id).await?;
            cordon_evidence::bundle::build(
                &self.origin_of(tenant_id),
                &tenant_id.to_string(),
                session_id.map(|id| id.to_string()).as_deref(),
                &self.verifier_text(),
                entries,
                &tree.leaves,
                notes.into_iter().map(|c| c.note).collect(),
            )
            .map_err(|e| EvidenceError::Internal(e.to_string()))?
        };
        serde_json::to_vec_pretty(&bundle).map_err(|e| EvidenceError::Internal(e.to_string()))
    }
}

impl Inner {
    /// The tenant's tree, loaded from the store on first use.
    async fn tree<'a>(
        &self,
        trees: &'a mut HashMap<TenantId, Tree>,
        tenant_id: TenantId,
    ) -> Result<&'a mut Tree, EvidenceError> {
        let tree = trees.entry(tenant_id).or_default();
        let size = self.store.evidence_size(tenant_id).await?;
        if !tree.loaded || tree.leaves.len() < size {
            // Another node appended, or first use: read what is missing.
            let have = if tree.loaded { tree.leaves.len() } else { 0 };
            if !tree.loaded {
                tree.leaves = MerkleTree::new();
            }
            let more = self
                .store
                .evidence_leaf_hashes(tenant_id, have, size)
                .await?;
            tree.leaves.extend(more);
            tree.loaded = true;
        }
        Ok(tree)
    }

    async fn sign(
        &self,
        tenant_id: TenantId,
        tree: &mut Tree,
    ) -> Result<EvidenceCheckpoint, EvidenceError> {
        let at = Timestamp::now();
        let size = tree.leaves.len();
        let root = tree
            .leaves
            .root(size)
            .map_err(|e| EvidenceError::Internal(e.to_string()))?;
        let checkpoint = Checkpoint {
            origin: format!("{}/{tenant_id}", self.origin),
            size,
            root,
            extensions: vec![format!("time {at}")],
        };
        let note = self
            .signer
            .sign(&checkpoint)
            .map_err(|e| EvidenceError::Internal(e.to_string()))?;
        let stored = EvidenceCheckpoint {
            tenant_id,
            size: checkpoint.size,
            root,
            note,
            at,
        };
        self.store.put_evidence_checkpoint(&stored).await?;
        tree.last_signed = Some(Instant::now());
        tree.signed_size = stored.size;
        Ok(stored)
    }

    fn seal(&self, record: Record, secrets: &[(String, String)]) -> NewEvidenceEntry {
        let at = Timestamp::now();
        let mut fields = record.fields;
        if !secrets.is_empty() {
            for value in fields.values_mut() {
                redact(value, secrets);
            }
        }
        let draft = Draft {
            tenant: record.tenant_id.to_string(),
            session: record.session_id.map(|id| id.to_string()),
            kind: record.kind.clone(),
            actor: record.actor,
            at: at.to_string(),
            fields,
        };
        let sealed = seal(&draft, rand::random::<[u8; 16]>);
        NewEvidenceEntry {
            tenant_id: record.tenant_id,
            session_id: record.session_id,
            kind: record.kind,
            at,
            leaf: sealed.leaf,
            leaf_hash: sealed.leaf_hash,
            fields: sealed
                .fields
                .into_iter()
                .map(|field| cordon_core::EvidenceField {
                    name: field.name,
                    salt: field.salt,
                    value: field.value,
                })
                .collect(),
        }
    }
}

async fn writer(inner: Arc<Inner>, mut rx: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        let batch = std::mem::take(&mut jobs);
        write_batch(&inner, batch).await;
    }
}

async fn write_batch(inner: &Inner, batch: Vec<Job>) {
    // Seal (and redact) every real entry; flush markers only wait their turn.
    let mut secrets: HashMap<TenantId, Vec<(String, String)>> = HashMap::new();
    let mut entries = Vec::with_capacity(batch.len());
    let mut waiters = Vec::with_capacity(batch.len());
    for job in batch {
        let (record, done) = match job {
            Job::Flush(done) => {
                waiters.push((None, Some(done)));
                continue;
            }
            Job::Append { record, done } => (record, done),
        };
        let tenant = record.tenant_id;
        if let std::collections::hash_map::Entry::Vacant(slot) = secrets.entry(tenant) {
            let values = match &inner.redactor {
                Some(redactor) => redaction_order(redactor.secrets(tenant).await),
                None => Vec::new(),
            };
            slot.insert(values);
        }
        let tenant_secrets = secrets.get(&tenant).map(Vec::as_slice).unwrap_or_default();
        waiters.push((Some(entries.len()), done));
        entries.push(inner.seal(record, tenant_secrets));
    }
    let written = if entries.is_empty() {
        Ok(Vec::new())
    } else {
        inner.store.append_evidence(&entries).await
    };
    let indexes = match written {
        Ok(indexes) => indexes,
        Err(error) => {
            tracing::error!(%error, entries = entries.len(), "cannot append evidence");
            let message = error.to_string();
            for (_, done) in waiters {
                if let Some(done) = done {
                    let _ = done.send(Err(message.clone()));
                }
            }
            return;
        }
    };
    if let Ok(mut n) = inner.appended.lock() {
        *n += entries.len() as u64;
    }
    // Extend the trees, and sign the heads that are due.
    let mut touched = HashSet::new();
    {
        let mut trees = inner.trees.lock().await;
        for (entry, &index) in entries.iter().zip(&indexes) {
            touched.insert(entry.tenant_id);
            let tree = trees.entry(entry.tenant_id).or_default();
            if tree.loaded && tree.leaves.len() == index {
                tree.leaves.push(entry.leaf_hash);
            } else {
                // Another node wrote in between (or first use): reload on demand.
                tree.loaded = false;
            }
        }
        for tenant in touched {
            let due = match trees.get(&tenant) {
                Some(tree) => tree
                    .last_signed
                    .is_none_or(|at| at.elapsed() >= CHECKPOINT_EVERY),
                None => false,
            };
            if !due {
                continue;
            }
            match inner.tree(&mut trees, tenant).await {
                Ok(tree) => {
                    if let Err(error) = inner.sign(tenant, tree).await {
                        tracing::warn!(%error, %tenant, "cannot sign an evidence checkpoint");
                    }
                }
                Err(error) => tracing::warn!(%error, %tenant, "cannot load the evidence tree"),
            }
        }
    }
    for (slot, done) in waiters {
        if let Some(done) = done {
            let index = slot.map(|i| indexes[i]).unwrap_or(0);
            let _ = done.send(Ok(index));
        }
    }
}
