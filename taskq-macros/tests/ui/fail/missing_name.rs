#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(queue = "q")]
struct NoName;

fn main() {}
