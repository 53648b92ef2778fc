//! The module map holds: the top-level modules (one folder per capability) import each other
//! without cycles, and every folder says what it owns and must not touch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the other top-level modules its code (not its comments) names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel.iter().next().unwrap().to_str().unwrap();
        let module = first.trim_end_matches(".rs").to_string();
        if module == "lib" || module == "main" {
            continue;
        }
        let deps = graph.entry(module.clone()).or_default();
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let code = line.split("//").next().unwrap();
            for part in code.split("crate::").skip(1) {
                let name: String = part
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() && name != module {
                    deps.insert(name);
                }
            }
        }
    }
    graph
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let graph = imports();
    for m in ["acme", "dane", "publish", "zone", "dns", "daemon", "cli"] {
        assert!(graph.contains_key(m), "no module {m}: {graph:?}");
    }
    // Depth-first search for a back edge; report the cycle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[i..].join(" -> "));
        }
        if done.contains(m) {
            return;
        }
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done);
    }
    // The record producers reach the zone only through the sink.
    for producer in ["dane", "acme"] {
        for forbidden in ["zone", "dns", "config"] {
            assert!(
                !graph[producer].contains(forbidden),
                "{producer} imports {forbidden}; it must go through crate::publish"
            );
        }
    }
    // The key roll hands key sets to the zones through its own trait; it reads no config.
    for forbidden in ["publish", "config", "daemon"] {
        assert!(
            !graph["dnssec"].contains(forbidden),
            "dnssec imports {forbidden}; it must go through dnssec::KeyedZones"
        );
    }
}

#[test]
fn every_folder_says_what_it_owns_and_must_not_touch() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if !p.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(p.join("mod.rs")).unwrap();
        let doc: String = text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n")
            .to_lowercase();
        assert!(
            doc.contains("own"),
            "{}: no `//!` saying what it owns",
            p.display()
        );
        assert!(
            doc.contains("must not") || doc.contains("never"),
            "{}: no `//!` saying what it must not touch",
            p.display()
        );
    }
}

/// The daemon's heap is jemalloc with the options `src/main.rs` sets (one arena, freed pages
/// returned at once): jemalloc prints the options in effect when asked by its environment
/// variable, and would print its defaults (several arenas, 10 s decay) if the options symbol
/// were not picked up.
#[cfg(target_os = "linux")]
#[test]
fn the_heap_is_jemalloc_with_one_arena_that_returns_freed_pages_at_once() {
    let out = std::process::Command::new(crate::harness::BIN)
        .arg("--version")
        .env("_RJEM_MALLOC_CONF", "stats_print:true")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    for want in [
        "opt.narenas: 1\n",
        "opt.dirty_decay_ms: 0 ",
        "opt.muzzy_decay_ms: 0 ",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}
