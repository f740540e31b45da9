//! The README's application crate stays the README's: its `[dependencies]` are the README's
//! block line for line (the programs are the README's by construction, see build.rs), and the
//! tour, compiled as a user's binary, runs to its end on the in-memory broker.

use std::{path::Path, process::Command};

/// The lines of the first section headed `[dependencies]` in `text` (comments and blank lines
/// left out, and the path this crate gives `taskq`), up to the next section or the end of the
/// fenced block.
fn dependencies(text: &str) -> Vec<String> {
    text.lines()
        .skip_while(|line| line.trim() != "[dependencies]")
        .skip(1)
        .take_while(|line| !line.starts_with('[') && !line.starts_with("```"))
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.replace(r#"path = "../../taskq", "#, ""))
        .collect()
}

#[test]
fn the_crate_depends_on_exactly_the_readme_block() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("../../README.md")).unwrap();
    let block = readme
        .split("```toml\n")
        .skip(1)
        .find(|block| block.starts_with("[dependencies]"))
        .expect("README.md has a ```toml block starting with [dependencies]");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let wanted = dependencies(block);
    assert!(
        wanted.iter().any(|line| line.starts_with("taskq ")),
        "{wanted:?}"
    );
    assert_eq!(dependencies(&manifest), wanted);
}

#[test]
fn the_tour_runs_as_a_program_of_its_own() {
    let run = Command::new(env!("CARGO_BIN_EXE_readme-tour"))
        .output()
        .expect("run the README's tour");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
