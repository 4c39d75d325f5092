//! The crate's floors, checked from its own `crate::` paths: every top-level module may use only
//! modules listed below it in [`LAYERS`], so there is no import circle between top-level modules
//! and nothing calls up (the library never calls the commands). Reads `src/`; no engine needed.
//!
//! A new top-level module must be placed in [`LAYERS`]; a change that makes a module use one
//! above it fails here with both files named. A function of `src/` longer than
//! [`MAX_FN_LINES`] fails here too, named with its file and line.

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

/// Longest a function of `src/` may run (its signature to its closing brace), tests left out:
/// past this, split it where a name explains the piece.
const MAX_FN_LINES: usize = 80;

/// `(name, first line, lines)` of every function in a source text up to its `#[cfg(test)]`;
/// a function ends at the first `}` line at its own indentation.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().take_while(|l| l.trim_end() != "#[cfg(test)]").collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        let mut rest = trimmed;
        for word in ["pub(crate) ", "pub(super) ", "pub ", "const ", "async ", "unsafe "] {
            rest = rest.strip_prefix(word).unwrap_or(rest);
        }
        let Some(sig) = rest.strip_prefix("fn ") else { continue };
        let name: String = sig.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        // the body opens on the first line ending in `{` (a one-line body ends in `}`); a
        // declaration without a body (a trait's) ends in `;`
        let ends = |j: usize| lines[j].trim_end().ends_with(['{', '}', ';']);
        let Some(open) = (i..lines.len()).find(|&j| ends(j)) else { continue };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = if lines[open].trim_end().ends_with('}') {
            open
        } else {
            (open + 1..lines.len()).find(|&j| lines[j].trim_end() == format!("{indent}}}")).unwrap_or(lines.len() - 1)
        };
        out.push((name, i + 1, close - i + 1));
    }
    out
}

#[test]
fn the_function_scan_sees_bodies_and_skips_declarations_and_tests() {
    let text = "pub fn a(\n    x: u8,\n) -> u8 {\n    x\n}\ntrait T {\n    fn b(&self);\n}\nimpl S {\n    pub(crate) async fn c(&self) {\n        if x {\n        }\n    }\n    fn e() -> u8 { 1 }\n}\n#[cfg(test)]\nfn d() {\n}\n";
    let found: Vec<(String, usize, usize)> = functions(text);
    assert_eq!(found, [("a".to_string(), 1, 5), ("c".to_string(), 10, 4), ("e".to_string(), 14, 1)]);
}

#[test]
fn no_function_runs_past_the_limit() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long = Vec::new();
    let mut seen = 0;
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (name, line, n) in functions(&text) {
            seen += 1;
            if n > MAX_FN_LINES {
                long.push(format!("{}:{line} `{name}` runs {n} lines", file.display()));
            }
        }
    }
    assert!(seen > 300, "the scan found only {seen} functions: is it still reading src/?");
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines; split them where a name explains the piece:\n{long:#?}"
    );
}
