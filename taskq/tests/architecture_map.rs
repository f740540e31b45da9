//! docs/architecture.md stays true: every file, folder and crate it names exists.
//!
//! The map is how a newcomer walks the house; a name in it that no longer exists sends them
//! nowhere. A file is named in backticks, by its path from the workspace root
//! (`taskq-worker/src/settle.rs`), from its crate (`lua/fetch.lua`) or alone (`settle.rs`):
//! it must be the end of some path in the workspace. A crate is a `taskq-…` name in
//! backticks, and must be a workspace member.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the facade sits in the workspace")
        .to_path_buf()
}

/// Every file and folder under `dir`, as paths relative to `root` with `/` separators.
fn walk(root: &Path, dir: &Path, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("readable workspace") {
        let path = entry.expect("readable entry").path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name == "target" {
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if path.is_dir() {
            found.push(format!("{relative}/"));
            walk(root, &path, found);
        } else {
            found.push(relative);
        }
    }
}

/// The words that name things in `text`: backticked words in its prose, and every word of
/// its fenced diagrams (which hold no backticks).
fn words(text: &str) -> Vec<String> {
    let (mut prose, mut diagrams, mut fenced) = (String::new(), Vec::new(), false);
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            diagrams.extend(
                line.split(|c: char| !(c.is_ascii_alphanumeric() || "-_./".contains(c)))
                    .map(|word| word.trim_end_matches('.').to_owned()),
            );
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    let quoted = prose.split('`').skip(1).step_by(2).map(str::to_owned);
    quoted.chain(diagrams).collect()
}

/// The words of `text` that name a file or folder: with a `/` or a known extension.
fn named_paths(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|word| !word.contains(' ') && !word.contains("::") && !word.contains('('))
        .filter(|word| {
            word.contains('/')
                || [".rs", ".lua", ".md", ".toml"]
                    .iter()
                    .any(|ext| word.ends_with(ext))
        })
        .filter(|word| !word.contains("://") && !word.starts_with('-') && word.len() > 1)
        .collect()
}

/// The `taskq-…` crate names of `text`.
fn named_crates(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|word| {
            word.starts_with("taskq-") && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        })
        .collect()
}

#[test]
fn every_file_and_crate_the_map_names_exists() {
    let root = workspace_root();
    let map = std::fs::read_to_string(root.join("docs/architecture.md")).expect("the map");
    let mut files = Vec::new();
    walk(&root, &root, &mut files);
    let exists = |named: &str| {
        let folder = format!("{}/", named.trim_end_matches('/'));
        [named, folder.as_str()].iter().any(|named| {
            files
                .iter()
                .any(|path| path == named || path.ends_with(&format!("/{named}")))
        })
    };
    let named = named_paths(&map);
    assert!(named.len() > 40, "the map names files: {named:?}");
    let missing: Vec<_> = named.iter().filter(|path| !exists(path)).collect();
    assert!(
        missing.is_empty(),
        "docs/architecture.md names files that do not exist: {missing:?}"
    );

    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let crates = named_crates(&map);
    let unknown: Vec<_> = crates
        .iter()
        .filter(|name| !manifest.contains(&format!("\"{name}\"")))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/architecture.md names crates that are not workspace members: {unknown:?}"
    );
    for member in [
        "taskq-amqp",
        "taskq-beat",
        "taskq-dashboard",
        "taskq-testkit",
    ] {
        assert!(
            crates.iter().any(|name| name == member),
            "the map leaves out {member}"
        );
    }
}

#[test]
fn the_check_sees_a_name_that_does_not_exist() {
    let text = "see `taskq-worker/src/settle.rs` and `gone/nowhere.rs`, not `a b.rs`\n```text\nruntime.rs ── taskq-gone\n```\n";
    assert_eq!(
        named_paths(text),
        [
            "taskq-worker/src/settle.rs",
            "gone/nowhere.rs",
            "runtime.rs"
        ]
    );
    assert_eq!(named_crates(text), ["taskq-gone"]);
    assert_eq!(
        named_crates("`taskq-amqp` and `taskq` and `taskq-x1`"),
        ["taskq-amqp"]
    );
}
