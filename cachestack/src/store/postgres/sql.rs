//! The table layout and every statement the PostgreSQL backend runs.
//!
//! Identifiers come from [`PostgresConfig`] after [`validate_identifier`](super::config::validate_identifier)
//! accepted them (lowercase ASCII letters, digits, `_`); they are double-quoted here all the same.
//! Every value (namespace, keys, bytes, TTLs, limits) is a bind parameter.

use super::config::{PostgresConfig, MAX_IDENTIFIER_BYTES};

/// Keys up to this many bytes (without NUL characters) are stored as they are; longer keys are
/// stored as a short prefix plus a 128-bit hash, with the full key in `full_key`.
pub(crate) const MAX_PLAIN_KEY_BYTES: usize = 256;

/// The `CHECK` on the key column: plain keys and hashed forms both fit well below it, and it
/// keeps index entries far below PostgreSQL's btree limit (~2700 bytes) whoever writes the table.
const KEY_COLUMN_LIMIT: usize = 512;

/// The columns a cachestack table must have, with their types as `format_type` prints them.
pub(crate) const REQUIRED_COLUMNS: &[(&str, &str)] = &[
    ("namespace", "text"),
    ("key", "text"),
    ("full_key", "bytea"),
    ("value", "bytea"),
    ("expires_at", "timestamp with time zone"),
    ("written_at", "timestamp with time zone"),
];

/// SQL text for one configured table.
#[derive(Debug)]
pub(crate) struct Sql {
    /// `"schema"."table"` or `"table"`: for SQL text and, as a string parameter, `to_regclass`.
    pub table: String,
    /// The schema name when one is configured (for `to_regnamespace`).
    pub schema: Option<String>,
    /// Qualified, quoted name of the expiry index (a `to_regclass` parameter).
    pub expires_index: String,
    /// Qualified, quoted name of the write-time index (a `to_regclass` parameter).
    pub written_index: String,
    pub create_schema: Option<String>,
    pub create_table: String,
    pub create_expires_index: String,
    pub create_written_index: String,
    /// `$1` table, `$2` expiry index, `$3` write-time index, `$4` schema (or NULL).
    pub probe: &'static str,
    /// `$1` table.
    pub columns: &'static str,
    pub get: String,
    pub get_many: String,
    pub set: String,
    pub set_many: String,
    pub delete: String,
    pub delete_many: String,
    pub clear_batch: String,
    pub purge_batch: String,
    pub trim_batch: String,
}

fn quote(identifier: &str) -> String {
    format!("\"{identifier}\"")
}

/// `{table}_{suffix}`, or a hashed form when that would pass PostgreSQL's 63-byte limit (which
/// would silently truncate it, so two long table names could share an index name).
fn index_name(table: &str, suffix: &str) -> String {
    let plain = format!("{table}_{suffix}");
    if plain.len() <= MAX_IDENTIFIER_BYTES {
        return plain;
    }
    let hash = xxhash_rust::xxh3::xxh3_64(table.as_bytes());
    format!("{}_{hash:016x}_{suffix}", &table[..30])
}

