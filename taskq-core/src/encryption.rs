//! Encryption of task arguments and results at rest in the broker and result backend.
//!
//! With [`Client::with_encryption`](crate::Client::with_encryption) a producer seals each
//! task's arguments, and a worker with the same keys
//! ([`WorkerBuilder::encryption`](../../taskq_worker/struct.WorkerBuilder.html)) opens them
//! to run the task and seals its result; the client opens the result when it reads it.
//! Everything operators need stays readable: task name, queue, state, times, errors.
//!
//! Sealed values are JSON strings `taskq-enc:v1:<key id>:<base64 of nonce and ciphertext>`:
//! XChaCha20-Poly1305 (random 192-bit nonces, so a key can seal any number of values) with the
//! task id and name as associated data, so a sealed value moved to another task does not
//! open. Keys rotate like signing keys: seal with the newest, keep older ones to open.
//!
//! ```
//! use taskq_core::Encryption;
//! let keys = Encryption::new("k1", [7; 32]);
//! let sealed = keys.seal(r#"{"card":"4111"}"#, b"id\nshop.charge");
//! assert!(!sealed.contains("4111"));
//! assert_eq!(keys.open(&sealed, b"id\nshop.charge").unwrap(), r#"{"card":"4111"}"#);
//! assert!(keys.open(&sealed, b"other\nshop.charge").is_err());
//! ```

use std::fmt;

use base64::{engine::general_purpose::STANDARD, Engine as _};
use chacha20poly1305::{
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
    XChaCha20Poly1305, XNonce,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::{error::Error, error::Result};

/// The prefix of every sealed value.
const PREFIX: &str = "taskq-enc:v1:";

/// Keys for sealing (the first) and opening (any).
#[derive(Clone)]
pub struct Encryption {
    keys: Vec<(String, XChaCha20Poly1305)>,
    /// Derived from the sealing key for [`Encryption::digest`] (never the key itself).
    digest_key: [u8; 32],
}

impl fmt::Debug for Encryption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("Encryption")
            .field("key_ids", &ids)
            .finish_non_exhaustive()
    }
}

/// `KEY-ID:HEX,KEY-ID:HEX`, as [`Encryption::parse`]: lets command-line parsers take keys
/// directly.
impl std::str::FromStr for Encryption {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        Self::parse(spec)
    }
}

/// Why a sealed value did not open.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Not of the form `taskq-enc:v1:<key id>:<base64>`.
    #[error("the sealed value is malformed")]
    Malformed,
    /// Sealed with a key this side does not hold.
    #[error("sealed with key `{0}`, which is not configured here")]
    UnknownKey(String),
    /// Wrong key material, changed bytes, or sealed for another task.
    #[error("the sealed value does not open with key `{0}` (changed, or not for this task)")]
    Rejected(String),
}

impl Encryption {
    /// Seals with key `id` (32 bytes) and opens what it sealed.
    pub fn new(id: impl Into<String>, key: [u8; 32]) -> Self {
        let mut derive =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes keys of any size");
        derive.update(b"taskq digest key v1");
        Self {
            keys: vec![(id.into(), XChaCha20Poly1305::new(&key.into()))],
            digest_key: derive.finalize().into_bytes().into(),
        }
    }

