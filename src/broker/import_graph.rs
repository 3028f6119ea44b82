//! A test of the broker's import graph: the shape `processor → services → store/ha → runtime`
//! holds only if nothing below imports what sits above it, so this walks the source.
//!
//! How it works: every `src/broker/**/*.rs` file is a node (a `mod.rs` stands for its
//! directory's module). Comments are dropped; every path that starts with `crate::broker::`,
//! with `super::` (resolved against the file's own module) or, in a file that has child
//! modules, with a child's name (its re-exports and calls; `mod x;` lines are declarations,
//! not edges) is resolved to the longest module prefix it names, `use` groups
//! (`{a::B, c}`) item by item and `self` in a group as the group's module. Each such path is
//! an edge from the file to that module. Paths through a `use` alias of a module (`use
//! crate::broker::processor; … processor::x`) are not followed.
//!
//! What it asserts:
//! - nothing names `Shard` but the wiring (`shard.rs` and the broker root, which starts the
//!   shards and their background tasks): processors, replication, the schedulers and the
//!   services take the services they need, so no `impl Shard` block grows outside `shard.rs`;
//! - the mesh protocol and the services never import a processor or `shard.rs`;
//! - the graph has no cycle, with nothing set aside (issue 17's last legacy module,
//!   `replication`, became functions over services).

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    /// The wiring: allowed to name `Shard`.
    const WIRING: &[&str] = &["", "shard"];

    /// Drops `//` comments (doc comments included), except on a line where a string starts
    /// before the `//` (a URL in a string): good enough for this crate's sources.
    fn strip_comments(text: &str) -> String {
        text.lines()
            .map(|line| match line.find("//") {
                Some(at) if !line[..at].contains('"') => &line[..at],
                _ => line,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn module_of(rel: &Path) -> String {
        let s = rel.to_string_lossy().replace('\\', "/");
        let s = s.strip_suffix(".rs").unwrap_or(&s).to_string();
        match s.strip_suffix("/mod") {
            Some(dir) => dir.to_string(),
            None if s == "mod" => String::new(),
            None => s,
        }
    }

    fn files(dir: &Path, root: &Path, out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).expect("src/broker is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                files(&path, root, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(root).expect("under src/broker");
                let module = module_of(rel);
                if module == "import_graph" {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("a source file");
                // A file's unit tests (at its end, by this crate's habit) are not its imports;
                // their `super` is the file itself.
                let text = text
                    .split("#[cfg(test)]\nmod tests")
                    .next()
                    .unwrap_or_default();
                out.insert(module, strip_comments(text));
            }
        }
    }

    fn join(base: &str, rest: &str) -> String {
        match (base.is_empty(), rest.is_empty()) {
            (true, _) => rest.to_string(),
            (_, true) => base.to_string(),
            _ => format!("{base}/{rest}"),
        }
    }

    /// The longest known module that `segments` (relative to the broker) starts with.
    fn resolve(segments: &[&str], modules: &BTreeSet<String>) -> Option<String> {
        (0..=segments.len()).rev().find_map(|n| {
            let m = segments[..n].join("/");
            modules.contains(&m).then_some(m)
        })
    }

    fn parent(module: &str) -> String {
        module
            .rsplit_once('/')
            .map_or(String::new(), |(p, _)| p.to_string())
    }

    fn is_ident(c: char) -> bool {
        c.is_ascii_alphanumeric() || c == '_'
    }

    /// Paths that start at `at` in `text`: `a::b::c` or `a::{x::y, z}` expanded.
    fn paths_at(text: &str, at: usize) -> Vec<String> {
        let rest = &text[at..];
        let head_len = rest
            .find(|c: char| !(is_ident(c) || c == ':'))
            .unwrap_or(rest.len());
        let head = &rest[..head_len];
        if rest[head_len..].starts_with('{') && (head.is_empty() || head.ends_with("::")) {
            let body = &rest[head_len + 1..];
            let (mut depth, mut end) = (0, body.len());
            for (i, c) in body.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        end = i;
                        break;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            let items = &body[..end];
            let mut out = Vec::new();
            let (mut depth, mut start) = (0, 0);
            for (i, c) in items.char_indices().chain([(items.len(), ',')]) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let item = items[start..i].trim();
                        start = i + 1;
                        let item: String = item
                            .chars()
                            .take_while(|c| is_ident(*c) || *c == ':')
                            .collect();
                        match item.as_str() {
                            "" => {}
                            "self" if head.is_empty() => {}
                            "self" => out.push(head.trim_end_matches("::").to_string()),
                            _ => out.push(format!("{head}{item}")),
                        }
                    }
                    _ => {}
                }
            }
            return out;
        }
        let path = head.trim_end_matches("::");
        match path.is_empty() {
            true => Vec::new(),
            false => vec![path.to_string()],
        }
    }

    /// Every module `text` (of module `me`) refers to.
    fn edges(me: &str, text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
        let children: Vec<&String> = modules
            .iter()
            .filter(|m| !m.is_empty() && parent(m) == me)
            .collect();
        let mut out = BTreeSet::new();
        for line in text.lines() {
            if line
                .trim_start()
                .trim_start_matches("pub ")
                .trim_start_matches("pub(crate) ")
                .starts_with("mod ")
            {
                continue;
            }
            let mut i = 0;
            while i < line.len() {
                let rest = &line[i..];
                let boundary = line[..i]
                    .chars()
                    .next_back()
                    .is_none_or(|c| !is_ident(c) && c != ':');
                let c = rest.chars().next().expect("in the line");
                if !boundary || !is_ident(c) {
                    i += c.len_utf8();
                    continue;
                }
                let word_len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
                let word = &rest[..word_len];
                let base = if rest.starts_with("crate::broker::") {
                    Some((String::new(), "crate::broker::".len()))
                } else if word == "super" && rest[word_len..].starts_with("::") {
                    let mut module = me.to_string();
                    let mut skip = 0;
                    while rest[skip..].starts_with("super::") {
                        module = parent(&module);
                        skip += "super::".len();
                    }
                    Some((module, skip))
                } else if rest[word_len..].starts_with("::")
                    && children.iter().any(|m| m.rsplit('/').next() == Some(word))
                {
                    Some((me.to_string(), 0))
                } else {
                    None
                };
                match base {
                    Some((module, skip)) => {
                        for path in paths_at(line, i + skip) {
                            let full = join(&module, &path.replace("::", "/"));
                            let segments: Vec<&str> =
                                full.split('/').filter(|s| !s.is_empty()).collect();
                            if let Some(target) = resolve(&segments, modules) {
                                if target != me {
                                    out.insert(target);
                                }
                            }
                        }
                        i += rest
                            .find(|c: char| !(is_ident(c) || c == ':' || c == '{'))
                            .unwrap_or(rest.len())
                            .max(1);
                    }
                    None => i += word_len.max(1),
                }
            }
        }
        out
    }

    fn names_shard(text: &str) -> bool {
        text.match_indices("Shard").any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + "Shard".len()..].chars().next();
            before.is_none_or(|c| !is_ident(c)) && after.is_none_or(|c| !is_ident(c))
        })
    }

    /// A cycle in `graph` (a list of modules, the first repeated at the end), if any.
    fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
        fn visit(
            node: &str,
            graph: &BTreeMap<String, BTreeSet<String>>,
            state: &mut BTreeMap<String, u8>,
            stack: &mut Vec<String>,
        ) -> Option<Vec<String>> {
            state.insert(node.to_string(), 1);
            stack.push(node.to_string());
            for next in graph.get(node).into_iter().flatten() {
                match state.get(next.as_str()).copied().unwrap_or(0) {
                    0 => {
                        if let Some(cycle) = visit(next, graph, state, stack) {
                            return Some(cycle);
                        }
                    }
                    1 => {
                        let from = stack.iter().position(|n| n == next).expect("on the stack");
                        let mut cycle = stack[from..].to_vec();
                        cycle.push(next.clone());
                        return Some(cycle);
                    }
                    _ => {}
                }
            }
            stack.pop();
            state.insert(node.to_string(), 2);
            None
        }
        let mut state = BTreeMap::new();
        for node in graph.keys() {
            if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
                if let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new()) {
                    return Some(cycle);
                }
            }
        }
        None
    }

    fn broker_graph() -> (BTreeMap<String, String>, BTreeMap<String, BTreeSet<String>>) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/broker");
        let mut sources = BTreeMap::new();
        files(&root, &root, &mut sources);
        let modules: BTreeSet<String> = sources.keys().cloned().collect();
        let graph = sources
            .iter()
            .map(|(m, text)| (m.clone(), edges(m, text, &modules)))
            .collect();
        (sources, graph)
    }

    #[test]
    fn the_parser_reads_groups_super_and_children() {
        let modules: BTreeSet<String> = ["", "a", "a/b", "a/c", "d"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let text = "use super::c::X;\nuse crate::broker::{d, a::b::{self, Y}};\n// crate::broker::a::c::Z\nlet x = crate::broker::d::f();";
        let got = edges("a/b", &strip_comments(text), &modules);
        assert_eq!(got, ["a/c", "d"].iter().map(|s| s.to_string()).collect());
        let got = edges("a", "mod b;\npub use b::Q;\nc::run();", &modules);
        assert_eq!(got, ["a/b", "a/c"].iter().map(|s| s.to_string()).collect());
        let mut cyclic = BTreeMap::new();
        cyclic.insert("x".to_string(), BTreeSet::from(["y".to_string()]));
        cyclic.insert("y".to_string(), BTreeSet::from(["x".to_string()]));
        assert!(find_cycle(&cyclic).is_some());
        cyclic.insert("y".to_string(), BTreeSet::new());
        assert!(find_cycle(&cyclic).is_none());
        assert!(names_shard("impl Shard {") && !names_shard("ShardStore ShardMesh"));
    }

    #[test]
    fn only_the_wiring_names_shard() {
        let (sources, _) = broker_graph();
        let naming: Vec<&str> = sources
            .iter()
            .filter(|(m, text)| !WIRING.contains(&m.as_str()) && names_shard(text))
            .map(|(m, _)| m.as_str())
            .collect();
        assert!(
            naming.is_empty(),
            "these modules name Shard; take services instead: {naming:?}"
        );
    }

    #[test]
    fn the_mesh_protocol_and_the_services_import_nothing_above_them() {
        let (_, graph) = broker_graph();
        let above = |m: &str| m == "shard" || m.starts_with("processor");
        for (module, targets) in &graph {
            if module == "mesh_proto" || module.starts_with("services") {
                let wrong: Vec<_> = targets.iter().filter(|t| above(t)).collect();
                assert!(wrong.is_empty(), "{module} imports {wrong:?}");
            }
        }
    }

    #[test]
    fn the_broker_has_no_import_cycle() {
        let (_, graph) = broker_graph();
        // The walk sees the wiring's and replication's imports (the test is not vacuous).
        assert!(graph["shard"].contains("replication"));
        assert!(graph["replication"].contains("services/replication"));
        assert_eq!(find_cycle(&graph), None, "an import cycle in src/broker");
    }
}
