//! Cache keys: rendering template placeholders (`Display`) and default-key arguments (`Debug`,
//! escaped), with a fast path for integers and plain text.

use std::fmt::{self, Write as _};

/// Values a key template placeholder can render (`Display`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be rendered in a cache key: key template placeholders use `Display`",
    label = "this placeholder's value does not implement `std::fmt::Display`",
    note = "implement `Display` for `{Self}`, or name a field that implements it, e.g. `<user.id>`"
)]
pub trait KeyPart {
    /// Appends the rendering.
    fn __cachestack_push(&self, buf: &mut String);
}

impl<T: fmt::Display + ?Sized> KeyPart for T {
    #[inline]
    fn __cachestack_push(&self, buf: &mut String) {
        let _ = write!(buf, "{self}");
    }
}

/// Arguments the default key can render (`Debug`).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be part of the default cache key: arguments are rendered with `Debug`",
    label = "this argument does not implement `std::fmt::Debug`",
    note = "derive or implement `Debug` for `{Self}`, or give the function a key template, e.g. `key = \"user:<id>\"`"
)]
pub trait KeyArg {
    /// Appends the escaped rendering.
    fn __cachestack_push_arg(&self, buf: &mut String);
}

impl<T: fmt::Debug + ?Sized> KeyArg for T {
    #[inline]
    fn __cachestack_push_arg(&self, buf: &mut String) {
        let _ = write!(Escaped(buf), "{self:?}");
    }
}

/// Writes through to a key, escaping `\`, `,` and `)` with `\`, so that the argument list of a
/// default key (`path::f(a,b)`) decodes one way only: distinct argument tuples never collide.
struct Escaped<'a>(&'a mut String);

impl fmt::Write for Escaped<'_> {
    #[inline]
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.bytes().any(|b| matches!(b, b'\\' | b',' | b')')) {
            self.0.push_str(s);
            return Ok(());
        }
        for c in s.chars() {
            if matches!(c, '\\' | ',' | ')') {
                self.0.push('\\');
            }
            self.0.push(c);
        }
        Ok(())
    }
}

/// A reference to a key part, probed by auto-ref so that integers (the most common keys) are
/// rendered without the formatting machinery: `(&&KeyProbe(&x)).__cachestack_push_part(buf)`.
/// Both paths render exactly what `Display` / `Debug` would.
pub struct KeyProbe<'a, T: ?Sized>(pub &'a T);

impl<T: ?Sized> fmt::Debug for KeyProbe<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyProbe")
    }
}

/// The fast path for integers and strings.
pub trait KeyFast {
    /// Appends a template placeholder (`Display`).
    fn __cachestack_push_part(&self, buf: &mut String);
    /// Appends a default-key argument (`Debug`, escaped).
    fn __cachestack_push_arg(&self, buf: &mut String);
}

/// The general path: any `Display` (templates) or `Debug` (default keys) type.
pub trait KeyAny<T: ?Sized> {
    /// Appends a template placeholder (`Display`).
    fn __cachestack_push_part(&self, buf: &mut String)
    where
        T: KeyPart;
    /// Appends a default-key argument (`Debug`, escaped).
    fn __cachestack_push_arg(&self, buf: &mut String)
    where
        T: KeyArg;
}

impl<T: ?Sized> KeyAny<T> for KeyProbe<'_, T> {
    #[inline]
    fn __cachestack_push_part(&self, buf: &mut String)
    where
        T: KeyPart,
    {
        self.0.__cachestack_push(buf);
    }
    #[inline]
    fn __cachestack_push_arg(&self, buf: &mut String)
    where
        T: KeyArg,
    {
        self.0.__cachestack_push_arg(buf);
    }
}

/// Appends the decimal digits of `n` (what `Display` and `Debug` print for an integer): two digits
/// per division, pushed as ASCII bytes (no formatting machinery, no UTF-8 validation).
#[inline]
fn push_digits(buf: &mut String, mut n: u64) {
    // Pairs of digits, least significant first; at most 9 pairs below the leading digits.
    let mut pairs = [0u8; 10];
    let mut count = 0;
    while n >= 100 {
        pairs[count] = (n % 100) as u8;
        n /= 100;
        count += 1;
    }
    buf.reserve(2 + 2 * count);
    // The leading one or two digits (`n < 100`).
    let lead = n as u8;
    if lead >= 10 {
        buf.push(char::from(b'0' + lead / 10));
    }
    buf.push(char::from(b'0' + lead % 10));
    for &pair in pairs[..count].iter().rev() {
        buf.push(char::from(b'0' + pair / 10));
        buf.push(char::from(b'0' + pair % 10));
    }
}