    /// A keyed digest of `data` (HMAC-SHA256 under a key derived from the sealing key), as a
    /// UUID: stands in for the arguments where a stable name of them is needed (the default
    /// uniqueness key), so that nobody without the keys can confirm a guessed value by
    /// hashing it. Holders of the same sealing key get the same digest.
    ///
    /// ```
    /// let keys = taskq_core::Encryption::new("k1", [7; 32]);
    /// assert_eq!(keys.digest(b"{\"n\":1}"), keys.digest(b"{\"n\":1}"));
    /// assert_ne!(keys.digest(b"{\"n\":1}"), taskq_core::Encryption::new("k1", [8; 32]).digest(b"{\"n\":1}"));
    /// ```
    pub fn digest(&self, data: &[u8]) -> uuid::Uuid {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.digest_key)
            .expect("HMAC takes keys of any size");
        mac.update(data);
        let bytes: [u8; 32] = mac.finalize().into_bytes().into();
        let mut first = [0u8; 16];
        first.copy_from_slice(&bytes[..16]);
        uuid::Builder::from_custom_bytes(first).into_uuid()
    }

    /// The same, also opening values sealed with an older key (rotation).
    pub fn with_old_key(mut self, id: impl Into<String>, key: [u8; 32]) -> Self {
        self.keys
            .push((id.into(), XChaCha20Poly1305::new(&key.into())));
        self
    }

    /// Parses `id:hex` keys, comma-separated, the first sealing (the form flags and
    /// environment variables take).
    ///
    /// ```
    /// let spec = format!("new:{},old:{}", "11".repeat(32), "22".repeat(32));
    /// assert!(taskq_core::Encryption::parse(&spec).is_ok());
    /// assert!(taskq_core::Encryption::parse("k:abcd").is_err());
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Invalid`] unless every key is an id and 64 hex digits.
    pub fn parse(spec: &str) -> Result<Self> {
        let invalid = |reason: String| Error::Invalid {
            what: "encryption key",
            reason,
        };
        let mut parsed: Option<Self> = None;
        for part in spec.split(',').filter(|p| !p.is_empty()) {
            let (id, hex) = part
                .split_once(':')
                .filter(|(id, _)| !id.is_empty())
                .ok_or_else(|| invalid("expected KEY-ID:HEX (64 hex digits)".into()))?;
            if hex.len() != 64 || !hex.is_ascii() {
                return Err(invalid(format!(
                    "key `{id}` is not 64 hex digits (32 bytes)"
                )));
            }
            let mut key = [0u8; 32];
            for (i, byte) in key.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                    .map_err(|_| invalid(format!("key `{id}` is not hex")))?;
            }
            parsed = Some(match parsed {
                None => Self::new(id, key),
                Some(keys) => keys.with_old_key(id, key),
            });
        }
        parsed.ok_or_else(|| invalid("no key given".into()))
    }

    /// Seals `plaintext` with the first key, bound to `associated` (e.g. task id and name).
    pub fn seal(&self, plaintext: &str, associated: &[u8]) -> String {
        let (id, cipher) = &self.keys[0];
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: associated,
                },
            )
            .expect("encrypting into memory cannot fail");
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("{PREFIX}{id}:{}", STANDARD.encode(bytes))
    }

    /// Opens what [`Encryption::seal`] made, with the same `associated` data.
    ///
    /// # Errors
    ///
    /// An [`OpenError`] saying why it did not open.
    pub fn open(&self, sealed: &str, associated: &[u8]) -> Result<String, OpenError> {
        let rest = sealed.strip_prefix(PREFIX).ok_or(OpenError::Malformed)?;
        let (id, encoded) = rest.split_once(':').ok_or(OpenError::Malformed)?;
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(key_id, _)| key_id == id)
            .ok_or_else(|| OpenError::UnknownKey(id.to_owned()))?;
        let bytes = STANDARD.decode(encoded).map_err(|_| OpenError::Malformed)?;
        if bytes.len() < 24 {
            return Err(OpenError::Malformed);
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        let plain = cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: associated,
                },
            )
            .map_err(|_| OpenError::Rejected(id.to_owned()))?;
        String::from_utf8(plain).map_err(|_| OpenError::Rejected(id.to_owned()))
    }

    /// The sealed value inside `raw` JSON, when `raw` is a sealed string.
    pub fn sealed_text(raw: &str) -> Option<String> {
        // Checked on every task and result: no allocation for the usual, unsealed case.
        if !raw
            .strip_prefix('"')
            .is_some_and(|rest| rest.starts_with(PREFIX))
        {
            return None;
        }
        serde_json::from_str::<String>(raw).ok()
    }

    /// The associated data of a task's sealed values: its id and name.
    pub fn associated(id: crate::id::TaskId, task: &str) -> Vec<u8> {
        format!("{id}\n{task}").into_bytes()
    }
}
