//! Property tests of everything cachestack reads from outside: stored bytes (envelopes, every
//! codec, every compression, with and without a signer), key rendering, and cache URLs.
//!
//! Whatever the input: never a panic; a stored value is a value, a miss or a clear error; a
//! secret in a URL is never shown. Case counts stay moderate: the whole file runs in a few
//! seconds on a busy 2-core machine.

use std::time::{Duration, SystemTime};

use cachestack::{redact_url, Codec, Compression, Error, Signer, Value, ValueFormat};
use proptest::collection::vec;
use proptest::prelude::*;

/// `cases` cases from a fixed seed (the same inputs on every run, so CI is deterministic; set
/// `PROPTEST_RNG_SEED` to explore others), nothing written to the source tree.
pub fn config(cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::with_cases(cases);
    config.failure_persistence = None;
    if matches!(config.rng_seed, proptest::test_runner::RngSeed::Random) {
        config.rng_seed = proptest::test_runner::RngSeed::Fixed(13);
    }
    config
}

/// The value the envelopes hold.
type Payload = (String, u64, Vec<u8>);

/// Every codec and compression this build has, each with and without a signer. Compression
/// starts at 0 bytes so that even small payloads are compressed.
fn formats() -> Vec<ValueFormat> {
    let mut codecs = vec![Codec::Postcard];
    codecs.extend(cfg!(feature = "json").then_some(Codec::Json));
    codecs.extend(cfg!(feature = "msgpack").then_some(Codec::MessagePack));
    codecs.extend(cfg!(feature = "bincode").then_some(Codec::Bincode));
    let mut compressions = vec![Compression::None];
    compressions.extend(cfg!(feature = "zstd").then_some(Compression::Zstd { level: 1 }));
    compressions.extend(cfg!(feature = "lz4").then_some(Compression::Lz4));
    let mut signers = vec![None];
    signers.extend(Signer::new("a property-test secret").ok().map(Some));
    let mut all = Vec::new();
    for &codec in &codecs {
        for &compression in &compressions {
            for signer in &signers {
                all.push(ValueFormat {
                    codec,
                    compression,
                    compress_min_bytes: 0,
                    signer: signer.clone(),
                    max_value_bytes: 64 * 1024,
                });
            }
        }
    }
    all
}

/// Opens `bytes` and reads them as a `Payload`, the way a store and then a cache do. Whatever
/// the bytes, this returns (a panic fails the test).
fn read(format: &ValueFormat, bytes: &[u8]) -> Result<Payload, Error> {
    let (value, _expires) = format.open("key", bytes)?;
    value.get::<Payload>()
}

fn payload() -> impl Strategy<Value = Payload> {
    (".{0,40}", any::<u64>(), vec(any::<u8>(), 0..64))
}

proptest! {
    #![proptest_config(config(48))]

    #[test]
    fn arbitrary_bytes_are_an_error_never_a_panic(bytes in vec(any::<u8>(), 0..256)) {
        for format in formats() {
            prop_assert!(read(&format, &bytes).is_err());
        }
    }

    /// A well-formed header over arbitrary flags, lengths, expiry and payload bytes.
    #[test]
    fn arbitrary_headers_and_payloads_never_panic(
        codec in 0u8..6,
        flags in any::<u8>(),
        expiry in any::<u64>(),
        length in prop_oneof![any::<u32>(), 0u32..300],
        body in vec(any::<u8>(), 0..300),
    ) {
        let mut bytes = b"CS\x01".to_vec();
        bytes.extend_from_slice(&[codec, flags]);
        bytes.extend_from_slice(&cachestack::type_fingerprint::<Payload>().to_le_bytes());
        bytes.extend_from_slice(&expiry.to_le_bytes());
        bytes.extend_from_slice(&length.to_le_bytes());
        bytes.extend_from_slice(&body);
        for format in formats() {
            let _ = read(&format, &bytes);
        }
    }
}

