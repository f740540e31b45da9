//! Parsing of the `#[task(...)]` attribute into [`TaskAttrs`].

use std::time::Duration;

use syn::{spanned::Spanned, Attribute, Expr, ExprLit, Lit, LitStr, Path};

/// Every key `#[task(...)]` accepts, listed in error messages.
const KEYS: &str = "name, queue, max_retries, timeout, soft_timeout, priority, expires, ignore_result, at_most_once, unique_for, rate_limit, partition, partition_concurrency, partition_rate_limit, crate";

/// The highest priority level a task may declare.
const MAX_PRIORITY: u8 = 9;

/// What the user wrote in `#[task(...)]`, validated.
pub(crate) struct TaskAttrs {
    pub(crate) name: LitStr,
    pub(crate) queue: Option<LitStr>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) priority: Option<u8>,
    pub(crate) expires: Option<Duration>,
    pub(crate) ignore_result: bool,
    pub(crate) soft_timeout: Option<Duration>,
    pub(crate) at_most_once: bool,
    pub(crate) unique_for: Option<Duration>,
    /// Starts per period: (count, period).
    pub(crate) rate_limit: Option<(u32, Duration)>,
    /// The argument field (wire name) holding the partition key.
    pub(crate) partition: Option<LitStr>,
    pub(crate) partition_concurrency: Option<u32>,
    /// Starts per period of each partition: (count, period).
    pub(crate) partition_rate_limit: Option<(u32, Duration)>,
    pub(crate) krate: Option<Path>,
}

impl TaskAttrs {
    /// Reads every `#[task(...)]` on the item; `name` is required.
    pub(crate) fn from_attributes(
        attrs: &[Attribute],
        item_span: proc_macro2::Span,
    ) -> syn::Result<Self> {
        let mut name = None;
        let mut queue = None;
        let mut max_retries = None;
        let mut timeout = None;
        let mut priority = None;
        let mut expires = None;
        let mut ignore_result = false;
        let mut soft_timeout = None;
        let mut at_most_once = false;
        let mut unique_for = None;
        let mut rate_limit = None;
        let mut partition = None;
        let mut partition_concurrency = None;
        let mut partition_rate_limit = None;
        let mut krate = None;

        for attr in attrs.iter().filter(|a| a.path().is_ident("task")) {
            attr.parse_nested_meta(|meta| {
                let key = meta
                    .path
                    .get_ident()
                    .map(ToString::to_string)
                    .unwrap_or_default();
                match key.as_str() {
                    "name" => set_once(&mut name, non_empty(string(&meta)?)?, &meta),
                    "queue" => set_once(&mut queue, non_empty(string(&meta)?)?, &meta),
                    "max_retries" => set_once(&mut max_retries, integer::<u32>(&meta)?, &meta),
                    "timeout" => set_once(&mut timeout, duration(&meta)?, &meta),
                    "expires" => set_once(&mut expires, duration(&meta)?, &meta),
                    "soft_timeout" => set_once(&mut soft_timeout, duration(&meta)?, &meta),
                    "unique_for" => set_once(&mut unique_for, duration(&meta)?, &meta),
                    "rate_limit" => set_once(&mut rate_limit, rate(&meta)?, &meta),
                    "partition_rate_limit" => {
                        set_once(&mut partition_rate_limit, rate(&meta)?, &meta)
                    }
                    "partition" => set_once(&mut partition, non_empty(string(&meta)?)?, &meta),
                    "partition_concurrency" => {
                        let value = integer::<u32>(&meta)?;
                        if value == 0 {
                            return Err(meta.error("partition_concurrency must be at least 1"));
                        }
                        set_once(&mut partition_concurrency, value, &meta)
                    }
                    "at_most_once" => {
                        at_most_once = flag(&meta)?;
                        Ok(())
                    }
                    "priority" => {
                        let value = integer::<u8>(&meta)?;
                        if value > MAX_PRIORITY {
                            return Err(meta
                                .error(format!("priority must be between 0 and {MAX_PRIORITY}")));
                        }
                        set_once(&mut priority, value, &meta)
                    }
                    "ignore_result" => {
                        ignore_result = flag(&meta)?;
                        Ok(())
                    }
                    "crate" => {
                        let lit = string(&meta)?;
                        set_once(&mut krate, lit.parse::<Path>()?, &meta)
                    }
                    _ => Err(meta.error(format!(
                        "unknown task attribute `{}`; expected one of: {KEYS}",
                        path_text(&meta.path)
                    ))),
                }
            })?;
        }

        let name = name.ok_or_else(|| {
            syn::Error::new(
                item_span,
                "missing task name: add #[task(name = \"...\")] with a stable wire name",
            )
        })?;
        Ok(Self {
            name,
            queue,
            max_retries,
            timeout,
            priority,
            expires,
            ignore_result,
            soft_timeout,
            at_most_once,
            unique_for,
            rate_limit,
            partition,
            partition_concurrency,
            partition_rate_limit,
            krate,
        })
    }
}

/// The attribute key as written, for error messages.
fn path_text(path: &Path) -> String {
    quote::ToTokens::to_token_stream(path)
        .to_string()
        .replace(' ', "")
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    meta: &syn::meta::ParseNestedMeta<'_>,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(meta.error(format!(
            "duplicate task attribute `{}`",
            path_text(&meta.path)
        )));
    }
    *slot = Some(value);
    Ok(())
}

fn literal(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<Lit> {
    let expr: Expr = meta.value()?.parse()?;
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => Ok(lit),
        other => Err(syn::Error::new(other.span(), "expected a literal")),
    }
}

fn string(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<LitStr> {
    match literal(meta)? {
        Lit::Str(s) => Ok(s),
        other => Err(syn::Error::new(other.span(), "expected a string literal")),
    }
}

fn non_empty(lit: LitStr) -> syn::Result<LitStr> {
    if lit.value().trim().is_empty() {
        return Err(syn::Error::new(lit.span(), "must not be empty"));
    }
    Ok(lit)
}

fn integer<T>(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    match literal(meta)? {
        Lit::Int(i) => i.base10_parse::<T>(),
        other => Err(syn::Error::new(other.span(), "expected an integer literal")),
    }
}

fn boolean(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<bool> {
    match literal(meta)? {
        Lit::Bool(b) => Ok(b.value),
        other => Err(syn::Error::new(other.span(), "expected `true` or `false`")),
    }
}

/// A bare `key` (true) or `key = true|false`.
fn flag(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<bool> {
    if meta.input.peek(syn::Token![=]) {
        boolean(meta)
    } else {
        Ok(true)
    }
}

/// `"100/s"`, `"10/m"`, `"1/h"` or `"5/30s"`.
fn rate(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<(u32, Duration)> {
    let lit = string(meta)?;
    crate::rate_grammar::parse_rate(&lit.value()).map_err(|err| syn::Error::new(lit.span(), err))
}

fn duration(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<Duration> {
    let lit = string(meta)?;
    let parsed = humantime::parse_duration(&lit.value()).map_err(|err| {
        syn::Error::new(
            lit.span(),
            format!(
                "invalid duration `{}`: {err}; write it like \"30s\", \"5m\" or \"1h 30m\"",
                lit.value()
            ),
        )
    })?;
    if parsed.is_zero() {
        return Err(syn::Error::new(
            lit.span(),
            "duration must be greater than zero",
        ));
    }
    Ok(parsed)
}
