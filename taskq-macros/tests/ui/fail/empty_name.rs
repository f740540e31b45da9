#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "  ")]
struct Blank;

fn main() {}
