//! The session lifecycle contract from DESIGN.md as a pure state machine:
//!
//! ```text
//! created -activate-> active -checkpoint-> checkpointed
//! active | checkpointed -suspend-> suspended -resume-> active
//! checkpointed -resume-> active
//! any phase but closed -close-> closed (final)
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a session is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum Phase {
    Created,
    Active,
    Checkpointed,
    Suspended,
    Closed,
}

impl Phase {
    pub const ALL: [Phase; 5] = [
        Phase::Created,
        Phase::Active,
        Phase::Checkpointed,
        Phase::Suspended,
        Phase::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Created => "created",
            Phase::Active => "active",
            Phase::Checkpointed => "checkpointed",
            Phase::Suspended => "suspended",
            Phase::Closed => "closed",
        }
    }

    /// The phase `action` leads to from `self`, or why it may not be taken.
    pub fn apply(self, action: SessionAction) -> Result<Phase, TransitionError> {
        use Phase::*;
        use SessionAction::*;
        let to = match (self, action) {
            (Created, Activate) => Active,
            (Active, Checkpoint) => Checkpointed,
            (Active | Checkpointed, Suspend) => Suspended,
            (Suspended | Checkpointed, Resume) => Active,
            (Created | Active | Checkpointed | Suspended, Close) => Closed,
            (from, action) => return Err(TransitionError { from, action }),
        };
        Ok(to)
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A phase name that is not one of [`Phase::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown phase `{0}` (expected one of created, active, checkpointed, suspended, closed)")]
pub struct UnknownPhase(pub String);

impl FromStr for Phase {
    type Err = UnknownPhase;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|phase| phase.as_str() == text)
            .ok_or_else(|| UnknownPhase(text.to_owned()))
    }
}

/// A request to move a session along its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "schema", derive(utoipa::ToSchema))]
pub enum SessionAction {
    Activate,
    Checkpoint,
    Suspend,
    Resume,
    Close,
}

impl SessionAction {
    pub const ALL: [SessionAction; 5] = [
        SessionAction::Activate,
        SessionAction::Checkpoint,
        SessionAction::Suspend,
        SessionAction::Resume,
        SessionAction::Close,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SessionAction::Activate => "activate",
            SessionAction::Checkpoint => "checkpoint",
            SessionAction::Suspend => "suspend",
            SessionAction::Resume => "resume",
            SessionAction::Close => "close",
        }
    }
}

impl fmt::Display for SessionAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for SessionAction {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SessionAction::ALL
            .into_iter()
            .find(|action| action.as_str() == text)
            .ok_or(())
    }
}

/// `action` is not allowed from phase `from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a session that is {from}")]
pub struct TransitionError {
    pub from: Phase,
    pub action: SessionAction,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole table, written out so a change to the contract shows up as a diff here.
    #[test]
    fn transition_table_matches_the_contract() {
        let mut table = String::new();
        for from in Phase::ALL {
            for action in SessionAction::ALL {
                let outcome = match from.apply(action) {
                    Ok(to) => to.as_str().to_owned(),
                    Err(_) => "-".to_owned(),
                };
                table.push_str(&format!("{from:<12} {action:<10} -> {outcome}\n"));
            }
        }
        let expected = "\
created      activate   -> active
created      checkpoint -> -
created      suspend    -> -
created      resume     -> -
created      close      -> closed
active       activate   -> -
active       checkpoint -> checkpointed
active       suspend    -> suspended
active       resume     -> -
active       close      -> closed
checkpointed activate   -> -
checkpointed checkpoint -> -
checkpointed suspend    -> suspended
checkpointed resume     -> active
checkpointed close      -> closed
suspended    activate   -> -
suspended    checkpoint -> -
suspended    suspend    -> -
suspended    resume     -> active
suspended    close      -> closed
closed       activate   -> -
closed       checkpoint -> -
closed       suspend    -> -
closed       resume     -> -
closed       close      -> -
";
        assert_eq!(table, expected);
    }

    #[test]
    fn phase_names_round_trip() {
        for phase in Phase::ALL {
            assert_eq!(phase.as_str().parse::<Phase>().unwrap(), phase);
        }
        assert!("Active".parse::<Phase>().is_err());
    }
}
