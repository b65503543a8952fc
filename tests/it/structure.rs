//! The tree reads in flow order: no top-level module of `src/` imports, directly or
//! through others, a module that imports it (README "Layout", src/lib.rs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module of each file under `src/`, and the top-level modules it names as
/// `crate::<module>` outside comments.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).unwrap();
            let first = rel.iter().next().unwrap().to_string_lossy().into_owned();
            let module = first.trim_end_matches(".rs").to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let deps = graph.entry(module.clone()).or_default();
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                let mut rest = code;
                while let Some(at) = rest.find("crate::") {
                    rest = &rest[at + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() && name != module {
                        deps.insert(name);
                    }
                }
            }
        }
    }
    graph
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = imports();
    assert!(graph.len() > 10, "modules found: {:?}", graph.keys());
    // Depth-first search for a back edge; the cycle is named when one exists.
    fn visit<'a>(
        m: &'a str,
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| *p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m);
            panic!("import cycle: {}", cycle.join(" -> "));
        }
        path.push(m);
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, path, done);
        }
        path.pop();
        done.insert(m);
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
    // The flow order the README describes: the proxy feeds the mirror, never the reverse;
    // the config knows no runtime component.
    assert!(!graph["mirror"].contains("proxy"));
    for runtime in ["proxy", "mirror", "serve", "admin", "metrics", "feedback"] {
        assert!(
            !graph["config"].contains(runtime),
            "config imports {runtime}"
        );
    }
}
