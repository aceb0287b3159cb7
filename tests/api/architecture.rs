//! The layers of `src/` (docs/architecture.md), checked: a module imports
//! only from its own layer and the layers below it; only the feed store
//! touches the Cosmos SDK; only the HTTP edge (and the wiring and dev
//! stand-ins) touches axum.

use std::path::{Path, PathBuf};

/// Top-level modules by layer, bottom first.
const LAYERS: &[(&str, u8)] = &[
    ("domain", 0),
    ("config", 0),
    ("telemetry", 0),
    ("secrets", 0),
    ("feeds", 1),
    ("platform", 2),
    ("auth", 2),
    ("authz", 2),
    ("register", 2),
    ("webhooks", 2),
    ("read", 3),
    ("publish", 3),
    ("subscribe", 3),
    ("deliver", 3),
    ("import", 3),
    ("api", 4),
    ("localtest", 4),
    ("lib", 5),
    ("secrets_reload", 5),
    ("main", 6),
    ("progress", 6),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`src/feeds/reader.rs` → `feeds`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a file without its `#[cfg(test)]` module (tests may reach
/// anywhere).
fn without_tests(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    }
}

#[test]
fn modules_import_only_from_their_layer_and_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in &files {
        let module = module_of(&src, file);
        let own = layer(&module).unwrap_or_else(|| panic!("{} has no layer in LAYERS", file.display()));
        let text = std::fs::read_to_string(file).unwrap();
        let code = without_tests(&text);
        for prefix in ["crate::", "altinn_events::"] {
            for (i, _) in code.match_indices(prefix) {
                let name: String =
                    code[i + prefix.len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let Some(theirs) = layer(&name) else { continue };
                checked += 1;
                if theirs > own {
                    violations.push(format!("{} ({module}, layer {own}) uses {name} (layer {theirs})", file.display()));
                }
            }
        }
        // Lower layers use no HTTP-server types, and nothing but the feed
        // store uses the Cosmos SDK.
        if own <= 3 && (code.contains("axum::") || code.contains("tower_http::")) {
            violations.push(format!("{} ({module}) uses axum below the HTTP layer", file.display()));
        }
        if module != "feeds" && (code.contains("azure_data_cosmos") || code.contains("azure_core")) {
            violations.push(format!("{} ({module}) uses the Cosmos SDK outside src/feeds", file.display()));
        }
    }
    assert!(checked > 50, "the scan found the imports ({checked})");
    assert!(violations.is_empty(), "imports pointing up:\n{}", violations.join("\n"));
}
