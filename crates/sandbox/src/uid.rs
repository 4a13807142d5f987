//! Host uids for sandboxes: each sandbox runs as a uid that no other sandbox and no server on
//! the host uses. A claim is a file `<dir>/<uid>` holding its owner; every server on the host
//! shares the directory, so claims are host-wide.

use std::fs;
use std::hash::{BuildHasher as _, RandomState};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// First uid handed out by default: far above the uids of users and of common container ranges.
pub const DEFAULT_UID_BASE: u32 = 2_000_000_000;
/// Number of uids handed out by default.
pub const DEFAULT_UID_COUNT: u32 = 1_000_000;

/// Distinguishes the staging files of the threads of one process.
static STAGING_SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Why a uid could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum UidError {
    /// Every uid of the range is claimed.
    #[error("every uid in {base}..{end} is claimed")]
    Exhausted { base: u32, end: u64 },
    /// The owner is empty; an empty claim file would look like a damaged one.
    #[error("a uid claim needs a non-empty owner")]
    EmptyOwner,
    /// Reading or writing the claims directory failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A range of host uids whose claims live in a directory shared by every server on the host.
///
/// A claim is published complete: the owner is written to a staging file `.claim-<pid>-<n>` in
/// the same directory, which is then hard-linked to `<uid>` (link never replaces an existing
/// name, so exactly one claimer wins) and unlinked. A reader therefore never sees an empty or
/// partial owner. A process that crashes between staging and unlinking leaves a small dot-file
/// behind, which `claimed` ignores.
#[derive(Debug, Clone)]
pub struct UidPool {
    dir: PathBuf,
    base: u32,
    count: u32,
}

impl UidPool {
    /// Creates `dir` (mode 0700, parents as needed) for the range `base..base + count`.
    /// The range must not be empty and must end at or below `u32::MAX` (which is never a uid).
    pub fn new(dir: impl Into<PathBuf>, base: u32, count: u32) -> io::Result<Self> {
        let dir = dir.into();
        if count == 0 || base.checked_add(count).is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("uid range {base} + {count} is empty or passes u32::MAX"),
            ));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        Ok(Self { dir, base, count })
    }

    /// The claims directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Claims a free uid for `owner` (opaque, e.g. `<data-dir>#<session id>`). The search starts
    /// at a pseudo-random offset so that concurrent claimers rarely try the same uid.
    pub fn allocate(&self, owner: &str) -> Result<u32, UidError> {
        if owner.is_empty() {
            return Err(UidError::EmptyOwner);
        }
        let staged = loop {
            let staged = self.dir.join(format!(
                ".claim-{}-{}",
                std::process::id(),
                STAGING_SEQUENCE.fetch_add(1, Ordering::Relaxed)
            ));
            // create_new: a file of the same name may be left by a crashed process with this pid.
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&staged)
            {
                Ok(mut file) => {
                    let written = file.write_all(owner.as_bytes());
                    if let Err(source) = written {
                        let _ = fs::remove_file(&staged);
                        return Err(UidError::Io {
                            path: staged,
                            source,
                        });
                    }
                    break staged;
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(UidError::Io {
                        path: staged,
                        source,
                    });
                }
            }
        };

        let start = RandomState::new().hash_one((std::process::id(), Instant::now()))
            % u64::from(self.count);
        let end = u64::from(self.base) + u64::from(self.count);
        let mut result = Err(UidError::Exhausted {
            base: self.base,
            end,
        });
        for step in 0..u64::from(self.count) {
            let offset = (start + step) % u64::from(self.count);
            let Ok(uid) = u32::try_from(u64::from(self.base) + offset) else {
                continue;
            };
            let claim = self.dir.join(uid.to_string());
            match fs::hard_link(&staged, &claim) {
                Ok(()) => {
                    result = Ok(uid);
                    break;
                }
                Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    result = Err(UidError::Io {
                        path: claim,
                        source,
                    });
                    break;
                }
            }
        }
        if let Err(error) = fs::remove_file(&staged) {
            tracing::warn!(path = %staged.display(), %error, "uid claim staging file left behind");
        }
        result
    }

    /// Gives `uid` back; Ok if it is not claimed. Callers release only uids they allocated.
    pub fn release(&self, uid: u32) -> io::Result<()> {
        match fs::remove_file(self.dir.join(uid.to_string())) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    /// The owner of a claimed `uid`, None if it is free (or unreadable).
    pub fn owner(&self, uid: u32) -> Option<String> {
        fs::read_to_string(self.dir.join(uid.to_string())).ok()
    }

    /// Every claimed uid in the directory (whichever pool's range it is in) with its owner,
    /// sorted by uid.
    pub fn claimed(&self) -> io::Result<Vec<(u32, String)>> {
        let mut claims = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(uid) = entry.file_name().to_str().and_then(|name| {
                name.parse::<u32>()
                    .ok()
                    .filter(|uid| uid.to_string() == name)
            }) else {
                continue;
            };
            match fs::read_to_string(entry.path()) {
                Ok(owner) => claims.push((uid, owner)),
                // Released between listing and reading.
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(error),
            }
        }
        claims.sort();
        Ok(claims)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::Arc;

    use super::*;

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn allocate_owner_release() {
        let temp = tempfile::tempdir().unwrap();
        let pool = UidPool::new(temp.path().join("uids"), 5000, 10).unwrap();
        let uid = pool.allocate("/data#s1").unwrap();
        assert!((5000..5010).contains(&uid));
        assert_eq!(pool.owner(uid).as_deref(), Some("/data#s1"));
        assert_eq!(pool.claimed().unwrap(), vec![(uid, "/data#s1".to_owned())]);
        // Only the claim is left: the staging file is gone.
        assert_eq!(names_in(pool.dir()), vec![uid.to_string()]);

        pool.release(uid).unwrap();
        assert_eq!(pool.owner(uid), None);
        assert!(pool.claimed().unwrap().is_empty());
        pool.release(uid).unwrap();
    }

    #[test]
    fn new_creates_private_nested_dir_and_checks_range() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("run/cordon/uids");
        UidPool::new(&dir, DEFAULT_UID_BASE, DEFAULT_UID_COUNT).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        // Existing directory: fine, and made private again.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        UidPool::new(&dir, 10, 10).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let error = UidPool::new(&dir, u32::MAX - 1, 2).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            UidPool::new(&dir, 10, 0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // The last uid below u32::MAX is allowed.
        let pool = UidPool::new(&dir, u32::MAX - 1, 1).unwrap();
        assert_eq!(pool.allocate("x").unwrap(), u32::MAX - 1);
    }

    #[test]
    fn exhaustion_and_reuse() {
        let temp = tempfile::tempdir().unwrap();
        let pool = UidPool::new(temp.path(), 100, 3).unwrap();
        let uids: BTreeSet<u32> = (0..3)
            .map(|n| pool.allocate(&format!("o{n}")).unwrap())
            .collect();
        assert_eq!(uids, BTreeSet::from([100, 101, 102]));
        assert!(matches!(
            pool.allocate("late"),
            Err(UidError::Exhausted {
                base: 100,
                end: 103
            })
        ));
        pool.release(101).unwrap();
        assert_eq!(pool.allocate("again").unwrap(), 101);
        assert_eq!(pool.owner(101).as_deref(), Some("again"));
        // Failed allocations leave no staging files either.
        assert_eq!(names_in(temp.path()), vec!["100", "101", "102"]);
    }

    #[test]
    fn empty_owner_refused() {
        let temp = tempfile::tempdir().unwrap();
        let pool = UidPool::new(temp.path(), 100, 3).unwrap();
        assert!(matches!(pool.allocate(""), Err(UidError::EmptyOwner)));
        assert!(names_in(temp.path()).is_empty());
    }

    #[test]
    fn claimed_ignores_other_entries() {
        let temp = tempfile::tempdir().unwrap();
        let pool = UidPool::new(temp.path(), 100, 3).unwrap();
        let uid = pool.allocate("a").unwrap();
        fs::write(temp.path().join(".claim-1-1"), "crashed").unwrap();
        fs::write(temp.path().join("0100"), "not canonical").unwrap();
        fs::write(temp.path().join("notes"), "x").unwrap();
        assert_eq!(pool.claimed().unwrap(), vec![(uid, "a".to_owned())]);
    }

    /// Threads of two pools on one directory (two servers on one host) never share a uid.
    #[test]
    fn concurrent_allocations_are_distinct() {
        let temp = tempfile::tempdir().unwrap();
        let pools = [
            Arc::new(UidPool::new(temp.path(), 7000, 48).unwrap()),
            Arc::new(UidPool::new(temp.path(), 7000, 48).unwrap()),
        ];
        let threads: Vec<_> = (0..8)
            .map(|thread| {
                let pool = Arc::clone(&pools[thread % 2]);
                std::thread::spawn(move || {
                    (0..6)
                        .map(|n| (pool.allocate(&format!("t{thread}-{n}")).unwrap(), thread, n))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let allocations: Vec<(u32, usize, usize)> = threads
            .into_iter()
            .flat_map(|thread| thread.join().unwrap())
            .collect();
        let distinct: BTreeSet<u32> = allocations.iter().map(|(uid, _, _)| *uid).collect();
        assert_eq!(distinct.len(), 48);
        for (uid, thread, n) in &allocations {
            assert_eq!(pools[0].owner(*uid), Some(format!("t{thread}-{n}")));
        }
        assert!(matches!(
            pools[1].allocate("one too many"),
            Err(UidError::Exhausted { .. })
        ));
        assert_eq!(names_in(temp.path()).len(), 48);
    }
}
