#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "t", queue = "a", queue = "b")]
struct TwoQueues;

fn main() {}
