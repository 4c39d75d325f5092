//! Configuration: layering, environment overrides, strictness, validation, redaction.
//! Pure: the environment is passed in as a map, files are temporary.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use semantic_sidecar::settings::{LogFormat, Settings, SettingsError};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn file(toml: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(toml.as_bytes()).unwrap();
    f
}

fn load_err(toml: Option<&str>, pairs: &[(&str, &str)]) -> String {
    let f = toml.map(file);
    match Settings::load(f.as_ref().map(|f| f.path()), &env(pairs)) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn layers_apply_in_order_defaults_then_file_then_env() {
    let f = file(
        r#"
        [server]
        listen = "127.0.0.1:9000"
        [log]
        level = "debug"
        "#,
    );
    let s = Settings::load(Some(f.path()), &env(&[("SIDECAR__SERVER__LISTEN", "127.0.0.1:9100")])).unwrap();
    assert_eq!(s.server.listen, "127.0.0.1:9100", "env wins over the file");
    assert_eq!(s.log.level, "debug", "the file wins over the defaults");
    assert_eq!(s.log.format, LogFormat::Json, "defaults fill the rest");
    assert_eq!(s.server.request_timeout, Duration::from_secs(60));
}

#[test]
fn env_overrides_nested_keys_lists_and_numbers() {
    let s = Settings::load(
        None,
        &env(&[
            ("SIDECAR__ENGINE__URLS", "http://a:9200,https://b.example:9243/prefix"),
            ("SIDECAR__ENGINE__RETRY__MAX_RETRIES", "7"),
            ("SIDECAR__ENGINE__REQUEST_TIMEOUT", "1500ms"),
            ("SIDECAR__SERVER__MAX_BODY_SIZE", "2MiB"),
            ("SIDECAR__ENGINE__USERNAME", "elastic"),
            ("SIDECAR__ENGINE__PASSWORD", "12345"),
            // not ours: ignored
            ("PATH", "/usr/bin"),
            ("SIDECAR_OTHER", "x"),
        ]),
    )
    .unwrap();
    assert_eq!(s.engine.urls, vec!["http://a:9200", "https://b.example:9243/prefix"]);
    assert_eq!(s.engine.retry.max_retries, 7);
    assert_eq!(s.engine.request_timeout, Duration::from_millis(1500));
    assert_eq!(s.server.max_body_size.bytes(), 2 << 20);
    assert_eq!(s.engine.password.as_ref().unwrap().expose(), "12345", "a numeric-looking secret stays a string");
}

#[test]
fn a_misspelt_key_is_rejected_in_the_file_and_in_the_env() {
    let e = load_err(Some("[engine]\nurlz = [\"http://x:9200\"]\n"), &[]);
    assert!(e.contains("urlz"), "{e}");
    let e = load_err(None, &[("SIDECAR__ENGINE__PASWORD", "x")]);
    assert!(e.contains("paswor"), "{e}");
    let e = load_err(Some("[servr]\nlisten = \"127.0.0.1:1\"\n"), &[]);
    assert!(e.contains("servr"), "{e}");
}

#[test]
fn invalid_values_are_rejected_with_their_key() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("SIDECAR__SERVER__LISTEN", "not-an-address")], "server.listen"),
        (&[("SIDECAR__ENGINE__URLS", "ftp://x:21")], "engine.urls[0]"),
        (&[("SIDECAR__ENGINE__URLS", "http://ok:9200,not a url")], "engine.urls[1]"),
        (&[("SIDECAR__ENGINE__URLS", "http://user:pw@x:9200")], "engine.urls[0]"),
        (&[("SIDECAR__SERVER__MAX_BODY_SIZE", "0")], "server.max_body_size"),
        (&[("SIDECAR__SERVER__MAX_BODY_SIZE", "12 parsecs")], "parsecs"),
        (&[("SIDECAR__ENGINE__CONNECT_TIMEOUT", "0s")], "engine.connect_timeout"),
        (&[("SIDECAR__ENGINE__CONNECT_TIMEOUT", "5 fortnights")], "connect_timeout"),
        (&[("SIDECAR__ENGINE__USERNAME", "elastic")], "engine.password"),
        (
            &[
                ("SIDECAR__ENGINE__USERNAME", "u"),
                ("SIDECAR__ENGINE__PASSWORD", "p"),
                ("SIDECAR__ENGINE__API_KEY", "k"),
            ],
            "engine.api_key",
        ),
        (&[("SIDECAR__ENGINE__CA_CERT", "/nonexistent/ca.pem")], "engine.ca_cert"),
        (&[("SIDECAR__ENGINE__RETRY__MAX_BACKOFF", "1ms")], "engine.retry.max_backoff"),
        (&[("SIDECAR__ENGINE__FLAVOR", "solr")], "solr"),
        (&[("SIDECAR__LOG__LEVEL", "=[")], "log.level"),
        (&[("SIDECAR__LOG__FORMAT", "xml")], "xml"),
        (&[("SIDECAR__SERVER__API_KEYS", "has space")], "server.api_keys[0]"),
        (&[("SIDECAR__SERVER__AUTH_EXEMPT_PATHS", "healthz")], "server.auth_exempt_paths[0]"),
    ];
    for (pairs, needle) in cases {
        let e = load_err(None, pairs);
        assert!(e.contains(needle), "{pairs:?}: error `{e}` does not name `{needle}`");
    }
}

