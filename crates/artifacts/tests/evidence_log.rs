//! The evidence log writer over real stores: gapless indexes under concurrency, proofs
//! that verify against signed checkpoints, redaction before storage, tenant scoping,
//! and bundles that verify offline (and stop verifying when altered).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

use std::sync::Arc;

use async_trait::async_trait;
use cordon_artifacts::evidence_log::{EvidenceLog, Record, Redactor};
use cordon_core::{EvidenceFilter, SessionId, Tenant, TenantId, Timestamp};
use cordon_evidence::{Signer, merkle};
use cordon_store::Store;
use cordon_test_support::{TestBackend, test_store};

#[derive(Debug)]
struct FixedSecrets(Vec<(String, String)>);

#[async_trait]
impl Redactor for FixedSecrets {
    async fn secrets(&self, _tenant_id: TenantId) -> Vec<(String, String)> {
        self.0.clone()
    }
}

async fn tenant(store: &Arc<dyn Store>, name: &str) -> TenantId {
    let tenant = Tenant {
        id: TenantId::generate(),
        name: name.to_owned(),
        created_at: Timestamp::now(),
    };
    store.create_tenant(&tenant).await.unwrap();
    tenant.id
}

fn log(store: &Arc<dyn Store>, redactor: Option<Arc<dyn Redactor>>) -> EvidenceLog {
    let (signer, _) = Signer::generate("test.local/evidence").unwrap();
    EvidenceLog::spawn(
        Arc::clone(store),
        Arc::new(signer),
        "test.local/evidence",
        redactor,
    )
}

async fn concurrent_appends_are_gapless_and_provable(backend: TestBackend) {
    let test = test_store(backend).await;
    let store = Arc::clone(&test.store);
    let first = tenant(&store, "first").await;
    let second = tenant(&store, "second").await;
    let log = log(&store, None);
    let session = SessionId::generate();
    let mut tasks = Vec::new();
    for task in 0..16u64 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut indexes = Vec::new();
            for n in 0..25u64 {
                let tenant_id = if n % 2 == 0 { first } else { second };
                let record = Record::new(tenant_id, Some(session), "exec", "key_test")
                    .field("task", task)
                    .field("n", n);
                indexes.push((tenant_id, log.append(record).await.unwrap()));
            }
            indexes
        }));
    }
    let mut seen_first = Vec::new();
    let mut seen_second = Vec::new();
    for task in tasks {
        for (tenant_id, index) in task.await.unwrap() {
            if tenant_id == first {
                seen_first.push(index);
            } else {
                seen_second.push(index);
            }
        }
    }
    seen_first.sort_unstable();
    seen_second.sort_unstable();
    assert_eq!(seen_first, (0..208).collect::<Vec<u64>>());
    assert_eq!(seen_second, (0..192).collect::<Vec<u64>>());

    // A signed checkpoint over the whole log; every leaf proves against it.
    let checkpoint = log.checkpoint(first).await.unwrap().unwrap();
    assert_eq!(checkpoint.size, 208);
    let verifier = cordon_evidence::Verifier::from_text(&log.verifier_text()).unwrap();
    let signed = verifier.verify(&checkpoint.note).unwrap();
    assert_eq!(signed.root, checkpoint.root);
    assert_eq!(signed.origin, log.origin_of(first));
    for index in [0, 1, 100, 207] {
        let (leaf, proof, root) = log.inclusion_proof(first, index, 208).await.unwrap();
        assert_eq!(root, checkpoint.root);
        merkle::verify_inclusion(&leaf, index, 208, &proof, &root).unwrap();
    }
    let (proof, old, new) = log.consistency_proof(first, 50, 208).await.unwrap();
    merkle::verify_consistency(50, 208, &proof, &old, &new).unwrap();
    assert!(log.inclusion_proof(first, 208, 208).await.is_err());
    assert!(log.inclusion_proof(first, 0, 209).await.is_err());

    // The stored leaves are the ones proven.
    let entries = store
        .list_evidence(
            first,
            &EvidenceFilter {
                limit: 1000,
                ..EvidenceFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(entries.len(), 208);
    for entry in &entries {
        assert_eq!(merkle::leaf_hash(entry.leaf.as_bytes()), entry.leaf_hash);
    }

    // Bundles: the tenant's log verifies offline; a flipped byte does not.
    let bundle = log.export(first, Some(session)).await.unwrap();
    let report = cordon_evidence::bundle::verify(&bundle, &verifier).unwrap();
    assert_eq!(report.entries, 208);
    let text = String::from_utf8(bundle).unwrap();
    let at = text.find("\"leaf\"").unwrap() + 20;
    let mut tampered = text.clone().into_bytes();
    tampered[at] = if tampered[at] == b'a' { b'b' } else { b'a' };
    assert!(cordon_evidence::bundle::verify(&tampered, &verifier).is_err());
    // Another tenant's bundle holds none of the first tenant's entries.
    let other = log.export(second, None).await.unwrap();
    let other = cordon_evidence::bundle::verify(&other, &verifier).unwrap();
    assert_eq!(other.entries, 192);
    assert_eq!(other.tenant, second.to_string());
}

async fn secrets_are_redacted_before_storage(backend: TestBackend) {
    let test = test_store(backend).await;
    let store = Arc::clone(&test.store);
    let tenant_id = tenant(&store, "redacted").await;
    let secrets = FixedSecrets(vec![
        ("token".to_owned(), "s3cr3t-value".to_owned()),
        ("long".to_owned(), "s3cr3t-value-and-more".to_owned()),
    ]);
    let log = log(&store, Some(Arc::new(secrets)));
    log.append(
        Record::new(tenant_id, None, "exec", "key_test")
            .field("summary", "saw s3cr3t-value-and-more and s3cr3t-value")
            .field(
                "nested",
                serde_json::json!({"s3cr3t-value": ["x s3cr3t-value y"]}),
            ),
    )
    .await
    .unwrap();
    let entries = store
        .list_evidence(tenant_id, &EvidenceFilter::default())
        .await
        .unwrap();
    let stored = format!("{entries:?}");
    assert!(!stored.contains("s3cr3t-value"), "{stored}");
    let summary = entries[0]
        .fields
        .iter()
        .find(|f| f.name == "summary")
        .unwrap();
    assert_eq!(
        summary.value,
        "\"saw [REDACTED:long] and [REDACTED:token]\""
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_concurrent_appends_are_gapless_and_provable() {
    concurrent_appends_are_gapless_and_provable(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_concurrent_appends_are_gapless_and_provable() {
    concurrent_appends_are_gapless_and_provable(TestBackend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_secrets_are_redacted_before_storage() {
    secrets_are_redacted_before_storage(TestBackend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_secrets_are_redacted_before_storage() {
    secrets_are_redacted_before_storage(TestBackend::Postgres).await;
}
