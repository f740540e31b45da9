// Only one field can receive a step's input.
use serde::{Deserialize, Serialize};
use taskq_core::Task;

#[derive(Task, Serialize, Deserialize)]
#[task(name = "two.inputs")]
struct TwoInputs {
    #[task(input)]
    a: i64,
    #[task(input)]
    b: i64,
}

fn main() {}