#[test]
fn a_missing_config_file_is_an_error() {
    let e = Settings::load(Some(std::path::Path::new("/nonexistent/sidecar.toml")), &HashMap::new()).unwrap_err();
    assert!(matches!(e, SettingsError::Load(_)));
    assert!(e.to_string().contains("/nonexistent/sidecar.toml"));
}

#[test]
fn a_ca_file_without_a_certificate_is_rejected() {
    let f = file("this is not PEM");
    let path = f.path().to_str().unwrap().to_string();
    let e = load_err(None, &[("SIDECAR__ENGINE__CA_CERT", &path)]);
    assert!(e.contains("engine.ca_cert") && e.contains("no PEM"), "{e}");
}

#[test]
fn secrets_never_show_in_debug_or_config_check_output() {
    let s = Settings::load(
        None,
        &env(&[
            ("SIDECAR__ENGINE__USERNAME", "elastic"),
            ("SIDECAR__ENGINE__PASSWORD", "hunter2-very-secret"),
            ("SIDECAR__SERVER__API_KEYS", "client-key-aaaa-1111,client-key-bbbb-2222"),
        ]),
    )
    .unwrap();
    let debug = format!("{s:?}");
    let toml = s.to_redacted_toml();
    for secret in ["hunter2-very-secret", "client-key-aaaa-1111", "client-key-bbbb-2222"] {
        assert!(!debug.contains(secret), "Debug leaks {secret}");
        assert!(!toml.contains(secret), "config check output leaks {secret}");
    }
    assert!(debug.contains("<redacted>") && toml.contains("<redacted>"));
    assert!(toml.contains("elastic"), "the username is not a secret");
    let s = Settings::load(None, &env(&[("SIDECAR__ENGINE__API_KEY", "api-key-zzzz")])).unwrap();
    assert!(!format!("{s:?}").contains("api-key-zzzz"));
}

#[test]
fn config_check_output_loads_back_as_the_same_configuration() {
    let s = Settings::load(None, &env(&[("SIDECAR__ENGINE__URLS", "http://a:1,http://b:2")])).unwrap();
    let f = file(&s.to_redacted_toml());
    let again = Settings::load(Some(f.path()), &HashMap::new()).unwrap();
    assert_eq!(again.engine.urls, s.engine.urls);
    assert_eq!(again.server.max_body_size, s.server.max_body_size);
    assert_eq!(again.engine.retry, s.engine.retry);
}

#[test]
fn ingest_pipelines_are_validated_at_load() {
    let bad = file("name = 'x'\nindex = 'Bad Index'\nmodel = 'm'\n[[fields]]\nsource = ['t']\nvector = 'v'\n");
    let path = bad.path().to_str().unwrap().to_string();
    let e = load_err(None, &[("SIDECAR__INGEST__PIPELINES", &path)]);
    assert!(e.contains("ingest.pipelines[0]") && e.contains("`index`"), "{e}");
    let good = file("name = 'x'\nindex = 'docs'\nmodel = 'm'\n[[fields]]\nsource = ['t']\nvector = 'v'\n");
    let path = good.path().to_str().unwrap().to_string();
    let e = load_err(None, &[("SIDECAR__INGEST__PIPELINES", &path)]);
    assert!(e.contains("encoder.models"), "pipelines need models: {e}");
}

