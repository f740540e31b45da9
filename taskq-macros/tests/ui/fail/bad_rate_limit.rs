#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "t", rate_limit = "fast")]
struct TooFast;

fn main() {}
