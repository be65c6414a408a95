//! Rules in gitignore syntax (the `ignore` crate's gitignore matcher), of
//! two kinds:
//!
//! - ignore rules: `.dirsyncignore` at the root of DIR, which syncs, so
//!   every node ends with the same rules; the paths they name stay each
//!   node's own and are left out of the tree digest;
//! - exclusion rules: `STATE_DIR/exclude` (`DIR/.dirsync/exclude` by
//!   default), which never leaves this host; the paths they name are not
//!   synced to or from this host, and keep existing on the others.
//!
//! Owns: parsing a rules file and answering "does it name this path?".
//! Must not: read the disk (`fs::state` does) or decide what to do with a
//! path it names (the engine does).
//!
//! Built in, whatever the files say: dirsync's own state folder and temp
//! files are never synced (`RelPath` refuses their names), and the ignore
//! file itself always syncs.

use crate::wire::{Hash, RelPath};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use std::path::Path;

/// The ignore file's name, at the root of DIR.
pub const IGNORE_FILE: &str = ".dirsyncignore";

/// The exclusion file's name, in the state directory.
pub const EXCLUDE_FILE: &str = "exclude";

/// A parsed rules file (empty: it names nothing).
#[derive(Clone, Default)]
pub struct IgnoreRules {
    matcher: Option<Gitignore>,
    /// Content hash of the text these rules came from (`None`: no file).
    source: Option<Hash>,
}

impl std::fmt::Debug for IgnoreRules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IgnoreRules")
            .field("patterns", &self.matcher.as_ref().map_or(0, Gitignore::num_ignores))
            .field("source", &self.source)
            .finish()
    }
}

impl IgnoreRules {
    /// Rules from the text of an ignore file. Lines that are not valid
    /// patterns are left out and returned, each with the reason.
    pub fn parse(text: &str) -> (IgnoreRules, Vec<String>) {
        Self::parse_file(IGNORE_FILE, text)
    }

    /// Rules from the text of the rules file `file` (named in the errors).
    fn parse_file(file: &str, text: &str) -> (IgnoreRules, Vec<String>) {
        let mut b = GitignoreBuilder::new("");
        let mut errors = Vec::new();
        for (n, line) in text.lines().enumerate() {
            if let Err(e) = b.add_line(None, line) {
                errors.push(format!("{file} line {}: {e}", n + 1));
            }
        }
        let matcher = match b.build() {
            Ok(m) if m.num_ignores() + m.num_whitelists() > 0 => Some(m),
            Ok(_) => None,
            Err(e) => {
                errors.push(format!("{file}: {e}"));
                None
            }
        };
        let rules = IgnoreRules {
            matcher,
            source: Some(Hash::of(text.as_bytes())),
        };
        (rules, errors)
    }

    /// Rules from the bytes of an ignore file (not UTF-8: read lossily),
    /// remembering the hash of exactly these bytes.
    pub fn from_bytes(bytes: &[u8]) -> (IgnoreRules, Vec<String>) {
        Self::from_file_bytes(IGNORE_FILE, bytes)
    }

    /// Rules from the bytes of the rules file `file` (see `from_bytes`).
    pub fn from_file_bytes(file: &str, bytes: &[u8]) -> (IgnoreRules, Vec<String>) {
        let (mut rules, errors) = Self::parse_file(file, &String::from_utf8_lossy(bytes));
        rules.source = Some(Hash::of(bytes));
        (rules, errors)
    }

