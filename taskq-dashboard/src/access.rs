//! Who may use the dashboard: nobody but the local machine ([`Access::Open`], loopback only), a
//! bearer token, or HTTP basic auth against a stored argon2 password hash.

use argon2::{
    password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString},
    Argon2,
};
use axum::http::{header, HeaderMap};

use crate::error::DashboardError;

/// The cookie a token login sets, so a browser sends the token on every request.
pub(crate) const TOKEN_COOKIE: &str = "taskq_dashboard_token";

/// How requests prove who they are.
#[derive(Clone)]
#[non_exhaustive]
pub enum Access {
    /// No authentication: only allowed when the dashboard listens on a loopback address.
    Open,
    /// `Authorization: Bearer <token>`, or the cookie `/login?token=<token>` sets.
    Token(String),
    /// HTTP basic auth: `user` and a password checked against an argon2 PHC `password_hash`
    /// (make one with [`hash_password`] or `taskq dashboard --hash-password`).
    Basic {
        /// The user name.
        user: String,
        /// The argon2 hash, e.g. `$argon2id$v=19$...`.
        password_hash: String,
    },
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Access::Open => f.write_str("Open"),
            Access::Token(_) => f.write_str("Token(..)"),
            Access::Basic { user, .. } => write!(f, "Basic({user}, ..)"),
        }
    }
}

impl Access {
    /// Token access; the token must have at least 16 characters.
    ///
    /// # Errors
    ///
    /// [`DashboardError::Config`] for a short token.
    pub fn token(token: impl Into<String>) -> Result<Self, DashboardError> {
        let token = token.into();
        if token.chars().count() < 16 {
            return Err(DashboardError::Config(
                "the dashboard token must have at least 16 characters".into(),
            ));
        }
        Ok(Access::Token(token))
    }

    /// Basic access for `user`, checked against `password_hash` (argon2 PHC string).
    ///
    /// # Errors
    ///
    /// [`DashboardError::Config`] when the hash is not a PHC string.
    pub fn basic(
        user: impl Into<String>,
        password_hash: impl Into<String>,
    ) -> Result<Self, DashboardError> {
        let password_hash = password_hash.into();
        PasswordHash::new(&password_hash).map_err(|err| {
            DashboardError::Config(format!(
                "the password hash is not an argon2 PHC string: {err}"
            ))
        })?;
        Ok(Access::Basic {
            user: user.into(),
            password_hash,
        })
    }

    /// Checks that a dashboard with this access may listen on `listen`: any address with
    /// authentication, only a loopback one without.
    ///
    /// # Errors
    ///
    /// [`DashboardError::Config`] for a non-loopback address without authentication.
    pub fn check_listen(&self, listen: std::net::SocketAddr) -> Result<(), DashboardError> {
        if listen.ip().is_loopback() || self.is_required() {
            return Ok(());
        }
        Err(DashboardError::Config(format!(
            "refusing to listen on {listen} without authentication: anyone who can reach it could requeue and purge; give --token or --basic-user with --basic-password-hash, or listen on 127.0.0.1"
        )))
    }

    /// True when requests must authenticate.
    pub fn is_required(&self) -> bool {
        !matches!(self, Access::Open)
    }
}

/// An argon2id PHC hash of `password`, for [`Access::basic`].
///
/// ```
/// let hash = taskq_dashboard::hash_password("correct horse battery staple");
/// assert!(hash.starts_with("$argon2id$"));
/// assert!(taskq_dashboard::Access::basic("ops", hash).is_ok());
/// ```
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .unwrap_or_default()
}

/// The value of cookie `name`, if sent.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}
