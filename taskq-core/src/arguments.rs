//! [`ArgumentShape`]: the JSON object a task's arguments must be, as `#[derive(Task)]` reads it
//! from the struct's fields, published with the task's declaration so that a producer without
//! the type (`taskq enqueue`) can refuse arguments the worker would only dead-letter.

use serde::{Deserialize, Serialize};

/// The fields a task's arguments object takes (their wire names) and which of them it needs.
///
/// `#[derive(Task)]` records it for a struct with named fields whose serde attributes it can
/// read (a field is optional when it is an `Option` or has `#[serde(default)]`); for other
/// shapes (`flatten`, `rename_all`, tuple structs, ...) it records none, and nothing is checked.
///
/// ```
/// use serde_json::json;
/// use taskq_core::ArgumentShape;
/// let shape = ArgumentShape::new(&["to", "subject", "cc"], &["to", "subject"]);
/// assert!(shape.check(&json!({"to": "ada@example.com", "subject": "Hi"})).is_ok());
/// assert_eq!(
///     shape.check(&json!([1, 2])).unwrap_err(),
///     "takes a JSON object with fields to, subject, cc (to and subject required), not an array"
/// );
/// assert_eq!(shape.check(&json!({"to": "x"})).unwrap_err(), "needs field subject");
/// assert_eq!(
///     shape.check(&json!({"to": "x", "subject": "y", "bcc": "z"})).unwrap_err(),
///     "has no field bcc (it takes to, subject, cc)"
/// );
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ArgumentShape {
    /// Every field's wire name, in declaration order.
    pub fields: Vec<String>,
    /// The fields that must be present.
    pub required: Vec<String>,
}

impl ArgumentShape {
    /// The shape of an object with `fields`, of which `required` must be present.
    pub fn new(fields: &[&str], required: &[&str]) -> Self {
        Self {
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            required: required.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    /// Whether `args` fits: an object with every required field and no field the task lacks.
    /// The error says what is wrong, to follow "task `name` ".
    ///
    /// # Errors
    ///
    /// The first mismatch, in words.
    pub fn check(&self, args: &serde_json::Value) -> Result<(), String> {
        let Some(object) = args.as_object() else {
            return Err(format!(
                "takes a JSON object with fields {}{}, not {}",
                self.fields.join(", "),
                self.required_note(),
                kind(args)
            ));
        };
        let missing: Vec<&str> = self
            .required
            .iter()
            .filter(|field| !object.contains_key(field.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!("needs field {}", and_list(&missing)));
        }
        let unknown: Vec<&str> = object
            .keys()
            .filter(|key| !self.fields.contains(key))
            .map(String::as_str)
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "has no field {} (it takes {})",
                and_list(&unknown),
                self.fields.join(", ")
            ));
        }
        Ok(())
    }

    fn required_note(&self) -> String {
        match self.required.len() {
            0 => " (none required)".to_owned(),
            n if n == self.fields.len() => " (all required)".to_owned(),
            _ => {
                let required: Vec<&str> = self.required.iter().map(String::as_str).collect();
                format!(" ({} required)", and_list(&required))
            }
        }
    }
}

/// "a", "a and b", "a, b and c".
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
