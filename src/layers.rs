//! The intended layering, once: each top-level module with the modules it may use
//! (`crate::...`, in code and tests alike), lowest first, so that a module uses only modules
//! above it in the list and no cycle can form. The test reads `src/`, fails on an edge the
//! table does not allow or on a cycle (naming it), and checks that `lib.rs` shows the table.

/// Every top-level module and what it may use, lowest first.
pub const LAYERS: &[(&str, &[&str])] = &[
    ("sandbox", &[]),
    ("spec", &["sandbox"]),
    ("agent", &["spec"]),
    ("permissions", &[]),
    ("metrics", &["sandbox"]),
    ("telemetry", &[]),
    ("healthcheck", &[]),
    ("admission", &["metrics", "sandbox", "spec"]),
    ("config", &["admission", "metrics", "sandbox", "spec"]),
    ("cli", &["agent", "config"]),
    ("k8s", &["metrics", "permissions", "sandbox", "spec"]),
    (
        "cluster",
        &["admission", "config", "k8s", "metrics", "sandbox", "spec"],
    ),
    ("tasks", &["cluster", "k8s", "spec"]),
    (
        "fleet",
        &["admission", "cluster", "config", "metrics", "sandbox"],
    ),
    (
        "gateway",
        &[
            "cluster", "config", "fleet", "k8s", "metrics", "sandbox", "spec",
        ],
    ),
    (
        "api",
        &[
            "admission",
            "cluster",
            "config",
            "fleet",
            "k8s",
            "metrics",
            "sandbox",
        ],
    ),
    (
        "doctor",
        &["cli", "cluster", "config", "k8s", "permissions", "spec"],
    ),
    (
        "server",
        &[
            "admission",
            "api",
            "cluster",
            "config",
            "fleet",
            "gateway",
            "k8s",
            "metrics",
            "spec",
            "tasks",
        ],
    ),
];

#[cfg(test)]
mod tests {
    use std::{
        collections::{BTreeMap, BTreeSet},
        path::{Path, PathBuf},
    };

    use super::LAYERS;

    /// The modules a piece of source names after `crate::`, also inside `use crate::{a, b}`.
    fn used_modules(source: &str) -> Vec<String> {
        let mut used = Vec::new();
        let bytes = source.as_bytes();
        let mut from = 0;
        while let Some(at) = source[from..].find("crate::") {
            let mut i = from + at + "crate::".len();
            let word = |i: usize| {
                source[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            };
            if bytes.get(i) == Some(&b'{') {
                // Each item of the group at depth one names a module.
                let mut depth = 0;
                let mut expect_item = true;
                while i < bytes.len() {
                    match bytes[i] {
                        b'{' => {
                            depth += 1;
                            expect_item = depth == 1;
                        }
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        b',' if depth == 1 => expect_item = true,
                        c if expect_item
                            && depth == 1
                            && (c.is_ascii_alphabetic() || c == b'_') =>
                        {
                            used.push(word(i));
                            expect_item = false;
                        }
                        _ => {}
                    }
                    i += 1;
                }
            } else {
                used.push(word(i));
            }
            from = i;
        }
        used
    }

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

    /// Every edge between top-level modules, with the files that make it.
    fn edges() -> BTreeMap<(String, String), BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let relative = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let module = relative.split('/').next().unwrap().trim_end_matches(".rs");
            if ["lib", "main", "layers"].contains(&module) {
                continue;
            }
            for used in used_modules(&std::fs::read_to_string(&file).unwrap()) {
                if used != module {
                    edges
                        .entry((module.to_string(), used))
                        .or_default()
                        .insert(relative.clone());
                }
            }
        }
        edges
    }

    /// A cycle among the edges, if any, as `a -> b -> a`.
    fn cycle(edges: &BTreeSet<(String, String)>) -> Option<String> {
        fn visit(
            at: &str,
            edges: &BTreeSet<(String, String)>,
            path: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<String> {
            if let Some(start) = path.iter().position(|m| m == at) {
                let mut shown = path[start..].to_vec();
                shown.push(at.to_string());
                return Some(shown.join(" -> "));
            }
            if done.contains(at) {
                return None;
            }
            path.push(at.to_string());
            for (_, to) in edges.iter().filter(|(from, _)| from == at) {
                if let Some(found) = visit(to, edges, path, done) {
                    return Some(found);
                }
            }
            path.pop();
            done.insert(at.to_string());
            None
        }
        let mut done = BTreeSet::new();
        edges
            .iter()
            .find_map(|(from, _)| visit(from, edges, &mut Vec::new(), &mut done))
    }

    #[test]
    fn the_parser_sees_every_form_of_use() {
        let source = "use crate::{\n    a::B,\n    b::{c, d::{E, F}},\n    c,\n};\nfn x() \
            { crate::d::e(); }";
        assert_eq!(used_modules(source), ["a", "b", "c", "d"]);
        let cyclic = BTreeSet::from([
            ("a".to_string(), "b".to_string()),
            ("b".to_string(), "c".to_string()),
            ("c".to_string(), "a".to_string()),
        ]);
        assert_eq!(cycle(&cyclic).as_deref(), Some("a -> b -> c -> a"));
    }

    #[test]
    fn the_table_lists_each_module_after_what_it_uses() {
        for (i, (module, uses)) in LAYERS.iter().enumerate() {
            for used in *uses {
                assert!(
                    LAYERS[..i].iter().any(|(m, _)| m == used),
                    "{module} may use {used}, which is not listed before it"
                );
            }
        }
    }

    #[test]
    fn every_use_between_modules_is_one_the_table_allows() {
        let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
        let edges = edges();
        let forbidden: Vec<String> = edges
            .iter()
            .filter(|((from, to), _)| {
                !allowed
                    .get(from.as_str())
                    .is_some_and(|uses| uses.contains(&to.as_str()))
            })
            .map(|((from, to), files)| format!("{from} -> {to} (in {files:?})"))
            .collect();
        assert!(
            forbidden.is_empty(),
            "uses the layering (src/layers.rs) does not allow:\n  {}",
            forbidden.join("\n  ")
        );
        let pairs = edges.keys().cloned().collect();
        assert_eq!(cycle(&pairs), None, "a cycle between modules");
    }

    #[test]
    fn lib_rs_shows_the_table() {
        let mut table = String::from("//! | module | may use |\n//! | --- | --- |\n");
        for (module, uses) in LAYERS.iter().rev() {
            table.push_str(&format!("//! | `{module}` | {} |\n", uses.join(", ")));
        }
        let lib = include_str!("lib.rs");
        assert!(
            lib.contains(&table),
            "lib.rs must show the layering of src/layers.rs, highest first:\n{table}"
        );
    }
}
