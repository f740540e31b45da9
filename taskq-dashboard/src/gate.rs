//! The check every request passes: the configured [`Access`], with basic auth made cheap to
//! refuse. argon2 is slow on purpose (about 20 ms of one core per check), so run on the async
//! runtime's threads for every request it would let anyone with a few connections stall the
//! dashboard. Here it runs on the blocking pool, at most [`ARGON2_AT_ONCE`] at a time;
//! credentials that passed are remembered for [`VERIFIED_FOR`] (keyed by their SHA-256, never
//! stored in clear), so a logged-in browser costs one hash lookup per request; and a client that
//! failed [`FAILURES_ALLOWED`] times within [`FAILURE_WINDOW`] is answered 429 without any check
//! until the window ends.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use argon2::{password_hash::PasswordHash, Argon2, PasswordVerifier};
use axum::http::{header, HeaderMap};
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use crate::access::{cookie, Access, TOKEN_COOKIE};

/// Most argon2 checks running at once (each takes one core for its duration).
pub(crate) const ARGON2_AT_ONCE: usize = 2;
/// How long credentials that passed are accepted without another argon2 check.
pub(crate) const VERIFIED_FOR: Duration = Duration::from_secs(300);
/// Failed checks a client may make per window before it is refused without a check.
pub(crate) const FAILURES_ALLOWED: u32 = 10;
/// The window failed checks are counted in.
pub(crate) const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most entries either memory holds; past it, expired entries go (and, if none had, all).
const MAX_REMEMBERED: usize = 4096;

/// What the gate says of one request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Let it through.
    Pass,
    /// No valid credentials: 401.
    Refuse,
    /// Too many failed checks from this client lately: 429, retry after this long.
    Slow(Duration),
}

/// The configured access and what basic auth remembers between requests.
#[derive(Debug)]
pub(crate) struct Gate {
    access: Access,
    /// SHA-256 of `user:password` that passed, and until when they are accepted.
    verified: Mutex<HashMap<[u8; 32], Instant>>,
    /// Per client address: when its window began and how many checks failed in it.
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    argon2_slots: Arc<Semaphore>,
    /// argon2 checks run so far (tests read it).
    argon2_runs: AtomicU64,
}

impl Gate {
    pub(crate) fn new(access: Access) -> Self {
        Self {
            access,
            verified: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            argon2_slots: Arc::new(Semaphore::new(ARGON2_AT_ONCE)),
            argon2_runs: AtomicU64::new(0),
        }
    }

    pub(crate) fn access(&self) -> &Access {
        &self.access
    }

    /// Checks a request from `client` (`None` when the server does not say: all such requests
    /// then share one failure count).
    pub(crate) async fn check(&self, headers: &HeaderMap, client: Option<IpAddr>) -> Verdict {
        match &self.access {
            Access::Open => Verdict::Pass,
            Access::Token(token) => {
                if token_matches(token, headers) {
                    Verdict::Pass
                } else {
                    Verdict::Refuse
                }
            }
            Access::Basic {
                user,
                password_hash,
            } => {
                let client = client.unwrap_or(IpAddr::from([0, 0, 0, 0]));
                self.check_basic(user, password_hash, headers, client).await
            }
        }
    }

    async fn check_basic(
        &self,
        user: &str,
        password_hash: &str,
        headers: &HeaderMap,
        client: IpAddr,
    ) -> Verdict {
        let Some((given_user, given_password)) = basic_credentials(headers) else {
            return Verdict::Refuse;
        };
        let fingerprint: [u8; 32] = Sha256::digest(format!("{given_user}:{given_password}")).into();
        if self.remembered(&fingerprint) {
            return Verdict::Pass;
        }
        if let Some(wait) = self.refused_for(client) {
            return Verdict::Slow(wait);
        }
        let user_matches = bool::from(given_user.as_bytes().ct_eq(user.as_bytes()));
        let password_matches = self.verify(given_password, password_hash).await;
        if user_matches && password_matches {
            self.remember(fingerprint);
            Verdict::Pass
        } else {
            self.count_failure(client);
            Verdict::Refuse
        }
    }

