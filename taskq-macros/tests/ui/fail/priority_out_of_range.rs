#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "t", priority = 12)]
struct TooUrgent;

fn main() {}
