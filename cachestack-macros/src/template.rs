//! Key templates: `"user:<id>"`, `"<user.id>:<page>"`, `"pair:<pair.0>"`.
//!
//! Literal text is copied as is, `<path>` is replaced by the `Display` rendering of a parameter
//! or a field path under it, and `<<` stands for a literal `<`.
//!
//! Every placeholder knows where it is ([`Location`]), so that messages about it point at it:
//! at the placeholder itself where the compiler can point inside a string literal
//! (`Literal::subspan`, which returns `None` on stable Rust), else at the whole literal with the
//! placeholder's line and column in the message.

use std::ops::Range;

use proc_macro2::Span;
use syn::{LitStr, Member};

/// A parsed template.
pub struct Template {
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
    /// Where `<...>` is in the source.
    pub at: Location,
}

/// Where a part of a template is in the source.
#[derive(Clone)]
pub struct Location {
    /// The part's own span when the compiler provides one, else the literal's.
    pub span: Span,
    /// `"at column 22"` when `span` is the whole literal: where in it the part is.
    pub position: Option<String>,
}

impl Location {
    /// `" at column 22"` (with a leading space) when the span cannot point at the part itself,
    /// else nothing.
    pub fn suffix(&self) -> String {
        self.position.as_ref().map(|p| format!(" {p}")).unwrap_or_default()
    }
}

impl Template {
    /// Parses the template in `lit`.
    pub fn parse(lit: &LitStr) -> syn::Result<Template> {
        let source = lit.value();
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut offset = 0;
        while let Some(open) = source[offset..].find('<').map(|i| offset + i) {
            text.push_str(&source[offset..open]);
            let after = &source[open + 1..];
            if after.starts_with('<') {
                text.push('<');
                offset = open + 2;
                continue;
            }
            let Some(close) = after.find('>').map(|i| open + 1 + i) else {
                let at = locate(lit, &source, open..source.len());
                return Err(syn::Error::new(
                    at.span,
                    format!(
                        "unclosed `<`{} in key template {source:?}: a placeholder is written `<name>` (write `<<` for a literal `<`)",
                        at.suffix()
                    ),
                ));
            };
            let inner = &source[open + 1..close];
            let at = locate(lit, &source, open..close + 1);
            let place = parse_placeholder(inner, at.clone()).map_err(|why| {
                syn::Error::new(
                    at.span,
                    format!("invalid placeholder `<{inner}>`{} in key template {source:?}: {why}", at.suffix()),
                )
            })?;
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(Piece::Place(place));
            offset = close + 1;
        }
        text.push_str(&source[offset..]);
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template { pieces })
    }

    /// The placeholders, in order.
    pub fn placeholders(&self) -> impl Iterator<Item = &Placeholder> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Place(place) => Some(place),
            Piece::Text(_) => None,
        })
    }
}

fn parse_placeholder(inner: &str, at: Location) -> Result<Placeholder, String> {
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
    Ok(Placeholder { root: root.to_string(), members, text: inner.to_string(), at })
}

/// Where the bytes `range` of `value` (the literal's value) are in the source.
fn locate(lit: &LitStr, value: &str, range: Range<usize>) -> Location {
    let token = lit.token();
    let raw = token.to_string();
    let Some(raw_range) = raw_range(&raw, value, range.clone()) else {
        let character = value[..range.start].chars().count() + 1;
        return Location { span: lit.span(), position: Some(format!("at character {character} of the template")) };
    };
    if let Some(span) = token.subspan(raw_range.clone()) {
        return Location { span, position: None };
    }
    let position = source_position(lit.span(), &raw[..raw_range.start]).unwrap_or_else(|| {
        let character = value[..range.start].chars().count() + 1;
        format!("at character {character} of the template")
    });
    Location { span: lit.span(), position: Some(position) }
}

