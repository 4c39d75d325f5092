//! Engine URLs built from typed, encoded segments: the only way a value that came from a client
//! (an index name, a document id, a query string) becomes part of an engine request path.
//!
//! Pure. Owns the percent-encoding of every segment ([`EnginePath`]) and re-encoding a client's
//! query string from parsed, bounded pairs ([`QueryString`]); the names it encodes are checked
//! by their own types in `crate::types::name` ([`IndexName`], [`IndexPattern`], [`DocId`]),
//! which it imports. It must not know routes or scopes: callers decide which API a request may
//! reach; this module makes sure the path names exactly that API and nothing smuggled in with
//! `/`, `?`, `#` or `..`. (Date math in index names is refused by `IndexName`, not resolved.)

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::types::name::{DocId, IndexName, IndexPattern, PathError};

/// Everything but unreserved characters is encoded in a segment (`*` and `,` stay literal so
/// that patterns keep their meaning).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');
const PATTERN_SEGMENT: &AsciiSet = &SEGMENT.remove(b'*').remove(b',');

/// An engine path assembled segment by segment; [`EnginePath::build`] gives `/a/b?q`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EnginePath {
    segments: Vec<String>,
    query: QueryString,
}

impl EnginePath {
    pub fn root() -> Self {
        EnginePath::default()
    }

    /// `/{name}`, the name checked as one concrete index name first.
    pub fn at_index(name: &str) -> Result<Self, PathError> {
        Ok(EnginePath::root().index(&IndexName::try_from(name)?))
    }

    /// A fixed API segment of the caller's own (`_doc`, `_search`): never client input.
    pub fn api(mut self, segment: &'static str) -> Self {
        debug_assert!(!segment.contains(['/', '?', '#']), "an API segment is one segment");
        self.segments.push(segment.to_string());
        self
    }

    /// An API segment checked by the caller to be `_` and lower-case letters (a client's path
    /// forwarded as it names an engine API).
    pub fn api_owned(mut self, segment: String) -> Self {
        debug_assert!(segment.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'));
        self.segments.push(utf8_percent_encode(&segment, SEGMENT).to_string());
        self
    }

    /// A later segment of a forwarded path that names things (an alias, a template, a
    /// `_cat` index list): checked as an id, encoded, but `*` and `,` kept so lists stay lists.
    pub fn name(mut self, name: &DocId) -> Self {
        self.segments.push(utf8_percent_encode(name.as_str(), PATTERN_SEGMENT).to_string());
        self
    }

    /// A date-math index expression (`<logs-{now/d}>`), encoded as one segment: only for asking
    /// the engine what it resolves to.
    pub fn date_math(mut self, expr: &str) -> Result<Self, PathError> {
        let bad = |why| Err(PathError::Index { name: expr.chars().take(80).collect(), why });
        if !(expr.starts_with('<') && expr.ends_with('>')) || expr.len() < 3 || expr.len() > 255 {
            return bad("date math is `<name-{now/d}>`, at most 255 bytes");
        }
        if expr.chars().any(char::is_control) {
            return bad("it contains a control character");
        }
        self.segments.push(utf8_percent_encode(expr, SEGMENT).to_string());
        Ok(self)
    }

    pub fn index(mut self, name: &IndexName) -> Self {
        self.segments.push(utf8_percent_encode(name.as_str(), SEGMENT).to_string());
        self
    }

    pub fn pattern(mut self, p: &IndexPattern) -> Self {
        let joined: Vec<String> = p.parts().map(|x| utf8_percent_encode(x, PATTERN_SEGMENT).to_string()).collect();
        self.segments.push(joined.join(","));
        self
    }

    pub fn id(mut self, id: &DocId) -> Self {
        self.segments.push(utf8_percent_encode(id.as_str(), SEGMENT).to_string());
        self
    }

    /// A client's (parsed, bounded) query string; parameters added with [`EnginePath::param`]
    /// afterwards replace the client's of the same name.
    pub fn query(mut self, q: &QueryString) -> Self {
        self.query = q.clone();
        self
    }

    /// One query parameter of the sidecar's own; the value is encoded.
    pub fn param(mut self, key: &'static str, value: &str) -> Self {
        self.query.push(key, value);
        self
    }

    pub fn build(&self) -> String {
        let mut s = String::from("/");
        s.push_str(&self.segments.join("/"));
        if let Some(q) = self.query.encoded() {
            s.push('?');
            s.push_str(&q);
        }
        s
    }
}

/// A client's query string, parsed into pairs and bounded: at most 64 parameters, names of
/// `[A-Za-z0-9_.]`, the whole string at most 4096 bytes; `error_trace` dropped. Re-encoded when a path is built, so
/// nothing the client wrote reaches the engine unparsed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryString(Vec<(String, String)>);

impl QueryString {
    pub fn parse(raw: Option<&str>) -> Result<Self, PathError> {
        let Some(raw) = raw.filter(|r| !r.is_empty()) else {
            return Ok(QueryString::default());
        };
        if raw.len() > 4096 {
            return Err(PathError::Query("longer than 4096 bytes".into()));
        }
        // `error_trace` would have the engine answer with its Java stack traces: never asked for
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(raw.as_bytes()).into_owned().filter(|(k, _)| k != "error_trace").collect();
        if pairs.len() > 64 {
            return Err(PathError::Query("more than 64 parameters".into()));
        }
        for (k, _) in &pairs {
            if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
                return Err(PathError::Query(format!("parameter name `{}` is not [A-Za-z0-9_.]", k.escape_debug())));
            }
        }
        Ok(QueryString(pairs))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Drops a parameter (one the sidecar consumes itself).
    pub fn remove(&mut self, key: &str) {
        self.0.retain(|(k, _)| k != key);
    }

