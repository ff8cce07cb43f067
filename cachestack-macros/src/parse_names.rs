//! The names in an attribute's argument list: unknown and repeated ones reported (with the
//! valid names and the closest one, "did you mean"), raw identifiers unwrapped; what is left goes
//! to darling (see [`crate::parse`]).

use darling::ast::NestedMeta;
use proc_macro2::TokenStream;
use syn::ext::IdentExt;
use syn::{Meta, Path};

use crate::errors::Errors;
use crate::parse::Spec;

/// The argument list, without the items whose name is unknown or repeated (each reported): what
/// is left, darling maps onto the struct's fields. Also the names suggested for unknown ones.
pub(crate) fn arguments(tokens: TokenStream, spec: &Spec, errors: &mut Errors) -> (Vec<NestedMeta>, Vec<&'static str>) {
    let items = match NestedMeta::parse_meta_list(tokens) {
        Ok(items) => items,
        Err(err) => {
            errors.push(err);
            return (Vec::new(), Vec::new());
        }
    };
    let mut suggested = Vec::new();
    let mut seen: Vec<String> = Vec::new();
    let mut kept = Vec::new();
    for item in items {
        let meta = match item {
            NestedMeta::Meta(meta) => meta,
            NestedMeta::Lit(lit) => {
                errors.push(syn::Error::new_spanned(lit, expected_name(spec)));
                continue;
            }
        };
        let Some(name) = meta.path().get_ident().map(|id| id.unraw().to_string()) else {
            errors.push(syn::Error::new_spanned(meta.path(), expected_name(spec)));
            continue;
        };
        if !spec.args.contains(&name.as_str()) {
            let suggestion = closest(&name, spec.args);
            errors.push(unknown(meta.path(), &name, suggestion, spec));
            suggested.extend(suggestion);
        } else if seen.contains(&name) && !spec.repeatable.contains(&name.as_str()) {
            errors.push(syn::Error::new_spanned(meta.path(), format!("duplicate attribute `{name}`: give it once")));
        } else {
            seen.push(name.clone());
            kept.push(NestedMeta::Meta(unraw(meta, &name)));
        }
    }
    (kept, suggested)
}

fn expected_name(spec: &Spec) -> String {
    format!(
        "expected an attribute such as `ttl = \"5m\"`; valid attributes for #[{}] are {}",
        spec.name,
        valid_list(spec)
    )
}

fn valid_list(spec: &Spec) -> String {
    spec.args.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")
}

fn unknown(path: &Path, given: &str, suggestion: Option<&str>, spec: &Spec) -> syn::Error {
    let suggestion = suggestion.map(|v| format!(" (did you mean `{v}`?)")).unwrap_or_default();
    syn::Error::new_spanned(
        path,
        format!(
            "unknown attribute `{given}` for #[{}]{suggestion}; valid attributes are {}",
            spec.name,
            valid_list(spec)
        ),
    )
}

/// The valid name closest to `given`: at most two edits away (a transposed pair counts as
/// one), or a third of the name's length for long names.
///
/// darling's `suggestions` feature (Jaro-Winkler similarity above 0.8) is not used: it misses
/// the commonest typo of the shortest name, `tll` for `ttl` (a similarity of exactly 0.8), and
/// exposes its choice only in a message worded for derive macros.
fn closest(given: &str, valid: &[&'static str]) -> Option<&'static str> {
    valid.iter().map(|v| (edit_distance(given, v), *v)).filter(|(d, v)| *d <= 2.max(v.len() / 3)).min().map(|(_, v)| v)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and transpositions of
/// adjacent characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut rows = vec![(0..=b.len()).collect::<Vec<usize>>()];
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            row[j] = (rows[i - 1][j] + 1).min(row[j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                row[j] = row[j].min(rows[i - 2][j - 2] + 1);
            }
        }
        rows.push(row);
    }
    rows[a.len()][b.len()]
}

/// `meta` with its name written without `r#`, as darling matches names.
fn unraw(mut meta: Meta, name: &str) -> Meta {
    let path = match &mut meta {
        Meta::Path(path) => path,
        Meta::List(list) => &mut list.path,
        Meta::NameValue(nv) => &mut nv.path,
    };
    if let Some(segment) = path.segments.first_mut() {
        segment.ident = syn::Ident::new(name, segment.ident.span());
    }
    meta
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{CACHED, INVALIDATE};

    #[test]
    fn the_closest_name_is_suggested() {
        assert_eq!(closest("tll", CACHED.args), Some("ttl"));
        assert_eq!(closest("namesapce", CACHED.args), Some("namespace"));
        assert_eq!(closest("cache_error", CACHED.args), Some("cache_err"));
        assert_eq!(closest("keys", INVALIDATE.args), Some("key"));
        assert_eq!(closest("after", INVALIDATE.args), None);
        assert_eq!(closest("zzz", CACHED.args), None);
        assert_eq!(edit_distance("tll", "ttl"), 1);
        assert_eq!(edit_distance("namesapce", "namespace"), 1);
        assert_eq!(edit_distance("ttl", "ttl"), 0);
    }
}
