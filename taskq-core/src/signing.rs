//! Signed messages: HMAC-SHA256 over the parts of an envelope its producer decides, with a key
//! id so that keys can rotate.
//!
//! A producer signs with one [`SigningKey`] ([`Client::with_signing_key`](crate::Client::with_signing_key));
//! a worker verifies with a [`Keyring`] of the keys it accepts and dead-letters a message whose
//! signature is missing (when required), made with a key it does not hold, made with a key
//! past its retirement, or wrong, as `bad_signature`, without running it.
//!
//! What is signed (the canonical bytes, also in `docs/protocol.md`): the compact JSON array
//! `[v, id, task, args, created_at_ms, expires_ms, max_retries, headers]`, followed by `flow`
//! byte for byte when the envelope belongs to a workflow, where `args` is the
//! envelope's argument JSON byte for byte, the times are milliseconds since the epoch (`null`
//! when absent), `max_retries` is a number or `null`, and `headers` is an object with its keys
//! sorted. Workers change none of these on retries, so a retry keeps its producer's
//! signature; what they change (attempt, eta, priority, last error) is not signed.
//!
//! ```
//! use taskq_core::{Envelope, Keyring, SigningKey};
//! let key = SigningKey::new("k1", b"a secret of at least 32 bytes......".to_vec());
//! let mut envelope = Envelope::new("emails.send", &serde_json::json!({"to": "a@b.c"}), "emails", chrono::Utc::now())?;
//! key.sign(&mut envelope);
//! let keyring = Keyring::new(vec![key.clone()]).required();
//! assert!(keyring.verify(&envelope, chrono::Utc::now()).is_ok());
//! envelope.args = serde_json::value::to_raw_value(&serde_json::json!({"to": "evil@x.y"}))?;
//! assert!(keyring.verify(&envelope, chrono::Utc::now()).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::{collections::BTreeMap, fmt, fmt::Write as _};

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{envelope::Envelope, error::Error, error::Result};

type HmacSha256 = Hmac<Sha256>;

/// A named secret: producers sign with it, workers verify with it.
#[derive(Clone)]
pub struct SigningKey {
    id: String,
    secret: Vec<u8>,
    /// Signatures made with this key are refused after this instant (a retired key).
    not_after: Option<DateTime<Utc>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Key `id` with `secret` (use 32 random bytes or more).
    pub fn new(id: impl Into<String>, secret: Vec<u8>) -> Self {
        Self {
            id: id.into(),
            secret,
            not_after: None,
        }
    }

    /// Parses `id:hex-secret`, the form flags and environment variables take.
    ///
    /// ```
    /// let key = taskq_core::SigningKey::parse("2026-11:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")?;
    /// assert_eq!(key.id(), "2026-11");
    /// assert!(taskq_core::SigningKey::parse("k1:xyz").is_err());
    /// # Ok::<(), taskq_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] for a missing id, a secret that is not hex, or one under 16 bytes.
    pub fn parse(spec: &str) -> Result<Self> {
        let invalid = |reason: &str| Error::Invalid {
            what: "signing key",
            reason: reason.to_owned(),
        };
        let (id, hex) = spec
            .split_once(':')
            .filter(|(id, _)| !id.is_empty())
            .ok_or_else(|| invalid("expected KEY-ID:HEX-SECRET"))?;
        if hex.len() % 2 != 0 {
            return Err(invalid("the secret is not hex"));
        }
        let secret = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| invalid("the secret is not hex"))?;
        if secret.len() < 16 {
            return Err(invalid("the secret is shorter than 16 bytes"));
        }
        Ok(Self::new(id, secret))
    }

    /// The same key, refused for signatures verified after `at` (rotation: retire the old
    /// key once every message it signed has run).
    pub fn retired_after(mut self, at: DateTime<Utc>) -> Self {
        self.not_after = Some(at);
        self
    }

    /// The key id carried in signatures.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Signs `envelope` (sets its `sig` to `<key id>:<hex HMAC-SHA256>`).
    pub fn sign(&self, envelope: &mut Envelope) {
        envelope.sig = Some(self.sign_bytes(&canonical_bytes(envelope)));
    }

    /// `<key id>:<hex HMAC-SHA256>` of `data`: for records taskq writes that drive what runs
    /// next (a group member's outcome), checked with [`Keyring::verify_bytes`].
    pub(crate) fn sign_bytes(&self, data: &[u8]) -> String {
        let mac = self.mac(data).finalize().into_bytes();
        let mut hex = String::with_capacity(mac.len() * 2);
        for byte in mac {
            let _ = write!(hex, "{byte:02x}");
        }
        format!("{}:{hex}", self.id)
    }

    fn mac(&self, data: &[u8]) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any size");
        mac.update(data);
        mac
    }
}

