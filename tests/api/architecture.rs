//! The layers of `src/` (docs/architecture.md), checked: a module imports
//! only from its own layer and the layers below it (items of the crate root,
//! such as a constant in `lib.rs`, are the wiring's); no two modules, and no
//! two files of one module, depend on each other in a circle; only the feed
//! store touches the Cosmos SDK; only the HTTP edge (and the wiring and dev
//! stand-ins) touches axum.

use std::collections::{BTreeMap, BTreeSet};
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
    ("supervise", 5),
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

/// A file's module path: `src/api/health.rs` → `api::health`,
/// `src/api/mod.rs` → `api`, `src/lib.rs` → the root (empty).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "lib.rs" => {}
        _ => parts.push(last.trim_end_matches(".rs").to_owned()),
    }
    parts
}

/// The code without `//` comments (doc links are not dependencies of the
/// code) and without its test module.
fn code_only(text: &str) -> String {
    without_tests(text).lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

fn ident_at(code: &str, at: usize) -> &str {
    let end = code[at..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(code.len(), |n| at + n);
    &code[at..end]
}

/// The paths `code` names after `at` (just past `prefix::`): `a::b::c`,
/// or each of the names of a group `{a, b::c}` (one level).
fn paths_after(code: &str, at: usize) -> Vec<Vec<String>> {
    let mut path = Vec::new();
    let mut i = at;
    loop {
        let name = ident_at(code, i);
        if name.is_empty() {
            break;
        }
        path.push(name.to_owned());
        i += name.len();
        if code[i..].starts_with("::") {
            i += 2;
        } else {
            return vec![path];
        }
    }
    if !code[i..].starts_with('{') {
        return vec![path];
    }
    let end = code[i..].find('}').map_or(code.len(), |n| i + n);
    code[i + 1..end]
        .split(',')
        .filter_map(|item| {
            let first = ident_at(item.trim_start(), 0);
            (!first.is_empty() && first != "self").then(|| [path.clone(), vec![first.to_owned()]].concat())
        })
        .chain(std::iter::once(path.clone()))
        .collect()
}

/// Every module path `code` (of the file at module path `own`) refers to:
/// `crate::`, `super::`, `self::` paths and paths through its own child
/// modules (`mod x;` then `x::y`).
fn references(code: &str, own: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let children: BTreeSet<String> = code
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(str::to_owned)
        .collect();
    let bytes = code.as_bytes();
    let mut i = 0;
    while i < code.len() {
        let starts_word =
            i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_' || bytes[i - 1] == b':');
        let name = if starts_word { ident_at(code, i) } else { "" };
        if name.is_empty() {
            i += code[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        }
        let after = i + name.len();
        if code[after..].starts_with("::") {
            let mut base: Option<Vec<String>> = match name {
                "crate" => Some(Vec::new()),
                "self" => Some(own.to_vec()),
                "super" => Some(own[..own.len().saturating_sub(1)].to_vec()),
                child if children.contains(child) => Some([own, &[child.to_owned()]].concat()),
                _ => None,
            };
            let mut at = after + 2;
            if name == "super" {
                while code[at..].starts_with("super::") {
                    base.as_mut().unwrap().pop();
                    at += "super::".len();
                }
            }
            if let Some(base) = base {
                let at = if children.contains(name) { i } else { at };
                let base = if children.contains(name) { own.to_vec() } else { base };
                for path in paths_after(code, at) {
                    out.push([base.clone(), path].concat());
                }
            }
        }
        i = after;
    }
    out
}

/// The file a path lands in: the longest prefix of it that is a file's
/// module path (an item of `api/mod.rs` lands in `api`, one of `lib.rs` in
/// the root).
fn file_of<'a>(files: &'a BTreeSet<Vec<String>>, path: &[String]) -> &'a Vec<String> {
    (0..=path.len()).rev().find_map(|n| files.get(&path[..n])).expect("the root is a file")
}

/// One circle in `edges`, if there is one.
fn a_circle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        state: &mut BTreeMap<Vec<String>, u8>,
        stack: &mut Vec<Vec<String>>,
    ) -> Option<Vec<String>> {
        state.insert(node.clone(), 1);
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next) {
                Some(1) => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut circle: Vec<String> = stack[from..].iter().map(|n| n.join("::")).collect();
                    circle.push(next.join("::"));
                    return Some(circle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, edges, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if !state.contains_key(node) {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, edges, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

/// The library's files (not the binary's `main.rs` and its modules), each
/// with the files it refers to.
fn file_graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.retain(|p| !matches!(module_of(&src, p).as_str(), "main" | "progress"));
    let texts: Vec<(Vec<String>, String)> =
        paths.iter().map(|p| (module_path(&src, p), code_only(&std::fs::read_to_string(p).unwrap()))).collect();
    let files: BTreeSet<Vec<String>> = texts.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (own, code) in &texts {
        let targets = edges.entry(own.clone()).or_default();
        for path in references(code, own) {
            let target = file_of(&files, &path);
            if target != own {
                targets.insert(target.clone());
            }
        }
    }
    edges
}

fn layer_of_path(path: &[String]) -> u8 {
    let top = path.first().map_or("lib", String::as_str);
    layer(top).unwrap_or_else(|| panic!("{top} has no layer in LAYERS"))
}

/// A constant, function or type of the crate root (`crate::NAME`) is the
/// wiring's: a lower layer that names one imports upward.
#[test]
fn items_of_the_crate_root_and_of_upper_layers_are_not_named_below() {
    let edges = file_graph();
    assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 100, "the scan found the references");
    let mut violations = Vec::new();
    for (from, targets) in &edges {
        for to in targets {
            if layer_of_path(to) > layer_of_path(from) {
                violations.push(format!(
                    "{} names {}",
                    from.join("::"),
                    if to.is_empty() { "the crate root".into() } else { to.join("::") }
                ));
            }
        }
    }
    assert!(violations.is_empty(), "references pointing up:\n{}", violations.join("\n"));
}

/// No two modules depend on each other, in a circle of any length (two
/// modules of one layer included).
#[test]
fn modules_depend_on_each_other_in_no_circle() {
    let mut modules: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, targets) in file_graph() {
        let top = |p: &Vec<String>| p.first().map(|m| vec![m.clone()]).unwrap_or_default();
        let entry = modules.entry(top(&from)).or_default();
        entry.extend(targets.iter().map(top).filter(|t| *t != top(&from)));
    }
    // The crate root declares every module: it stands above them all.
    modules.remove(&Vec::new());
    assert_eq!(a_circle(&modules), None, "modules in a circle");
}

