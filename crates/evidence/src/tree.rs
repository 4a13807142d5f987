//! An append-only RFC 6962 tree that keeps every complete subtree's root, so that the
//! head and the proofs of any prefix of it take O(log² n) hashes instead of the O(n) of
//! the functions in [`merkle`](crate::merkle), which recompute subtrees from the
//! leaves. The evidence log's writer holds one per tenant; an export proves hundreds of
//! entries against a log of millions without walking it.
//!
//! Memory: the leaves and about as many inner roots again (64 bytes a leaf).

use crate::merkle::{Hash, ProofError, empty_root, node_hash};

/// Leaf hashes and the roots of their complete, aligned subtrees: `levels[k][j]` is
/// the root of leaves `j * 2^k .. (j + 1) * 2^k`, and `levels[0]` the leaves.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree over `leaves` (leaf hashes), in order.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = Self::new();
        tree.extend(leaves);
        tree
    }

    /// Appends a leaf hash, completing the subtrees it closes (amortised O(1)).
    pub fn push(&mut self, leaf: Hash) {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(leaf);
        let mut level = 0;
        while self.levels[level].len().is_multiple_of(2) {
            let below = &self.levels[level];
            let parent = node_hash(&below[below.len() - 2], &below[below.len() - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
    }

    /// Appends leaf hashes in order.
    pub fn extend(&mut self, leaves: impl IntoIterator<Item = Hash>) {
        for leaf in leaves {
            self.push(leaf);
        }
    }

    /// How many leaves the tree holds.
    pub fn len(&self) -> u64 {
        self.leaves().len() as u64
    }

    /// Whether the tree holds no leaf.
    pub fn is_empty(&self) -> bool {
        self.leaves().is_empty()
    }

    /// Every leaf hash, in order.
    pub fn leaves(&self) -> &[Hash] {
        self.levels.first().map_or(&[], Vec::as_slice)
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.leaves().get(i))
            .copied()
    }

    /// `size` as an index into the leaves, if the tree has that many.
    fn checked_size(&self, size: u64) -> Result<usize, ProofError> {
        usize::try_from(size)
            .ok()
            .filter(|&n| n <= self.leaves().len())
            .ok_or(ProofError::SizesOutOfOrder {
                old: size,
                new: self.len(),
            })
    }

    /// The head of the tree over the first `size` leaves (`SizesOutOfOrder` if the tree
    /// is smaller).
    pub fn root(&self, size: u64) -> Result<Hash, ProofError> {
        let n = self.checked_size(size)?;
        Ok(if n == 0 {
            empty_root()
        } else {
            self.range_root(0, n)
        })
    }

    /// The audit path of leaf `index` in the tree over the first `size` leaves; the same
    /// hashes as [`merkle::inclusion_proof`](crate::merkle::inclusion_proof) over them.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        let n = self.checked_size(size)?;
        let m = usize::try_from(index)
            .ok()
            .filter(|&m| m < n)
            .ok_or(ProofError::IndexOutOfRange { index, size })?;
        let mut proof = Vec::new();
        self.path(m, 0, n, &mut proof);
        Ok(proof)
    }

    /// The proof that the tree of the first `old_size` leaves is a prefix of the tree of
    /// the first `size`; the same hashes as
    /// [`merkle::consistency_proof`](crate::merkle::consistency_proof).
    pub fn consistency_proof(&self, old_size: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        let n = self.checked_size(size)?;
        let m = usize::try_from(old_size).ok().filter(|&m| m <= n).ok_or(
            ProofError::SizesOutOfOrder {
                old: old_size,
                new: size,
            },
        )?;
        let mut proof = Vec::new();
        if m > 0 && m < n {
            self.subproof(m, 0, n, true, &mut proof);
        }
        Ok(proof)
    }

    /// The root of leaves `start .. start + len` (len >= 1), a node of an RFC 6962 tree
    /// over a prefix: when `len` is a power of two, `start` is a multiple of it, so the
    /// node is a stored complete subtree.
    fn range_root(&self, start: usize, len: usize) -> Hash {
        if len.is_power_of_two() {
            let level = len.trailing_zeros() as usize;
            debug_assert!(start.is_multiple_of(len));
            return self.levels[level][start >> level];
        }
        let k = split(len);
        node_hash(
            &self.range_root(start, k),
            &self.range_root(start + k, len - k),
        )
    }

    /// RFC 9162 PATH(m, D[start : start + len]).
    fn path(&self, m: usize, start: usize, len: usize, proof: &mut Vec<Hash>) {
        if len <= 1 {
            return;
        }
        let k = split(len);
        if m < k {
            self.path(m, start, k, proof);
            proof.push(self.range_root(start + k, len - k));
        } else {
            self.path(m - k, start + k, len - k, proof);
            proof.push(self.range_root(start, k));
        }
    }

    /// RFC 9162 SUBPROOF(m, D[start : start + len], whole).
    fn subproof(&self, m: usize, start: usize, len: usize, whole: bool, proof: &mut Vec<Hash>) {
        if m == len {
            if !whole {
                proof.push(self.range_root(start, len));
            }
            return;
        }
        let k = split(len);
        if m <= k {
            self.subproof(m, start, k, whole, proof);
            proof.push(self.range_root(start + k, len - k));
        } else {
            self.subproof(m - k, start + k, len - k, false, proof);
            proof.push(self.range_root(start, k));
        }
    }
}

