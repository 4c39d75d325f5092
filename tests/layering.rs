//! The crate's floors, checked from its own `crate::` paths: every top-level module may use only
//! modules listed below it in [`LAYERS`], so there is no import circle between top-level modules
//! and nothing calls up (the library never calls the commands). Reads `src/`; no engine needed.
//!
//! A new top-level module must be placed in [`LAYERS`]; a change that makes a module use one
//! above it fails here with both files named.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Bottom first. A module may use the ones before it, never the ones after it.
const LAYERS: &[&str] = &[
    "error",
    "types",
    "settings",
    "telemetry",
    "engine",
    "encoder",
    "query",
    "ingest",
    "search",
    "reindex",
    "setup",
    "http",
    "commands",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/query/build.rs` → `query`).
fn module_of(src: &Path, file: &Path) -> String {
    let first = file.strip_prefix(src).unwrap().components().next().unwrap();
    first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_string()
}

/// The top-level modules a source text names through `crate::` paths, comments left out;
/// `use crate::{a::X, b::Y}` names both `a` and `b`.
fn used_modules(text: &str) -> Vec<String> {
    let code: String = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for part in group[..end].split(',') {
                let head = part.trim().trim_start_matches('{').split("::").next().unwrap_or("").trim();
                if !head.is_empty() {
                    out.push(head.to_string());
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            out.push(name);
        }
    }
    out
}

#[test]
fn the_used_parsing_sees_groups_and_paths() {
    let text = "use crate::{engine::path::EnginePath, types::name::IndexName};\n// crate::commands\nlet x = crate::query::build::x();";
    assert_eq!(used_modules(text), ["engine", "types", "query"]);
}

#[test]
fn top_level_modules_only_use_modules_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    let mut wrong: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = 0;
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(own) = rank(&module) else {
            wrong
                .entry(module.clone())
                .or_default()
                .push(format!("{} is not in LAYERS: place it there", file.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in used_modules(&text) {
            if used == module {
                continue;
            }
            seen += 1;
            match rank(&used) {
                Some(r) if r < own => {}
                Some(_) => wrong
                    .entry(module.clone())
                    .or_default()
                    .push(format!("{} uses crate::{used}, which is not below `{module}`", file.display())),
                None => {}
            }
        }
    }
    assert!(seen > 50, "the check found only {seen} crate:: uses: is it still reading src/?");
    assert!(wrong.is_empty(), "layering broken (bottom first: {LAYERS:?}):\n{wrong:#?}");
}
