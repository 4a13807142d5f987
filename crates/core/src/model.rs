//! The records Cordon keeps: tenants, API keys, sessions, their events and leases.
//! These are domain types; the wire crate has the JSON shapes, the store crates the rows.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::id::{EventSeq, KeyId, SessionId, TenantId};
use crate::lifecycle::Phase;

/// A point in time with microsecond precision, kept as microseconds since the Unix epoch
/// (the same integer in every backend) and written as RFC 3339 in JSON.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn now() -> Self {
        let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
        Self(i64::try_from(nanos / 1_000).unwrap_or(i64::MAX))
    }

    pub fn from_unix_micros(micros: i64) -> Self {
        Self(micros)
    }

    pub fn unix_micros(self) -> i64 {
        self.0
    }

    pub fn saturating_add_micros(self, micros: i64) -> Self {
        Self(self.0.saturating_add(micros))
    }

    /// Nanoseconds since the Unix epoch (0 before it), as OpenTelemetry counts time.
    pub fn unix_nanos(self) -> u64 {
        u64::try_from(self.0).unwrap_or(0).saturating_mul(1_000)
    }

    /// Now, minus `ago`.
    pub fn ago(ago: std::time::Duration) -> Self {
        let micros = i64::try_from(ago.as_micros()).unwrap_or(i64::MAX);
        Self::now().saturating_add_micros(-micros)
    }

    fn to_offset_date_time(self) -> Option<OffsetDateTime> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000).ok()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self
            .to_offset_date_time()
            .and_then(|t| t.format(&Rfc3339).ok())
        {
            Some(text) => f.write_str(&text),
            None => write!(f, "@{}us", self.0),
        }
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// RFC 3339, e.g. `2026-11-23T00:00:00Z`.
impl std::str::FromStr for Timestamp {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| e.to_string())?;
        i64::try_from(parsed.unix_timestamp_nanos() / 1_000)
            .map(Self)
            .map_err(|e| e.to_string())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A session's free-form labels. Sorted, so that their JSON form is canonical.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub created_at: Timestamp,
}

/// What an API key may do inside its tenant. The authorization policies give each role
/// its meaning; see `crates/policy/policies/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum Role {
    /// Everything inside its tenant, including key management.
    Admin,
    /// Runs sessions of any owner in its tenant; cannot manage keys.
    Operator,
    /// Runs only the sessions it created.
    Agent,
    /// Reads everything in its tenant, changes nothing.
    Auditor,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Agent, Role::Auditor];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Agent => "agent",
            Role::Auditor => "auditor",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A role name that is not one of [`Role::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role `{0}` (expected one of admin, operator, agent, auditor)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| UnknownRole(text.to_owned()))
    }
}

/// An API key's metadata. The token itself is never stored, only its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: KeyId,
    pub tenant_id: TenantId,
    pub role: Role,
    pub name: String,
    /// The deployment's bootstrap key: the only principal that may manage tenants and
    /// keys across tenants.
    pub system: bool,
    /// SHA-256 of the bearer token. Tokens carry 256 random bits, so a fast digest is
    /// enough; a slow password hash would only cost latency on every request.
    pub token_digest: [u8; 32],
    pub created_by: Option<KeyId>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// What a caller provides to create a session; the rest is filled in by control.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSession {
    pub id: SessionId,
    pub tenant_id: TenantId,
    pub owner: KeyId,
    pub workload_class: String,
    pub environment: String,
    pub labels: Labels,
    pub policy_version: String,
    pub created_at: Timestamp,
}

impl NewSession {
    /// The record and first event of the session as created by `actor`.
    pub fn created(&self, actor: &str) -> (Session, SessionEvent) {
        let session = Session {
            id: self.id,
            tenant_id: self.tenant_id,
            owner: self.owner,
            workload_class: self.workload_class.clone(),
            environment: self.environment.clone(),
            labels: self.labels.clone(),
            policy_version: self.policy_version.clone(),
            phase: Phase::Created,
            version: 1,
            created_at: self.created_at,
            updated_at: self.created_at,
            outcome: None,
        };
        let event = SessionEvent {
            session_id: self.id,
            seq: 1,
            actor: actor.to_owned(),
            from: None,
            to: Phase::Created,
            reason: None,
            at: self.created_at,
        };
        (session, event)
    }
}

/// A session's control record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: SessionId,
    pub tenant_id: TenantId,
    pub owner: KeyId,
    pub workload_class: String,
    pub environment: String,
    pub labels: Labels,
    pub policy_version: String,
    pub phase: Phase,
    /// Number of events in the session's log; also the sequence of the latest event.
    pub version: EventSeq,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// How the session ended; set when it closes.
    pub outcome: Option<crate::SessionOutcome>,
}

/// One entry of a session's append-only event log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub session_id: SessionId,
    pub seq: EventSeq,
    /// Who caused it: a key id, or `system`.
    pub actor: String,
    /// `None` for the creation event.
    pub from: Option<Phase>,
    pub to: Phase,
    pub reason: Option<String>,
    pub at: Timestamp,
}

/// The right to write one session's state, held by one node at a time. `token` grows
/// every time the lease changes hands; writes carry it and are refused once it is stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub session_id: SessionId,
    pub holder: String,
    pub token: i64,
    pub expires_at: Timestamp,
}

/// Which sessions to list. All conditions must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFilter {
    pub phase: Option<Phase>,
    pub workload_class: Option<String>,
    pub environment: Option<String>,
    /// Only sessions owned by this key (agents see only their own).
    pub owner: Option<KeyId>,
    /// Only sessions with an id greater than this one (the cursor).
    pub after: Option<SessionId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_rfc3339_and_count_nanos() {
        let at: Timestamp = "2026-11-23T00:00:01.5Z"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(at.to_string(), "2026-11-23T00:00:01.5Z");
        assert_eq!(at.unix_nanos(), 1_795_392_001_500_000_000);
        assert!("yesterday".parse::<Timestamp>().is_err());
        assert_eq!(Timestamp::from_unix_micros(-5).unix_nanos(), 0);
        assert!(Timestamp::ago(std::time::Duration::from_secs(60)) < Timestamp::now());
    }
}
