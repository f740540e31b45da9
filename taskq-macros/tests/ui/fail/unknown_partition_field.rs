#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "reports.build", partition = "acount_id", partition_concurrency = 1)]
struct BuildReport {
    account_id: u64,
}

fn main() {}
