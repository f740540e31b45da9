//! Compile-time diagnostics of `#[derive(Task)]`, and the behaviour of what it generates.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use taskq_core::Task;

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/pass/*.rs");
    t.compile_fail("tests/ui/fail/*.rs");
}

#[derive(Task, Serialize, Deserialize)]
#[task(
    name = "reports.build",
    queue = "reports",
    max_retries = 9,
    timeout = "1m 30s",
    priority = 7,
    expires = "2h",
    ignore_result,
    soft_timeout = "1m",
    at_most_once,
    unique_for = "10m",
    rate_limit = "120/m"
)]
struct Everything {
    day: String,
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "plain")]
struct Plain;

#[test]
fn attributes_become_options() {
    assert_eq!(Everything::NAME, "reports.build");
    let options = Everything::options();
    assert_eq!(options.queue(), "reports");
    assert_eq!(options.max_retries(), 9);
    assert_eq!(options.timeout(), Some(Duration::from_secs(90)));
    assert_eq!(options.priority(), 7);
    assert_eq!(options.expires(), Some(Duration::from_secs(7200)));
    assert!(options.ignore_result());
    assert_eq!(options.soft_timeout(), Some(Duration::from_secs(60)));
    assert!(options.at_most_once());
    assert_eq!(options.unique_for(), Some(Duration::from_secs(600)));
    assert_eq!(
        options.rate_limit().unwrap().interval(),
        Duration::from_millis(500)
    );
}

#[test]
fn omitted_attributes_take_defaults() {
    let options = Plain::options();
    assert_eq!(Plain::NAME, "plain");
    assert_eq!(options.queue(), taskq_core::DEFAULT_QUEUE);
    assert_eq!(options.max_retries(), taskq_core::DEFAULT_MAX_RETRIES);
    assert_eq!(options.timeout(), None);
    assert_eq!(options.priority(), 0);
    assert!(!options.ignore_result());
    assert!(!options.at_most_once());
    assert_eq!((options.soft_timeout(), options.unique_for()), (None, None));
    assert!(options.rate_limit().is_none());
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "emails.send")]
struct Shaped {
    to: String,
    cc: Option<String>,
    #[serde(default)]
    retries: u32,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip)]
    _local: u8,
    r#ref: u64,
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "emails.camel")]
#[serde(rename_all = "camelCase")]
struct Renamed {
    reply_to: String,
}

#[test]
fn named_fields_publish_their_shape_and_unreadable_shapes_none() {
    let shape = Shaped::options().arguments().cloned().expect("a shape");
    assert_eq!(shape.fields, ["to", "cc", "retries", "type", "ref"]);
    assert_eq!(shape.required, ["to", "type", "ref"]);
    // What serde accepts, the shape accepts: missing optional fields included.
    let minimal = serde_json::json!({"to": "a", "type": "b", "ref": 1});
    assert!(serde_json::from_value::<Shaped>(minimal.clone()).is_ok());
    assert!(shape.check(&minimal).is_ok());
    // What serde refuses, the shape refuses.
    let short = serde_json::json!({"to": "a"});
    assert!(serde_json::from_value::<Shaped>(short.clone()).is_err());
    assert!(shape.check(&short).is_err());
    assert!(
        Renamed::options().arguments().is_none(),
        "rename_all is not read"
    );
    assert!(
        Plain::options().arguments().is_none(),
        "a unit struct has no fields"
    );
}
