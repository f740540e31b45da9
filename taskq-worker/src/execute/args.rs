//! A task's arguments as it runs with them: opened when sealed, and their decoding errors told
//! without leaking what was encrypted.

use serde_json::value::RawValue;
use taskq_core::{Encryption, Envelope};

/// The arguments `envelope`'s task runs with: opened with the worker's `keys` when sealed.
/// `None` when they are not sealed: the envelope's own arguments are used, uncopied.
pub(super) fn open_args(
    keys: Option<&Encryption>,
    envelope: &Envelope,
) -> Result<Option<Box<RawValue>>, String> {
    let Some(sealed) = Encryption::sealed_text(envelope.args.get()) else {
        return Ok(None);
    };
    let keys = keys.ok_or("the arguments are encrypted and this worker has no encryption keys")?;
    let opened = keys
        .open(
            &sealed,
            &Encryption::associated(envelope.id, &envelope.task),
        )
        .map_err(|err| err.to_string())?;
    RawValue::from_string(opened).map(Some).map_err(|err| {
        format!(
            "the opened arguments are not JSON: {}",
            args_error(&err, true)
        )
    })
}

/// Why arguments did not decode, for results, dead letters and logs. serde quotes the value it
/// rejected (`invalid type: string "4111-...", expected i64`); for sealed arguments that would
/// put decrypted data where the sealed form was promised, so only the kind of error and its
/// place are told.
pub(super) fn args_error(err: &serde_json::Error, sealed: bool) -> String {
    if !sealed {
        return err.to_string();
    }
    let kind = match err.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Data => "of the wrong shape for the task",
        serde_json::error::Category::Eof => "cut short",
    };
    format!(
        "the decrypted arguments are {kind} (at line {} column {}; details withheld because they are encrypted)",
        err.line(),
        err.column()
    )
}
