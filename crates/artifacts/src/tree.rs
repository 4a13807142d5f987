//! The tree in memory: building manifests from a tree that a walk or an archive
//! produced, and loading a stored version's manifests back.

use std::collections::{BTreeMap, HashMap, HashSet};

use futures_util::{StreamExt, TryStreamExt};

use crate::blob::{BlobStore, Hash};
use crate::error::{ArtifactError, Result};
use crate::manifest::{self, ChunkRef, Entry, EntryKind};

/// How many blob reads or writes run at once.
pub(crate) const IO_CONCURRENCY: usize = 16;

/// A node of a tree being built.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    /// A file; `content` is `File` or `ChunkedFile`, or a placeholder until hashed.
    File {
        mode: u32,
        size: u64,
        content: Content,
    },
    Symlink {
        target: String,
    },
    Dir {
        mode: u32,
        children: BTreeMap<String, Node>,
    },
}

/// A file's content reference, or the index of the file in a list still being hashed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Content {
    Blob(Hash),
    Chunked(Hash),
    Pending(usize),
}

/// Manifests produced by [`build`], root last.
#[derive(Debug, Default)]
pub(crate) struct Built {
    pub manifests: Vec<(Hash, Vec<u8>)>,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Encodes every directory of `children` (the root's) bottom-up. `pending` resolves
/// placeholders: `(content, size)` of the file with that index.
pub(crate) fn build(
    children: &BTreeMap<String, Node>,
    pending: &dyn Fn(usize) -> Option<(Content, u64)>,
) -> Result<(Hash, Built)> {
    let mut built = Built::default();
    let root = build_dir(children, pending, &mut built)?;
    Ok((root, built))
}

fn build_dir(
    children: &BTreeMap<String, Node>,
    pending: &dyn Fn(usize) -> Option<(Content, u64)>,
    built: &mut Built,
) -> Result<Hash> {
    let mut entries = Vec::with_capacity(children.len());
    for (name, node) in children {
        let entry = match node {
            Node::File {
                mode,
                size,
                content,
            } => {
                let (content, size) = match content {
                    Content::Pending(index) => pending(*index).ok_or_else(|| {
                        ArtifactError::WorkspaceUnsupported(format!("`{name}` was not hashed"))
                    })?,
                    other => (*other, *size),
                };
                built.files += 1;
                built.bytes += size;
                let kind = match content {
                    Content::Chunked(chunks) => EntryKind::ChunkedFile { chunks },
                    Content::Blob(content) => EntryKind::File { content },
                    Content::Pending(_) => {
                        return Err(ArtifactError::WorkspaceUnsupported(format!(
                            "`{name}` was not hashed"
                        )));
                    }
                };
                Entry {
                    name: name.clone(),
                    kind,
                    mode: *mode & manifest::MODE_MASK,
                    size,
                }
            }
            Node::Symlink { target } => {
                built.symlinks += 1;
                Entry {
                    name: name.clone(),
                    size: target.len() as u64,
                    kind: EntryKind::Symlink {
                        target: target.clone(),
                    },
                    mode: 0,
                }
            }
            Node::Dir { mode, children } => {
                built.dirs += 1;
                let manifest = build_dir(children, pending, built)?;
                Entry {
                    name: name.clone(),
                    kind: EntryKind::Dir { manifest },
                    mode: *mode & manifest::MODE_MASK,
                    size: 0,
                }
            }
        };
        entries.push(entry);
    }
    let bytes = manifest::encode_dir(&entries);
    let hash = Hash::of(&bytes);
    built.manifests.push((hash, bytes));
    Ok(hash)
}

/// A stored version's directory manifests, by hash.
#[derive(Debug)]
pub(crate) struct Tree {
    pub root: Hash,
    pub dirs: HashMap<Hash, Vec<Entry>>,
}

/// One entry of a version with its path, in depth-first order, a directory before its
/// contents and siblings by name.
#[derive(Debug, Clone)]
pub(crate) struct PathEntry {
    pub path: String,
    pub entry: Entry,
}

impl Tree {
    /// The root directory's entries.
    pub fn root_entries(&self) -> &[Entry] {
        self.dirs.get(&self.root).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The entries of a loaded directory manifest.
    pub fn entries(&self, manifest: &Hash) -> &[Entry] {
        self.dirs.get(manifest).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Every entry below the root, depth first.
    pub fn flatten(&self) -> Vec<PathEntry> {
        let mut out = Vec::new();
        self.flatten_into(&self.root, "", &mut out);
        out
    }

    fn flatten_into(&self, manifest: &Hash, prefix: &str, out: &mut Vec<PathEntry>) {
        for entry in self.entries(manifest) {
            let path = join(prefix, &entry.name);
            out.push(PathEntry {
                path: path.clone(),
                entry: entry.clone(),
            });
            if let EntryKind::Dir { manifest } = &entry.kind {
                self.flatten_into(manifest, &path, out);
            }
        }
    }
}

/// `prefix/name`, or `name` at the root.
pub(crate) fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}/{name}")
    }
}

/// Fetches and decodes one directory manifest.
pub(crate) async fn load_dir(blobs: &BlobStore, manifest: &Hash) -> Result<Vec<Entry>> {
    let bytes = blobs.get(manifest).await?;
    manifest::decode_dir(manifest, &bytes)
}

/// Loads every directory manifest of a version, level by level, several at a time.
pub(crate) async fn load_tree(blobs: &BlobStore, root: &Hash) -> Result<Tree> {
    let mut tree = Tree {
        root: *root,
        dirs: HashMap::new(),
    };
    let mut level = vec![*root];
    let mut seen: HashSet<Hash> = HashSet::from([*root]);
    while !level.is_empty() {
        let loaded: Vec<(Hash, Vec<Entry>)> = futures_util::stream::iter(level)
            .map(
                |hash| async move { Ok::<_, ArtifactError>((hash, load_dir(blobs, &hash).await?)) },
            )
            .buffer_unordered(IO_CONCURRENCY)
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for (hash, entries) in loaded {
            for entry in &entries {
                if let EntryKind::Dir { manifest } = entry.kind
                    && seen.insert(manifest)
                {
                    next.push(manifest);
                }
            }
            tree.dirs.insert(hash, entries);
        }
        level = next;
    }
    Ok(tree)
}

/// Fetches the chunk lists of the given chunked files `(chunk list, size)`.
pub(crate) async fn load_chunk_lists(
    blobs: &BlobStore,
    lists: impl IntoIterator<Item = (Hash, u64)>,
) -> Result<HashMap<Hash, Vec<ChunkRef>>> {
    let unique: HashMap<Hash, u64> = lists.into_iter().collect();
    futures_util::stream::iter(unique)
        .map(|(hash, size)| async move {
            let bytes = blobs.get(&hash).await?;
            Ok::<_, ArtifactError>((hash, manifest::decode_chunks(&hash, &bytes, size)?))
        })
        .buffer_unordered(IO_CONCURRENCY)
        .try_collect()
        .await
}

/// A file's whole content, verified.
pub(crate) async fn read_content(blobs: &BlobStore, entry: &Entry) -> Result<Vec<u8>> {
    match &entry.kind {
        EntryKind::File { content } => Ok(blobs.get(content).await?.to_vec()),
        EntryKind::ChunkedFile { chunks } => {
            let list = blobs.get(chunks).await?;
            let chunks = manifest::decode_chunks(chunks, &list, entry.size)?;
            let mut out = Vec::with_capacity(entry.size as usize);
            let mut stream = futures_util::stream::iter(chunks)
                .map(|chunk| async move { blobs.get(&chunk.hash).await })
                .buffered(4);
            while let Some(bytes) = stream.next().await {
                out.extend_from_slice(&bytes?);
            }
            Ok(out)
        }
        _ => Err(ArtifactError::PathNotFound(entry.name.clone())),
    }
}

/// Whether a symlink at `link_path` (relative to the workspace) with `target` resolves,
/// read lexically, to a place inside the workspace: a relative target whose `..`
/// never climb above the workspace's root.
pub(crate) fn symlink_stays_inside(link_path: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    // The link's directory's depth.
    let mut depth = link_path.split('/').filter(|c| !c.is_empty()).count() as i64 - 1;
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

/// Most symlinks followed while resolving one path, as the kernel allows.
const MAX_SYMLINK_HOPS: usize = 40;

/// The first symlink of the tree that, resolved through the tree's own symlinks, leads
/// outside it: `a -> x/y/z` and `b -> a/../../..` each look inside when read alone,
/// but `b` climbs out through `a`. Paths through missing names are read lexically; a
/// loop resolves nowhere, so it cannot escape.
pub(crate) fn find_escaping_symlink(root: &BTreeMap<String, Node>) -> Option<(String, String)> {
    let mut links = Vec::new();
    collect_symlinks(root, &mut Vec::new(), &mut links);
    links.into_iter().find_map(|(location, target)| {
        resolves_outside(root, &location, &target).then(|| (location.join("/"), target))
    })
}

fn collect_symlinks(
    dir: &BTreeMap<String, Node>,
    prefix: &mut Vec<String>,
    out: &mut Vec<(Vec<String>, String)>,
) {
    for (name, node) in dir {
        prefix.push(name.clone());
        match node {
            Node::Symlink { target } => out.push((prefix.clone(), target.clone())),
            Node::Dir { children, .. } => collect_symlinks(children, prefix, out),
            Node::File { .. } => {}
        }
        prefix.pop();
    }
}

fn node_at<'a>(root: &'a BTreeMap<String, Node>, path: &[String]) -> Option<&'a Node> {
    let (last, parents) = path.split_last()?;
    let mut dir = root;
    for parent in parents {
        match dir.get(parent)? {
            Node::Dir { children, .. } => dir = children,
            _ => return None,
        }
    }
    dir.get(last)
}