/// `KEY-ID:HEX-SECRET`, as [`SigningKey::parse`]: lets command-line parsers take keys directly.
impl std::str::FromStr for SigningKey {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        Self::parse(spec)
    }
}

/// The bytes a signature covers; see the module documentation.
pub fn canonical_bytes(envelope: &Envelope) -> Vec<u8> {
    let headers: &BTreeMap<String, String> = &envelope.headers;
    let signed = (
        envelope.v,
        envelope.id.to_string(),
        &envelope.task,
        &envelope.args,
        envelope.created_at.timestamp_millis(),
        envelope.expires.map(|at| at.timestamp_millis()),
        envelope.max_retries,
        headers,
    );
    // A workflow decides what runs next, so it is signed too; envelopes without one keep the
    // eight-element form (signatures made before workflows existed still verify).
    match &envelope.flow {
        None => serde_json::to_vec(&signed),
        Some(flow) => serde_json::to_vec(&(
            signed.0, signed.1, signed.2, signed.3, signed.4, signed.5, signed.6, signed.7, flow,
        )),
    }
    .expect("plain values serialize")
}

/// Why a message's signature was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// Signatures are required and the message has none.
    #[error("the message is not signed")]
    Missing,
    /// The signature is not `<key id>:<hex>`.
    #[error("the signature is not KEY-ID:HEX")]
    Malformed,
    /// No accepted key has this id (never known, or removed).
    #[error("signed with key `{0}`, which this worker does not accept")]
    UnknownKey(String),
    /// The key was retired before now.
    #[error("signed with key `{0}`, retired at {1}")]
    Retired(String, DateTime<Utc>),
    /// The signature does not match the message (changed after signing, or another secret).
    #[error("the signature by key `{0}` does not match the message")]
    Mismatch(String),
}

/// The keys a worker accepts, and whether unsigned messages are refused.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<SigningKey>,
    required: bool,
}

impl Keyring {
    /// Accepts signatures by any of `keys`; unsigned messages still run until
    /// [`Keyring::required`] (a migration step: sign everywhere first, then require).
    pub fn new(keys: Vec<SigningKey>) -> Self {
        Self {
            keys,
            required: false,
        }
    }

    /// The same keyring, refusing unsigned messages.
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    /// Whether unsigned messages are refused.
    ///
    /// ```
    /// use taskq_core::{Keyring, SigningKey};
    /// let keys = || vec![SigningKey::new("k1", vec![1; 32])];
    /// assert!(!Keyring::new(keys()).is_required());
    /// assert!(Keyring::new(keys()).required().is_required());
    /// ```
    pub fn is_required(&self) -> bool {
        self.required
    }

    /// Checks `envelope`'s signature at `now`.
    ///
    /// # Errors
    ///
    /// A [`SignatureError`] saying why it is refused.
    pub fn verify(&self, envelope: &Envelope, now: DateTime<Utc>) -> Result<(), SignatureError> {
        self.verify_bytes(&canonical_bytes(envelope), envelope.sig.as_deref(), now)
    }

    /// Checks `sig` (made by [`SigningKey::sign_bytes`]) over `data` at `now`.
    pub(crate) fn verify_bytes(
        &self,
        data: &[u8],
        sig: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), SignatureError> {
        let Some(sig) = sig else {
            return if self.required {
                Err(SignatureError::Missing)
            } else {
                Ok(())
            };
        };
        let (id, hex) = sig.rsplit_once(':').ok_or(SignatureError::Malformed)?;
        let key = self
            .keys
            .iter()
            .find(|key| key.id == id)
            .ok_or_else(|| SignatureError::UnknownKey(id.to_owned()))?;
        if let Some(retired) = key.not_after.filter(|at| *at < now) {
            return Err(SignatureError::Retired(id.to_owned(), retired));
        }
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(SignatureError::Malformed);
        }
        let expected = (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<std::result::Result<Vec<u8>, _>>()
            .map_err(|_| SignatureError::Malformed)?;
        key.mac(data)
            .verify_slice(&expected)
            .map_err(|_| SignatureError::Mismatch(id.to_owned()))
    }
}
