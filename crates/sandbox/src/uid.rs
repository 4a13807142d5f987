//! Host uids for sandboxes: each sandbox runs as a uid that no other sandbox and not the
//! server use, host-wide (several servers may share a host).
//!
//! A claim is a file `<dir>/<uid>` holding its owner. It is written to a temporary file
//! first and hard-linked into place (`link` fails if the name exists), so a claim is
//! atomic and never visible without its owner, and it survives a crash of the claimer.
//! It is not fsynced: claims live on /run (a tmpfs), and a sandbox does not outlive the
//! host anyway.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

/// First uid handed to sandboxes by default: far above any human or system account.
pub const DEFAULT_UID_BASE: u32 = 2_000_000_000;
/// How many uids the default range holds.
pub const DEFAULT_UID_COUNT: u32 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum UidError {
    #[error("every uid of {base}..{end} is claimed", end = u64::from(*.base) + u64::from(*.count))]
    Exhausted { base: u32, count: u32 },
    #[error("uid claim: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone)]
pub struct UidPool {
    dir: PathBuf,
    base: u32,
    count: u32,
}

impl UidPool {
    /// Creates `dir` (mode 0700) if needed. `base..base+count` is the range handed out.
    pub fn new(dir: impl Into<PathBuf>, base: u32, count: u32) -> std::io::Result<Self> {
        let dir = dir.into();
        if base.checked_add(count).is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("uid range {base} + {count} overflows"),
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        Ok(Self {
            dir,
            base,
            count: count.max(1),
        })
    }

    /// Claims a free uid for `owner`. The search starts at a pseudo-random offset so
    /// that concurrent claimers rarely race for the same uid.
    pub fn allocate(&self, owner: &str) -> Result<u32, UidError> {
        let temp = self.dir.join(format!(
            ".claim-{}-{}",
            std::process::id(),
            start_offset(u32::MAX)
        ));
        let mut file = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(owner.as_bytes())?;
        drop(file);
        let result = self.link_free(&temp);
        let _ = std::fs::remove_file(&temp);
        result
    }

    fn link_free(&self, temp: &std::path::Path) -> Result<u32, UidError> {
        let start = start_offset(self.count);
        for step in 0..self.count {
            let uid = self.base + (start + step) % self.count;
            match std::fs::hard_link(temp, self.dir.join(uid.to_string())) {
                Ok(()) => return Ok(uid),
                Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Err(UidError::Exhausted {
            base: self.base,
            count: self.count,
        })
    }

    /// Gives an existing claim a new owner (atomically: the claim is never absent).
    pub fn reassign(&self, uid: u32, owner: &str) -> std::io::Result<()> {
        let temp = self.dir.join(format!(
            ".claim-{}-{}",
            std::process::id(),
            start_offset(u32::MAX)
        ));
        std::fs::write(&temp, owner)?;
        let renamed = std::fs::rename(&temp, self.dir.join(uid.to_string()));
        if renamed.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        renamed
    }

    /// Releases a claim; releasing a free uid is not an error.
    pub fn release(&self, uid: u32) -> std::io::Result<()> {
        match std::fs::remove_file(self.dir.join(uid.to_string())) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
            _ => Ok(()),
        }
    }

    /// Who claimed `uid`, if anyone.
    pub fn owner(&self, uid: u32) -> Option<String> {
        std::fs::read_to_string(self.dir.join(uid.to_string())).ok()
    }

    /// Every claimed uid of this pool's range with its owner.
    pub fn claimed(&self) -> std::io::Result<Vec<(u32, String)>> {
        let mut claims = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(uid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if uid < self.base || u64::from(uid) >= u64::from(self.base) + u64::from(self.count) {
                continue;
            }
            if let Ok(owner) = std::fs::read_to_string(entry.path()) {
                claims.push((uid, owner));
            }
        }
        claims.sort();
        Ok(claims)
    }
}

/// A pseudo-random number below `bound`, from the clock and the pid.
fn start_offset(bound: u32) -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    (hasher.finish() % u64::from(bound.max(1))) as u32
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
    use super::*;

    #[test]
    fn claims_are_exclusive_released_and_listed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = UidPool::new(dir.path().join("uids"), 5000, 3).unwrap();
        let a = pool.allocate("a").unwrap();
        let b = pool.allocate("b").unwrap();
        let c = pool.allocate("c").unwrap();
        let mut all = vec![a, b, c];
        all.sort();
        assert_eq!(all, [5000, 5001, 5002]);
        assert!(matches!(
            pool.allocate("d"),
            Err(UidError::Exhausted { .. })
        ));
        assert_eq!(pool.owner(b).as_deref(), Some("b"));
        pool.release(b).unwrap();
        pool.release(b).unwrap();
        assert_eq!(pool.allocate("e").unwrap(), b);
        let owners: Vec<String> = pool
            .claimed()
            .unwrap()
            .into_iter()
            .map(|(_, o)| o)
            .collect();
        assert_eq!(owners.len(), 3);
        assert!(owners.contains(&"e".to_owned()));
    }

    #[test]
    fn concurrent_claims_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let pool = UidPool::new(dir.path(), 7000, 64).unwrap();
        let uids: Vec<u32> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|t| {
                    let pool = pool.clone();
                    scope.spawn(move || {
                        (0..8)
                            .map(|i| pool.allocate(&format!("{t}-{i}")).unwrap())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let mut unique = uids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 64);
        assert!(matches!(
            pool.allocate("x"),
            Err(UidError::Exhausted { .. })
        ));
    }
}
