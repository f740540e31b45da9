//! The quickstart package: see `quickstart.rs` (`cargo run -p taskq-quickstart --example quickstart`).
