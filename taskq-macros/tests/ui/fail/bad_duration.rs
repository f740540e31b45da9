#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "t", timeout = "30 parsecs")]
struct BadDuration;

fn main() {}
