//! The arguments' shape a task publishes: its fields' wire names and which are required, read
//! from the struct and its serde attributes. Shapes this cannot read with certainty (renaming
//! rules, flattening, aliases, tuple structs) give `None`, and producers check nothing.

use syn::{Attribute, Data, DeriveInput, Fields, LitStr, Type};

/// (every field's wire name, the required ones), or `None` when the shape is not certain.
pub(crate) fn argument_shape(input: &DeriveInput) -> Option<(Vec<String>, Vec<String>)> {
    let Data::Struct(data) = &input.data else {
        return None;
    };
    let Fields::Named(named) = &data.fields else {
        return None;
    };
    let container = serde_keys(&input.attrs)?;
    if container.iter().any(|(key, _)| {
        matches!(
            key.as_str(),
            "rename_all" | "transparent" | "from" | "try_from" | "tag" | "untagged" | "content"
        )
    }) {
        return None;
    }
    let all_default = container.iter().any(|(key, _)| key == "default");
    let (mut fields, mut required) = (Vec::new(), Vec::new());
    for field in &named.named {
        let keys = serde_keys(&field.attrs)?;
        let has = |wanted: &str| keys.iter().any(|(key, _)| key == wanted);
        if has("flatten") || has("alias") {
            return None;
        }
        if has("skip") || has("skip_deserializing") {
            continue;
        }
        let ident = field.ident.as_ref()?.to_string();
        let name = match keys.iter().find(|(key, _)| key == "rename") {
            Some((_, Some(renamed))) => renamed.clone(),
            Some((_, None)) => return None, // rename(serialize = .., deserialize = ..)
            None => ident.strip_prefix("r#").unwrap_or(&ident).to_owned(),
        };
        if !(all_default || has("default") || is_option(&field.ty)) {
            required.push(name.clone());
        }
        fields.push(name);
    }
    Some((fields, required))
}

/// The keys of every `#[serde(...)]` attribute, with their string value when they have one;
/// `None` when one cannot be read.
fn serde_keys(attrs: &[Attribute]) -> Option<Vec<(String, Option<String>)>> {
    let mut keys = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            let key = meta
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            let value = if meta.input.peek(syn::Token![=]) {
                let expr: syn::Expr = meta.value()?.parse()?;
                match expr {
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(text),
                        ..
                    }) => Some(LitStr::value(&text)),
                    _ => None,
                }
            } else {
                if meta.input.peek(syn::token::Paren) {
                    // rename(deserialize = "..."), and the like: read past it.
                    meta.parse_nested_meta(|inner| {
                        if inner.input.peek(syn::Token![=]) {
                            let _: syn::Expr = inner.value()?.parse()?;
                        }
                        Ok(())
                    })?;
                }
                None
            };
            keys.push((key, value));
            Ok(())
        })
        .ok()?;
    }
    Some(keys)
}

/// `Option<T>` (or a path ending in `Option<T>`): serde fills a missing one with `None`.
fn is_option(ty: &Type) -> bool {
    let Type::Path(path) = ty else {
        return false;
    };
    path.qself.is_none()
        && path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Option")
}
