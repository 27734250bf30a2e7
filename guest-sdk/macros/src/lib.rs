//! The `#[tools]` and `#[tool]` attributes of `agentbox-sdk`; see its docs
//! for how to use them and what they expand to.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as Tokens};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, ExprLit, FnArg, GenericArgument, ImplItem, ImplItemFn, ItemImpl, Lit, Meta,
    Pat, PathArguments, ReturnType, Type, parse_macro_input,
};

/// Turns the `#[tool]` methods of an impl block into the type's tools.
///
/// See `agentbox_sdk::tools` for the full documentation.
#[proc_macro_attribute]
pub fn tools(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        return syn::Error::new(
            Span::call_site(),
            "#[tools] takes no arguments; put options on each #[tool]",
        )
        .to_compile_error()
        .into();
    }
    let block = parse_macro_input!(item as ItemImpl);
    expand(block)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Marks a method of a `#[tools]` impl block as a tool.
///
/// On its own it does nothing but explain where it belongs.
#[proc_macro_attribute]
pub fn tool(_attr: TokenStream, item: TokenStream) -> TokenStream {
    let item = Tokens::from(item);
    let error = syn::Error::new_spanned(
        &item,
        "#[tool] marks a method inside an impl block that carries #[agentbox_sdk::tools]",
    )
    .to_compile_error();
    quote!(#error #item).into()
}

/// What one `#[tool(...)]` says besides the method itself.
#[derive(Default)]
struct Options {
    requires: Vec<String>,
    cache_ttl_ms: Option<u64>,
    /// `Session`, `User` or `Global`: the variant of `CacheScope`.
    cache_scope: Option<syn::Ident>,
    result_schema: bool,
}

/// One tool found in the impl block.
struct ToolMethod {
    name: syn::Ident,
    options: Options,
    description: String,
    receiver: bool,
    arguments: Vec<(syn::Ident, Type, Vec<Attribute>)>,
    ok_type: Type,
    output_span: Span,
}

fn expand(mut block: ItemImpl) -> syn::Result<Tokens> {
    if let Some((_, path, _)) = &block.trait_ {
        return Err(syn::Error::new_spanned(
            path,
            "#[tools] goes on an inherent impl block (`impl MyAgent { ... }`), not a trait impl",
        ));
    }
    if !block.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &block.generics,
            "#[tools] does not support generic impl blocks",
        ));
    }
    let mut tools = Vec::new();
    for item in &mut block.items {
        if let ImplItem::Fn(method) = item
            && let Some(options) = take_tool_attribute(&mut method.attrs)?
        {
            tools.push(tool_method(method, options?)?);
        }
    }
    let self_ty = &block.self_ty;
    let sdk = quote!(::agentbox_sdk);
    let private = quote!(#sdk::__private);

    let mut argument_structs = Vec::new();
    let mut specs = Vec::new();
    let mut arms = Vec::new();
    for tool in &tools {
        let struct_name = format_ident!("{}Arguments", to_camel(&tool.name.to_string()));
        let fields = tool
            .arguments
            .iter()
            .map(|(name, ty, attrs)| quote!(#(#attrs)* #name: #ty));
        // No doc comment: it would become a description of the parameters
        // beside the tool's own, which the Python and JavaScript helpers
        // do not write.
        argument_structs.push(quote! {
            #[derive(#private::serde::Deserialize, #private::schemars::JsonSchema)]
            #[serde(crate = "::agentbox_sdk::__private::serde", deny_unknown_fields)]
            #[schemars(crate = "::agentbox_sdk::__private::schemars")]
            #[allow(non_camel_case_types, dead_code)]
            struct #struct_name { #(#fields,)* }
        });

        let name_text = tool.name.to_string();
        let description = &tool.description;
        let requires = &tool.options.requires;
        let cache_ttl_ms = match tool.options.cache_ttl_ms {
            Some(ms) => quote!(::core::option::Option::Some(#ms)),
            None => quote!(::core::option::Option::None),
        };
        let cache_scope = tool
            .options
            .cache_scope
            .clone()
            .unwrap_or_else(|| format_ident!("Session"));
        let ok_type = &tool.ok_type;
        let result_schema = if tool.options.result_schema {
            quote_spanned!(tool.output_span=> ::core::option::Option::Some(#private::schema_of::<#ok_type>()))
        } else {
            quote!(::core::option::Option::None)
        };
        specs.push(quote! {
            #private::tool_spec(#private::schema_of::<#struct_name>(), #name_text, #description, &[#(#requires),*], #cache_ttl_ms, #private::CacheScope::#cache_scope, #result_schema)
        });

        let method = &tool.name;
        let fields: Vec<&syn::Ident> = tool.arguments.iter().map(|(name, _, _)| name).collect();
        let call = if tool.receiver {
            quote!(Self::#method(self, #(arguments.#fields),*))
        } else {
            quote!(Self::#method(#(arguments.#fields),*))
        };
        let finish = quote_spanned!(tool.output_span=> #private::tool_result(#name_text, #call));
        arms.push(quote! {
            #name_text => ::core::option::Option::Some((|| {
                let arguments: #struct_name = #private::tool_arguments(#name_text, arguments)?;
                #finish
            })()),
        });
    }

    Ok(quote! {
        #block

        const _: () = {
            #(#argument_structs)*

            impl #sdk::Tools for #self_ty {
                fn tool_specs() -> ::std::vec::Vec<#sdk::ToolSpec> {
                    ::std::vec![#(#specs),*]
                }

                #[allow(unused_variables, clippy::redundant_closure_call)]
                fn call_tool(
                    &mut self,
                    name: &str,
                    arguments: #sdk::Value,
                ) -> ::core::option::Option<::core::result::Result<#sdk::Value, ::std::string::String>> {
                    match name {
                        #(#arms)*
                        _ => ::core::option::Option::None,
                    }
                }
            }
        };
    })
}

/// Removes `#[tool]` or `#[tool(...)]` from `attrs` and parses its options.
fn take_tool_attribute(attrs: &mut Vec<Attribute>) -> syn::Result<Option<syn::Result<Options>>> {
    let Some(at) = attrs.iter().position(|attr| attr.path().is_ident("tool")) else {
        return Ok(None);
    };
    let attr = attrs.remove(at);
    Ok(Some(parse_options(&attr)))
}

fn parse_options(attr: &Attribute) -> syn::Result<Options> {
    let mut options = Options::default();
    if matches!(attr.meta, Meta::Path(_)) {
        return Ok(options);
    }
    attr.parse_nested_meta(|meta| {
        if meta.path.is_ident("requires") {
            let list: syn::ExprArray = meta.value()?.parse()?;
            for element in list.elems {
                match element {
                    Expr::Lit(ExprLit { lit: Lit::Str(key), .. }) => options.requires.push(key.value()),
                    other => return Err(syn::Error::new_spanned(other, "`requires` lists session keys as strings: requires = [\"authenticated\"]")),
                }
            }
            Ok(())
        } else if meta.path.is_ident("cache_ttl_ms") {
            let ms: syn::LitInt = meta.value()?.parse()?;
            options.cache_ttl_ms = Some(ms.base10_parse()?);
            Ok(())
        } else if meta.path.is_ident("cache_scope") {
            let scope: syn::LitStr = meta.value()?.parse()?;
            let variant = match scope.value().as_str() {
                "session" => "Session",
                "user" => "User",
                "global" => "Global",
                _ => return Err(syn::Error::new_spanned(scope, "`cache_scope` is \"session\", \"user\" or \"global\"")),
            };
            options.cache_scope = Some(syn::Ident::new(variant, scope.span()));
            Ok(())
        } else if meta.path.is_ident("result_schema") {
            options.result_schema = true;
            Ok(())
        } else {
            Err(meta.error("unknown #[tool] option: use `requires = [\"key\", ...]`, `cache_ttl_ms = N`, `cache_scope = \"user\"` or `result_schema`"))
        }
    })?;
    if let Some(scope) = &options.cache_scope
        && options.cache_ttl_ms.is_none()
    {
        return Err(syn::Error::new_spanned(
            scope,
            "`cache_scope` needs `cache_ttl_ms = N`: without it nothing is cached",
        ));
    }
    Ok(options)
}

fn tool_method(method: &mut ImplItemFn, options: Options) -> syn::Result<ToolMethod> {
    let signature = &mut method.sig;
    let name = signature.ident.clone();
    check_tool_name(&name)?;
    if let Some(token) = &signature.asyncness {
        return Err(syn::Error::new_spanned(
            token,
            "a tool cannot be `async`: each call runs to completion in one turn",
        ));
    }
    if !signature.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &signature.generics,
            "a tool cannot be generic: its arguments need concrete types",
        ));
    }
    let mut receiver = false;
    let mut arguments = Vec::new();
    for input in signature.inputs.iter_mut() {
        match input {
            FnArg::Receiver(this) => {
                if this.reference.is_none() {
                    return Err(syn::Error::new_spanned(
                        this,
                        "a tool takes `&self` or `&mut self`, not `self`",
                    ));
                }
                receiver = true;
            }
            FnArg::Typed(argument) => {
                let Pat::Ident(ident) = &*argument.pat else {
                    return Err(syn::Error::new_spanned(
                        &argument.pat,
                        "tool arguments must be plain names, like `quantity: u32`",
                    ));
                };
                if matches!(&*argument.ty, Type::ImplTrait(_) | Type::Reference(_)) {
                    return Err(syn::Error::new_spanned(
                        &argument.ty,
                        "tool arguments need an owned type that implements serde::Deserialize and schemars::JsonSchema",
                    ));
                }
                // Docs and schemars/serde attributes move to the arguments
                // struct; `#[sensitive]` becomes `writeOnly` in its schema.
                let attrs = std::mem::take(&mut argument.attrs)
                    .into_iter()
                    .map(|attr| {
                        if attr.path().is_ident("sensitive") {
                            attr.meta.require_path_only()?;
                            Ok(syn::parse_quote_spanned!(attr.span()=> #[schemars(extend("writeOnly" = true))]))
                        } else {
                            Ok(attr)
                        }
                    })
                    .collect::<syn::Result<Vec<Attribute>>>()?;
                arguments.push((ident.ident.clone(), (*argument.ty).clone(), attrs));
            }
        }
    }
    let (ok_type, output_span) = match &signature.output {
        ReturnType::Type(_, ty) => (result_ok_type(ty)?, ty.span()),
        ReturnType::Default => {
            return Err(syn::Error::new_spanned(
                &signature.ident,
                "a tool returns `Result<T, E>` with `T: Serialize` and `E: Display`",
            ));
        }
    };
    Ok(ToolMethod {
        name,
        options,
        description: doc_text(&method.attrs),
        receiver,
        arguments,
        ok_type,
        output_span,
    })
}

/// The `T` of a `Result<T, E>` return type.
fn result_ok_type(ty: &Type) -> syn::Result<Type> {
    let not_result = || {
        syn::Error::new_spanned(
            ty,
            "a tool returns `Result<T, E>` with `T: Serialize` and `E: Display`",
        )
    };
    let Type::Path(path) = ty else {
        return Err(not_result());
    };
    let last = path.path.segments.last().ok_or_else(not_result)?;
    if last.ident != "Result" {
        return Err(not_result());
    }
    let PathArguments::AngleBracketed(generics) = &last.arguments else {
        return Err(not_result());
    };
    let types: Vec<&Type> = generics
        .args
        .iter()
        .filter_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [ok, _] => Ok((*ok).clone()),
        _ => Err(not_result()),
    }
}

fn check_tool_name(name: &syn::Ident) -> syn::Result<()> {
    let text = name.to_string();
    let valid = text.len() <= 64
        && text.starts_with(|c: char| c.is_ascii_lowercase())
        && !text.ends_with('_')
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(syn::Error::new_spanned(
            name,
            "a tool's name is its method's name: 1 to 64 characters of a-z, 0-9 and _, starting with a letter and not ending with _",
        ))
    }
}

/// The doc comment of an item, lines joined with spaces.
fn doc_text(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            Meta::NameValue(pair) => match &pair.value {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(text),
                    ..
                }) => Some(text.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    lines.join(" ").trim().to_owned()
}

fn to_camel(snake: &str) -> String {
    snake
        .split('_')
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::expand;

    /// Expands `source` (an impl block) and returns the error's message and
    /// the source text its span covers.
    fn error_of(source: &str) -> (String, String) {
        let block: syn::ItemImpl = syn::parse_str(source).expect("test input parses");
        let err = expand(block).expect_err("the macro refuses this input");
        let (start, end) = (err.span().start(), err.span().end());
        assert_eq!(start.line, end.line, "one-line spans only in these tests");
        let line = source.lines().nth(start.line - 1).unwrap();
        (err.to_string(), line[start.column..end.column].to_owned())
    }

    #[test]
    fn a_pattern_argument_is_refused_at_the_pattern() {
        let (message, at) = error_of(
            "impl A { #[tool] fn f(&self, (a, b): (u32, u32)) -> Result<u32, String> { Ok(a) } }",
        );
        assert_eq!(
            message,
            "tool arguments must be plain names, like `quantity: u32`"
        );
        assert_eq!(at, "(a, b)");
    }

    #[test]
    fn a_borrowed_or_impl_trait_argument_is_refused_at_its_type() {
        let (message, at) =
            error_of("impl A { #[tool] fn f(name: &str) -> Result<u32, String> { Ok(1) } }");
        assert_eq!(
            message,
            "tool arguments need an owned type that implements serde::Deserialize and schemars::JsonSchema"
        );
        assert_eq!(at, "&str");
        let (_, at) = error_of(
            "impl A { #[tool] fn f(name: impl Display) -> Result<u32, String> { Ok(1) } }",
        );
        assert_eq!(at, "impl Display");
    }

    #[test]
    fn self_by_value_async_and_generics_are_refused_where_they_are_written() {
        let (message, at) =
            error_of("impl A { #[tool] fn f(self) -> Result<u32, String> { Ok(1) } }");
        assert_eq!(
            (message.as_str(), at.as_str()),
            ("a tool takes `&self` or `&mut self`, not `self`", "self")
        );
        let (message, at) =
            error_of("impl A { #[tool] async fn f() -> Result<u32, String> { Ok(1) } }");
        assert_eq!(
            (message.as_str(), at.as_str()),
            (
                "a tool cannot be `async`: each call runs to completion in one turn",
                "async"
            )
        );
        let (_, at) = error_of("impl A { #[tool] fn f<T>(t: T) -> Result<u32, String> { Ok(1) } }");
        assert_eq!(at, "<T>");
    }

    #[test]
    fn a_tool_must_return_a_result() {
        let (message, at) = error_of("impl A { #[tool] fn f() -> u32 { 1 } }");
        assert_eq!(
            message,
            "a tool returns `Result<T, E>` with `T: Serialize` and `E: Display`"
        );
        assert_eq!(at, "u32");
        let (_, at) = error_of("impl A { #[tool] fn f() {} }");
        assert_eq!(at, "f");
    }

    #[test]
    fn names_and_options_are_checked() {
        let (message, at) =
            error_of("impl A { #[tool] fn Lookup() -> Result<u32, String> { Ok(1) } }");
        assert!(
            message.starts_with("a tool's name is its method's name"),
            "{message}"
        );
        assert_eq!(at, "Lookup");
        let (message, at) =
            error_of("impl A { #[tool(cache = 5)] fn f() -> Result<u32, String> { Ok(1) } }");
        assert!(message.starts_with("unknown #[tool] option"), "{message}");
        assert_eq!(at, "cache");
        let (message, at) = error_of(
            r#"impl A { #[tool(cache_ttl_ms = 5, cache_scope = "tenant")] fn f() -> Result<u32, String> { Ok(1) } }"#,
        );
        assert!(
            message.starts_with("`cache_scope` is \"session\", \"user\" or \"global\""),
            "{message}"
        );
        assert_eq!(at, "\"tenant\"");
        let (message, _) = error_of(
            r#"impl A { #[tool(cache_scope = "user")] fn f() -> Result<u32, String> { Ok(1) } }"#,
        );
        assert!(
            message.starts_with("`cache_scope` needs `cache_ttl_ms = N`"),
            "{message}"
        );
        let (message, _) =
            error_of("impl Agent for A { #[tool] fn f() -> Result<u32, String> { Ok(1) } }");
        assert!(
            message.starts_with("#[tools] goes on an inherent impl block"),
            "{message}"
        );
    }

    #[test]
    fn valid_tools_expand_to_an_arguments_struct_and_a_tools_impl() {
        let block: syn::ItemImpl = syn::parse_str(
            "impl Shop { /// Adds it.\n #[tool(requires = [\"authenticated\"])] fn add_to_cart(&mut self, /// How many.\n quantity: u32) -> Result<u32, String> { Ok(quantity) } fn helper(&self) {} }",
        )
        .unwrap();
        let expanded = expand(block).unwrap().to_string();
        assert!(expanded.contains("struct AddToCartArguments"), "{expanded}");
        assert!(
            expanded.contains("impl :: agentbox_sdk :: Tools for Shop"),
            "{expanded}"
        );
        assert!(
            expanded.contains("\"add_to_cart\" , \"Adds it.\" , & [\"authenticated\"]"),
            "{expanded}"
        );
        assert!(
            !expanded.contains("\"helper\""),
            "methods without #[tool] stay plain: {expanded}"
        );
    }
}
