//! Key templates: `"user:<id>"`, `"<user.id>:<page>"`, `"pair:<pair.0>"`.
//!
//! Literal text is copied as is, `<path>` is replaced by the `Display` rendering of a parameter
//! or a field path under it, and `<<` stands for a literal `<`.

use syn::{LitStr, Member};

/// A parsed template.
pub struct Template {
    /// The string literal, for spans.
    pub lit: LitStr,
    /// Text and placeholders, in order.
    pub pieces: Vec<Piece>,
}

/// One part of a template.
pub enum Piece {
    /// Literal text.
    Text(String),
    /// `<root.member.member>`.
    Place(Placeholder),
}

/// A placeholder: a parameter (or `self`) and the fields under it.
pub struct Placeholder {
    /// The parameter name, or `self`.
    pub root: String,
    /// Fields or tuple indices under the root.
    pub members: Vec<Member>,
    /// The text between the angle brackets, for messages.
    pub text: String,
}

impl Template {
    /// Parses the template in `lit`.
    pub fn parse(lit: &LitStr) -> syn::Result<Template> {
        let source = lit.value();
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut rest = source.as_str();
        while let Some(open) = rest.find('<') {
            text.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            if let Some(tail) = after.strip_prefix('<') {
                text.push('<');
                rest = tail;
                continue;
            }
            let Some(close) = after.find('>') else {
                return Err(syn::Error::new(
                    lit.span(),
                    format!(
                        "unclosed `<` in key template {source:?}: a placeholder is written `<name>` (write `<<` for a literal `<`)"
                    ),
                ));
            };
            let inner = &after[..close];
            let place = parse_placeholder(inner).map_err(|why| {
                syn::Error::new(
                    lit.span(),
                    format!("invalid placeholder `<{inner}>` in key template {source:?}: {why}"),
                )
            })?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Place(place));
            rest = &after[close + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template { lit: lit.clone(), pieces })
    }

    /// The placeholders, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Place(place) => Some(place),
            Piece::Text(_) => None,
        })
    }
}

fn parse_placeholder(inner: &str) -> Result<Placeholder, String> {
    const HINT: &str = "write a parameter name or a field path such as `<id>` or `<user.id>`";
    if inner.is_empty() {
        return Err(format!("the placeholder is empty; {HINT} (write `<<` for a literal `<`)"));
    }
    let mut segments = inner.split('.');
    let root = segments.next().unwrap_or_default();
    if !is_identifier(root) {
        return Err(format!("`{root}` is not a parameter name; {HINT} (write `<<` for a literal `<`)"));
    }
    let mut members = Vec::new();
    for segment in segments {
        let member = syn::parse_str::<Member>(segment)
            .ok()
            .filter(|_| is_identifier(segment) || segment.bytes().all(|b| b.is_ascii_digit()));
        match member {
            Some(member) => members.push(member),
            None => return Err(format!("`{segment}` is not a field name or a tuple index; {HINT}")),
        }
    }
    Ok(Placeholder { root: root.to_string(), members, text: inner.to_string() })
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && s != "_"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> syn::Result<Template> {
        Template::parse(&LitStr::new(s, proc_macro2::Span::call_site()))
    }

    fn shape(s: &str) -> Vec<String> {
        parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Text(t) => format!("text {t}"),
                Piece::Place(p) => format!("place {}", p.text),
            })
            .collect()
    }

    #[test]
    fn text_and_placeholders() {
        assert_eq!(shape("user:<id>"), ["text user:", "place id"]);
        assert_eq!(shape("<a>:<b.c.0>"), ["place a", "text :", "place b.c.0"]);
        assert_eq!(shape("x<<y>"), ["text x<y>"]);
        assert_eq!(shape("config"), ["text config"]);
        assert!(shape("").is_empty());
    }

    #[test]
    fn mistakes_are_explained() {
        let msg = |s: &str| parse(s).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(msg("user:<id").contains("unclosed `<`"));
        assert!(msg("a<>").contains("empty"));
        assert!(msg("<a b>").contains("not a parameter name"));
        assert!(msg("<a.>").contains("not a field name"));
        assert!(msg("<a.b-c>").contains("not a field name"));
    }
}
