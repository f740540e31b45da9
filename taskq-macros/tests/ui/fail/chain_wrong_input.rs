// A step whose input is not its predecessor's output cannot be chained.
use serde::{Deserialize, Serialize};
use taskq_core::{workflow::chain, Run, Task, TaskContext, TaskError};

#[derive(Task, Serialize, Deserialize)]
#[task(name = "pages.fetch")]
struct Fetch {
    url: String,
}

impl Run for Fetch {
    type Output = String;
    async fn run(self, _ctx: TaskContext) -> Result<String, TaskError> {
        Ok(self.url)
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
    let _ = chain(Fetch { url: "x".into() }).then(Double { n: 0 });
}