proptest! {
    #![proptest_config(config(4))]

    /// Every truncation and every single bit flip of a valid envelope: truncations are always
    /// refused, flips are refused whenever the format signs (without a signature a flipped
    /// payload bit may decode to other data: integrity needs a signer).
    #[test]
    fn every_truncation_and_bit_flip_of_a_valid_envelope(value in payload(), ttl in 1u64..1_000_000) {
        let expires = SystemTime::now() + Duration::from_secs(ttl);
        for format in formats() {
            let bytes = format.seal("key", &Value::new(value.clone()), Some(expires)).unwrap();
            prop_assert_eq!(read(&format, &bytes).unwrap(), value.clone());
            for len in 0..bytes.len() {
                prop_assert!(read(&format, &bytes[..len]).is_err(), "truncated to {} accepted", len);
            }
            for bit in 0..bytes.len() * 8 {
                let mut flipped = bytes.clone();
                flipped[bit / 8] ^= 1 << (bit % 8);
                let result = read(&format, &flipped);
                if format.signer.is_some() {
                    prop_assert!(result.is_err(), "{:?}: flip of bit {} accepted", format.compression, bit);
                }
            }
            // Another key: refused when signed.
            if format.signer.is_some() {
                prop_assert!(format.open("other", &bytes).is_err());
            }
        }
    }
}

/// Bytes whose compressed payload claims or holds far more than the limit: a bounded error.
#[test]
fn compression_bombs_and_lying_sizes_are_bounded_errors() {
    let limit = 64 * 1024;
    for format in formats().into_iter().filter(|f| f.compression != Compression::None) {
        // 1 MiB of zeros compresses to a few KiB: sealed under a larger limit, read with 64 KiB.
        let big = ValueFormat { max_value_bytes: 4 << 20, ..format.clone() };
        let bytes = big.seal("key", &Value::new(vec![0u8; 1 << 20]), None).unwrap();
        assert!(bytes.len() < 32 * 1024, "{:?} did not compress: {}", format.compression, bytes.len());
        let err = format.open("key", &bytes).unwrap_err();
        assert!(matches!(err, Error::ValueTooLarge { limit: l, .. } if l == limit), "{err}");
    }
}

