//! The quickstart package: see `quickstart.rs` (`cargo run --example quickstart`).
