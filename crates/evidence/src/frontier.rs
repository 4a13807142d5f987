//! The right edge of an append-only RFC 6962 tree (a "compact range" from 0 to its
//! size): the roots of the perfect subtrees that the binary digits of the size split
//! the leaves into, largest first. That is all an appender needs to compute the next
//! tree head: O(log n) hashes to keep, O(log n) work per append and per head.

use crate::merkle::{Hash, empty_root, node_hash};

/// The compact range `[0, size)` of a log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Frontier {
    size: u64,
    /// One root per set bit of `size`, from the highest bit (leftmost subtree) down.
    subtrees: Vec<Hash>,
}

impl Frontier {
    /// The frontier of the empty log.
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// The frontier after appending `leaves` (leaf hashes) to the empty log.
    pub fn from_leaves(leaves: &[Hash]) -> Frontier {
        let mut frontier = Frontier::new();
        for leaf in leaves {
            frontier.push(*leaf);
        }
        frontier
    }

    /// Rebuilds a frontier from what [`Frontier::size`] and [`Frontier::subtrees`]
    /// returned; `None` when the number of hashes does not fit the size.
    pub fn from_parts(size: u64, subtrees: Vec<Hash>) -> Option<Frontier> {
        (subtrees.len() == size.count_ones() as usize).then_some(Frontier { size, subtrees })
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        // Each trailing one bit of the old size is a subtree of the same height as the
        // node being carried up: they merge, like a carry in binary addition.
        let mut node = leaf;
        let mut carries = self.size.trailing_ones();
        while carries > 0 {
            let Some(left) = self.subtrees.pop() else {
                break;
            };
            node = node_hash(&left, &node);
            carries -= 1;
        }
        self.subtrees.push(node);
        self.size += 1;
    }

    /// The number of leaves appended.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The subtree roots, largest (leftmost) first, for storing the frontier.
    pub fn subtrees(&self) -> &[Hash] {
        &self.subtrees
    }

    /// The tree head over all appended leaves, equal to `merkle::root` of them.
    pub fn root(&self) -> Hash {
        // RFC 6962 splits at the largest power of two, so the head nests the subtrees
        // from the right: s0 + (s1 + (s2 + ...)).
        let mut from_right = self.subtrees.iter().rev();
        let Some(last) = from_right.next() else {
            return empty_root();
        };
        from_right.fold(*last, |right, left| node_hash(left, &right))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, root};

    #[test]
    fn matches_the_full_tree_at_every_size_up_to_300() {
        let leaves: Vec<Hash> = (0u32..300).map(|i| leaf_hash(&i.to_be_bytes())).collect();
        let mut frontier = Frontier::new();
        assert_eq!(frontier.root(), root(&[]));
        for (count, leaf) in leaves.iter().enumerate() {
            frontier.push(*leaf);
            let size = count + 1;
            assert_eq!(frontier.size(), size as u64);
            assert_eq!(frontier.root(), root(&leaves[..size]), "size {size}");
            assert_eq!(frontier.subtrees().len(), size.count_ones() as usize);
        }
        for size in [0, 1, 2, 3, 7, 8, 9, 255, 256, 299] {
            let built = Frontier::from_leaves(&leaves[..size]);
            assert_eq!(built.root(), root(&leaves[..size]), "size {size}");
            let again = Frontier::from_parts(built.size(), built.subtrees().to_vec());
            assert_eq!(again.as_ref(), Some(&built));
        }
    }

    #[test]
    fn from_parts_refuses_the_wrong_number_of_hashes() {
        let leaves: Vec<Hash> = (0u8..3).map(|i| leaf_hash(&[i])).collect();
        let frontier = Frontier::from_leaves(&leaves);
        assert!(Frontier::from_parts(4, frontier.subtrees().to_vec()).is_none());
        assert!(Frontier::from_parts(0, vec![]).is_some());
    }
}