macro_rules! key_fast_unsigned {
    ($($t:ty),*) => {$(
        impl KeyFast for &KeyProbe<'_, $t> {
            #[inline]
            fn __cachestack_push_part(&self, buf: &mut String) {
                push_digits(buf, *self.0 as u64);
            }
            #[inline]
            fn __cachestack_push_arg(&self, buf: &mut String) {
                push_digits(buf, *self.0 as u64);
            }
        }
    )*};
}

macro_rules! key_fast_signed {
    ($($t:ty),*) => {$(
        impl KeyFast for &KeyProbe<'_, $t> {
            #[inline]
            fn __cachestack_push_part(&self, buf: &mut String) {
                if *self.0 < 0 {
                    buf.push('-');
                }
                push_digits(buf, self.0.unsigned_abs() as u64);
            }
            #[inline]
            fn __cachestack_push_arg(&self, buf: &mut String) {
                self.__cachestack_push_part(buf);
            }
        }
    )*};
}

// 128-bit integers take the general path (their division is a library call anyway).
key_fast_unsigned!(u8, u16, u32, u64, usize);
key_fast_signed!(i8, i16, i32, i64, isize);

macro_rules! key_fast_text {
    ($($t:ty),*) => {$(
        impl KeyFast for &KeyProbe<'_, $t> {
            #[inline]
            fn __cachestack_push_part(&self, buf: &mut String) {
                buf.push_str(self.0);
            }
            #[inline]
            fn __cachestack_push_arg(&self, buf: &mut String) {
                push_text_arg(buf, self.0);
            }
        }
    )*};
}

key_fast_text!(str, String, &str);

/// Appends a text argument as the general path would (`Debug`, then escaped), without the
/// formatting machinery when the text is printable ASCII with nothing to escape: `"text"`.
#[inline]
fn push_text_arg(buf: &mut String, text: &str) {
    if is_plain_text(text.as_bytes()) {
        buf.reserve(text.len() + 2);
        buf.push('"');
        buf.push_str(text);
        buf.push('"');
    } else {
        text.__cachestack_push_arg(buf);
    }
}

/// True when every byte is printable ASCII (`' '..='~'`) and none is one that `Debug` escapes
/// (`"`, `\\`) or that default keys escape (`,`, `)`): such text renders as itself in quotes.
/// Checks eight bytes per step (SWAR): keys are hashed on every call, so this is the hot path of a
/// text-keyed hit.
#[inline]
fn is_plain_text(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Exact for "some byte of `x` is below `n`" when no byte of `x` has its high bit set, n <= 128.
    let has_less = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let has_byte = |x: u64, b: u8| has_less(x ^ (ONES * u64::from(b)), 1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut array = [0u8; 8];
        array.copy_from_slice(word);
        let x = u64::from_ne_bytes(array);
        if x & HIGH != 0
            || has_less(x, b' ')
            || has_byte(x, 0x7f)
            || has_byte(x, b'"')
            || has_byte(x, b'\\')
            || has_byte(x, b',')
            || has_byte(x, b')')
        {
            return false;
        }
    }
    words.remainder().iter().all(|&b| matches!(b, b' '..=b'~') && !matches!(b, b'"' | b'\\' | b',' | b')'))
}

/// Appends the name of a type (the `Self` of a method, the type parameters of a generic fn).
#[inline]
pub fn push_type<T: ?Sized>(buf: &mut String) {
    buf.push_str(core::any::type_name::<T>());
}

/// The type name of a value's type (for a function item: its path, enclosing functions included).
#[inline]
pub fn type_name_of<T: ?Sized>(_: &T) -> &'static str {
    core::any::type_name::<T>()
}

