#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "t")]
struct Generic<T> {
    value: T,
}

fn main() {}
