//! The shape of the code, checked: no circle of imports between modules,
//! and no function over 80 lines without a reason in a comment. Both are
//! read from `src/` as text (a coarse scan, good enough for this code's
//! plain `use crate::...` and `super::...` paths).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every source file under src/, by module path (`report::format::csv`;
/// the crate root is "").
fn modules() -> BTreeMap<String, PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(&src) {
        let path = entry.unwrap().into_path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(&src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into()).collect();
        if matches!(
            parts.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            parts.pop();
        }
        out.insert(parts.join("::"), path);
    }
    out
}

/// The source without its `#[cfg(test)] mod tests` (tests may import freely).
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Paths such as `a::b::c`, `a::{b, c::d}` after `prefix`, as lists.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        let head: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let mut base: Vec<String> = head
            .split("::")
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let after = &rest[head.len()..];
        if head.ends_with("::") && after.starts_with('{') {
            let group = &after[1..after.find('}').unwrap_or(after.len())];
            for item in group.split([',', '{', ' ', '\n']) {
                let first = item.split("::").next().unwrap_or("").trim();
                if !first.is_empty() && first != "self" {
                    let mut path = base.clone();
                    path.push(first.to_string());
                    out.push(path);
                }
            }
        }
        if !base.is_empty() {
            out.push(std::mem::take(&mut base));
        }
    }
    out
}

/// The longest module path that `path` starts with.
fn resolve(path: &[String], known: &BTreeMap<String, PathBuf>) -> Option<String> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].join("::"))
        .find(|m| known.contains_key(m))
}

fn is_ancestor(a: &str, b: &str) -> bool {
    a.is_empty() || b.starts_with(&format!("{a}::"))
}

/// Module -> modules it uses, leaving out a folder's mod.rs and its own
/// files using each other (a folder is one concept: a trait in mod.rs,
/// one implementation per file, as `report/format` and `kernels/simd`).
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let known = modules();
    let mut graph = BTreeMap::new();
    for (module, path) in &known {
        let code = code_of(path);
        let here: Vec<String> = module.split("::").map(String::from).collect();
        let is_folder = path.ends_with("mod.rs");
        let parent: Vec<String> = here[..here.len().saturating_sub(1)].to_vec();
        let mut uses = BTreeSet::new();
        for p in paths_after(&code, "crate::") {
            uses.extend(resolve(&p, &known));
        }
        for p in paths_after(&code, "super::") {
            let full: Vec<String> = parent.iter().chain(&p).cloned().collect();
            uses.extend(resolve(&full, &known));
        }
        if is_folder {
            for p in paths_after(&code, "") {
                let full: Vec<String> = here.iter().chain(&p).cloned().collect();
                uses.extend(resolve(&full, &known));
            }
        }
        uses.retain(|u| u != module && !is_ancestor(u, module) && !is_ancestor(module, u));
        graph.insert(module.clone(), uses);
    }
    graph
}

/// A circle through `start`, if any: the modules along it.
fn circle_from(start: &str, graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![(start.to_string(), vec![start.to_string()])];
    let mut seen = BTreeSet::new();
    while let Some((at, trail)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                return Some(trail);
            }
            if seen.insert(next.clone()) {
                let mut t = trail.clone();
                t.push(next.clone());
                stack.push((next.clone(), t));
            }
        }
    }
    None
}

#[test]
fn no_two_modules_import_each_other_even_through_others() {
    let graph = import_graph();
    assert!(graph.contains_key("config::schema") && graph["commands::run"].contains("config"));
    let circles: Vec<String> = graph
        .keys()
        .filter_map(|m| circle_from(m, &graph))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

/// A function may be longer with its reason in the comment above it,
/// on a line that says `Long:`.
#[test]
fn no_function_is_over_80_lines_without_a_reason() {
    let mut long = Vec::new();
    for path in modules().values() {
        let text = std::fs::read_to_string(path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let Some(at) = words.iter().position(|w| *w == "fn") else {
                continue;
            };
            if line.trim_start().starts_with("//") || line.trim_end().ends_with(';') {
                continue;
            }
            let before = &words[..at];
            if !before.iter().all(|w| {
                [
                    "pub",
                    "pub(crate)",
                    "pub(super)",
                    "const",
                    "unsafe",
                    "async",
                ]
                .contains(w)
            }) {
                continue;
            }
            let (mut depth, mut opened, mut end) = (0i32, false, i);
            for (j, l) in lines.iter().enumerate().skip(i) {
                for c in l.chars() {
                    match c {
                        '{' => (depth, opened) = (depth + 1, true),
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                if opened && depth == 0 {
                    end = j;
                    break;
                }
            }
            let reason = lines[i.saturating_sub(4)..i]
                .iter()
                .any(|l| l.contains("Long:"));
            if end - i + 1 > 80 && !reason {
                long.push(format!(
                    "{}:{} ({} lines)",
                    path.display(),
                    i + 1,
                    end - i + 1
                ));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over 80 lines:\n{}",
        long.join("\n")
    );
}
