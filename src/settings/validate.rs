//! The checks of [`Settings::validate`], one function per section, run in a fixed order so the
//! first error is the same whatever else is wrong. Every error names its key. Reads the
//! settings and the files they name (models, pipeline files, the CA); must not start anything.

use std::time::Duration;

use super::*;

impl Settings {
    /// Checks what types alone cannot; every error names its key. Sections are checked in this
    /// order, so the first error is the same whatever else is wrong.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.validate_reindex()?;
        self.validate_server()?;
        self.validate_engine()?;
        self.validate_encoder_models()?;
        self.validate_search()?;
        self.validate_ingest()?;
        self.validate_encoder_limits()?;
        self.validate_log()?;
        Ok(())
    }

    /// `[reindex]`: the lease length.
    fn validate_reindex(&self) -> Result<(), SettingsError> {
        if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&self.reindex.lease) {
            return Err(SettingsError::invalid("reindex.lease", "must be between 1s and 1h"));
        }
        Ok(())
    }

    /// `[server]`: listen address, limits, timeouts, API keys and who may call without one.
    fn validate_server(&self) -> Result<(), SettingsError> {
        let s = &self.server;
        s.listen_addr_checked()?;
        if s.max_body_size.bytes() == 0 || s.max_body_size.bytes() > MAX_BODY_LIMIT {
            return Err(SettingsError::invalid("server.max_body_size", "must be between 1B and 1GiB"));
        }
        positive("server.request_timeout", s.request_timeout)?;
        self.validate_api_keys()?;
        positive("server.header_read_timeout", s.header_read_timeout)?;
        positive("server.body_read_timeout", s.body_read_timeout)?;
        if !(1..=1_000_000).contains(&s.max_connections) {
            return Err(SettingsError::invalid("server.max_connections", "must be between 1 and 1000000"));
        }
        if !(2..=1000).contains(&s.max_json_depth) {
            return Err(SettingsError::invalid("server.max_json_depth", "must be between 2 and 1000"));
        }
        let addr = s.listen_addr_checked()?;
        if s.api_keys.is_empty() && !addr.ip().is_loopback() && !s.allow_anonymous {
            return Err(SettingsError::invalid(
                "server.listen",
                format!(
                    "`{}` is not a loopback address and server.api_keys is empty: anyone who can reach it would use the engine with the sidecar's credentials. Set server.api_keys, or server.allow_anonymous = true if a gateway in front authenticates",
                    s.listen
                ),
            ));
        }
        for (i, p) in s.auth_exempt_paths.iter().enumerate() {
            if !p.starts_with('/') {
                return Err(SettingsError::invalid(
                    format!("server.auth_exempt_paths[{i}]"),
                    format!("`{p}` must start with /"),
                ));
            }
        }
        Ok(())
    }

    /// `server.api_keys` and `server.engine_apis`: keys non-empty, patterns valid, names unique.
    fn validate_api_keys(&self) -> Result<(), SettingsError> {
        let s = &self.server;
        for (i, key) in s.api_keys.iter().enumerate() {
            let k = key.key().expose();
            if k.is_empty() || k.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(SettingsError::invalid(
                    format!("server.api_keys[{i}]"),
                    "an API key must be non-empty and contain no whitespace",
                ));
            }
            let indices = key.indices();
            if indices.is_empty() {
                return Err(SettingsError::invalid(
                    format!("server.api_keys[{i}].indices"),
                    "name at least one index or pattern",
                ));
            }
            for p in &indices {
                // `cluster:pattern` names indices of a remote cluster; both parts are checked
                let plain = p.replace('*', "x");
                let bad = |part: &str| crate::types::name::IndexName::try_from(part).is_err();
                let invalid = match plain.split_once(':') {
                    Some((cluster, index)) => bad(cluster) || bad(index),
                    None => bad(&plain),
                };
                if p != "*" && invalid {
                    return Err(SettingsError::invalid(
                        format!("server.api_keys[{i}].indices"),
                        format!("`{p}` is not an index name or a `*` pattern"),
                    ));
                }
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, key) in s.api_keys.iter().enumerate() {
            let name = key.name(i);
            if name.is_empty() || name.contains(':') || !names.insert(name.clone()) {
                return Err(SettingsError::invalid(
                    format!("server.api_keys[{i}].name"),
                    format!("`{name}` must be non-empty, without `:`, and unique (clients send it as the user name of Basic and ApiKey credentials)"),
                ));
            }
        }
        for (i, f) in s.engine_apis.iter().enumerate() {
            if !super::ENGINE_API_FAMILIES.contains(&f.as_str()) {
                return Err(SettingsError::invalid(
                    format!("server.engine_apis[{i}]"),
                    format!("`{f}` is not one of {}", super::ENGINE_API_FAMILIES.join(", ")),
                ));
            }
        }
        Ok(())
    }

    /// `[engine]`: URLs, one authentication scheme, the CA file, timeouts and retries.
    fn validate_engine(&self) -> Result<(), SettingsError> {
        let e = &self.engine;
        if e.urls.is_empty() {
            return Err(SettingsError::invalid("engine.urls", "at least one URL is required"));
        }
        for (i, u) in e.urls.iter().enumerate() {
            let key = format!("engine.urls[{i}]");
            let url = Url::parse(u).map_err(|err| SettingsError::invalid(&key, format!("`{u}`: {err}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(SettingsError::invalid(key, format!("`{u}` must be http:// or https://")));
            }
            if url.host_str().is_none_or(str::is_empty) {
                return Err(SettingsError::invalid(key, format!("`{u}` has no host")));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(SettingsError::invalid(
                    key,
                    "credentials in the URL are not accepted: use engine.username and engine.password",
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(SettingsError::invalid(key, format!("`{u}` must not have a query or fragment")));
            }
        }
        let basic = e.username.is_some() || e.password.is_some();
        if e.username.is_some() != e.password.is_some() {
            return Err(SettingsError::invalid(
                "engine.password",
                "username and password go together: set both or neither",
            ));
        }
        let schemes = [basic, e.api_key.is_some(), e.bearer_token.is_some()].iter().filter(|b| **b).count();
        if schemes > 1 {
            return Err(SettingsError::invalid(
                "engine.api_key",
                "set at most one of username/password, api_key and bearer_token",
            ));
        }
        if let Some(path) = &e.ca_cert {
            let pem = std::fs::read(path).map_err(|err| {
                SettingsError::invalid("engine.ca_cert", format!("cannot read {}: {err}", path.display()))
            })?;
            if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                return Err(SettingsError::invalid(
                    "engine.ca_cert",
                    format!("{} holds no PEM certificate", path.display()),
                ));
            }
        }
        positive("engine.connect_timeout", e.connect_timeout)?;
        positive("engine.request_timeout", e.request_timeout)?;
        let r = &e.retry;
        positive("engine.retry.initial_backoff", r.initial_backoff)?;
        if r.max_backoff < r.initial_backoff {
            return Err(SettingsError::invalid("engine.retry.max_backoff", "must not be shorter than initial_backoff"));
        }
        if r.max_retries > 100 {
            return Err(SettingsError::invalid("engine.retry.max_retries", "at most 100"));
        }
        Ok(())
    }

    /// `encoder.models` and the ONNX Runtime library they need.
    fn validate_encoder_models(&self) -> Result<(), SettingsError> {
        let enc = &self.encoder;
        for (i, dir) in enc.models.iter().enumerate() {
            if !dir.join("model.toml").is_file() {
                return Err(SettingsError::invalid(
                    format!("encoder.models[{i}]"),
                    format!("{} has no model.toml (run scripts/setup to export the default model)", dir.display()),
                ));
            }
        }
        if !enc.models.is_empty() {
            match &enc.ort_library {
                None => {
                    return Err(SettingsError::invalid(
                        "encoder.ort_library",
                        "models are configured but no ONNX Runtime library is (set it, or ORT_DYLIB_PATH; scripts/setup fetches one)",
                    ))
                }
                Some(p) if !p.is_file() => {
                    return Err(SettingsError::invalid("encoder.ort_library", format!("{} does not exist", p.display())))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// `[search]`: the request bounds.
    fn validate_search(&self) -> Result<(), SettingsError> {
        let q = &self.search;
        for (key, v) in [
            ("search.max_size", q.max_size),
            ("search.max_k", q.max_k),
            ("search.max_num_candidates", q.max_num_candidates),
            ("search.max_query_chars", q.max_query_chars),
            ("search.default_k", q.default_k),
            ("search.num_candidates_factor", q.num_candidates_factor),
        ] {
            if v == 0 {
                return Err(SettingsError::invalid(key, "must be at least 1"));
            }
        }
        if q.default_k > q.max_k {
            return Err(SettingsError::invalid(
                "search.default_k",
                format!("must not exceed search.max_k ({})", q.max_k),
            ));
        }
        if q.max_k > q.max_num_candidates || q.max_num_candidates > 10_000 {
            return Err(SettingsError::invalid(
                "search.max_num_candidates",
                "must be at least search.max_k and at most 10000 (the engines' own limit)",
            ));
        }
        Ok(())
    }

    /// `ingest.pipelines`: every pipeline file parses, and its models are configured.
    fn validate_ingest(&self) -> Result<(), SettingsError> {
        let enc = &self.encoder;
        for (i, file) in self.ingest.pipelines.iter().enumerate() {
            crate::types::pipeline::Pipeline::load(file)
                .map_err(|e| SettingsError::invalid(format!("ingest.pipelines[{i}]"), e))?;
        }
        let w = self.ingest.watch_interval;
        if w < std::time::Duration::from_millis(100) || w > std::time::Duration::from_secs(300) {
            return Err(SettingsError::invalid("ingest.watch_interval", "must be between 100ms and 5m"));
        }
        if !self.ingest.pipelines.is_empty() && enc.models.is_empty() {
            return Err(SettingsError::invalid("ingest.pipelines", "pipelines need their models in encoder.models"));
        }
        Ok(())
    }

    /// `[encoder]`: execution providers, threads, batch and queue sizes.
    fn validate_encoder_limits(&self) -> Result<(), SettingsError> {
        let enc = &self.encoder;
        if enc.execution_providers.is_empty() {
            return Err(SettingsError::invalid("encoder.execution_providers", "list at least one of cuda, cpu"));
        }
        if enc.require_gpu && !enc.execution_providers.contains(&Provider::Cuda) {
            return Err(SettingsError::invalid(
                "encoder.require_gpu",
                "requires \"cuda\" in encoder.execution_providers",
            ));
        }
        for (key, v) in [
            ("encoder.inter_threads", enc.inter_threads),
            ("encoder.sessions_per_model", enc.sessions_per_model),
            ("encoder.max_batch_tokens", enc.max_batch_tokens),
            ("encoder.max_batch_requests", enc.max_batch_requests),
            ("encoder.queue_capacity", enc.queue_capacity),
            ("encoder.max_inputs_per_request", enc.max_inputs_per_request),
            ("encoder.max_input_chars", enc.max_input_chars),
        ] {
            if v == 0 {
                return Err(SettingsError::invalid(key, "must be at least 1"));
            }
        }
        if enc.max_inputs_per_request > enc.queue_capacity {
            return Err(SettingsError::invalid(
                "encoder.max_inputs_per_request",
                format!("must not exceed encoder.queue_capacity ({})", enc.queue_capacity),
            ));
        }
        Ok(())
    }

    /// `log.level` is a filter `tracing` accepts.
    fn validate_log(&self) -> Result<(), SettingsError> {
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|err| SettingsError::invalid("log.level", format!("`{}`: {err}", self.log.level)))?;
        Ok(())
    }
}

fn positive(key: &str, d: Duration) -> Result<(), SettingsError> {
    if d.is_zero() {
        Err(SettingsError::invalid(key, "must be longer than zero"))
    } else {
        Ok(())
    }
}
