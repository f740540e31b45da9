//! `crate = "..."` lets a facade crate re-export taskq-core under another name.
mod facade {
    pub use taskq_core as core;
}

#[derive(facade::core::Task, serde::Serialize, serde::Deserialize)]
#[task(name = "facade.task", crate = "facade::core", ignore_result = false)]
struct ViaFacade {
    n: u32,
}

fn main() {
    use taskq_core::Task;
    assert_eq!(ViaFacade::NAME, "facade.task");
    let _ = ViaFacade { n: 1 }.n;
}
