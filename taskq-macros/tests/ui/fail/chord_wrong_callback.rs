// A chord's callback takes every member's output: `Vec<Output>`, not one output.
use serde::{Deserialize, Serialize};
use taskq_core::{workflow::group, Run, Task, TaskContext, TaskError};

#[derive(Task, Serialize, Deserialize)]
#[task(name = "math.square")]
struct Square {
    n: i64,
}

impl Run for Square {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.n * self.n)
    }
}

#[derive(Task, Serialize, Deserialize)]
#[task(name = "math.double")]
struct Double {
    #[task(input)]
    n: i64,
}

impl Run for Double {
    type Output = i64;
    async fn run(self, _ctx: TaskContext) -> Result<i64, TaskError> {
        Ok(self.n * 2)
    }
}

fn main() {
    let _ = group((0..3).map(|n| Square { n })).then(Double { n: 0 });
}
