//! Embedded schema migrations. Each backend keeps its own ordered list of SQL scripts
//! (the dialects differ) and applies them with the same bookkeeping: a
//! `cordon_migrations` table of applied versions and checksums, so a script edited after
//! it shipped is refused rather than silently skipped.

/// One schema step.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    /// FNV-1a over the script: enough to notice an edited migration, not a security check.
    pub fn checksum(&self) -> i64 {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in self.sql.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        i64::from_ne_bytes(hash.to_ne_bytes())
    }
}

/// Why a store refused to open its schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "migration {version} ({name}) was changed after it was applied; restore the original script"
    )]
    ChecksumMismatch { version: i64, name: &'static str },
    #[error(
        "the database has schema version {found}, newer than this binary knows ({known}); upgrade cordon"
    )]
    DatabaseTooNew { found: i64, known: i64 },
}

/// Checks the applied versions against the known list and returns the ones still to apply.
pub fn pending<'a>(
    known: &'a [Migration],
    applied: &[(i64, i64)],
) -> Result<Vec<&'a Migration>, MigrationError> {
    let newest_known = known.iter().map(|m| m.version).max().unwrap_or(0);
    let mut todo = Vec::new();
    for migration in known {
        match applied
            .iter()
            .find(|(version, _)| *version == migration.version)
        {
            Some((_, checksum)) if *checksum != migration.checksum() => {
                return Err(MigrationError::ChecksumMismatch {
                    version: migration.version,
                    name: migration.name,
                });
            }
            Some(_) => {}
            None => todo.push(migration),
        }
    }
    if let Some((found, _)) = applied.iter().find(|(version, _)| *version > newest_known) {
        return Err(MigrationError::DatabaseTooNew {
            found: *found,
            known: newest_known,
        });
    }
    Ok(todo)
}