impl Sql {
    pub fn new(config: &PostgresConfig) -> Self {
        let qualify = |name: &str| match &config.schema {
            Some(schema) => format!("{}.{}", quote(schema), quote(name)),
            None => quote(name),
        };
        let t = qualify(&config.table);
        let expires_name = index_name(&config.table, "expires_idx");
        let written_name = index_name(&config.table, "written_idx");
        let unlogged = if config.unlogged { "UNLOGGED " } else { "" };
        // Live rows only, judged by the server's clock, so every client agrees on expiry.
        let live = "(expires_at IS NULL OR expires_at > now())";
        // The row's deadline in Unix milliseconds, rounded down (never later than stored).
        let expires_ms = "floor(EXTRACT(EPOCH FROM expires_at) * 1000)::int8";
        // A deadline in Unix milliseconds (`$5`, fixed by the client) as a timestamptz; NULL
        // stays NULL (no expiry). Exact for any deadline before the year 2255.
        let deadline = "(timestamptz 'epoch' + $5::int8 * interval '1 millisecond')";
        let upsert_tail = "ON CONFLICT (namespace, key) DO UPDATE SET full_key = EXCLUDED.full_key, \
                           value = EXCLUDED.value, expires_at = EXCLUDED.expires_at, written_at = EXCLUDED.written_at";
        Sql {
            schema: config.schema.as_ref().map(|s| quote(s)),
            create_schema: config.schema.as_ref().map(|s| format!("CREATE SCHEMA IF NOT EXISTS {}", quote(s))),
            create_table: format!(
                "CREATE {unlogged}TABLE IF NOT EXISTS {t} (\n\
                 \x20   namespace  text        NOT NULL,\n\
                 \x20   key        text        NOT NULL CHECK (octet_length(key) <= {KEY_COLUMN_LIMIT}),\n\
                 \x20   full_key   bytea,\n\
                 \x20   value      bytea       NOT NULL,\n\
                 \x20   expires_at timestamptz,\n\
                 \x20   written_at timestamptz NOT NULL DEFAULT now(),\n\
                 \x20   PRIMARY KEY (namespace, key)\n\
                 )"
            ),
            create_expires_index: format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t} (namespace, expires_at) WHERE expires_at IS NOT NULL",
                quote(&expires_name)
            ),
            create_written_index: format!(
                "CREATE INDEX IF NOT EXISTS {} ON {t} (namespace, written_at)",
                quote(&written_name)
            ),
            expires_index: qualify(&expires_name),
            written_index: qualify(&written_name),
            probe: "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL, to_regclass($3) IS NOT NULL, \
                    $4::text IS NULL OR to_regnamespace($4) IS NOT NULL, current_setting('server_encoding'), \
                    (SELECT relpersistence::text FROM pg_class WHERE oid = to_regclass($1))",
            columns: "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a \
                      WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            get: format!("SELECT value, full_key, {expires_ms} FROM {t} WHERE namespace = $1 AND key = $2 AND {live}"),
            get_many: format!(
                "SELECT key, value, full_key, {expires_ms} FROM {t} WHERE namespace = $1 AND key = ANY($2) AND {live}"
            ),
            // `$5` is the deadline in Unix milliseconds (NULL: no expiry).
            set: format!(
                "INSERT INTO {t} (namespace, key, full_key, value, expires_at, written_at) \
                 VALUES ($1, $2, $3, $4, {deadline}, now()) {upsert_tail}"
            ),
            set_many: format!(
                "INSERT INTO {t} (namespace, key, full_key, value, expires_at, written_at) \
                 SELECT $1, k, f, v, {deadline}, now() \
                 FROM UNNEST($2::text[], $3::bytea[], $4::bytea[]) AS u(k, f, v) {upsert_tail}"
            ),
            delete: format!(
                "DELETE FROM {t} WHERE namespace = $1 AND key = $2 \
                 RETURNING {live} AND full_key IS NOT DISTINCT FROM $3"
            ),
            delete_many: format!("DELETE FROM {t} WHERE namespace = $1 AND key = ANY($2) RETURNING key, full_key, {live}"),
            clear_batch: format!(
                "DELETE FROM {t} WHERE namespace = $1 AND key = ANY(ARRAY(SELECT key FROM {t} WHERE namespace = $1 LIMIT $2))"
            ),
            // The outer condition on expires_at is re-checked on rows a concurrent write renewed
            // between the inner SELECT and the DELETE, so a fresh value is never purged.
            purge_batch: format!(
                "DELETE FROM {t} WHERE namespace = $1 AND expires_at <= now() AND key = ANY(ARRAY(\
                 SELECT key FROM {t} WHERE namespace = $1 AND expires_at <= now() LIMIT $2))"
            ),
            // Newest first: a row is doomed once the rows newer than it (and itself) exceed a bound.
            // `t.written_at = d.written_at` is re-checked on rows rewritten meanwhile, so a value
            // written during the trim is kept.
            trim_batch: format!(
                "WITH ranked AS (\
                   SELECT key, written_at, row_number() OVER w AS n, \
                          sum(octet_length(key) + octet_length(value)) OVER w AS bytes \
                   FROM {t} WHERE namespace = $1 \
                   WINDOW w AS (ORDER BY written_at DESC, key DESC)), \
                 doomed AS (SELECT key, written_at FROM ranked WHERE n > $2 OR bytes > $3 LIMIT $4) \
                 DELETE FROM {t} t USING doomed d \
                 WHERE t.namespace = $1 AND t.key = d.key AND t.written_at = d.written_at"
            ),
            table: t,
        }
    }
}

