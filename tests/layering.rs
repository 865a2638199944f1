//! The layering rules of docs/architecture.md ("Layering"), checked on the sources:
//!
//! - each workspace crate depends (any `*dependencies` table of its `Cargo.toml`) only on the
//!   workspace crates the rules allow; `maxmin-core` on none;
//! - `maxmin-core`'s code names no other workspace crate (`maxmin_envs::…`, …);
//! - the model files of the LM runtime (`plugins/lm/src/models/*.rs`) never use each other;
//! - no two files of one crate depend on each other, directly or through others.
//!
//! The file graph: a file depends on the file that defines a module it names in a path
//! (`use crate::a::b`, `super::x`, `self::y`, `child::z` for a module declared in scope, in
//! `use` trees and in expressions). `mod` declarations give the module tree that paths resolve
//! in (`a/b.rs` or `a/b/mod.rs` is module `a::b`); they are not edges themselves, so a child
//! using its parent's items is fine unless the parent also uses the child's. A path to a name
//! the target file re-exports (`pub use b::Name`) resolves to where `Name` comes from.
//! References inside a file (its inline `mod tests`, say) are not edges.

use crate::common::root;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Workspace crates, their folder, the file of the crate root and the workspace crates they
/// may depend on.
const CRATES: &[(&str, &str, &str, &[&str])] = &[
    ("maxmin-core", "core", "src/lib.rs", &[]),
    ("maxmin-envs", "envs", "src/lib.rs", &["maxmin-core"]),
    ("maxmin-lm", "plugins/lm", "src/lib.rs", &["maxmin-core"]),
    (
        "maxmin-imdb",
        "plugins/imdb",
        "src/lib.rs",
        &["maxmin-core", "maxmin-lm"],
    ),
    (
        "maxmin-text",
        "text",
        "src/lib.rs",
        &["maxmin-core", "maxmin-lm", "maxmin-imdb"],
    ),
    (
        "maxmin",
        ".",
        "src/main.rs",
        &[
            "maxmin-core",
            "maxmin-envs",
            "maxmin-lm",
            "maxmin-imdb",
            "maxmin-text",
        ],
    ),
];

/// Cycles between files that are known and accepted for now: none (the last five were removed
/// for issue #11). Each entry would be one cycle's files, sorted. The test fails when a cycle not
/// listed here appears, and when a listed one is gone (so the list stays true).
const KNOWN_CYCLES: &[&[&str]] = &[];

// ---------------------------------------------------------------- tokens

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

/// Identifiers, `::` and single punctuation of Rust source, without comments, strings, chars
/// and lifetimes.
fn tokens(src: &str) -> Vec<Tok> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1);
        } else if (ch == 'r' || ch == 'b') && raw_string_start(&c, i).is_some() {
            let (hashes, body) = raw_string_start(&c, i).unwrap_or((0, i));
            i = skip_raw(&c, body, hashes);
        } else if ch == 'b' && next == Some('\'') {
            i = skip_char(&c, i + 1);
        } else if ch == '\'' {
            i = skip_char(&c, i);
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(c[start..i].iter().collect()));
        } else if ch == ':' && next == Some(':') {
            out.push(Tok::PathSep);
            i += 2;
        } else {
            if !ch.is_whitespace() {
                out.push(Tok::Punct(ch));
            }
            i += 1;
        }
    }
    out
}