/// Appends the path of a free function `name` for its default key: the path of its companion
/// item `companion` (whose item path is `companion_path`) with the last segment replaced by
/// `name`, or `fallback` (`module_path!()::name`) if that path does not have the expected form.
/// Unlike `module_path!()`, the item path names the enclosing function of a function declared in
/// a function body.
#[inline]
pub fn push_fn_path(buf: &mut String, companion_path: &str, companion: &str, name: &str, fallback: &str) {
    match companion_path.strip_suffix(companion) {
        Some(parent) if parent.ends_with("::") => {
            buf.push_str(parent);
            buf.push_str(name);
        }
        _ => buf.push_str(fallback),
    }
}

/// Renders a key into a new string.
pub fn render_key(write: impl FnOnce(&mut String)) -> String {
    let mut key = String::new();
    write(&mut key);
    key
}

/// Appends what `write` renders to `pattern`, glob-escaped (see [`crate::KeyPattern::escape_into`]):
/// `#[invalidate(pattern = ...)]` renders its placeholders with it, so that an argument holding
/// `*` matches only itself.
pub fn push_pattern_part(pattern: &mut String, write: impl FnOnce(&mut String)) {
    let mut part = String::new();
    write(&mut part);
    crate::KeyPattern::escape_into(pattern, &part);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg_list(args: &[&dyn fmt::Debug]) -> String {
        let mut key = String::from("f(");
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            arg.__cachestack_push_arg(&mut key);
        }
        key.push(')');
        key
    }

    #[test]
    fn the_integer_fast_path_renders_what_display_and_debug_do() {
        fn both<T: fmt::Display + fmt::Debug>(value: T)
        where
            for<'a, 'b> &'b KeyProbe<'a, T>: KeyFast,
        {
            let (mut part, mut arg) = (String::new(), String::new());
            KeyFast::__cachestack_push_part(&&KeyProbe(&value), &mut part);
            KeyFast::__cachestack_push_arg(&&KeyProbe(&value), &mut arg);
            assert_eq!(part, value.to_string());
            assert_eq!(arg, format!("{value:?}"));
        }
        for n in [0u64, 7, 10, 1234567890, u64::MAX] {
            both(n);
        }
        for n in [0i64, -1, 42, i64::MIN, i64::MAX] {
            both(n);
        }
        both(usize::MAX);
        both(isize::MIN);
        both(-128i8);
        both(String::from("plain text"));
        both("plain");
    }

    #[test]
    fn default_key_arguments_never_collide() {
        let a = arg_list(&[&"a:b", &"c"]);
        let b = arg_list(&[&"a", &"b:c"]);
        assert_ne!(a, b);
        // Separators inside renderings are escaped.
        let c = arg_list(&[&Wrapper("x,y")]);
        let d = arg_list(&[&Wrapper("x"), &Wrapper("y")]);
        assert_ne!(c, d);
        assert_eq!(c, r"f(x\,y)");
        assert_eq!(arg_list(&[&Wrapper(r"a\)")]), r"f(a\\\))");
    }

    #[test]
    fn integers_render_like_display_at_every_length() {
        let mut n = 1u64;
        loop {
            for m in [n - 1, n, n + 1, n.saturating_mul(7) / 3] {
                let mut buf = String::from("k:");
                push_digits(&mut buf, m);
                assert_eq!(buf, format!("k:{m}"));
            }
            match n.checked_mul(10) {
                Some(next) => n = next,
                None => break,
            }
        }
        let mut buf = String::new();
        push_digits(&mut buf, u64::MAX);
        assert_eq!(buf, u64::MAX.to_string());
    }

    #[test]
    fn plain_text_detection_is_exact_for_every_byte_at_every_position() {
        for len in 1..=17 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = b;
                    let expected = matches!(b, b' '..=b'~') && !matches!(b, b'"' | b'\\' | b',' | b')');
                    assert_eq!(is_plain_text(&bytes), expected, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        assert!(is_plain_text(b""));
    }

    #[test]
    fn the_text_fast_path_renders_what_the_general_path_does() {
        for text in
            ["", "plain", "with space", "a,b", "x)", "q\"uote", "back\\slash", "tab\t", "é", "line\n", "~!@#$%^&*(_+"]
        {
            let mut fast = String::new();
            KeyFast::__cachestack_push_arg(&&KeyProbe(text), &mut fast);
            let mut general = String::new();
            text.__cachestack_push_arg(&mut general);
            assert_eq!(fast, general, "{text:?}");
        }
    }

    struct Wrapper(&'static str);
    impl fmt::Debug for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }
}