/// How a key is stored: the text in the `key` column and, for hashed keys, the full key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct StorageKey<'a> {
    pub key: std::borrow::Cow<'a, str>,
    pub full: Option<&'a [u8]>,
}

/// Maps a cache key to its row key. Keys of at most [`MAX_PLAIN_KEY_BYTES`] without NUL (which
/// PostgreSQL text cannot hold) are stored as they are; with `ascii_only` (a database whose
/// encoding is neither UTF8 nor SQL_ASCII) so are only ASCII keys. Any other key is stored as a
/// readable prefix, `#`, and its xxh3-128 hash, with the full key in `full_key`; reads compare
/// `full_key` with the requested key, so two keys that share a row are a miss, never a mix-up.
pub(crate) fn storage_key(key: &str, ascii_only: bool) -> StorageKey<'_> {
    let plain = key.len() <= MAX_PLAIN_KEY_BYTES && !key.contains('\0') && (!ascii_only || key.is_ascii());
    if plain {
        return StorageKey { key: key.into(), full: None };
    }
    let mut prefix = String::with_capacity(72);
    for c in key.chars() {
        if prefix.len() + c.len_utf8() > 64 {
            break;
        }
        prefix.push(if c == '\0' || (ascii_only && !c.is_ascii()) { '?' } else { c });
    }
    let hash = xxhash_rust::xxh3::xxh3_128(key.as_bytes());
    StorageKey { key: format!("{prefix}#{hash:032x}").into(), full: Some(key.as_bytes()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_are_stored_as_they_are() {
        assert_eq!(storage_key("user:1", false), StorageKey { key: "user:1".into(), full: None });
        let k = "k".repeat(MAX_PLAIN_KEY_BYTES);
        assert_eq!(storage_key(&k, false).full, None);
        assert_eq!(storage_key("名前", false).full, None);
    }

    #[test]
    fn long_nul_and_non_ascii_keys_are_hashed_with_the_full_key_kept() {
        let long = "k".repeat(MAX_PLAIN_KEY_BYTES + 1);
        let stored = storage_key(&long, false);
        assert_eq!(stored.full, Some(long.as_bytes()));
        assert!(stored.key.len() <= 64 + 33, "{}", stored.key);
        assert!(stored.key.len() <= KEY_COLUMN_LIMIT);
        let nul = storage_key("\0nul", false);
        assert!(!nul.key.contains('\0') && nul.full == Some(&b"\0nul"[..]));
        let other = "k".repeat(MAX_PLAIN_KEY_BYTES + 2);
        assert_ne!(storage_key(&other, false).key, stored.key);
        let unicode = "名".repeat(200);
        let stored = storage_key(&unicode, false);
        assert!(stored.key.starts_with("名名"), "{}", stored.key);
        let ascii = storage_key("名前", true);
        assert!(ascii.key.is_ascii() && ascii.full.is_some());
    }

    #[test]
    fn long_index_names_stay_within_the_identifier_limit() {
        let table = "t".repeat(MAX_IDENTIFIER_BYTES);
        let a = index_name(&table, "expires_idx");
        assert!(a.len() <= MAX_IDENTIFIER_BYTES, "{a}");
        let b = index_name(&format!("{}u", "t".repeat(62)), "expires_idx");
        assert_ne!(a, b);
        assert_eq!(index_name("cache", "expires_idx"), "cache_expires_idx");
    }

    #[test]
    fn names_are_quoted_in_every_statement() {
        let config = PostgresConfig::default().with_table("cache").with_schema("caching");
        let sql = Sql::new(&config);
        assert_eq!(sql.table, "\"caching\".\"cache\"");
        assert!(sql.get.contains("FROM \"caching\".\"cache\" WHERE"));
        assert!(sql.create_expires_index.contains("\"cache_expires_idx\" ON \"caching\".\"cache\""));
        assert_eq!(sql.expires_index, "\"caching\".\"cache_expires_idx\"");
        let unlogged = Sql::new(&PostgresConfig { unlogged: true, ..PostgresConfig::default() });
        assert!(unlogged.create_table.starts_with("CREATE UNLOGGED TABLE IF NOT EXISTS \"cachestack\""));
    }
}