    /// How many patterns (ignores and `!` exceptions) the rules hold.
    pub fn len(&self) -> usize {
        self.matcher
            .as_ref()
            .map_or(0, |m| m.num_ignores() as usize + m.num_whitelists() as usize)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The content hash of the file these rules came from.
    pub fn source(&self) -> Option<Hash> {
        self.source
    }

    /// True if `path` (a folder when `is_dir`), or a folder above it, is
    /// ignored. The ignore file itself never is.
    pub fn is_ignored(&self, path: &RelPath, is_dir: bool) -> bool {
        let Some(m) = &self.matcher else { return false };
        if path.as_str() == IGNORE_FILE {
            return false;
        }
        m.matched_path_or_any_parents(Path::new(path.as_str()), is_dir).is_ignore()
    }

    /// True if the rules name `path` as a file or as a folder (or a folder
    /// above it): as exclusion rules, they decide by the path alone, so
    /// that a path stays excluded whatever kind a peer gives it (a rule
    /// `videos/` also covers a file named `videos`).
    pub fn excludes(&self, path: &RelPath) -> bool {
        self.is_ignored(path, true) || self.is_ignored(path, false)
    }

    /// True if, as exclusion rules, they name every path at the top of DIR
    /// (`*`, `/*`, `**`, and `/*/`, since they decide by the path alone):
    /// that would leave nothing to sync.
    pub fn name_everything(&self) -> bool {
        ["a", "a.b", ".a", "A_1-b c"]
            .iter()
            .filter_map(|n| RelPath::new(*n).ok())
            .all(|p| self.excludes(&p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    #[test]
    fn gitignore_syntax() {
        let (r, errors) = IgnoreRules::parse("# comment\n*.log\nbuild/\n/top.txt\n!keep.log\ncache/**/*.bin\n");
        assert!(errors.is_empty(), "{errors:?}");
        assert!(r.is_ignored(&p("a.log"), false));
        assert!(r.is_ignored(&p("deep/er/a.log"), false));
        assert!(!r.is_ignored(&p("keep.log"), false));
        assert!(r.is_ignored(&p("build"), true));
        assert!(!r.is_ignored(&p("build"), false), "build/ matches folders only");
        assert!(r.is_ignored(&p("build/out/x.o"), false), "everything below an ignored folder");
        assert!(r.is_ignored(&p("src/build/x.o"), false));
        assert!(r.is_ignored(&p("top.txt"), false));
        assert!(!r.is_ignored(&p("sub/top.txt"), false), "a leading / anchors at the root");
        assert!(r.is_ignored(&p("cache/a/b/c.bin"), false));
        assert!(!r.is_ignored(&p("cache/a/b/c.txt"), false));
        assert!(!r.is_ignored(&p("readme.md"), false));
    }

    #[test]
    fn the_ignore_file_itself_always_syncs() {
        let (r, _) = IgnoreRules::parse(".*\n*\n");
        assert!(r.is_ignored(&p(".hidden"), false));
        assert!(!r.is_ignored(&p(IGNORE_FILE), false));
    }

    #[test]
    fn exclusion_decides_by_the_path_alone() {
        let (r, _) = IgnoreRules::from_file_bytes(EXCLUDE_FILE, b"videos/\n*.iso\n");
        assert!(r.excludes(&p("videos")));
        assert!(r.excludes(&p("videos/a/b.mp4")));
        assert!(r.excludes(&p("deep/videos/b.mp4")));
        assert!(r.excludes(&p("x.iso")));
        assert!(!r.excludes(&p("video")));
        assert!(!r.excludes(&p("docs/a.txt")));
        assert!(!r.excludes(&p(IGNORE_FILE)), "the shared rules always sync");
    }

    #[test]
    fn rules_that_name_the_whole_tree_are_told_apart() {
        for whole in ["*\n", "/*\n", "**\n", "/*/\n", "# all\n*\n!nothing-here\n"] {
            assert!(IgnoreRules::parse(whole).0.name_everything(), "{whole:?}");
        }
        for part in ["", "videos/\n", "*.mp4\n", "/*/*\n", "a*\n"] {
            assert!(!IgnoreRules::parse(part).0.name_everything(), "{part:?}");
        }
    }

    #[test]
    fn errors_name_the_file() {
        let (_, errors) = IgnoreRules::from_file_bytes(EXCLUDE_FILE, b"[z-a\n");
        assert!(errors[0].starts_with("exclude line 1"), "{errors:?}");
    }

    #[test]
    fn bad_patterns_are_reported_and_skipped() {
        let (r, errors) = IgnoreRules::parse("*.log\n[z-a\n");
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("line 2"), "{errors:?}");
        assert!(r.is_ignored(&p("x.log"), false));
    }
}