    /// Runs argon2 on the blocking pool, waiting for a free slot first.
    async fn verify(&self, password: String, password_hash: &str) -> bool {
        let Ok(_slot) = self.argon2_slots.clone().acquire_owned().await else {
            return false;
        };
        self.argon2_runs.fetch_add(1, Ordering::Relaxed);
        let password_hash = password_hash.to_owned();
        tokio::task::spawn_blocking(move || {
            PasswordHash::new(&password_hash).is_ok_and(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false)
    }

    fn remembered(&self, fingerprint: &[u8; 32]) -> bool {
        let verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        verified
            .get(fingerprint)
            .is_some_and(|until| *until > Instant::now())
    }

    fn remember(&self, fingerprint: [u8; 32]) {
        let now = Instant::now();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= MAX_REMEMBERED {
            verified.retain(|_, until| *until > now);
            if verified.len() >= MAX_REMEMBERED {
                verified.clear();
            }
        }
        verified.insert(fingerprint, now + VERIFIED_FOR);
    }

    /// How long `client` must wait, when it used up its failures in the current window.
    fn refused_for(&self, client: IpAddr) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (began, count) = failures.get(&client)?;
        let ends = *began + FAILURE_WINDOW;
        let now = Instant::now();
        (*count >= FAILURES_ALLOWED && ends > now).then(|| ends - now)
    }

    fn count_failure(&self, client: IpAddr) {
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_REMEMBERED {
            failures.retain(|_, (began, _)| *began + FAILURE_WINDOW > now);
            if failures.len() >= MAX_REMEMBERED {
                failures.clear();
            }
        }
        let entry = failures.entry(client).or_insert((now, 0));
        if entry.0 + FAILURE_WINDOW <= now {
            *entry = (now, 0);
        }
        entry.1 += 1;
    }

    #[cfg(test)]
    fn argon2_runs(&self) -> u64 {
        self.argon2_runs.load(Ordering::Relaxed)
    }
}

/// Whether the bearer header or the login cookie carries `token` (compared in constant time).
fn token_matches(token: &str, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let cookie = cookie(headers, TOKEN_COOKIE);
    let matches = |given: &str| bool::from(given.as_bytes().ct_eq(token.as_bytes()));
    bearer.is_some_and(matches) || cookie.as_deref().is_some_and(matches)
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let encoded = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn basic(user: &str, password: &str) -> HeaderMap {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        headers
    }

    fn gate() -> Gate {
        Gate::new(Access::basic("ops", crate::hash_password("right")).unwrap())
    }

    #[tokio::test]
    async fn verified_credentials_are_remembered_and_wrong_ones_are_not() {
        let gate = gate();
        let client = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..3 {
            assert_eq!(
                gate.check(&basic("ops", "right"), client).await,
                Verdict::Pass
            );
        }
        assert_eq!(gate.argon2_runs(), 1, "one argon2 check for three requests");
        assert_eq!(
            gate.check(&basic("ops", "wrong"), client).await,
            Verdict::Refuse
        );
        assert_eq!(
            gate.check(&basic("eve", "right"), client).await,
            Verdict::Refuse
        );
        assert_eq!(
            gate.argon2_runs(),
            3,
            "failures are never remembered as passes"
        );
    }

    #[tokio::test]
    async fn a_client_that_keeps_failing_is_refused_without_a_check_others_are_not() {
        let gate = gate();
        let attacker = Some(IpAddr::from([10, 0, 0, 66]));
        for _ in 0..FAILURES_ALLOWED {
            assert_eq!(
                gate.check(&basic("ops", "guess"), attacker).await,
                Verdict::Refuse
            );
        }
        let runs = gate.argon2_runs();
        assert!(matches!(
            gate.check(&basic("ops", "right"), attacker).await,
            Verdict::Slow(wait) if wait <= FAILURE_WINDOW
        ));
        assert_eq!(
            gate.argon2_runs(),
            runs,
            "a slowed client costs no argon2 check"
        );
        let colleague = Some(IpAddr::from([10, 0, 0, 2]));
        assert_eq!(
            gate.check(&basic("ops", "right"), colleague).await,
            Verdict::Pass
        );
        // Remembered credentials pass even from the slowed address (a shared NAT).
        assert_eq!(
            gate.check(&basic("ops", "right"), attacker).await,
            Verdict::Pass
        );
    }
}