/// Nesting as deep as the bytes can say, for every codec: an error, not a stack overflow.
#[test]
fn deeply_nested_values_are_errors() {
    #[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
    struct Tree(Vec<Tree>);
    for format in formats().into_iter().filter(|f| f.signer.is_none()) {
        let depth = 20_000;
        let nested = match format.codec {
            Codec::Json => ["[".repeat(depth), "]".repeat(depth)].concat().into_bytes(),
            Codec::MessagePack => [vec![0x91; depth], vec![0x90]].concat(),
            _ => [vec![1; depth], vec![0]].concat(),
        };
        let encoded = cachestack::Encoded {
            codec: format.codec,
            type_fingerprint: cachestack::type_fingerprint::<Tree>(),
            payload: nested,
        };
        let bytes = format.seal("key", &Value::from_encoded(encoded), None).unwrap();
        let (value, _) = format.open("key", &bytes).unwrap();
        let err = value.get::<Tree>().unwrap_err();
        assert!(err.is_invalid_value(), "{:?}: {err}", format.codec);
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Any text as a cache URL: parsing never panics, and a password (which may hold the
    /// characters URLs reserve) is never shown, in errors or in `Debug`.
    #[test]
    fn urls_never_panic_and_never_show_passwords(
        scheme in prop_oneof![
            Just("redis"), Just("rediss+cluster"), Just("postgres"), Just("memcached"),
            Just("mem"), Just("null"), Just("nope"), Just(""),
        ],
        user in "[a-z]{0,6}",
        password in "[a-zA-Z0-9/?#@:%&=]{0,12}",
        tail in ".{0,30}",
    ) {
        let secret = format!("SECRET{password}SECRET");
        let text = format!("{scheme}://{user}:{secret}@{tail}");
        let shown = redact_url(&text);
        prop_assert!(!shown.contains("SECRET"), "{} -> {}", text, shown);
        let shows = |what: String| what.contains("SECRET");
        #[cfg(feature = "redis")]
        match cachestack::RedisConfig::from_url(&text) {
            Ok(config) => prop_assert!(!shows(format!("{config:?}")), "{:?}", config),
            Err(err) => prop_assert!(!shows(err.to_string()), "{}", err),
        }
        #[cfg(feature = "postgres")]
        match cachestack::PostgresConfig::from_url(&text) {
            Ok(config) => prop_assert!(!shows(format!("{config:?}")), "{:?}", config),
            Err(err) => prop_assert!(!shows(err.to_string()), "{}", err),
        }
        #[cfg(feature = "memcached")]
        if let Err(err) = cachestack::MemcachedConfig::from_url(&text) {
            prop_assert!(!shows(err.to_string()), "{}", err);
        }
        // Stores that open without I/O: the whole way to a backend.
        if matches!(scheme, "mem" | "null" | "nope" | "") {
            match cachestack::backend_from_url(&text) {
                Ok(backend) => prop_assert!(!shows(format!("{backend:?}")), "{:?}", backend),
                Err(err) => prop_assert!(!shows(err.to_string()), "{}", err),
            }
        }
    }

    #[test]
    fn arbitrary_text_as_a_url_never_panics(text in ".{0,60}") {
        let _ = redact_url(&text);
        #[cfg(feature = "redis")]
        let _ = cachestack::RedisConfig::from_url(&text);
        #[cfg(feature = "postgres")]
        let _ = cachestack::PostgresConfig::from_url(&text);
        #[cfg(feature = "memcached")]
        let _ = cachestack::MemcachedConfig::from_url(&text);
        if !["file", "redis", "rediss", "postgres", "postgresql", "memcached", "memcache"]
            .iter()
            .any(|scheme| text.trim().to_ascii_lowercase().starts_with(scheme))
        {
            let _ = cachestack::backend_from_url(&text);
        }
    }
}

mod keys {
    use super::config;
    use cachestack::__private::{KeyFast as _, KeyPart, KeyProbe};
    use proptest::prelude::*;

    /// A default key over `args`, as generated code renders it.
    fn default_key(args: &[String]) -> String {
        let mut key = String::from("app::f(");
        for (i, arg) in args.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            cachestack::__private::KeyArg::__cachestack_push_arg(arg, &mut key);
        }
        key.push(')');
        key
    }

    proptest! {
        #![proptest_config(config(256))]

        /// Distinct argument lists never share a default key, whatever characters they hold.
        #[test]
        fn default_keys_are_injective(
            a in proptest::collection::vec("[a-z,)(\\\\\"' ]{0,6}", 0..4),
            b in proptest::collection::vec("[a-z,)(\\\\\"' ]{0,6}", 0..4),
        ) {
            prop_assert_eq!(default_key(&a) == default_key(&b), a == b, "{:?} / {:?}", a, b);
        }

        /// The integer fast path renders exactly what `Display` and `Debug` do.
        #[test]
        fn the_fast_path_renders_what_display_does(n in any::<i64>(), u in any::<u64>(), text in ".{0,20}") {
            let (mut part, mut arg) = (String::new(), String::new());
            (&&KeyProbe(&n)).__cachestack_push_part(&mut part);
            (&&KeyProbe(&n)).__cachestack_push_arg(&mut arg);
            prop_assert_eq!(part, n.to_string());
            prop_assert_eq!(arg, format!("{n:?}"));
            let mut part = String::new();
            (&&KeyProbe(&u)).__cachestack_push_part(&mut part);
            prop_assert_eq!(part, u.to_string());
            let mut part = String::new();
            KeyPart::__cachestack_push(text.as_str(), &mut part);
            prop_assert_eq!(part, text.clone());
            let mut fast = String::new();
            (&&KeyProbe(text.as_str())).__cachestack_push_part(&mut fast);
            prop_assert_eq!(fast, text);
        }
    }
}
