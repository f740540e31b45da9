//! Cross-site request forgery: every action is a POST whose form carries a token only pages of
//! this dashboard contain (another site cannot read them), and whose `Origin`, when sent, is
//! this dashboard's.

use subtle::ConstantTimeEq;

/// The token of this dashboard process: random, never stored, compared in constant time.
#[derive(Clone, Debug)]
pub(crate) struct Csrf {
    token: String,
}

impl Csrf {
    pub(crate) fn new() -> Self {
        Self {
            token: format!(
                "{}{}",
                uuid::Uuid::new_v4().simple(),
                uuid::Uuid::new_v4().simple()
            ),
        }
    }

    /// The token forms carry.
    pub(crate) fn token(&self) -> &str {
        &self.token
    }

    /// Whether `given` is this process's token.
    pub(crate) fn accepts(&self, given: &str) -> bool {
        bool::from(given.as_bytes().ct_eq(self.token.as_bytes()))
    }
}
