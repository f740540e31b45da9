//! The `#[task(input)]` field marker: which field receives a workflow predecessor's output.

use syn::{spanned::Spanned, Data, DeriveInput, Fields, Ident, Type};

/// The field marked `#[task(input)]`, if any: its name and type.
pub(crate) fn input_field(input: &DeriveInput) -> syn::Result<Option<(Ident, Type)>> {
    let Data::Struct(data) = &input.data else {
        return Ok(None);
    };
    let mut found: Option<(Ident, Type)> = None;
    for field in &data.fields {
        for attr in field.attrs.iter().filter(|a| a.path().is_ident("task")) {
            attr.parse_nested_meta(|meta| {
                if !meta.path.is_ident("input") {
                    return Err(meta.error("the only key `#[task(...)]` takes on a field is `input`"));
                }
                let Fields::Named(_) = &data.fields else {
                    return Err(meta.error("`#[task(input)]` needs a named field"));
                };
                if found.is_some() {
                    return Err(meta.error("only one field can be `#[task(input)]`"));
                }
                let ident = field.ident.clone().ok_or_else(|| meta.error("`#[task(input)]` needs a named field"))?;
                if field.attrs.iter().any(renames) {
                    return Err(syn::Error::new(
                        field.span(),
                        "the `#[task(input)]` field cannot be renamed by serde: its Rust name is its wire name",
                    ));
                }
                found = Some((ident, field.ty.clone()));
                Ok(())
            })?;
        }
    }
    Ok(found)
}

/// True for `#[serde(rename = ...)]` (and `alias`, which would accept two names).
fn renames(attr: &syn::Attribute) -> bool {
    if !attr.path().is_ident("serde") {
        return false;
    }
    let mut renamed = false;
    let _ = attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("rename") || meta.path.is_ident("alias") {
            renamed = true;
        }
        if meta.input.peek(syn::Token![=]) {
            let _: syn::Expr = meta.value()?.parse()?;
        }
        Ok(())
    });
    renamed
}
