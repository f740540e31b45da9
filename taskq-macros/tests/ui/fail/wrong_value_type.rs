#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "t", max_retries = "5")]
struct QuotedNumber;

#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = 5)]
struct NumericName;

fn main() {}
