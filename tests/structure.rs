//! The code's shape, checked on every `cargo test`: no import circle between the source files
//! of any crate. Each crate's files are read as text: every path a file takes from its own
//! crate (`use crate::…`, `use super::…`, `crate::a::b::Name` in the code) is an arrow to the
//! file that defines the name (a module's file, or the file a re-export leads to). Test files
//! and `#[cfg(test)]` modules are left out: they sit beside what they test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One crate's source files by module path (`a::b`; the crate root is the empty path).
struct Crate {
    files: BTreeMap<String, PathBuf>,
    /// The names each module defines at its top level (items and child modules).
    defines: BTreeMap<String, BTreeSet<String>>,
    /// What each module imports or re-exports: name → the module path it comes from.
    reexports: BTreeMap<String, BTreeMap<String, String>>,
}

fn is_test_file(path: &Path) -> bool {
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    name == "tests"
        || name.ends_with("_tests")
        || name == "test_support"
        || path.components().any(|c| c.as_os_str() == "tests")
}

fn module_path(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") && !is_test_file(&path) {
            out.push(path);
        }
    }
}

/// The text of a file without its `#[cfg(test)]` items and its comments.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<i32> = None;
    let mut depth = 0i32;
    let mut pending_test = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("//") {
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        let opens = line.matches('{').count() as i32;
        let closes = line.matches('}').count() as i32;
        if pending_test {
            pending_test = false;
            if opens > closes {
                skip_depth = Some(depth);
            }
            depth += opens - closes;
            continue;
        }
        depth += opens - closes;
        if let Some(d) = skip_depth {
            if depth <= d {
                skip_depth = None;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The module path a path written in module `here` starts from (`crate::`, `super::`,
/// `self::`), and the rest of it; `None` for a path into another crate.
fn anchor<'a>(here: &str, path: &'a str) -> Option<(Vec<String>, &'a str)> {
    let mut base: Vec<String> = here
        .split("::")
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let mut rest = path;
    if let Some(r) = rest.strip_prefix("crate::") {
        base.clear();
        rest = r;
    } else if rest.starts_with("super::") {
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop()?;
            rest = r;
        }
    } else if let Some(r) = rest.strip_prefix("self::") {
        rest = r;
    } else {
        return None;
    }
    Some((base, rest))
}

impl Crate {
    fn read(src: &Path) -> Self {
        let mut paths = Vec::new();
        rust_files(src, &mut paths);
        let mut files = BTreeMap::new();
        let mut defines: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for path in paths {
            let module = module_path(src, &path);
            let text = code(&std::fs::read_to_string(&path).unwrap());
            let names = defines.entry(module.clone()).or_default();
            for line in text.lines() {
                // Top-level items only: no indentation.
                if line.starts_with(char::is_whitespace) {
                    continue;
                }
                let mut words = line.split_whitespace().peekable();
                while let Some(w) = words.peek() {
                    if w.starts_with("pub") || *w == "async" || *w == "unsafe" {
                        words.next();
                    } else {
                        break;
                    }
                }
                if let (Some(kind), Some(name)) = (words.next(), words.next()) {
                    let kinds = [
                        "fn",
                        "struct",
                        "enum",
                        "trait",
                        "type",
                        "const",
                        "static",
                        "mod",
                        "macro_rules!",
                    ];
                    if kinds.contains(&kind) {
                        names.insert(ident(name));
                    }
                }
            }
            files.insert(module, path);
        }
        let mut crate_ = Self {
            files,
            defines,
            reexports: BTreeMap::new(),
        };
        // Imports, which children see too (`use super::Name` may reach a parent's import):
        // a name a module imports leads to the module it comes from.
        let modules: Vec<String> = crate_.files.keys().cloned().collect();
        for module in modules {
            let text = code(&std::fs::read_to_string(&crate_.files[&module]).unwrap());
            for (path, name) in uses(&text) {
                let full = if path.starts_with("crate::")
                    || path.starts_with("super::")
                    || path.starts_with("self::")
                {
                    path.clone()
                } else {
                    format!("self::{path}")
                };
                if let Some(target) = crate_.module_of(&module, &full) {
                    crate_
                        .reexports
                        .entry(module.clone())
                        .or_default()
                        .insert(name, target);
                }
            }
        }
        crate_
    }

    /// The module a path written in `here` leads to (the deepest one that exists).
    fn module_of(&self, here: &str, path: &str) -> Option<String> {
        let (mut base, rest) = anchor(here, path)?;
        for part in rest.split("::") {
            let part = ident(part);
            if part.is_empty() {
                break;
            }
            let mut next = base.clone();
            next.push(part);
            if self.files.contains_key(&next.join("::")) {
                base = next;
            } else {
                break;
            }
        }
        Some(base.join("::"))
    }

    /// The file that defines `name` as seen from module `module` (following re-exports).
    fn definer(&self, module: &str, name: &str, hops: usize) -> String {
        let defined_here = self.defines.get(module).is_some_and(|d| d.contains(name));
        if !defined_here && hops < 8 {
            if let Some(from) = self.reexports.get(module).and_then(|r| r.get(name)) {
                if from != module {
                    return self.definer(from, name, hops + 1);
                }
            }
        }
        module.to_string()
    }
}

/// Every `use` path of a text with the last name it imports: `a::b::{C, d::E}` gives
/// (`a::b::C`, C) and (`a::b::d::E`, E).
fn uses(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("use ") {
        let before = &rest[..at];
        rest = &rest[at + 4..];
        if before
            .chars()
            .last()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue;
        }
        let Some(end) = rest.find(';') else { break };
        let statement: String = rest[..end].split_whitespace().collect();
        expand("", &statement, &mut out);
        rest = &rest[end..];
    }
    out
}

fn expand(prefix: &str, tree: &str, out: &mut Vec<(String, String)>) {
    if let Some(open) = tree.find('{') {
        let head = &tree[..open];
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let mut depth = 0;
        let mut start = 0;
        let bytes: Vec<char> = inner.chars().collect();
        for (i, c) in bytes.iter().enumerate() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    let part: String = bytes[start..i].iter().collect();
                    expand(&format!("{prefix}{head}"), &part, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        let part: String = bytes[start..].iter().collect();
        if !part.is_empty() {
            expand(&format!("{prefix}{head}"), &part, out);
        }
    } else {
        let path = format!("{prefix}{tree}");
        let path = path.split(" as ").next().unwrap_or(&path).to_string();
        let name = path.rsplit("::").next().unwrap_or("").to_string();
        if !name.is_empty() && name != "*" && name != "self" {
            out.push((path, name));
        }
    }
}

/// Paths written inline in the code (`crate::a::B`, `super::c::D`), with their last name.
fn inline_paths(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for start in ["crate::", "super::"] {
        let mut rest = text;
        while let Some(at) = rest.find(start) {
            let before = rest[..at].chars().last();
            rest = &rest[at..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            rest = &rest[path.len().max(1)..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path = path.trim_end_matches(':').to_string();
            let name = path.rsplit("::").next().unwrap_or("").to_string();
            out.push((path, name));
        }
    }
    out
}

/// The arrows between one crate's files: module → modules it takes names from.
fn arrows(crate_: &Crate) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &crate_.files {
        let text = code(&std::fs::read_to_string(path).unwrap());
        let mut paths = uses(&text);
        paths.extend(inline_paths(&text));
        let targets = graph.entry(module.clone()).or_default();
        for (path, name) in paths {
            let full = if path.starts_with("crate::")
                || path.starts_with("super::")
                || path.starts_with("self::")
            {
                path
            } else {
                continue;
            };
            let Some(target) = crate_.module_of(module, &full) else {
                continue;
            };
            let definer = crate_.definer(&target, &name, 0);
            let child = format!("{target}::{name}")
                .trim_start_matches("::")
                .to_string();
            let to = if crate_.files.contains_key(&child) {
                child
            } else {
                definer
            };
            // A module's own children and its own file are not arrows back up.
            if to != *module && !to.starts_with(&format!("{module}::")) {
                targets.insert(to);
            }
        }
    }
    graph
}

/// The circles of a graph (strongly connected components of two or more).
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm (recursive: a crate's files are few).
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        if let Some(targets) = s.graph.get(v) {
            for w in targets {
                let w = w.as_str();
                if !s.index.contains_key(w) {
                    visit(s, w);
                    let low = s.low[v].min(s.low[w]);
                    s.low.insert(v, low);
                } else if s.on_stack.contains(w) {
                    let low = s.low[v].min(s.index[w]);
                    s.low.insert(v, low);
                }
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

fn crates() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = vec![root.join("src")];
    for entry in std::fs::read_dir(root).unwrap().flatten() {
        let src = entry.path().join("src");
        if entry.path().join("Cargo.toml").is_file() && src.is_dir() {
            out.push(src);
        }
    }
    out
}

#[test]
fn no_crate_has_an_import_circle() {
    let mut found = Vec::new();
    for src in crates() {
        let crate_ = Crate::read(&src);
        for circle in circles(&arrows(&crate_)) {
            let files: Vec<String> = circle
                .iter()
                .map(|m| crate_.files[m].display().to_string())
                .collect();
            found.push(files.join(" <-> "));
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_check_sees_a_circle_and_a_reexport() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("reg")).unwrap();
    std::fs::write(src.join("lib.rs"), "mod reg;\n").unwrap();
    std::fs::write(
        src.join("reg/mod.rs"),
        "mod a;\nmod b;\npub use b::Thing;\n",
    )
    .unwrap();
    // a takes Thing through the re-export: the arrow goes to b, which defines it.
    std::fs::write(
        src.join("reg/a.rs"),
        "use super::Thing;\npub const LIMIT: usize = 1;\n",
    )
    .unwrap();
    std::fs::write(src.join("reg/b.rs"), "pub struct Thing;\n").unwrap();
    let crate_ = Crate::read(src);
    let graph = arrows(&crate_);
    assert_eq!(graph["reg::a"], BTreeSet::from(["reg::b".to_string()]));
    assert!(circles(&graph).is_empty());
    // b now takes LIMIT from a: a circle.
    std::fs::write(
        src.join("reg/b.rs"),
        "pub struct Thing([u8; crate::reg::a::LIMIT]);\n",
    )
    .unwrap();
    let crate_ = Crate::read(src);
    assert_eq!(
        circles(&arrows(&crate_)),
        [vec!["reg::a".to_string(), "reg::b".to_string()]]
    );
}