/// Inside one module, no two files depend on each other in a circle
/// (a child's use of its parent's items, the module's shared ground, is
/// not a dependency edge: the parent declares the child).
#[test]
fn the_files_of_a_module_depend_on_each_other_in_no_circle() {
    let mut inside: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, targets) in file_graph() {
        let same_module = |t: &Vec<String>| !from.is_empty() && t.first() == from.first();
        let is_ancestor = |t: &Vec<String>| from.starts_with(t);
        let entry = inside.entry(from.clone()).or_default();
        entry.extend(targets.into_iter().filter(|t| same_module(t) && !is_ancestor(t)));
    }
    assert_eq!(a_circle(&inside), None, "files of a module in a circle");
}

/// The lines of each function of `text` that is longer than `max` (its
/// name, first line, length), found by its braces: the body of a `fn` runs
/// from its first `{` to the `}` that balances it.
fn long_functions(text: &str, max: usize) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or_default();
        let Some(at) = code.find("fn ").filter(|at| *at == 0 || !is_ident_char(code[..*at].chars().next_back())) else {
            continue;
        };
        let name: String = code[at + 3..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() {
            continue;
        }
        let (mut depth, mut opened) = (0i64, false);
        for (j, body) in lines[i..].iter().enumerate() {
            let body = body.split("//").next().unwrap_or_default();
            if !opened && body.trim_end().ends_with(';') && !body.contains('{') {
                break;
            }
            for c in body.chars() {
                match c {
                    '{' => (depth, opened) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth <= 0 {
                if j + 1 > max {
                    out.push((name.clone(), i + 1, j + 1));
                }
                break;
            }
        }
    }
    out
}

fn is_ident_char(c: Option<char>) -> bool {
    c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A function a reader can hold at once: none in `src/` is over 100 lines.
#[test]
fn no_function_in_src_is_over_100_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut long = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (name, line, length) in long_functions(&text, 100) {
            long.push(format!("{}:{line} fn {name}: {length} lines", file.display()));
        }
    }
    assert!(files.len() > 50, "the scan found the sources ({})", files.len());
    let sample = "fn a() {\n".to_owned() + &"    x();\n".repeat(100) + "}\nfn b() {}\n";
    assert_eq!(long_functions(&sample, 100), vec![("a".to_owned(), 1, 102)], "the count itself");
    assert!(long.is_empty(), "functions over 100 lines:\n{}", long.join("\n"));
}
