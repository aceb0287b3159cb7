//! The layers of `src/` (docs/architecture.md), checked: a module imports
//! only from its own layer and the layers below it; no two files use each
//! other (a module's root aside); only the feed store touches the Cosmos
//! SDK; only the HTTP edge (and the wiring and dev stand-ins) touches axum.

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

/// A file's module path (`src/api/query.rs` → `["api", "query"]`,
/// `src/api/mod.rs` → `["api"]`, `src/lib.rs` → `[]`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

/// The file that defines `path` (the longest prefix of it that is a file
/// of `src/`).
fn file_of(src: &Path, path: &[String]) -> Option<PathBuf> {
    (0..=path.len()).rev().find_map(|n| {
        let prefix = path[..n].join("/");
        let candidates = if n == 0 {
            vec![src.join("lib.rs")]
        } else {
            vec![src.join(format!("{prefix}.rs")), src.join(prefix).join("mod.rs")]
        };
        candidates.into_iter().find(|c| c.is_file())
    })
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The module paths that `code` names after `at` (`a::b::{c, d::e}` →
/// `a::b::c`, `a::b::d`), relative to `base`.
fn paths_at(code: &str, at: usize, base: &[String]) -> Vec<Vec<String>> {
    let mut path = base.to_vec();
    let mut rest = &code[at..];
    loop {
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            return inner
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or_default())
                .filter(|first| !first.is_empty() && *first != "self")
                .map(|first| path.iter().cloned().chain([first.to_owned()]).collect())
                .collect();
        }
        let ident: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        if ident.is_empty() {
            return vec![path];
        }
        rest = &rest[ident.len()..];
        match ident.as_str() {
            "super" => {
                path.pop();
            }
            "self" => {}
            _ => path.push(ident),
        }
        match rest.strip_prefix("::") {
            Some(r) => rest = r,
            None => return vec![path],
        }
    }
}

/// The files of `src/` that `file` uses (through `crate::`, `super::`,
/// `self::` or a module it declares).
fn uses(src: &Path, file: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(file).unwrap();
    let code: String =
        without_tests(&text).lines().filter(|l| !l.trim_start().starts_with("//")).map(|l| format!("{l}\n")).collect();
    let me = module_path(src, file);
    let parent: Vec<String> = me[..me.len().saturating_sub(1)].to_vec();
    let children: Vec<String> = code
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let l = ["pub(crate) ", "pub(super) ", "pub "].iter().fold(l, |l, p| l.strip_prefix(p).unwrap_or(l));
            l.strip_prefix("mod ")?.strip_suffix(';').map(str::to_owned)
        })
        .collect();
    let mut roots: Vec<(String, Vec<String>)> =
        vec![("crate::".into(), vec![]), ("super::".into(), parent), ("self::".into(), me.clone())];
    roots.extend(children.iter().map(|c| (format!("{c}::"), me.clone())));
    let mut out = Vec::new();
    for (prefix, base) in &roots {
        for (i, _) in code.match_indices(prefix.as_str()) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(|c| is_ident(c) || c == ':') {
                continue;
            }
            // `crate::x` and `self::x` name x; `super::x`, x of the parent;
            // a child `c::x`, x in c.
            let start =
                if prefix == "crate::" || prefix == "self::" || prefix == "super::" { i + prefix.len() } else { i };
            for path in paths_at(&code, start, base) {
                if let Some(target) = file_of(src, &path).filter(|t| t != file) {
                    out.push(target);
                }
            }
        }
    }
    out
}

type Uses = std::collections::BTreeMap<PathBuf, Vec<PathBuf>>;

/// Depth-first from `file`; a file met again on the current `path` closes
/// a circle.
fn circles_from(
    file: &Path,
    uses: &Uses,
    path: &mut Vec<PathBuf>,
    done: &mut Vec<PathBuf>,
    out: &mut Vec<Vec<PathBuf>>,
) {
    if let Some(at) = path.iter().position(|p| p == file) {
        out.push(path[at..].iter().cloned().chain([file.to_path_buf()]).collect());
        return;
    }
    if done.iter().any(|d| d == file) {
        return;
    }
    done.push(file.to_path_buf());
    path.push(file.to_path_buf());
    for next in uses.get(file).into_iter().flatten() {
        circles_from(next, uses, path, done, out);
    }
    path.pop();
}

#[test]
fn no_file_uses_a_file_that_uses_it_back() {
    // A module's root (`mod.rs`, `lib.rs`) declares and wires its files,
    // which may use what it defines: uses of a root do not count. Any other
    // circle (two handler groups and the document, say) means the files are
    // one concern split in two, or one of them belongs lower.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.retain(|f| !f.ends_with("main.rs"));
    let is_root = |f: &Path| f.ends_with("mod.rs") || f.ends_with("lib.rs");
    let mut graph = Uses::new();
    for file in &files {
        let mut used: Vec<PathBuf> = uses(&src, file).into_iter().filter(|t| !is_root(t)).collect();
        used.sort();
        used.dedup();
        graph.insert(file.clone(), used);
    }
    assert!(graph.values().map(Vec::len).sum::<usize>() > 100, "the scan found the uses");
    let (mut done, mut circles) = (Vec::new(), Vec::new());
    for file in graph.keys() {
        circles_from(file, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    let named: Vec<String> = circles
        .iter()
        .map(|c| c.iter().map(|f| f.strip_prefix(&src).unwrap().display().to_string()).collect::<Vec<_>>().join(" -> "))
        .collect();
    assert!(named.is_empty(), "files that use each other:\n{}", named.join("\n"));
}
