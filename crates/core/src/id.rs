//! Typed, prefixed identifiers (`ten_…`, `key_…`, `ses_…`). The suffix is a UUIDv7 in
//! simple hex form, so ids sort by creation time, which cursor pagination relies on.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// An id string did not have the expected prefix and 32 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a valid {kind} id (expected `{prefix}` followed by 32 hex digits)")]
pub struct IdParseError {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub input: String,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A fresh, time-ordered id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0.simple())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;

            fn from_str(input: &str) -> Result<Self, Self::Err> {
                let error = || IdParseError { kind: $kind, prefix: $prefix, input: input.to_owned() };
                let hex = input.strip_prefix($prefix).ok_or_else(error)?;
                let valid = hex.len() == 32
                    && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !valid {
                    return Err(error());
                }
                Uuid::try_parse(hex).map(Self).map_err(|_| error())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = String::deserialize(deserializer)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

prefixed_id!(
    /// A tenant: the unit of isolation. Nothing crosses a tenant boundary.
    TenantId, "ten_", "tenant"
);
prefixed_id!(
    /// An API key. Also the identity of the principal that authenticates with it.
    KeyId, "key_", "key"
);
prefixed_id!(
    /// An agent session's control record.
    SessionId, "ses_", "session"
);

prefixed_id!(
    /// A stored secret (its value is only ever held encrypted).
    SecretId, "sec_", "secret"
);
prefixed_id!(
    /// A credential lease: one secret lent to one session until a deadline.
    CredentialLeaseId, "lea_", "lease"
);

prefixed_id!(
    /// A version of a session's workspace (working state).
    VersionId, "ver_", "version"
);
prefixed_id!(
    /// A release: promoted, immutable, signed output of a workspace version.
    ReleaseId, "rel_", "release"
);

prefixed_id!(
    /// A workflow run: one execution of a definition, or an agent's own durable steps.
    RunId, "run_", "run"
);
prefixed_id!(
    /// A dead-letter entry: a policy-blocked step of a run, waiting for an operator.
    DeadLetterId, "dlq_", "dead-letter entry"
);
prefixed_id!(
    /// A cron schedule that starts runs of a workflow definition.
    ScheduleId, "sch_", "schedule"
);

/// Position of an event in one session's event log, starting at 1.
pub type EventSeq = i64;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_malformed_ids() {
        let id = SessionId::generate();
        let text = id.to_string();
        assert!(text.starts_with("ses_"));
        assert_eq!(text.parse::<SessionId>().unwrap(), id);

        for bad in [
            "",
            "ses_",
            "ten_0190aa0000007000800000000000000a",
            "ses_0190AA0000007000800000000000000A",
            "ses_0190aa00-0000-7000-8000-00000000000a",
            "ses_0190aa0000007000800000000000000",
            "ses_../../etc",
        ] {
            assert!(bad.parse::<SessionId>().is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn ids_sort_by_creation() {
        let first = SessionId::generate();
        let second = SessionId::generate();
        assert!(first.to_string() < second.to_string());
    }
}
