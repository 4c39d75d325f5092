//! Flavour and version detection from `GET /`, and the dialect that follows from them.
//!
//! Pure: parses a response body; the client does the request. Tolerant of extra or missing
//! fields in what the engine returns (STYLE rule 7), strict about what it needs: a version number.
//!
//! Supported: Elasticsearch 8.x and 9.x, OpenSearch 2.x and 3.x. Elasticsearch 7 and OpenSearch 1
//! are refused with an explanation (no approximate kNN on dense_vector in ES 7; OpenSearch 1 is
//! end of life and its k-NN query shapes differ).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Which product the cluster is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    Elasticsearch,
    Opensearch,
}

impl fmt::Display for Flavor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Flavor::Elasticsearch => "elasticsearch",
            Flavor::Opensearch => "opensearch",
        })
    }
}

/// A `major.minor.patch` version (pre-release suffixes such as `-SNAPSHOT` are ignored).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version { major, minor, patch }
    }

    pub fn parse(text: &str) -> Option<Version> {
        let core = text.split(['-', '+']).next()?;
        let mut parts = core.split('.').map(|p| p.parse::<u32>());
        let major = parts.next()?.ok()?;
        let minor = parts.next().unwrap_or(Ok(0)).ok()?;
        let patch = parts.next().unwrap_or(Ok(0)).ok()?;
        Some(Version { major, minor, patch })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The request shapes a cluster understands; chosen once from flavour and version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Elasticsearch 8.x / 9.x: `dense_vector`, top-level `knn` (8.4+), `retriever` (8.14+).
    Elasticsearch,
    /// OpenSearch 2.x / 3.x with the k-NN plugin: `knn_vector`, `index.knn`, `query.knn`.
    Opensearch,
}

/// What `GET /` told us about the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct EngineInfo {
    pub flavor: Flavor,
    pub version: Version,
    pub dialect: Dialect,
    pub cluster_name: Option<String>,
    pub node_name: Option<String>,
}

impl EngineInfo {
    /// The mapping type of a vector field.
    pub fn vector_field_type(&self) -> &'static str {
        match self.dialect {
            Dialect::Elasticsearch => "dense_vector",
            Dialect::Opensearch => "knn_vector",
        }
    }

    /// Elasticsearch 8.4+ accepts `knn` next to `query` in one search (engine-side hybrid).
    pub fn supports_top_level_knn(&self) -> bool {
        self.dialect == Dialect::Elasticsearch && self.version >= Version::new(8, 4, 0)
    }

    /// Elasticsearch 8.16+ has a GA `retriever.rrf` (licence-gated: Enterprise).
    pub fn supports_rrf_retriever(&self) -> bool {
        self.dialect == Dialect::Elasticsearch && self.version >= Version::new(8, 16, 0)
    }
}

/// Why a `GET /` body does not describe a supported cluster.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DetectError {
    #[error("GET / did not return a JSON object with version.number: {0}")]
    Malformed(String),
    #[error("{flavor} {version} is not supported: {why}")]
    Unsupported { flavor: Flavor, version: Version, why: &'static str },
}

#[derive(Deserialize)]
struct RootResponse {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    cluster_name: Option<String>,
    #[serde(default)]
    tagline: Option<String>,
    version: RootVersion,
}

#[derive(Deserialize)]
struct RootVersion {
    number: String,
    #[serde(default)]
    distribution: Option<String>,
}

/// Detects flavour and version from the body of `GET /`.
pub fn detect(body: &[u8]) -> Result<EngineInfo, DetectError> {
    let root: RootResponse = serde_json::from_slice(body).map_err(|e| DetectError::Malformed(e.to_string()))?;
    let version = Version::parse(&root.version.number)
        .ok_or_else(|| DetectError::Malformed(format!("version.number `{}` is not a version", root.version.number)))?;
    let is_opensearch = root.version.distribution.as_deref() == Some("opensearch")
        || root.tagline.as_deref().is_some_and(|t| t.contains("OpenSearch"));
    let (flavor, dialect) = if is_opensearch {
        (Flavor::Opensearch, Dialect::Opensearch)
    } else {
        (Flavor::Elasticsearch, Dialect::Elasticsearch)
    };
    match (flavor, version.major) {
        (Flavor::Elasticsearch, 8 | 9) | (Flavor::Opensearch, 2 | 3) => {}
        (Flavor::Elasticsearch, m) if m < 8 => {
            return Err(DetectError::Unsupported {
                flavor,
                version,
                why: "Elasticsearch 8.0 or later is required (approximate kNN on dense_vector)",
            })
        }
        (Flavor::Opensearch, 1) => {
            return Err(DetectError::Unsupported { flavor, version, why: "OpenSearch 2.0 or later is required" })
        }
        _ => {
            return Err(DetectError::Unsupported {
                flavor,
                version,
                why: "this major version is newer than the sidecar knows",
            })
        }
    }
    Ok(EngineInfo { flavor, version, dialect, cluster_name: root.cluster_name, node_name: root.name })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_opensearch_by_distribution() {
        let body = br#"{"name":"n1","cluster_name":"c","version":{"distribution":"opensearch","number":"2.19.1",
            "lucene_version":"9.12.1"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#;
        let info = detect(body).unwrap();
        assert_eq!(info.flavor, Flavor::Opensearch);
        assert_eq!(info.version, Version::new(2, 19, 1));
        assert_eq!(info.vector_field_type(), "knn_vector");
        assert!(!info.supports_top_level_knn());
        assert_eq!(info.cluster_name.as_deref(), Some("c"));
    }

    #[test]
    fn detects_elasticsearch_and_its_capabilities() {
        let body =
            br#"{"name":"es","cluster_name":"docker-cluster","version":{"number":"8.15.3","build_flavor":"default"},
            "tagline":"You Know, for Search"}"#;
        let info = detect(body).unwrap();
        assert_eq!(info.flavor, Flavor::Elasticsearch);
        assert_eq!(info.vector_field_type(), "dense_vector");
        assert!(info.supports_top_level_knn());
        assert!(!info.supports_rrf_retriever());
        let nine = detect(br#"{"version":{"number":"9.1.0-SNAPSHOT"}}"#).unwrap();
        assert_eq!(nine.version, Version::new(9, 1, 0));
        assert!(nine.supports_rrf_retriever());
    }

    #[test]
    fn refuses_old_and_unknown_majors() {
        assert!(matches!(detect(br#"{"version":{"number":"7.17.0"}}"#), Err(DetectError::Unsupported { .. })));
        assert!(matches!(
            detect(br#"{"version":{"number":"1.3.0","distribution":"opensearch"}}"#),
            Err(DetectError::Unsupported { .. })
        ));
        assert!(matches!(detect(br#"{"version":{"number":"12.0.0"}}"#), Err(DetectError::Unsupported { .. })));
    }

    #[test]
    fn malformed_bodies_are_errors_not_panics() {
        for body in [&b""[..], b"[]", b"{}", br#"{"version":{"number":"x.y"}}"#, b"<html>proxy</html>"] {
            assert!(matches!(detect(body), Err(DetectError::Malformed(_))), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn versions_order_and_parse() {
        assert!(Version::parse("8.4.0").unwrap() > Version::parse("8.3.9").unwrap());
        assert_eq!(Version::parse("8"), Some(Version::new(8, 0, 0)));
        assert_eq!(Version::parse(""), None);
    }
}
