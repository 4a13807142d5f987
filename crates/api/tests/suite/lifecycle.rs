//! The session lifecycle through the API: the legal path with its event log, every
//! illegal transition from every phase, and `closed` being final.

use cordon_core::{Phase, SessionAction};
use cordon_test_support::TestBackend;
use serde_json::{Value, json};

use super::{Client, TestServer};

backend_tests!(
    full_path_records_every_transition,
    every_action_from_every_phase,
    closed_is_final
);

/// Actions that bring a fresh session into `phase`.
fn path_to(phase: Phase) -> &'static [&'static str] {
    match phase {
        Phase::Created => &[],
        Phase::Active => &["activate"],
        Phase::Checkpointed => &["activate", "checkpoint"],
        Phase::Suspended => &["activate", "suspend"],
        Phase::Closed => &["close"],
    }
}

/// A fresh session driven into `phase`.
async fn session_in(client: &Client, phase: Phase) -> Value {
    let session = client.create_session("coding", "dev").await;
    let id = session["id"].as_str().unwrap();
    for action in path_to(phase) {
        client.act(id, action).await.expect(200);
    }
    let session = client.session(id).await;
    assert_eq!(session["phase"], phase.as_str());
    session
}

async fn full_path_records_every_transition(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let (operator, operator_key) = server.create_key("operator").await;
    let operator_id = operator_key["id"].as_str().unwrap().to_owned();
    let admin_id = server.admin_key_id.clone();

    let created = admin.create_session("coding", "dev").await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["owner"], admin_id.as_str());
    assert_eq!(created["workload_class"], "coding");
    assert_eq!(created["environment"], "dev");
    assert!(
        created["policy_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );

    // (who, action, phase before, phase after), alternating actors.
    let steps = [
        (
            &operator,
            operator_id.as_str(),
            "activate",
            "created",
            "active",
        ),
        (
            &admin,
            admin_id.as_str(),
            "checkpoint",
            "active",
            "checkpointed",
        ),
        (
            &operator,
            operator_id.as_str(),
            "resume",
            "checkpointed",
            "active",
        ),
        (&admin, admin_id.as_str(), "suspend", "active", "suspended"),
        (
            &operator,
            operator_id.as_str(),
            "resume",
            "suspended",
            "active",
        ),
        (
            &admin,
            admin_id.as_str(),
            "checkpoint",
            "active",
            "checkpointed",
        ),
        (
            &operator,
            operator_id.as_str(),
            "suspend",
            "checkpointed",
            "suspended",
        ),
        (&admin, admin_id.as_str(), "close", "suspended", "closed"),
    ];
    let mut expected_events = vec![json!({
        "seq": 1, "actor": admin_id, "from": null, "to": "created", "reason": null
    })];
    for (index, (client, actor, action, from, to)) in steps.into_iter().enumerate() {
        let version = index as i64 + 2;
        // Odd steps carry a reason, even ones no body at all.
        let (reply, reason) = if index % 2 == 0 {
            let reason = format!("step {index}: {action}");
            let path = format!("/v1/sessions/{id}/{action}");
            (
                client.post(&path, &json!({"reason": reason})).await,
                json!(reason),
            )
        } else {
            (client.act(&id, action).await, Value::Null)
        };
        let body = reply.expect(200);
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["phase"], to, "{action} from {from}");
        assert_eq!(body["version"], version);
        assert_eq!(body["owner"], admin_id.as_str(), "the owner never changes");
        let stored = admin.session(&id).await;
        assert_eq!(&stored, body, "GET returns what the transition returned");

        expected_events.push(json!({
            "seq": version, "actor": actor, "from": from, "to": to, "reason": reason
        }));
        let events = admin.events(&id).await;
        assert_eq!(events.len(), expected_events.len());
        let last = events.last().unwrap();
        for field in ["seq", "actor", "from", "to", "reason"] {
            assert_eq!(
                last[field],
                expected_events.last().unwrap()[field],
                "{field} of {last}"
            );
        }
    }

    // The whole log, in order, without the timestamps.
    let events = admin.events(&id).await;
    let stripped: Vec<Value> = events
        .iter()
        .map(|event| {
            assert!(event["at"].is_string(), "{event}");
            let mut event = event.clone();
            event.as_object_mut().unwrap().remove("at");
            event
        })
        .collect();
    assert_eq!(stripped, expected_events);
    let closed = admin.session(&id).await;
    assert_eq!(closed["phase"], "closed");
    assert_eq!(closed["version"], 9);
}

/// Every (phase, action) pair, each on a fresh session: legal ones move the session and
/// append one event; illegal ones answer 409 and change nothing at all.
async fn every_action_from_every_phase(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let mut illegal = 0;
    for from in Phase::ALL {
        for action in SessionAction::ALL {
            let before = session_in(&admin, from).await;
            let id = before["id"].as_str().unwrap();
            let events_before = admin.events(id).await;
            let reply = admin.act(id, action.as_str()).await;
            match from.apply(action) {
                Ok(to) => {
                    let after = reply.expect(200);
                    assert_eq!(after["phase"], to.as_str(), "{action} from {from}");
                    assert_eq!(after["version"], before["version"].as_i64().unwrap() + 1);
                    let events = admin.events(id).await;
                    assert_eq!(events.len(), events_before.len() + 1);
                    let last = events.last().unwrap();
                    assert_eq!(last["from"], from.as_str());
                    assert_eq!(last["to"], to.as_str());
                    assert_eq!(last["actor"], server.admin_key_id.as_str());
                }
                Err(_) => {
                    illegal += 1;
                    let message = reply.expect_error(409, "SESSION_INVALID_TRANSITION");
                    assert!(
                        message.contains(action.as_str()) && message.contains(from.as_str()),
                        "{message}"
                    );
                    assert_eq!(admin.session(id).await, before, "{action} from {from}");
                    assert_eq!(
                        admin.events(id).await,
                        events_before,
                        "{action} from {from}"
                    );
                }
            }
        }
    }
    // 25 pairs, 10 legal (the table in cordon_core::lifecycle).
    assert_eq!(illegal, 15);
}

async fn closed_is_final(backend: TestBackend) {
    let server = TestServer::start(backend).await;
    let admin = server.admin();
    let (operator, _) = server.create_key("operator").await;
    // Closed from the middle of its life, not straight from `created`.
    let session = session_in(&admin, Phase::Checkpointed).await;
    let id = session["id"].as_str().unwrap();
    admin.act(id, "close").await.expect(200);
    let closed = admin.session(id).await;
    let events = admin.events(id).await;
    assert_eq!(events.len(), 4);
    // Nobody can reopen it, with or without a body, twice over.
    for _ in 0..2 {
        for action in SessionAction::ALL {
            let path = format!("/v1/sessions/{id}/{action}");
            let reply = operator.post(&path, &json!({"reason": "try again"})).await;
            reply.expect_error(409, "SESSION_INVALID_TRANSITION");
            admin
                .act(id, action.as_str())
                .await
                .expect_error(409, "SESSION_INVALID_TRANSITION");
        }
    }
    assert_eq!(admin.session(id).await, closed);
    assert_eq!(admin.events(id).await, events);
}