fn resolves_outside(root: &BTreeMap<String, Node>, location: &[String], target: &str) -> bool {
    // Where resolution stands, and what is left to walk.
    let mut current: Vec<String> = location[..location.len().saturating_sub(1)].to_vec();
    let mut pending: std::collections::VecDeque<String> =
        target.split('/').map(str::to_owned).collect();
    let mut hops = 0;
    while let Some(component) = pending.pop_front() {
        match component.as_str() {
            "" | "." => continue,
            ".." => {
                if current.pop().is_none() {
                    return true;
                }
                continue;
            }
            _ => current.push(component),
        }
        match node_at(root, &current) {
            Some(Node::Symlink { target }) => {
                hops += 1;
                if hops > MAX_SYMLINK_HOPS {
                    return false;
                }
                if target.starts_with('/') {
                    return true;
                }
                current.pop();
                for part in target.split('/').rev() {
                    pending.push_front(part.to_owned());
                }
            }
            Some(Node::File { .. }) if !pending.is_empty() => return false,
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(target: &str) -> Node {
        Node::Symlink {
            target: target.to_owned(),
        }
    }

    fn dir(children: Vec<(&str, Node)>) -> Node {
        Node::Dir {
            mode: 0o755,
            children: children
                .into_iter()
                .map(|(n, c)| (n.to_owned(), c))
                .collect(),
        }
    }

    fn root(children: Vec<(&str, Node)>) -> BTreeMap<String, Node> {
        match dir(children) {
            Node::Dir { children, .. } => children,
            _ => BTreeMap::new(),
        }
    }

    #[test]
    fn a_chain_of_symlinks_that_climbs_out_is_found() {
        // a/b/l -> ../../x (the root's x); m -> a/b/l/.. goes through x to x/.., the
        // root: inside.
        let inside = root(vec![
            ("a", dir(vec![("b", dir(vec![("l", link("../../x"))]))])),
            ("x", dir(vec![])),
            ("m", link("a/b/l/..")),
        ]);
        assert_eq!(find_escaping_symlink(&inside), None);
        // n -> a/b/l/../.. reads as `a` lexically but goes through x/.. to the root and
        // one more `..` out of it.
        let outside = root(vec![
            ("a", dir(vec![("b", dir(vec![("l", link("../../x"))]))])),
            ("x", dir(vec![])),
            ("n", link("a/b/l/../..")),
        ]);
        assert_eq!(
            find_escaping_symlink(&outside),
            Some(("n".to_owned(), "a/b/l/../..".to_owned()))
        );
        // A loop resolves nowhere.
        let looped = root(vec![("p", link("q/..")), ("q", link("p/.."))]);
        assert_eq!(find_escaping_symlink(&looped), None);
    }
}
