//! Issue 13: no module of the binary imports a module that imports it back.
//! The graph is read from the sources: every `crate::NAME` path in a file
//! (`use crate::…`, `crate::…::f()`) is an edge from the file's top-level
//! module (`config/validate.rs` is `config`) to `NAME`. Any cycle fails.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn module_of(rel: &Path) -> String {
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            if p.extension().is_none_or(|x| x != "rs") {
                continue;
            }
            let rel = p.strip_prefix(&src).unwrap();
            let from = module_of(rel);
            if from == "main" || from == "lib" {
                continue;
            }
            // Code only: comments may name modules freely.
            let text: String = std::fs::read_to_string(&p)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            let mut rest = text.as_str();
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != from {
                    graph.entry(from.clone()).or_default().insert(name);
                }
            }
            graph.entry(from).or_default();
        }
    }
    graph
}

/// Cycles tolerated: none (the last, export.rs <-> flowlog.rs, went with
/// flow export into its own crate).
const KNOWN: &[(&str, &str)] = &[];

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let g = edges();
    assert!(
        g.contains_key("config") && g.contains_key("capture"),
        "{g:?}"
    );
    // Depth-first search for a cycle, reporting it.
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == n) {
            panic!("import cycle: {} -> {n}", path[i..].join(" -> "));
        }
        if done.contains(n) {
            return;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if KNOWN.contains(&(n, m.as_str())) {
                continue;
            }
            visit(g, m, path, done);
        }
        path.pop();
        done.insert(n.to_string());
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        visit(&g, n, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_graph_sees_imports() {
    // The checker itself: the edges it must find are there.
    let g = edges();
    assert!(g["config"].contains("cli"), "{g:?}");
    assert!(g["capture"].contains("config"), "{g:?}");
    assert!(g["summary"].contains("capture"), "{g:?}");
    assert!(!g["cli"].contains("config"), "{g:?}");
}
