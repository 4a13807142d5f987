//! Listing sessions (filters, cursor pagination) and paging through events.

use cordon_test_support::TestBackend;
use serde_json::Value;

use super::{Client, TestServer, ids};

backend_tests!(
    filters_select_sessions,
    cursor_walks_every_session_once,
    events_paginate
);

/// Upper bound on pages in a walk, so that a cursor bug fails instead of looping.
const MAX_PAGES: usize = 20;

/// Follows `next_cursor` from `path` (which already has a query) until the last page:
/// every item's id (or `seq`) and each page's size.
async fn walk(client: &Client, path: &str, key: &str) -> (Vec<String>, Vec<usize>) {
    let mut items = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let url = match &cursor {
            Some(cursor) => format!("{path}&cursor={cursor}"),
            None => path.to_owned(),
        };
        let reply = client.get(&url).await;
        let page = reply.expect(200);
        let page_items = page["items"].as_array().unwrap();
        sizes.push(page_items.len());
        items.extend(page_items.iter().map(|item| match &item[key] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        }));
        match page.get("next_cursor") {
            None => return (items, sizes),
            Some(next) => {
                let next = next.as_str().expect("a string cursor").to_owned();
                assert_ne!(cursor.as_ref(), Some(&next), "the cursor must move");
                cursor = Some(next);
            }
        }
    }
    panic!("more than {MAX_PAGES} pages at {path}");
}

async fn filters_select_sessions(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let specs = [
        ("coding", "dev", &["activate"][..]),
        ("coding", "dev", &[]),
        ("coding", "prod", &["activate", "checkpoint"]),
        ("review", "dev", &["activate"]),
        ("review", "prod", &["close"]),
        ("review", "prod", &["activate"]),
    ];
    let mut all = Vec::new();
    for (workload_class, environment, actions) in specs {
        let session = admin.create_session(workload_class, environment).await;
        let id = session["id"].as_str().unwrap().to_owned();
        for action in actions {
            admin.act(&id, action).await.expect(200);
        }
        all.push(id);
    }
    let pick =
        |indexes: &[usize]| -> Vec<String> { indexes.iter().map(|&i| all[i].clone()).collect() };

    assert_eq!(admin.session_ids("").await, all, "everything, oldest first");
    let cases: [(&str, &[usize]); 12] = [
        ("&phase=active", &[0, 3, 5]),
        ("&phase=created", &[1]),
        ("&phase=checkpointed", &[2]),
        ("&phase=closed", &[4]),
        ("&phase=suspended", &[]),
        ("&workload_class=coding", &[0, 1, 2]),
        ("&workload_class=review", &[3, 4, 5]),
        ("&workload_class=none", &[]),
        ("&environment=prod", &[2, 4, 5]),
        ("&environment=dev&workload_class=review", &[3]),
        ("&phase=active&environment=prod", &[5]),
        ("&phase=active&workload_class=coding&environment=dev", &[0]),
    ];
    for (query, expected) in cases {
        assert_eq!(admin.session_ids(query).await, pick(expected), "{query}");
    }
    // Every listed session is shown whole, as GET shows it.
    let reply = admin.get("/v1/sessions?phase=checkpointed").await;
    let listed = reply.expect(200)["items"][0].clone();
    assert_eq!(listed, admin.session(&all[2]).await);
    // Filters combine with pagination.
    let (walked, sizes) = walk(&admin, "/v1/sessions?phase=active&limit=2", "id").await;
    assert_eq!(walked, pick(&[0, 3, 5]));
    assert_eq!(sizes, [2, 1]);
}

async fn cursor_walks_every_session_once(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let mut created = Vec::new();
    for index in 0..5 {
        let session = admin
            .create_session("coding", if index % 2 == 0 { "dev" } else { "prod" })
            .await;
        created.push(session["id"].as_str().unwrap().to_owned());
    }
    let (walked, sizes) = walk(&admin, "/v1/sessions?limit=2", "id").await;
    assert_eq!(walked, created, "each session once, in creation order");
    assert_eq!(sizes, [2, 2, 1]);
    // A page that ends exactly at the last session still hands out a cursor; the page
    // after it is empty and final.
    let (walked, sizes) = walk(&admin, "/v1/sessions?limit=5", "id").await;
    assert_eq!(walked, created);
    assert_eq!(sizes, [5, 0]);
    let (walked, sizes) = walk(&admin, "/v1/sessions?limit=1", "id").await;
    assert_eq!(walked, created);
    assert_eq!(sizes, [1, 1, 1, 1, 1, 0]);
    // Sessions created during a walk after its cursor show up; none is listed twice.
    let first = admin.get("/v1/sessions?limit=3").await;
    let cursor = first.expect(200)["next_cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let late = admin.create_session("coding", "dev").await;
    let rest = admin
        .get(&format!("/v1/sessions?limit=1000&cursor={cursor}"))
        .await;
    let rest = ids(&rest.expect(200)["items"]);
    let mut expected = created[3..].to_vec();
    expected.push(late["id"].as_str().unwrap().to_owned());
    assert_eq!(rest, expected);
    // An empty tenant's list is empty, without a cursor.
    let acme = server.create_tenant("acme").await;
    let (acme_admin, _) = server
        .create_key_as(&admin, "admin", acme["id"].as_str())
        .await;
    let (walked, sizes) = walk(&acme_admin, "/v1/sessions?limit=2", "id").await;
    assert!(walked.is_empty());
    assert_eq!(sizes, [0]);
}

async fn events_paginate(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let session = admin.create_session("coding", "dev").await;
    let id = session["id"].as_str().unwrap();
    for action in ["activate", "checkpoint", "resume", "suspend", "close"] {
        admin.act(id, action).await.expect(200);
    }
    let all: Vec<String> = (1..=6).map(|seq| seq.to_string()).collect();
    let path = format!("/v1/sessions/{id}/events?limit=4");
    let (seqs, sizes) = walk(&admin, &path, "seq").await;
    assert_eq!(seqs, all);
    assert_eq!(sizes, [4, 2]);
    let path = format!("/v1/sessions/{id}/events?limit=2");
    let (seqs, sizes) = walk(&admin, &path, "seq").await;
    assert_eq!(seqs, all);
    assert_eq!(sizes, [2, 2, 2, 0]);
    // The cursor is the last seq seen: starting after 4 gives 5 and 6.
    let reply = admin
        .get(&format!("/v1/sessions/{id}/events?cursor=4"))
        .await;
    let page = reply.expect(200);
    let tail: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(tail, [5, 6]);
    assert!(page.get("next_cursor").is_none());
    // Past the end is an empty page.
    let reply = admin
        .get(&format!("/v1/sessions/{id}/events?cursor=100"))
        .await;
    assert_eq!(reply.expect(200)["items"].as_array().unwrap().len(), 0);
    // Events of another session do not leak into this one's pages.
    let other = admin.create_session("coding", "dev").await;
    let other_id = other["id"].as_str().unwrap();
    admin.act(other_id, "activate").await.expect(200);
    let (seqs, _) = walk(
        &admin,
        &format!("/v1/sessions/{other_id}/events?limit=1"),
        "seq",
    )
    .await;
    assert_eq!(seqs, ["1", "2"]);
}
