//! Writes the README's Rust programs into `OUT_DIR`, one file per code block, as a reader
//! would paste them: rustdoc's hidden lines (`# ` and a lone `#`) shown. The binaries in
//! `src/bin` include them, so this crate compiles exactly what the README shows.

use std::{env, fs, path::Path};

/// The README's Rust blocks in order, by the name of the file each becomes.
const PROGRAMS: [&str; 5] = [
    "tour",
    "redis_worker",
    "postgres_handler",
    "partitions",
    "workflows",
];

fn main() {
    // The workspace's README, or the copy packaging puts beside the manifest.
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let packaged = here.join("README.md");
    let readme_path = if packaged.exists() {
        packaged
    } else {
        here.join("../../README.md")
    };
    println!("cargo:rerun-if-changed={}", readme_path.display());
    let readme = fs::read_to_string(&readme_path).expect("read README.md");
    let blocks = rust_blocks(&readme);
    assert_eq!(
        blocks.len(),
        PROGRAMS.len(),
        "README.md has {} Rust programs; name each in examples/readme/build.rs and give it a binary",
        blocks.len()
    );
    let out = env::var("OUT_DIR").expect("OUT_DIR");
    for (name, code) in PROGRAMS.iter().zip(blocks) {
        fs::write(Path::new(&out).join(format!("{name}.rs")), code).expect("write a program");
    }
}

/// The code of every fenced block whose info string starts with `rust`, hidden lines shown.
fn rust_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        match &mut current {
            None if line.starts_with("```rust") => current = Some(String::new()),
            None => {}
            Some(_) if line.starts_with("```") => blocks.extend(current.take()),
            Some(code) => {
                let shown = match line.strip_prefix("# ") {
                    Some(rest) => rest,
                    None if line == "#" => "",
                    None => line,
                };
                code.push_str(shown);
                code.push('\n');
            }
        }
    }
    blocks
}
