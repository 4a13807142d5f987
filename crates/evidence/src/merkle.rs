//! RFC 6962 Merkle trees (as restated in RFC 9162 section 2.1): a leaf hashes as
//! `SHA-256(0x00 || leaf)`, an inner node as `SHA-256(0x01 || left || right)`, and the
//! tree over `n` leaves splits at the largest power of two below `n`.
//!
//! The proof functions here work over a slice of leaf hashes (O(n) per proof): the
//! reference that [`MerkleTree`](crate::tree::MerkleTree), which the log and bundles use,
//! is tested against. Verification needs only the proof.

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Why a proof or a request for one was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below the tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {old} is larger than tree size {new}")]
    SizesOutOfOrder { old: u64, new: u64 },
    #[error("the proof has the wrong number of hashes for these tree sizes")]
    WrongLength,
    #[error("the proof does not lead to the expected root hash")]
    RootMismatch,
}

/// The hash of a leaf's bytes.
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(leaf);
    hasher.finalize().into()
}

/// The hash of an inner node.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The hash of the empty tree: SHA-256 of nothing.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// The largest power of two strictly below `n` (n >= 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// The tree head over `leaves` (leaf hashes).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

fn usize_of(value: u64) -> Option<usize> {
    usize::try_from(value).ok()
}

/// The audit path of leaf `index` in the tree over `leaves`.
pub fn inclusion_proof(leaves: &[Hash], index: u64) -> Result<Vec<Hash>, ProofError> {
    let size = leaves.len() as u64;
    let i = usize_of(index)
        .filter(|&i| i < leaves.len())
        .ok_or(ProofError::IndexOutOfRange { index, size })?;
    let mut proof = Vec::new();
    path(i, leaves, &mut proof);
    Ok(proof)
}

fn path(m: usize, leaves: &[Hash], proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(m, &leaves[..k], proof);
        proof.push(root(&leaves[k..]));
    } else {
        path(m - k, &leaves[k..], proof);
        proof.push(root(&leaves[..k]));
    }
}

/// Checks that `leaf` (a leaf hash) is at `index` in the tree of `size` leaves whose
/// head is `root` (RFC 9162 section 2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut fn_ = index;
    let mut sn = size - 1;
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The proof that the tree of the first `old_size` leaves is a prefix of the tree over
/// all `leaves` (RFC 9162 section 2.1.4.1).
pub fn consistency_proof(leaves: &[Hash], old_size: u64) -> Result<Vec<Hash>, ProofError> {
    let new = leaves.len() as u64;
    let m = usize_of(old_size)
        .filter(|&m| m <= leaves.len())
        .ok_or(ProofError::SizesOutOfOrder { old: old_size, new })?;
    let mut proof = Vec::new();
    if m > 0 && m < leaves.len() {
        subproof(m, leaves, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(m: usize, leaves: &[Hash], whole: bool, proof: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            proof.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(m, &leaves[..k], whole, proof);
        proof.push(root(&leaves[k..]));
    } else {
        subproof(m - k, &leaves[k..], false, proof);
        proof.push(root(&leaves[..k]));
    }
}

/// Checks that the tree of `old_size` leaves with head `old_root` is a prefix of the
/// tree of `new_size` leaves with head `new_root` (RFC 9162 section 2.1.4.2).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder {
            old: old_size,
            new: new_size,
        });
    }
    if old_size == new_size {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength);
        }
        return if old_root == new_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if old_size == 0 {
        // Every tree extends the empty one; there is nothing to prove.
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::WrongLength)
        };
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return Err(ProofError::WrongLength);
    };
    let mut fn_ = old_size - 1;
    let mut sn = new_size - 1;
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in rest {
        if sn == 0 {
            return Err(ProofError::WrongLength);
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if sn != 0 {
        return Err(ProofError::WrongLength);
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(hash: &Hash) -> String {
        hash.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The leaves of the RFC 6962 reference test vectors (certificate-transparency-go).
    fn reference_leaves() -> Vec<Vec<u8>> {
        vec![
            vec![],
            vec![0x00],
            vec![0x10],
            vec![0x20, 0x21],
            vec![0x30, 0x31],
            vec![0x40, 0x41, 0x42, 0x43],
            vec![0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57],
            vec![
                0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d,
                0x6e, 0x6f,
            ],
        ]
    }

    #[test]
    fn roots_match_the_reference_vectors() {
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let leaves: Vec<Hash> = reference_leaves().iter().map(|l| leaf_hash(l)).collect();
        let expected = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        for (n, want) in expected.iter().enumerate() {
            assert_eq!(&hex(&root(&leaves[..=n])), want, "tree of {} leaves", n + 1);
        }
    }

    fn tree(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn every_inclusion_proof_verifies_and_any_change_fails() {
        for n in 1..=33usize {
            let leaves = tree(n);
            let head = root(&leaves);
            for i in 0..n {
                let proof = inclusion_proof(&leaves, i as u64).unwrap();
                verify_inclusion(&leaves[i], i as u64, n as u64, &proof, &head).unwrap();
                // Another leaf, another index, a flipped proof byte, a shorter proof.
                let other = (i + 1) % n;
                if other != i {
                    assert!(
                        verify_inclusion(&leaves[other], i as u64, n as u64, &proof, &head)
                            .is_err()
                    );
                    assert!(
                        verify_inclusion(&leaves[i], other as u64, n as u64, &proof, &head)
                            .is_err()
                    );
                }
                if let Some(first) = proof.first() {
                    let mut flipped = proof.clone();
                    flipped[0][0] = first[0] ^ 1;
                    assert!(
                        verify_inclusion(&leaves[i], i as u64, n as u64, &flipped, &head).is_err()
                    );
                    assert!(
                        verify_inclusion(&leaves[i], i as u64, n as u64, &proof[1..], &head)
                            .is_err()
                    );
                }
            }
            assert!(inclusion_proof(&leaves, n as u64).is_err());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_any_change_fails() {
        let leaves = tree(40);
        for new in 1..=40usize {
            let new_root = root(&leaves[..new]);
            for old in 0..=new {
                let old_root = root(&leaves[..old]);
                let proof = consistency_proof(&leaves[..new], old as u64).unwrap();
                verify_consistency(old as u64, new as u64, &proof, &old_root, &new_root)
                    .unwrap_or_else(|e| panic!("{old} -> {new}: {e}"));
                if old > 0 && old < new {
                    let forged = root(&tree(old + 1)[1..]);
                    assert!(
                        verify_consistency(old as u64, new as u64, &proof, &forged, &new_root)
                            .is_err()
                    );
                    let mut flipped = proof.clone();
                    flipped[0][31] ^= 0x80;
                    assert!(
                        verify_consistency(old as u64, new as u64, &flipped, &old_root, &new_root)
                            .is_err()
                    );
                    assert!(
                        verify_consistency(
                            old as u64,
                            new as u64,
                            &proof[..proof.len() - 1],
                            &old_root,
                            &new_root
                        )
                        .is_err()
                    );
                }
            }
        }
        assert!(consistency_proof(&leaves[..3], 4).is_err());
        assert!(verify_consistency(5, 4, &[], &empty_root(), &empty_root()).is_err());
    }
}
