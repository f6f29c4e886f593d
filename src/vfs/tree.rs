//! The pure tree builder: archive names and file tables in, the immutable node table out. No
//! I/O (the caller reads the archives' mtimes first), so every layout rule and name clash is
//! decided here and tested without files.

use std::collections::HashMap;
use std::time::SystemTime;

use super::{ROOT_INO, SetupError, VfsError};
use crate::format::FileEntry;

#[derive(Debug)]
pub(super) enum NodeKind {
    /// Children sorted by name (binary search for lookup, stable order for readdir).
    Dir {
        children: Vec<(String, u64)>,
    },
    File {
        archive: usize,
        file: usize,
    },
}

#[derive(Debug)]
pub(super) struct Node {
    pub(super) parent: u64,
    pub(super) kind: NodeKind,
    pub(super) size: u64,
    pub(super) perm: u16,
    pub(super) mtime: SystemTime,
}

/// One archive as the tree sees it: where it goes (`None`: at the root, only for a single
/// archive; `Some(name)`: a sub-directory), its file table and the mtime its nodes show.
pub(super) struct TreeInput<'a> {
    pub(super) name: Option<&'a str>,
    pub(super) files: &'a [FileEntry],
    pub(super) mtime: SystemTime,
}

/// The node table: inode `ino` is `nodes[ino - 1]`, the root is inode 1.
#[derive(Debug)]
pub(super) struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// Build the tree of `list` (archive `i` of the list is `NodeKind::File { archive: i, .. }`);
    /// the root shows `root_mtime`.
    pub(super) fn build(
        list: &[TreeInput<'_>],
        root_mtime: SystemTime,
    ) -> Result<Tree, SetupError> {
        if list.is_empty() {
            return Err(SetupError::NoArchives("no archives given".into()));
        }
        let mut b = TreeBuilder {
            nodes: vec![dir_node(ROOT_INO, root_mtime)],
            index: HashMap::new(),
        };
        for (ai, input) in list.iter().enumerate() {
            let (top, prefix) = b.archive_top(input, list.len() > 1)?;
            for (fi, f) in input.files.iter().enumerate() {
                let (parent, name) = b.dirs_of(top, &prefix, &f.path, input.mtime)?;
                b.add(
                    parent,
                    name,
                    || format!("{prefix}{}", f.path),
                    Node {
                        parent,
                        kind: NodeKind::File {
                            archive: ai,
                            file: fi,
                        },
                        size: f.size,
                        perm: (f.mode & 0o7555) as u16,
                        mtime: input.mtime,
                    },
                )?;
            }
        }
        let mut nodes = b.nodes;
        for n in &mut nodes {
            if let NodeKind::Dir { children } = &mut n.kind {
                children.sort();
            }
        }
        Ok(Tree { nodes })
    }

    pub(super) fn node(&self, ino: u64) -> Result<&Node, VfsError> {
        ino.checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.nodes.get(i))
            .ok_or(VfsError::NotFound)
    }

    /// Number of inodes (directories and files).
    pub(super) fn len(&self) -> u64 {
        self.nodes.len() as u64
    }
}

fn dir_node(parent: u64, mtime: SystemTime) -> Node {
    Node {
        parent,
        kind: NodeKind::Dir {
            children: Vec::new(),
        },
        size: 0,
        perm: 0o555,
        mtime,
    }
}

/// Builds the node table. Every node is found by (parent inode, name), so adding a path costs
/// its length, however deep it is (keying by the full path of every directory was quadratic in
/// the depth, in time and in memory).
struct TreeBuilder {
    nodes: Vec<Node>,
    /// (parent inode, name) -> inode, for every node but the root.
    index: HashMap<(u64, String), u64>,
}

impl TreeBuilder {
    fn contains(&self, parent: u64, name: &str) -> bool {
        self.index.contains_key(&(parent, name.to_string()))
    }

    /// The directory an archive's files go in (its own sub-directory, or the root for a single
    /// archive) and the prefix that names its paths in errors.
    fn archive_top(
        &mut self,
        input: &TreeInput<'_>,
        several: bool,
    ) -> Result<(u64, String), SetupError> {
        match input.name {
            Some(n) => {
                if n.is_empty() || n.contains('/') || n == "." || n == ".." {
                    return Err(SetupError::NameClash(format!(
                        "invalid archive directory name {n:?}"
                    )));
                }
                if self.contains(ROOT_INO, n) {
                    return Err(SetupError::NameClash(format!(
                        "two archives would both be mounted as {n}/"
                    )));
                }
                let ino = self.dir(ROOT_INO, n, || n.to_string(), input.mtime)?;
                Ok((ino, format!("{n}/")))
            }
            None if several => Err(SetupError::NameClash(
                "several archives need one sub-directory each".into(),
            )),
            None => Ok((ROOT_INO, String::new())),
        }
    }

    /// The directory `name` in `parent`, created if missing; `path` names it in errors.
    fn dir(
        &mut self,
        parent: u64,
        name: &str,
        path: impl Fn() -> String,
        mtime: SystemTime,
    ) -> Result<u64, SetupError> {
        if let Some(&ino) = self.index.get(&(parent, name.to_string())) {
            return match self.nodes[(ino - 1) as usize].kind {
                NodeKind::Dir { .. } => Ok(ino),
                NodeKind::File { .. } => Err(SetupError::NameClash(format!(
                    "{} is both a file and a directory",
                    crate::text::escaped(&path())
                ))),
            };
        }
        self.add(parent, name, path, dir_node(parent, mtime))
    }

