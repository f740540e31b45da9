#[derive(taskq_core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "reports.build", partition = "account_id", partition_concurrency = 0)]
struct BuildReport {
    account_id: u64,
}

fn main() {}