/// The largest power of two strictly below `n` (n >= 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| merkle::leaf_hash(&i.to_be_bytes()))
            .collect()
    }

    #[test]
    fn agrees_with_the_reference_functions_on_every_prefix() {
        let all = leaves(70);
        let tree = MerkleTree::from_leaves(all.iter().copied());
        assert_eq!(tree.len(), 70);
        for size in 0..=70u64 {
            let prefix = &all[..size as usize];
            assert_eq!(
                tree.root(size).unwrap(),
                merkle::root(prefix),
                "size {size}"
            );
            for index in 0..size {
                assert_eq!(
                    tree.inclusion_proof(index, size).unwrap(),
                    merkle::inclusion_proof(prefix, index).unwrap(),
                    "inclusion of {index} in {size}"
                );
            }
            for old in 0..=size {
                assert_eq!(
                    tree.consistency_proof(old, size).unwrap(),
                    merkle::consistency_proof(prefix, old).unwrap(),
                    "consistency {old} -> {size}"
                );
            }
        }
    }

    #[test]
    fn proofs_verify_on_a_large_tree() {
        let tree = MerkleTree::from_leaves(leaves(100_003));
        let size = tree.len();
        let root = tree.root(size).unwrap();
        for index in [0, 1, 65_535, 65_536, 99_999, 100_002] {
            let proof = tree.inclusion_proof(index, size).unwrap();
            let leaf = tree.leaf(index).unwrap();
            merkle::verify_inclusion(&leaf, index, size, &proof, &root).unwrap();
        }
        for old in [1, 2, 3, 4096, 65_537, 100_002] {
            let proof = tree.consistency_proof(old, size).unwrap();
            let old_root = tree.root(old).unwrap();
            merkle::verify_consistency(old, size, &proof, &old_root, &root).unwrap();
        }
    }

    #[test]
    fn refuses_sizes_and_indexes_beyond_the_tree() {
        let tree = MerkleTree::from_leaves(leaves(5));
        assert!(tree.root(6).is_err());
        assert_eq!(tree.root(0).unwrap(), merkle::empty_root());
        assert_eq!(
            tree.inclusion_proof(5, 5),
            Err(ProofError::IndexOutOfRange { index: 5, size: 5 })
        );
        assert!(tree.inclusion_proof(0, 6).is_err());
        assert!(tree.consistency_proof(4, 3).is_err());
        assert!(tree.consistency_proof(1, 6).is_err());
        assert!(tree.leaf(5).is_none());
        assert!(MerkleTree::new().is_empty());
    }
}
