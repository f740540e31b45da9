//! One module per page; each reads the broker and backend afresh on every request.

pub(crate) mod beat;
pub(crate) mod dead;
pub(crate) mod overview;
pub(crate) mod queue;
pub(crate) mod scheduled;
pub(crate) mod tasks;
pub(crate) mod workers;

/// `?offset=` of a paged list.
#[derive(Debug, Default, serde::Deserialize)]
pub(crate) struct Paging {
    #[serde(default)]
    pub(crate) offset: usize,
}

/// The form every action posts.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct ActionForm {
    #[serde(default)]
    pub(crate) csrf: String,
}