    /// The directories of `path` ('/'-separated) under `parent`, created if missing; returns the
    /// inode of the last one and the final component.
    fn dirs_of<'p>(
        &mut self,
        mut parent: u64,
        prefix: &str,
        path: &'p str,
        mtime: SystemTime,
    ) -> Result<(u64, &'p str), SetupError> {
        let (dirs, name) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        };
        if !dirs.is_empty() {
            for (end, c) in dirs
                .match_indices('/')
                .map(|(i, _)| i)
                .chain(std::iter::once(dirs.len()))
                .zip(dirs.split('/'))
            {
                parent = self.dir(parent, c, || format!("{prefix}{}", &dirs[..end]), mtime)?;
            }
        }
        Ok((parent, name))
    }

    fn add(
        &mut self,
        parent: u64,
        name: &str,
        path: impl Fn() -> String,
        node: Node,
    ) -> Result<u64, SetupError> {
        let key = (parent, name.to_string());
        if self.index.contains_key(&key) {
            return Err(SetupError::NameClash(format!(
                "{} appears twice",
                crate::text::escaped(&path())
            )));
        }
        let ino = self.nodes.len() as u64 + 1;
        self.nodes.push(node);
        self.index.insert(key, ino);
        match self
            .nodes
            .get_mut((parent - 1) as usize)
            .map(|n| &mut n.kind)
        {
            Some(NodeKind::Dir { children }) => children.push((name.to_string(), ino)),
            _ => {
                return Err(SetupError::NameClash(format!(
                    "parent of {} is not a directory",
                    crate::text::escaped(&path())
                )));
            }
        }
        Ok(ino)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, size: u64, mode: u32) -> FileEntry {
        FileEntry {
            path: path.into(),
            mode,
            size,
            sha256: [0; 32],
            segments: Vec::new(),
        }
    }

    fn names(t: &Tree, ino: u64) -> Vec<&str> {
        match &t.node(ino).unwrap().kind {
            NodeKind::Dir { children } => children.iter().map(|(n, _)| n.as_str()).collect(),
            NodeKind::File { .. } => panic!("not a directory"),
        }
    }

    fn child(t: &Tree, ino: u64, name: &str) -> u64 {
        match &t.node(ino).unwrap().kind {
            NodeKind::Dir { children } => children.iter().find(|(n, _)| n == name).unwrap().1,
            NodeKind::File { .. } => panic!("not a directory"),
        }
    }

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn one_archive_at_the_root_with_synthesised_directories() {
        let t1 = T0 + std::time::Duration::from_secs(5);
        let files = [file("b.txt", 3, 0o644), file("a/x/y.bin", 9, 0o755)];
        let t = Tree::build(
            &[TreeInput {
                name: None,
                files: &files,
                mtime: t1,
            }],
            T0,
        )
        .unwrap();
        assert_eq!(names(&t, ROOT_INO), ["a", "b.txt"]);
        let y = child(&t, child(&t, child(&t, ROOT_INO, "a"), "x"), "y.bin");
        let n = t.node(y).unwrap();
        assert!(matches!(
            n.kind,
            NodeKind::File {
                archive: 0,
                file: 1
            }
        ));
        assert_eq!(
            (n.size, n.perm, n.mtime),
            (9, 0o555, t1),
            "write bits stripped"
        );
        assert_eq!(t.node(ROOT_INO).unwrap().mtime, T0);
        assert_eq!(t.len(), 5);
        assert!(matches!(t.node(0), Err(VfsError::NotFound)));
        assert!(matches!(t.node(6), Err(VfsError::NotFound)));
    }

    #[test]
    fn several_archives_need_distinct_valid_names() {
        let f = [file("m.safetensors", 1, 0o644)];
        let input = |name| TreeInput {
            name,
            files: &f,
            mtime: T0,
        };
        let t = Tree::build(&[input(Some("b")), input(Some("a"))], T0).unwrap();
        assert_eq!(names(&t, ROOT_INO), ["a", "b"]);
        for bad in [
            vec![input(Some("a")), input(Some("a"))],
            vec![input(None), input(Some("a"))],
            vec![input(Some("..")), input(Some("a"))],
            vec![input(Some("x/y"))],
        ] {
            assert!(matches!(
                Tree::build(&bad, T0),
                Err(SetupError::NameClash(_))
            ));
        }
        assert!(matches!(
            Tree::build(&[], T0),
            Err(SetupError::NoArchives(_))
        ));
    }

    #[test]
    fn a_path_that_is_file_and_directory_or_twice_is_a_clash() {
        for files in [
            vec![file("a", 1, 0o644), file("a/b", 1, 0o644)],
            vec![file("a/b", 1, 0o644), file("a", 1, 0o644)],
            vec![file("a", 1, 0o644), file("a", 1, 0o644)],
        ] {
            let r = Tree::build(
                &[TreeInput {
                    name: None,
                    files: &files,
                    mtime: T0,
                }],
                T0,
            );
            assert!(matches!(r, Err(SetupError::NameClash(_))), "{files:?}");
        }
    }
}
