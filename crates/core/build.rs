//! Compiles the rules catalogue (`rules/*.toml`) into the binary: the files themselves (for
//! `explain` and the examples) and the `Rule` enum the engine reports with, whose id, class
//! (and so severity) and languages come from each file. A file with an unknown class or
//! language fails the build.
use std::{env, fs, path::Path};

/// Diagnostics about input rather than rules: no catalogue file, class `error`.
const INPUT_ERRORS: &[&str] = &["internal-error", "io-error", "parse-error"];
const CLASSES: &[(&str, &str)] = &[
    ("safe", "Safe"),
    ("manual", "Manual"),
    ("warning", "Warning"),
    ("note", "Note"),
];
const LANGUAGES: &[(&str, &str)] = &[
    ("bpf-c", "BpfC"),
    ("libbpf-c", "LibbpfC"),
    ("bcc-python", "BccPython"),
    ("bcc-c", "BccC"),
    ("rust", "Rust"),
    ("go", "Go"),
];

#[derive(serde::Deserialize)]
struct Head {
    id: String,
    class: String,
    languages: Vec<String>,
}

fn camel(id: &str) -> String {
    id.split('-')
        .map(|w| w[..1].to_uppercase() + &w[1..])
        .collect()
}

fn variant(table: &[(&str, &'static str)], what: &str, v: &str, file: &Path) -> &'static str {
    table
        .iter()
        .find(|(k, _)| *k == v)
        .map(|(_, n)| *n)
        .unwrap_or_else(|| {
            panic!(
                "{}: unknown {what} `{v}` (one of: {})",
                file.display(),
                table.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            )
        })
}

fn main() {
    // At run time: a build script compiled once may run for another checkout of the crate.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("../../rules");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("rules/ directory")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    names.sort();
    let mut out = String::from("pub const RULE_FILES: &[(&str, &str)] = &[\n");
    // (id, class variant, language variants)
    let mut rules: Vec<(String, String, Vec<String>)> = Vec::new();
    for p in &names {
        println!("cargo:rerun-if-changed={}", p.display());
        out.push_str(&format!(
            "    ({:?}, include_str!({:?})),\n",
            p.file_name().unwrap().to_string_lossy(),
            p.display().to_string()
        ));
        let text = fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let head: Head = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let stem = p.file_stem().unwrap().to_string_lossy();
        assert_eq!(
            head.id,
            stem,
            "{}: the id must be the file's name",
            p.display()
        );
        let class = variant(CLASSES, "class", &head.class, p).to_string();
        let langs = head
            .languages
            .iter()
            .map(|l| variant(LANGUAGES, "language", l, p).to_string())
            .collect();
        rules.push((head.id, class, langs));
    }
    out.push_str("];\n\n");
    for id in INPUT_ERRORS {
        let all = LANGUAGES.iter().map(|(_, n)| n.to_string()).collect();
        rules.push((id.to_string(), "Error".into(), all));
    }
    // Variants in id order, so that the derived order is the ids' order.
    rules.sort();

    out.push_str(
        "/// A rule of the catalogue (or one of the input errors), generated from `rules/*.toml`.\n\
         #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]\npub enum Rule {\n",
    );
    for (id, _, _) in &rules {
        out.push_str(&format!("    /// `{id}`\n    {},\n", camel(id)));
    }
    out.push_str("}\n\nimpl Rule {\n    /// Every rule, in id order.\n    pub const ALL: &'static [Rule] = &[\n");
    for (id, _, _) in &rules {
        out.push_str(&format!("        Rule::{},\n", camel(id)));
    }
    out.push_str("    ];\n\n    pub const fn id(self) -> &'static str {\n        match self {\n");
    for (id, _, _) in &rules {
        out.push_str(&format!("            Rule::{} => {id:?},\n", camel(id)));
    }
    out.push_str(
        "        }\n    }\n\n    pub const fn class(self) -> Class {\n        match self {\n",
    );
    for (id, class, _) in &rules {
        out.push_str(&format!(
            "            Rule::{} => Class::{class},\n",
            camel(id)
        ));
    }
    out.push_str(
        "        }\n    }\n\n    pub const fn languages(self) -> &'static [Language] {\n        match self {\n",
    );
    for (id, _, langs) in &rules {
        let l: Vec<String> = langs.iter().map(|l| format!("Language::{l}")).collect();
        out.push_str(&format!(
            "            Rule::{} => &[{}],\n",
            camel(id),
            l.join(", ")
        ));
    }
    out.push_str("        }\n    }\n}\n");
    fs::write(
        Path::new(&env::var("OUT_DIR").unwrap()).join("rules.rs"),
        out,
    )
    .unwrap();
}