    /// Adds a parameter of the sidecar's own (replacing one of that name the client sent).
    pub fn push(&mut self, key: &str, value: &str) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_string(), value.to_string()));
    }

    /// The parameters, in the client's order.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn encoded(&self) -> Option<String> {
        if self.0.is_empty() {
            return None;
        }
        let mut s = form_urlencoded::Serializer::new(String::new());
        for (k, v) in &self.0 {
            s.append_pair(k, v);
        }
        Some(s.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn index_names_follow_the_engine_rules() {
        for ok in ["docs", "docs-v2", ".semantic-sidecar-jobs", "a.b_c+d", "日本"] {
            assert!(IndexName::try_from(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "_all",
            "-x",
            "+x",
            "Docs",
            "a/b",
            "a?b",
            "a#b",
            "a b",
            "a,b",
            "a*",
            "<logs-{now/d}>",
            "a\nb",
        ] {
            assert!(IndexName::try_from(bad).is_err(), "{bad:?}");
        }
        assert!(IndexName::try_from("x".repeat(256).as_str()).is_err());
    }

    #[test]
    fn patterns_allow_lists_and_wildcards_only() {
        let p = IndexPattern::try_from("logs-*,metrics").unwrap();
        assert_eq!(p.parts().collect::<Vec<_>>(), ["logs-*", "metrics"]);
        assert!(p.single().is_none());
        assert_eq!(IndexPattern::try_from("one").unwrap().single().unwrap().as_str(), "one");
        for bad in ["a/_delete_by_query", "a,,b", "_all", "-excluded", "a?x", "x#"] {
            assert!(IndexPattern::try_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hostile_values_stay_inside_their_segment() {
        // what the hostile-input review sent, once percent-decoded by the router
        assert!(IndexName::try_from("x/_delete_by_query?refresh=true#").is_err());
        let id = DocId::try_from("../_cluster/settings?x#y").unwrap();
        let path = EnginePath::root().index(&IndexName::try_from("docs").unwrap()).api("_doc").id(&id).build();
        assert_eq!(path, "/docs/_doc/..%2F_cluster%2Fsettings%3Fx%23y");
        let q = QueryString::parse(Some("refresh=true&routing=a%26b%23c")).unwrap();
        let path = EnginePath::root().api("_count").query(&q).build();
        assert_eq!(path, "/_count?refresh=true&routing=a%26b%23c");
        assert!(QueryString::parse(Some("a%2Fb=1")).is_err(), "a parameter name with a slash");
        let q = QueryString::parse(Some("error_trace=true&refresh=true")).unwrap();
        assert_eq!(EnginePath::root().api("_bulk").query(&q).build(), "/_bulk?refresh=true", "no stack traces");
        assert!(DocId::try_from("").is_err());
        assert!(DocId::try_from("a\u{0}b").is_err());
        assert!(DocId::try_from("..").is_err() && DocId::try_from(".").is_err());
        let own = EnginePath::at_index("docs").unwrap().api("_mget").param("_source_includes", "a,b#c").build();
        assert_eq!(own, "/docs/_mget?_source_includes=a%2Cb%23c");
        let mut q = QueryString::parse(Some("refresh=false&x=1")).unwrap();
        q.push("refresh", "true");
        let path = EnginePath::root().api("_bulk").query(&q).param("x", "2").build();
        assert_eq!(path, "/_bulk?refresh=true&x=2");
        assert!(EnginePath::at_index("_cluster/settings").is_err());
        let dm = EnginePath::root().date_math("<logs-{now/d}>").unwrap().api("_alias").build();
        assert_eq!(dm, "/%3Clogs-%7Bnow%2Fd%7D%3E/_alias");
        assert!(EnginePath::root().date_math("logs").is_err());
    }

    proptest! {
        #[test]
        fn an_encoded_id_is_one_segment_with_no_query_or_fragment(id in "\\PC{1,40}") {
            prop_assume!(id != "." && id != "..");
            let id = DocId::try_from(id.as_str()).unwrap();
            let path = EnginePath::root().api("_doc").id(&id).build();
            prop_assert_eq!(path.matches('/').count(), 2);
            prop_assert!(!path.contains(['?', '#', ' ']));
            let decoded = percent_encoding::percent_decode_str(path.trim_start_matches("/_doc/")).decode_utf8().unwrap();
            prop_assert_eq!(decoded.as_ref(), id.as_str());
        }
    }
}
