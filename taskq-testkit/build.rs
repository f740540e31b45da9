//! Writes the conformance macros from the suites themselves: every `pub async fn` of a suite
//! file is one test, run on every backend unless that backend names it in its `skip` list (with
//! the reason). No list of test names is kept by hand, so a new suite function runs everywhere.
//!
//! A suite function's parameter type says which fixture it runs on: `Shared` the backend's
//! plain one, `BoundedAtFifty` one whose queues hold at most fifty messages, `CappedDeadLetters`
//! one that keeps two dead letters per queue.

use std::{env, fmt::Write as _, fs, path::Path};

/// One suite: its macro, its source file, and its module path inside this crate.
struct Suite {
    name: &'static str,
    file: &'static str,
    module: &'static str,
}

const SUITES: [Suite; 8] = [
    Suite {
        name: "transport",
        file: "src/suite/transport.rs",
        module: "suite::transport",
    },
    Suite {
        name: "membership",
        file: "src/suite/membership.rs",
        module: "suite::membership",
    },
    Suite {
        name: "control",
        file: "src/suite/control.rs",
        module: "suite::control",
    },
    Suite {
        name: "inspector",
        file: "src/suite/inspector.rs",
        module: "suite::inspector",
    },
    Suite {
        name: "catalog",
        file: "src/suite/catalog.rs",
        module: "suite::catalog",
    },
    Suite {
        name: "partitions",
        file: "src/suite/partitions.rs",
        module: "suite::partitions",
    },
    Suite {
        name: "keyed",
        file: "src/suite/keyed.rs",
        module: "suite::keyed",
    },
    Suite {
        name: "backend",
        file: "src/backend_suite.rs",
        module: "backend_suite",
    },
];

/// Parameter type → the keyword a backend gives that fixture under (`None`: the plain one).
const FIXTURES: [(&str, Option<&str>); 3] = [
    ("Shared", None),
    ("BoundedAtFifty", Some("bounded_at_fifty")),
    ("CappedDeadLetters", Some("capped")),
];

fn main() {
    let mut out = String::new();
    for suite in &SUITES {
        println!("cargo:rerun-if-changed={}", suite.file);
        let source = fs::read_to_string(suite.file).expect("a suite file");
        let tests = suite_functions(&source, suite.file);
        write_suite(&mut out, suite, &tests);
    }
    let path = Path::new(&env::var("OUT_DIR").expect("OUT_DIR")).join("conformance.rs");
    fs::write(path, out).expect("writing the conformance macros");
}

/// `(name, fixture keyword)` of every `pub async fn name(x: Type)` at the start of a line of
/// `source` (the parameter may sit on lines of its own, as rustfmt writes long signatures).
fn suite_functions(source: &str, file: &str) -> Vec<(String, Option<&'static str>)> {
    let mut tests = Vec::new();
    for (at, _) in source.match_indices("\npub async fn ") {
        let rest = &source[at + "\npub async fn ".len()..];
        let (name, params) = rest.split_once('(').expect("a function's parameters");
        let ty = params
            .split_once(')')
            .and_then(|(params, _)| params.split_once(':'))
            .map(|(_, ty)| ty.trim().trim_end_matches(',').trim())
            .unwrap_or_else(|| panic!("{file}: suite function {name} takes one fixture"));
        let fixture = FIXTURES
            .iter()
            .find(|(known, _)| *known == ty)
            .unwrap_or_else(|| panic!("{file}: {name} takes {ty}, which is no fixture type"))
            .1;
        tests.push((name.to_owned(), fixture));
    }
    assert!(!tests.is_empty(), "{file} has no suite functions");
    tests
}

fn write_suite(out: &mut String, suite: &Suite, tests: &[(String, Option<&'static str>)]) {
    let Suite { name, module, .. } = suite;
    let mut keywords: Vec<&str> = tests.iter().filter_map(|(_, f)| *f).collect();
    keywords.sort_unstable();
    keywords.dedup();
    let optional: String = keywords
        .iter()
        .map(|k| format!(" $(, {k} => $fixture_{k}:expr)?"))
        .collect();
    let mut calls = String::new();
    for (test, fixture) in tests {
        let make = match fixture {
            None => "$make".to_owned(),
            Some(k) => format!("$crate::__fixture_or_missing!($($fixture_{k})?; \"{k}\")"),
        };
        writeln!(
            calls,
            "            $crate::__{name}__{test}!([$attr] {make}; [$($($skip),*)?]);"
        )
        .unwrap();
    }
    let every: Vec<&str> = tests.iter().map(|(t, _)| t.as_str()).collect();
    writeln!(
        out,
        r#"/// Expands the {name} conformance suite into one test per suite function of
/// `{module}` ({count} today: {list}), each on a fresh handle from the given fixture; a backend
/// that cannot show a behaviour names the test in `skip {{ test: "why", ... }}`.
#[macro_export]
macro_rules! {name}_conformance {{
    (#[$attr:meta] $name:ident => $make:expr{optional} $(, skip {{ $($skip:ident : $why:literal),* $(,)? }})? $(,)?) => {{
        mod $name {{
            #[allow(unused_imports)]
            use super::*;
            // Every skipped name is a test of this suite, and says why.
            const _: () = {{ $($(let _ = $crate::{module}::$skip;)*)? }};
            const _: &[&str] = &[$($($why),*)?];
{calls}        }}
    }};
}}
"#,
        count = tests.len(),
        list = every.join(", "),
    )
    .unwrap();
    for (test, _) in tests {
        writeln!(
            out,
            r#"#[doc(hidden)]
#[macro_export]
macro_rules! __{name}__{test} {{
    ([$attr:meta] $make:expr; [{test} $(, $rest:ident)*]) => {{}};
    ([$attr:meta] $make:expr; [$other:ident $(, $rest:ident)*]) => {{
        $crate::__{name}__{test}!([$attr] $make; [$($rest),*]);
    }};
    ([$attr:meta] $make:expr; []) => {{
        #[$attr]
        async fn {test}() {{
            let (fixture, _guard) = $make.await;
            $crate::{module}::{test}(fixture).await;
        }}
    }};
}}
"#
        )
        .unwrap();
    }
}
