//! [`CeleryParts`]: a Celery message taken apart as AMQP carries it (body, headers,
//! properties), and put back into the JSON layout Kombu's Redis transport stores, which is
//! the one form taskq's worker reads. RabbitMQ's Celery queues go through it both ways.

use base64::Engine as _;
use serde_json::{Map, Value};

/// A Celery message as an AMQP transport carries it: the raw body (`[args, kwargs, embed]`
/// for the JSON serializer), the protocol 2 headers, and the properties Celery reads.
///
/// ```
/// use taskq_core::{celery::{self, CeleryParts}, TaskId};
/// let message = celery::message("tasks.add", TaskId::new(), &[2.into()], &Default::default(), "celery");
/// let parts = CeleryParts::from_kombu(&message).unwrap();
/// assert_eq!(parts.headers["task"], "tasks.add");
/// assert_eq!(CeleryParts::from_kombu(&parts.to_kombu("celery")).unwrap(), parts);
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct CeleryParts {
    /// The body as sent (not base64).
    pub body: Vec<u8>,
    /// Its content type (`application/json` for the JSON serializer).
    pub content_type: String,
    /// Its content encoding (`utf-8`), when given.
    pub content_encoding: Option<String>,
    /// Protocol 2 headers: `task`, `id`, `eta`, `expires`, `retries` ...
    pub headers: Map<String, Value>,
    /// The task id again, as Celery's producer sets it.
    pub correlation_id: Option<String>,
    /// The producer's reply queue (Celery's `rpc://` result backend), when it named one.
    pub reply_to: Option<String>,
    /// The message's priority, when it has one.
    pub priority: Option<u8>,
}

impl CeleryParts {
    /// The parts of `body` with `headers`, from an AMQP delivery.
    pub fn new(
        body: Vec<u8>,
        content_type: impl Into<String>,
        headers: Map<String, Value>,
    ) -> Self {
        Self {
            body,
            content_type: content_type.into(),
            headers,
            ..Self::default()
        }
    }

    /// The task id: the `id` header, or the correlation id Celery sets to it.
    pub fn task_id(&self) -> Option<&str> {
        self.headers
            .get("id")
            .and_then(Value::as_str)
            .or(self.correlation_id.as_deref())
    }

    /// Takes apart a message in Kombu's JSON layout (as [`super::message`] writes it).
    ///
    /// # Errors
    ///
    /// What is wrong with it, in words: not JSON, no body, a body that is not base64.
    pub fn from_kombu(message: &str) -> Result<Self, String> {
        let message: Map<String, Value> = serde_json::from_str(message)
            .map_err(|err| format!("not a Celery message in Kombu's layout: {err}"))?;
        let text = |value: Option<&Value>| value.and_then(Value::as_str).map(str::to_owned);
        let properties = message.get("properties").cloned().unwrap_or(Value::Null);
        let body = text(message.get("body")).ok_or("a Celery message without a body")?;
        let body = match properties.get("body_encoding").and_then(Value::as_str) {
            Some("base64") | None => base64::engine::general_purpose::STANDARD
                .decode(body)
                .map_err(|err| format!("the Celery message's body is not base64: {err}"))?,
            Some(_) => body.into_bytes(),
        };
        Ok(Self {
            body,
            content_type: text(message.get("content-type"))
                .unwrap_or_else(|| "application/json".to_owned()),
            content_encoding: text(message.get("content-encoding")),
            headers: message
                .get("headers")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            correlation_id: text(properties.get("correlation_id")),
            reply_to: text(properties.get("reply_to")).filter(|queue| !queue.is_empty()),
            priority: properties
                .get("priority")
                .and_then(Value::as_u64)
                .map(|p| u8::try_from(p).unwrap_or(u8::MAX)),
        })
    }

    /// These parts in Kombu's JSON layout (the body base64), as routed with `routing_key`.
    pub fn to_kombu(&self, routing_key: &str) -> String {
        serde_json::json!({
            "body": base64::engine::general_purpose::STANDARD.encode(&self.body),
            "content-encoding": self.content_encoding,
            "content-type": self.content_type,
            "headers": self.headers,
            "properties": {
                "correlation_id": self.correlation_id,
                "reply_to": self.reply_to.as_deref().unwrap_or(""),
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": routing_key},
                "priority": self.priority,
                "body_encoding": "base64",
            },
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_from_amqp_read_as_the_worker_reads_kombus_layout() {
        let mut headers = Map::new();
        headers.insert("task".into(), "tasks.add".into());
        headers.insert("id".into(), "0b7f1c36-32a6-4f3c-9a53-2fb0b28c3e4e".into());
        headers.insert("retries".into(), 1.into());
        let mut parts = CeleryParts::new(
            br#"[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]"#
                .to_vec(),
            "application/json",
            headers,
        );
        parts.reply_to = Some("c1b2-reply".into());
        let kombu = parts.to_kombu("celery");
        let envelope =
            super::super::envelope_from_celery(&kombu, "celery", chrono::Utc::now(), |_| {
                Some(crate::ArgumentShape::new(&["a", "b"], &["a", "b"]))
            })
            .unwrap();
        assert_eq!(envelope.args.get(), r#"{"a":2,"b":3}"#);
        assert_eq!(envelope.attempt, 1);
        assert_eq!(envelope.headers[crate::REPLY_TO_HEADER], "c1b2-reply");
        assert_eq!(
            parts.task_id(),
            Some("0b7f1c36-32a6-4f3c-9a53-2fb0b28c3e4e")
        );
        assert_eq!(CeleryParts::from_kombu(&kombu).unwrap(), parts);
    }
}
