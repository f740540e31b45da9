//! Code generation for `#[derive(Task)]`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{spanned::Spanned, DeriveInput};

use crate::attr::TaskAttrs;

/// Where the generated code finds taskq: `::taskq` when the user's package depends on the
/// facade crate, else `::taskq_core`. A package's own tests, examples and doc tests name it by
/// its crate name too, so "found itself" also maps to the name.
fn default_crate_path() -> TokenStream {
    use proc_macro_crate::{crate_name, FoundCrate};
    if crate_name("taskq").is_ok() {
        return quote!(::taskq);
    }
    match crate_name("taskq-core") {
        Ok(FoundCrate::Name(name)) => {
            let ident = proc_macro2::Ident::new(&name, proc_macro2::Span::call_site());
            quote!(::#ident)
        }
        _ => quote!(::taskq_core),
    }
}

/// Expands to `impl Task for <type>` with the options from `#[task(...)]`.
pub(crate) fn derive_task(input: &DeriveInput) -> syn::Result<TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "a task type cannot be generic: its wire name must name exactly one type",
        ));
    }
    let attrs = TaskAttrs::from_attributes(&input.attrs, input.ident.span())?;
    let krate = attrs
        .krate
        .as_ref()
        .map(|path| quote!(#path))
        .unwrap_or_else(default_crate_path);
    let private = quote!(#krate::__private);
    let ident = &input.ident;
    let name = &attrs.name;

    let mut setters = Vec::new();
    if let Some(queue) = &attrs.queue {
        setters.push(quote!(.with_queue(#queue)));
    }
    if let Some(max_retries) = attrs.max_retries {
        setters.push(quote!(.with_max_retries(#max_retries)));
    }
    if let Some(timeout) = attrs.timeout {
        let millis = millis(timeout);
        setters.push(quote!(.with_timeout(#private::Duration::from_millis(#millis))));
    }
    if let Some(expires) = attrs.expires {
        let millis = millis(expires);
        setters.push(quote!(.with_expires(#private::Duration::from_millis(#millis))));
    }
    if let Some(priority) = attrs.priority {
        setters.push(quote!(.with_priority(#priority)));
    }
    if attrs.ignore_result {
        setters.push(quote!(.with_ignore_result(true)));
    }
    if let Some(soft) = attrs.soft_timeout {
        let millis = millis(soft);
        setters.push(quote!(.with_soft_timeout(#private::Duration::from_millis(#millis))));
    }
    if attrs.at_most_once {
        setters.push(quote!(.with_at_most_once(true)));
    }
    if let Some(window) = attrs.unique_for {
        let millis = millis(window);
        setters.push(quote!(.with_unique_for(#private::Duration::from_millis(#millis))));
    }
    if let Some((count, period)) = attrs.rate_limit {
        let millis = millis(period);
        setters.push(quote!(.with_rate_limit(#krate::RateLimit::new(#count, #private::Duration::from_millis(#millis)))));
    }

    if let Some(field) = &attrs.partition {
        // A field the arguments never have would silently leave every invocation unpartitioned.
        if let Some((fields, _)) = crate::shape::argument_shape(input) {
            if !fields.contains(&field.value()) {
                return Err(syn::Error::new(
                    field.span(),
                    format!(
                        "partition field `{}` is not one of the arguments' fields ({})",
                        field.value(),
                        fields.join(", ")
                    ),
                ));
            }
        }
        setters.push(quote!(.with_partition_field(#field)));
    }
    if let Some(limit) = attrs.partition_concurrency {
        setters.push(quote!(.with_partition_concurrency(#limit)));
    }
    if let Some((count, period)) = attrs.partition_rate_limit {
        let millis = millis(period);
        setters.push(quote!(.with_partition_rate_limit(#krate::RateLimit::new(#count, #private::Duration::from_millis(#millis)))));
    }

    if let Some((fields, required)) = crate::shape::argument_shape(input) {
        setters.push(
            quote!(.with_arguments(#krate::ArgumentShape::new(&[#(#fields),*], &[#(#required),*]))),
        );
    }

    let step = crate::input::input_field(input)?.map(|(field, ty)| {
        let field = field.to_string();
        let field = field.strip_prefix("r#").unwrap_or(&field).to_owned();
        quote! {
            #[automatically_derived]
            impl #krate::workflow::Step for #ident {
                type Input = #ty;
                const INPUT_FIELD: &'static str = #field;
            }
        }
    });

    Ok(quote! {
        #[automatically_derived]
        impl #krate::Task for #ident {
            const NAME: &'static str = #name;

            fn options() -> #krate::TaskOptions {
                #krate::TaskOptions::new() #(#setters)*
            }
        }
        #step
    })
}

fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}
