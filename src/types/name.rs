//! Names a client may give for engine objects, by the engines' own rules: one index or alias
//! ([`IndexName`]), the comma lists and wildcards of the read APIs ([`IndexPattern`]) and
//! document ids ([`DocId`]). Holding one means it was checked.
//!
//! Pure, and at the bottom of the crate: settings, pipelines and the engine's path builder all
//! import these; this file imports nothing of the crate. It must not encode or build paths
//! (`engine::path` does) nor know routes or scopes.
//!
//! Not supported: date math in index names (`<logs-{now/d}>`) is refused, not resolved.

use std::fmt;

/// Why a client value cannot be part of an engine path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid index name `{name}`: {why}")]
    Index { name: String, why: &'static str },
    #[error("invalid document id: {0}")]
    Id(&'static str),
    #[error("invalid query string: {0}")]
    Query(String),
}

/// Characters neither engine allows in an index name (besides upper case and the rules below).
const FORBIDDEN: &[char] = &['\\', '/', '*', '?', '"', '<', '>', '|', ' ', ',', '#', ':'];

/// One concrete index (or alias) name, by the engines' own rules: lower case, no
/// `\ / * ? " < > | , # :` or space, not starting with `-`, `_` or `+`, not `.` or `..`, at
/// most 255 bytes. Hidden/system names starting with `.` are allowed (the sidecar's own jobs
/// and errors indices are).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IndexName(String);

impl IndexName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IndexName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<&str> for IndexName {
    type Error = PathError;
    fn try_from(name: &str) -> Result<Self, PathError> {
        check_name(name, false).map(|()| IndexName(name.to_string()))
    }
}

fn check_name(name: &str, wildcard_ok: bool) -> Result<(), PathError> {
    let bad = |why| Err(PathError::Index { name: name.chars().take(80).collect(), why });
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 255 {
        return bad("it is longer than 255 bytes");
    }
    if name == "." || name == ".." {
        return bad("`.` and `..` are not index names");
    }
    if name.starts_with(['-', '_', '+']) {
        return bad("it must not start with `-`, `_` or `+`");
    }
    if name.starts_with('<') {
        return bad("date math is not resolved by the sidecar: name the index");
    }
    if name.chars().any(|c| c.is_control()) {
        return bad("it contains a control character");
    }
    if name.chars().any(|c| c.is_uppercase()) {
        return bad("it must be lower case");
    }
    if name.chars().any(|c| FORBIDDEN.contains(&c) && !(wildcard_ok && c == '*')) {
        return bad(if wildcard_ok {
            r#"it must not contain \ / ? " < > | , # : or a space"#
        } else {
            r#"it must not contain \ / * ? " < > | , # : or a space"#
        });
    }
    Ok(())
}

/// What a read API may name: one or more comma-separated index names or wildcard patterns
/// (`logs-*,metrics`), each checked like an [`IndexName`] with `*` allowed. Exclusions (`-x`)
/// and `_all` are refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexPattern(Vec<String>);

impl IndexPattern {
    pub fn parts(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The one concrete name, when the pattern is exactly one name without wildcards.
    pub fn single(&self) -> Option<IndexName> {
        match self.0.as_slice() {
            [one] if !one.contains('*') => Some(IndexName(one.clone())),
            _ => None,
        }
    }
}

impl TryFrom<&str> for IndexPattern {
    type Error = PathError;
    fn try_from(text: &str) -> Result<Self, PathError> {
        if text.len() > 4096 {
            return Err(PathError::Index { name: text.chars().take(80).collect(), why: "the list is over 4096 bytes" });
        }
        let parts: Vec<String> = text.split(',').map(str::to_string).collect();
        if parts.len() > 256 {
            return Err(PathError::Index { name: text.chars().take(80).collect(), why: "more than 256 names" });
        }
        for p in &parts {
            check_name(p, true)?;
        }
        Ok(IndexPattern(parts))
    }
}

/// A document id: 1 to 512 bytes, no control characters, not `.` or `..` (URL parsers fold
/// those segments, even percent-encoded, into the parent path: `DELETE /i/_doc/..` would name the
/// index). Any other byte is fine: it is percent-encoded in the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocId(String);

impl DocId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<&str> for DocId {
    type Error = PathError;
    fn try_from(id: &str) -> Result<Self, PathError> {
        if id.is_empty() {
            return Err(PathError::Id("it is empty"));
        }
        if id.len() > 512 {
            return Err(PathError::Id("it is longer than 512 bytes"));
        }
        if id.chars().any(char::is_control) {
            return Err(PathError::Id("it contains a control character"));
        }
        if id == "." || id == ".." {
            return Err(PathError::Id("`.` and `..` cannot be ids in a URL path"));
        }
        Ok(DocId(id.to_string()))
    }
}