#[test]
fn without_keys_only_loopback_is_served_unless_anonymous_is_allowed() {
    let e = load_err(None, &[("SIDECAR__SERVER__LISTEN", "0.0.0.0:8080")]);
    assert!(e.contains("server.listen") && e.contains("allow_anonymous"), "{e}");
    let ok = |pairs: &[(&str, &str)]| Settings::load(None, &env(pairs)).unwrap();
    ok(&[("SIDECAR__SERVER__LISTEN", "0.0.0.0:8080"), ("SIDECAR__SERVER__ALLOW_ANONYMOUS", "true")]);
    ok(&[("SIDECAR__SERVER__LISTEN", "0.0.0.0:8080"), ("SIDECAR__SERVER__API_KEYS", "k1")]);
    ok(&[("SIDECAR__SERVER__LISTEN", "[::1]:8080")]);
}

#[test]
fn scoped_keys_load_from_the_config_file_and_are_checked() {
    let f = file("[server]\napi_keys = ['bare', { name = 'web', key = 'k2', scope = 'read', indices = ['docs-*'] }]\n");
    let s = Settings::load(Some(f.path()), &HashMap::new()).unwrap();
    use semantic_sidecar::settings::Scope;
    let k = &s.server.api_keys;
    assert_eq!((k[0].scope(), k[0].indices()), (Scope::Admin, vec!["*".to_string()]));
    assert_eq!((k[1].scope(), k[1].name(1), k[1].indices()), (Scope::Read, "web".into(), vec!["docs-*".to_string()]));
    assert!(!format!("{s:?}").contains("k2"), "keys never shown");
    let e = load_err(Some("[server]\napi_keys = [{ key = 'k', scope = 'read', indices = ['a/b'] }]\n"), &[]);
    assert!(e.contains("server.api_keys[0].indices"), "{e}");
    let e = load_err(Some("[server]\napi_keys = [{ key = 'k', scope = 'root' }]\n"), &[]);
    assert!(e.contains("api_keys"), "{e}");
    let e = load_err(None, &[("SIDECAR__SERVER__MAX_JSON_DEPTH", "1")]);
    assert!(e.contains("server.max_json_depth"), "{e}");
}

#[test]
fn a_misspelt_key_field_is_named_with_its_row() {
    let e = load_err(Some("[server]\napi_keys = ['k0', { key = 'k', scopes = 'read' }]\n"), &[]);
    assert!(e.contains("scopes") && e.contains("api_keys"), "{e}");
    let e = load_err(
        Some("[server]\napi_keys = [{ key = 'k', scope = 'read', indices = ['docs'], cluster_admin = 'maybe' }]\n"),
        &[],
    );
    assert!(e.contains("cluster_admin") || e.contains("boolean"), "{e}");
    let e = load_err(Some("[server]\napi_keys = [{ key = 'a', name = 'x', scope = 'read' }, { key = 'b', name = 'x', scope = 'read' }]\n"), &[]);
    assert!(e.contains("server.api_keys[1].name"), "duplicate names: {e}");
    let e = load_err(Some("[server]\nengine_apis = ['_cat']\n"), &[]);
    assert!(e.contains("server.engine_apis[0]"), "{e}");
}

#[test]
fn scoped_keys_come_from_the_environment_as_json_and_from_a_key_file() {
    let json = r#"[{"name":"web","key":"k1","scope":"read","indices":["docs-*"]},"bare-key"]"#;
    let s = Settings::load(None, &env(&[("SIDECAR__SERVER__API_KEYS", json)])).unwrap();
    let k = &s.server.api_keys;
    assert_eq!(k.len(), 2);
    assert_eq!((k[0].name(0), k[0].indices()), ("web".to_string(), vec!["docs-*".to_string()]));
    assert_eq!(k[1].key().expose(), "bare-key");
    let e = load_err(None, &[("SIDECAR__SERVER__API_KEYS", r#"[{"key":"k","scope":"read","indice":["x"]}]"#)]);
    assert!(e.contains("SIDECAR__SERVER__API_KEYS") && e.contains("entry [0]") && e.contains("indice"), "{e}");

    let keys = file("api_keys = [{ name = 'ops', key = 'k9', scope = 'admin', cluster_admin = true }]\n");
    let path = keys.path().to_str().unwrap().to_string();
    let s = Settings::load(None, &env(&[("SIDECAR__SERVER__API_KEYS_FILE", &path)])).unwrap();
    assert!(s.server.api_keys.len() == 1 && s.server.api_keys[0].cluster_admin());
    let bad = file("api_keys = ['ok', { key = 'k', scope = 'read', wat = 1 }]\n");
    let path = bad.path().to_str().unwrap().to_string();
    let e = load_err(None, &[("SIDECAR__SERVER__API_KEYS_FILE", &path)]);
    assert!(e.contains("server.api_keys_file") && e.contains("api_keys[1]") && e.contains("wat"), "{e}");
}
