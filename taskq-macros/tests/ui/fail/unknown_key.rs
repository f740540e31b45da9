#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "t", retries = 3)]
struct Typo;

fn main() {}