/// Index after the closing quote of a string whose body starts at `i`.
fn skip_string(c: &[char], mut i: usize) -> usize {
    while i < c.len() {
        match c[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// `(hashes, index of the body)` if a raw string (`r"`, `r#"`, `br"`, `b"`) starts at `i`.
fn raw_string_start(c: &[char], i: usize) -> Option<(usize, usize)> {
    if i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_') {
        return None;
    }
    let mut j = i;
    if c[j] == 'b' {
        j += 1;
        if c.get(j) == Some(&'"') {
            return None; // b"…" is an ordinary (escaped) string: handled as '"' next round
        }
    }
    if c.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (c.get(j) == Some(&'"')).then_some((hashes, j + 1))
}

fn skip_raw(c: &[char], mut i: usize, hashes: usize) -> usize {
    while i < c.len() {
        if c[i] == '"' && (0..hashes).all(|h| c.get(i + 1 + h) == Some(&'#')) {
            return i + 1 + hashes;
        }
        i += 1;
    }
    i
}

/// Skip a char literal at `i` (a `'`), or only the quote of a lifetime.
fn skip_char(c: &[char], i: usize) -> usize {
    match (c.get(i + 1), c.get(i + 2)) {
        (Some('\\'), _) => {
            let mut j = i + 2;
            while j < c.len() && c[j] != '\'' {
                j += 1;
            }
            j + 1
        }
        (Some(_), Some('\'')) => i + 3,
        _ => i + 1,
    }
}

// ---------------------------------------------------------------- paths in one file

/// What one file says: the module paths it names (relative to where they appear) and the names
/// it re-exports.
#[derive(Debug, Default)]
struct FileRefs {
    /// (inline modules around the path, the path's segments).
    paths: Vec<(Vec<String>, Vec<String>)>,
    /// Modules declared (`mod x;` or `mod x { … }`), per inline-module scope.
    declared: BTreeSet<(Vec<String>, String)>,
    /// `pub use a::b::Name [as Alias]` at the top level: Alias (or Name) → a::b::Name.
    reexports: BTreeMap<String, Vec<String>>,
}

fn scan(src: &str) -> FileRefs {
    let t = tokens(src);
    let mut refs = FileRefs::default();
    let mut scopes: Vec<Option<String>> = Vec::new();
    let inline = |s: &[Option<String>]| s.iter().flatten().cloned().collect::<Vec<_>>();
    let ident = |i: usize| match t.get(i) {
        Some(Tok::Ident(s)) => Some(s.as_str()),
        _ => None,
    };
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Tok::Punct('{') => {
                let is_mod = i >= 2 && ident(i - 2) == Some("mod") && ident(i - 1).is_some();
                scopes.push(is_mod.then(|| ident(i - 1).unwrap_or_default().to_string()));
                i += 1;
            }
            Tok::Punct('}') => {
                scopes.pop();
                i += 1;
            }
            Tok::Ident(w) if w == "mod" => {
                if let Some(name) = ident(i + 1) {
                    refs.declared.insert((inline(&scopes), name.to_string()));
                }
                i += 2;
            }
            Tok::Ident(w) if w == "use" => {
                let public = i >= 1 && ident(i - 1) == Some("pub")
                    || i >= 4 && ident(i - 4) == Some("pub") && t[i - 1] == Tok::Punct(')');
                let end = (i..t.len())
                    .find(|&j| t[j] == Tok::Punct(';'))
                    .unwrap_or(t.len());
                let mut leaves = Vec::new();
                use_tree(&t[i + 1..end], Vec::new(), &mut leaves);
                for (path, alias) in leaves {
                    if public && scopes.is_empty() && path.len() > 1 {
                        let name = alias.unwrap_or_else(|| path[path.len() - 1].clone());
                        if name != "*" && name != "self" {
                            refs.reexports.insert(name, path.clone());
                        }
                    }
                    refs.paths.push((inline(&scopes), path));
                }
                i = end + 1;
            }
            Tok::Ident(first) if t.get(i + 1) == Some(&Tok::PathSep) => {
                let after_sep = i >= 1 && t[i - 1] == Tok::PathSep;
                let mut path = vec![first.clone()];
                let mut j = i + 1;
                while t.get(j) == Some(&Tok::PathSep) {
                    match ident(j + 1) {
                        Some(s) => path.push(s.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                if !after_sep {
                    refs.paths.push((inline(&scopes), path));
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    refs
}

/// The leaves of a `use` tree: (full path, `as` alias).
fn use_tree(t: &[Tok], prefix: Vec<String>, out: &mut Vec<(Vec<String>, Option<String>)>) {
    let mut path = prefix;
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Tok::Ident(s) if s == "as" => {
                let alias = match t.get(i + 1) {
                    Some(Tok::Ident(a)) => Some(a.clone()),
                    _ => None,
                };
                out.push((path, alias));
                return;
            }
            Tok::Ident(s) => path.push(s.clone()),
            Tok::Punct('*') => path.push("*".into()),
            Tok::Punct('{') => {
                // split the group's top-level items at commas
                let mut depth = 0;
                let mut start = i + 1;
                for j in i + 1..t.len() {
                    match t[j] {
                        Tok::Punct('{') => depth += 1,
                        Tok::Punct('}') if depth == 0 => {
                            use_tree(&t[start..j], path.clone(), out);
                            return;
                        }
                        Tok::Punct('}') => depth -= 1,
                        Tok::Punct(',') if depth == 0 => {
                            use_tree(&t[start..j], path.clone(), out);
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                return;
            }
            _ => {}
        }
        i += 1;
    }
    if path.last().is_some_and(|s| s == "self") {
        path.pop();
    }
    if !path.is_empty() {
        out.push((path, None));
    }
}

// ---------------------------------------------------------------- the crate's file graph

/// Module path of a file, given its path relative to the crate root file's folder.
fn module_of(rel: &Path, root_file: &str) -> Vec<String> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.len() == 1 && parts[0] == root_file {
        return Vec::new();
    }
    let mut m: Vec<String> = parts.clone();
    let last = m.pop().unwrap_or_default();
    if last != "mod.rs" {
        m.push(last.trim_end_matches(".rs").to_string());
    }
    m
}

/// The dependency graph between the files of one crate: `files` maps each file's name to its
/// module path and source.
fn file_graph(
    files: &BTreeMap<String, (Vec<String>, String)>,
) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<Vec<String>, String> = files
        .iter()
        .map(|(f, (m, _))| (m.clone(), f.clone()))
        .collect();
    let refs: BTreeMap<&String, FileRefs> = files.iter().map(|(f, (_, s))| (f, scan(s))).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, (module, _)) in files {
        let r = &refs[file];
        let edges = graph.entry(file.clone()).or_default();
        for (inline, path) in &r.paths {
            let here: Vec<String> = module.iter().chain(inline).cloned().collect();
            let Some(abs) = absolute(&here, path, |name| {
                r.declared.contains(&(inline.clone(), name.to_string()))
                    || by_module.contains_key(&[here.clone(), vec![name.to_string()]].concat())
            }) else {
                continue;
            };
            if let Some(target) = resolve(&abs, &by_module, &refs, 0) {
                if &target != file {
                    edges.insert(target);
                }
            }
        }
    }
    graph
}

/// The absolute module path a path names from module `here`, if it is a path into this crate.
fn absolute(
    here: &[String],
    path: &[String],
    is_child: impl Fn(&str) -> bool,
) -> Option<Vec<String>> {
    let mut base: Vec<String> = here.to_vec();
    let mut rest = path;
    match path.first()?.as_str() {
        "crate" => {
            base.clear();
            rest = &path[1..];
        }
        "self" => rest = &path[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        first if is_child(first) => {}
        _ => return None,
    }
    Some(base.into_iter().chain(rest.iter().cloned()).collect())
}

/// The file that defines what `abs` names: the longest module prefix that is a file, followed
/// through that file's re-exports.
fn resolve(
    abs: &[String],
    by_module: &BTreeMap<Vec<String>, String>,
    refs: &BTreeMap<&String, FileRefs>,
    depth: usize,
) -> Option<String> {
    let n = (0..=abs.len())
        .rev()
        .find(|&n| by_module.contains_key(&abs[..n]))?;
    let file = &by_module[&abs[..n]];
    if depth < 8 {
        if let Some(target) = abs.get(n).and_then(|name| refs[file].reexports.get(name)) {
            let module = &abs[..n];
            let next = absolute(module, target, |name| {
                refs[file]
                    .declared
                    .contains(&(Vec::new(), name.to_string()))
            });
            if let Some(next) = next {
                return resolve(&next, by_module, refs, depth + 1).or(Some(file.clone()));
            }
        }
    }
    Some(file.clone())
}

/// Cycles of a graph: its strongly connected components with more than one node, each sorted.
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    // Tarjan's algorithm, recursive (graphs here have at most a few hundred files)
    struct S<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut S<'a>, v: &'a str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on.insert(v);
        let g = s.g;
        for w in g.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = S {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out.sort();
    s.out
}

// ---------------------------------------------------------------- reading the workspace

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The files of a crate: name relative to the repository → (module path, source).
fn crate_files(folder: &str, root_file: &str) -> BTreeMap<String, (Vec<String>, String)> {
    let root_path = root().join(folder).join(root_file);
    let src = root_path
        .parent()
        .expect("crate root has a folder")
        .to_path_buf();
    let root_name = root_path
        .file_name()
        .expect("file")
        .to_string_lossy()
        .into_owned();
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    files
        .into_iter()
        .filter(|p| {
            // another binary target's root in src/bin/ is its own crate
            !p.strip_prefix(&src).is_ok_and(|r| r.starts_with("bin"))
        })
        .map(|p| {
            let rel = p.strip_prefix(&src).expect("under src");
            let name = p
                .strip_prefix(root())
                .expect("under the repository")
                .to_string_lossy()
                .into_owned();
            let text = std::fs::read_to_string(&p).expect("readable source");
            (name, (module_of(rel, &root_name), text))
        })
        .collect()
}

fn workspace_deps(folder: &str) -> BTreeSet<String> {
    let path = root().join(folder).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).expect("Cargo.toml");
    let doc: toml::Table = toml::from_str(&text).expect("Cargo.toml parses");
    let mut deps = BTreeSet::new();
    let mut tables: Vec<&toml::Table> = Vec::new();
    for key in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(t) = doc.get(key).and_then(|v| v.as_table()) {
            tables.push(t);
        }
    }
    // [target.'cfg(…)'.dependencies] too
    if let Some(targets) = doc.get("target").and_then(|v| v.as_table()) {
        for t in targets.values().filter_map(|v| v.as_table()) {
            for key in ["dependencies", "dev-dependencies", "build-dependencies"] {
                if let Some(d) = t.get(key).and_then(|v| v.as_table()) {
                    tables.push(d);
                }
            }
        }
    }
    for t in tables {
        deps.extend(t.keys().filter(|k| k.starts_with("maxmin")).cloned());
    }
    deps
}

// ---------------------------------------------------------------- the rules

#[test]
fn crates_depend_only_on_the_crates_the_layering_allows() {
    let mut bad = Vec::new();
    for (name, folder, _, allowed) in CRATES {
        for dep in workspace_deps(folder) {
            if !allowed.contains(&dep.as_str()) && dep != *name {
                bad.push(format!("{name} depends on {dep} ({folder}/Cargo.toml)"));
            }
        }
    }
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

/// Uses of another workspace crate (`maxmin_envs::…`, `use maxmin_text` …) in `files`.
fn foreign_crate_uses(files: &BTreeMap<String, (Vec<String>, String)>) -> Vec<String> {
    let others = [
        "maxmin_envs",
        "maxmin_lm",
        "maxmin_imdb",
        "maxmin_text",
        "maxmin",
    ];
    let mut bad = Vec::new();
    for (file, (_, src)) in files {
        let t = tokens(src);
        for (i, tok) in t.iter().enumerate() {
            if let Tok::Ident(s) = tok {
                let as_path = t.get(i + 1) == Some(&Tok::PathSep)
                    || i >= 1 && matches!(&t[i - 1], Tok::Ident(u) if u == "use" || u == "crate");
                let first = i == 0 || t[i - 1] != Tok::PathSep;
                if others.contains(&s.as_str()) && as_path && first {
                    bad.push(format!("{file} uses {s}"));
                }
            }
        }
    }
    bad
}

#[test]
fn core_names_no_other_workspace_crate() {
    let mut files = crate_files("core", "src/lib.rs");
    for extra in ["core/benches", "core/tests"] {
        let dir = root().join(extra);
        if dir.is_dir() {
            let mut v = Vec::new();
            rs_files(&dir, &mut v);
            for p in v {
                let name = p
                    .strip_prefix(root())
                    .expect("in repo")
                    .to_string_lossy()
                    .into_owned();
                files.insert(
                    name,
                    (Vec::new(), std::fs::read_to_string(&p).expect("source")),
                );
            }
        }
    }
    let bad = foreign_crate_uses(&files);
    assert!(
        bad.is_empty(),
        "maxmin-core must not import other workspace crates:\n{}",
        bad.join("\n")
    );
}

#[test]
fn model_files_do_not_use_each_other() {
    let files = crate_files("plugins/lm", "src/lib.rs");
    let graph = file_graph(&files);
    let models: Vec<&String> = files
        .keys()
        .filter(|f| f.starts_with("plugins/lm/src/models/"))
        .collect();
    assert!(
        models.len() >= 2,
        "expected the model files in plugins/lm/src/models/: {models:?}"
    );
    let mut bad = Vec::new();
    for m in &models {
        for dep in &graph[*m] {
            if models.contains(&dep) {
                bad.push(format!("{m} uses {dep}"));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "a model file imports another:\n{}",
        bad.join("\n")
    );
}

#[test]
fn no_cycles_between_the_files_of_a_crate() {
    let mut found: Vec<Vec<String>> = Vec::new();
    for (_, folder, root_file, _) in CRATES {
        found.extend(cycles(&file_graph(&crate_files(folder, root_file))));
    }
    let known: Vec<Vec<String>> = KNOWN_CYCLES
        .iter()
        .map(|c| c.iter().map(|s| s.to_string()).collect())
        .collect();
    let new: Vec<_> = found.iter().filter(|c| !known.contains(c)).collect();
    let gone: Vec<_> = known.iter().filter(|c| !found.contains(c)).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "cycles between files (each line one cycle's files):\n{}\nlisted in KNOWN_CYCLES but gone:\n{}",
        new.iter().map(|c| c.join(" ↔ ")).collect::<Vec<_>>().join("\n"),
        gone.iter().map(|c| c.join(" ↔ ")).collect::<Vec<_>>().join("\n"),
    );
}

// ---------------------------------------------------------------- the checker itself

fn synthetic(files: &[(&str, &str)]) -> BTreeMap<String, (Vec<String>, String)> {
    files
        .iter()
        .map(|(f, s)| {
            (
                f.to_string(),
                (module_of(Path::new(f), "lib.rs"), s.to_string()),
            )
        })
        .collect()
}

#[test]
fn checker_finds_a_cycle_and_names_its_files() {
    let files = synthetic(&[
        (
            "lib.rs",
            "pub mod a;\npub mod b;\npub mod c;\npub use a::Thing;\n",
        ),
        // a → b (use), b → c (expression path), c → a (through lib.rs's re-export of Thing)
        ("a.rs", "use crate::b::helper;\npub struct Thing;\n"),
        ("b.rs", "pub fn helper() { let _ = crate::c::f(); }\n"),
        (
            "c.rs",
            "// crate::b in a comment is no edge\nuse crate::Thing;\npub fn f() {}\n",
        ),
    ]);
    let g = file_graph(&files);
    assert_eq!(g["a.rs"], BTreeSet::from(["b.rs".to_string()]));
    assert_eq!(g["c.rs"], BTreeSet::from(["a.rs".to_string()]));
    assert_eq!(
        cycles(&g),
        vec![vec!["a.rs".to_string(), "b.rs".into(), "c.rs".into()]]
    );
}

#[test]
fn checker_accepts_a_child_using_its_parent_and_sees_super_and_groups() {
    let files = synthetic(&[
        ("lib.rs", "pub mod ops;\n"),
        ("ops/mod.rs", "pub mod cpu;\npub struct Input;\n#[cfg(test)]\nmod tests { use super::*; }\n"),
        ("ops/cpu.rs", "use super::{Input, *};\nuse crate::ops::{self};\nconst S: &str = \"crate::ops::cpu\";\n"),
    ]);
    let g = file_graph(&files);
    assert_eq!(g["ops/cpu.rs"], BTreeSet::from(["ops/mod.rs".to_string()]));
    assert!(g["ops/mod.rs"].is_empty(), "{g:?}");
    assert!(cycles(&g).is_empty());
    // …and the parent calling into the child closes a cycle
    let files = synthetic(&[
        ("lib.rs", "pub mod ops;\n"),
        (
            "ops/mod.rs",
            "pub mod cpu;\npub struct Input;\npub fn run() { cpu::go() }\n",
        ),
        ("ops/cpu.rs", "use super::Input;\npub fn go() {}\n"),
    ]);
    assert_eq!(
        cycles(&file_graph(&files)),
        vec![vec!["ops/cpu.rs".to_string(), "ops/mod.rs".into()]]
    );
}

#[test]
fn checker_sees_a_core_import_of_another_crate() {
    let files = synthetic(&[
        ("lib.rs", "use maxmin_envs::cartpole;\n"),
        ("a.rs", "fn f() { let _ = maxmin_text::psoups::load; }\n"),
        (
            "b.rs",
            "// maxmin_envs::x in a comment\nuse crate::maxmin_envs_like;\n",
        ),
    ]);
    assert_eq!(
        foreign_crate_uses(&files),
        vec![
            "a.rs uses maxmin_text".to_string(),
            "lib.rs uses maxmin_envs".into()
        ]
    );
}