/// The bytes of the literal's source text (`"user:<id>"`, `r#"..."#`) that hold the bytes `range`
/// of its value. When escapes make the two differ, the first occurrence of the text is taken.
fn raw_range(raw: &str, value: &str, range: Range<usize>) -> Option<Range<usize>> {
    let open = raw.find('"')?;
    let close = raw.rfind('"')?;
    let content = raw.get(open + 1..close)?;
    let start = if content == value { range.start } else { content.find(&value[range.clone()])? };
    Some(open + 1 + start..open + 1 + start + range.len())
}

/// `"at column 22"` (or `"at line 4, column 3"` when the literal spans lines) for the source text
/// that follows `before`, which starts where the literal does. `None` outside a macro expansion
/// (unit tests), where spans have no position.
fn source_position(lit: Span, before: &str) -> Option<String> {
    if !proc_macro::is_available() {
        return None;
    }
    let start = lit.unwrap();
    Some(match before.rfind('\n') {
        None => format!("at column {}", start.column() + before.chars().count()),
        Some(newline) => {
            let line = start.line() + before.matches('\n').count();
            format!("at line {line}, column {}", before[newline + 1..].chars().count() + 1)
        }
    })
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_alphabetic())
        && chars.all(|c| c == '_' || c.is_alphanumeric())
        && s != "_"
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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

    #[test]
    fn placeholders_are_found_in_the_source_text() {
        // Plain, raw and escaped literals: the range covers `<id>` in the source text.
        assert_eq!(raw_range("\"user:<id>\"", "user:<id>", 5..9), Some(6..10));
        assert_eq!(raw_range("r#\"a\"<id>\"#", "a\"<id>", 2..6), Some(5..9));
        assert_eq!(raw_range("\"\\t<id>\"", "\t<id>", 1..5), Some(3..7));
        assert_eq!(raw_range("\"\\x3cid>\"", "<id>", 0..4), None);
    }

    #[test]
    fn outside_a_macro_the_position_is_counted_in_the_template() {
        let template = parse("é:<id>").unwrap_or_else(|e| panic!("{e}"));
        let place = template.placeholders().next().map(|p| p.at.suffix());
        assert!(matches!(place.as_deref(), Some("") | Some(" at character 3 of the template")), "{place:?}");
    }

    fn texts(template: &Template) -> Option<String> {
        template
            .pieces
            .iter()
            .map(|piece| match piece {
                Piece::Text(text) => Some(text.as_str()),
                Piece::Place(_) => None,
            })
            .collect()
    }

    fn config() -> ProptestConfig {
        ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() }
    }

    proptest! {
        #![proptest_config(config())]

        /// Any text is a template or a clear error, never a panic.
        #[test]
        fn any_text_parses_or_is_an_error(text in ".{0,40}") {
            if let Err(err) = parse(&text) {
                prop_assert!(err.to_string().contains("key template"), "{}", err);
            }
        }

        /// `<<` is a literal `<`: text whose every `<` is doubled comes back unchanged.
        #[test]
        fn doubled_angle_brackets_are_literal(text in ".{0,30}") {
            let template = parse(&text.replace('<', "<<")).unwrap();
            prop_assert_eq!(texts(&template).unwrap_or_default(), text);
        }

        /// Placeholders between arbitrary text are found in order, with their field paths.
        #[test]
        fn placeholders_are_found_in_order(
            places in proptest::collection::vec("[a-z][a-z0-9_]{0,8}(\\.([a-z][0-9]{0,3}|[0-9]{1,2})){0,2}", 1..4),
            between in proptest::collection::vec("([^<]|<<){0,6}", 4),
        ) {
            let mut text = between[0].clone();
            for (place, after) in places.iter().zip(&between[1..]) {
                text.push_str(&format!("<{place}>{after}"));
            }
            let template = parse(&text).unwrap();
            let found: Vec<&str> = template.placeholders().map(|p| p.text.as_str()).collect();
            prop_assert_eq!(found, places.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
}
