//! `semantic-sidecar config check`: the effective configuration (defaults, file, environment
//! layered and validated by `Settings::load`) as TOML with secrets redacted. Owns only the
//! printing; every check is the settings module's.

use crate::settings::Settings;

/// Prints the effective configuration, secrets redacted.
pub fn check(settings: &Settings) {
    print!("{}", settings.to_redacted_toml());
}
