//! The rules catalogue: one TOML file a rule under `rules/`, compiled in by `build.rs`.
//!
//! `build.rs` generates the `Rule` enum from the files: the engine reports with
//! `Rule::CallbackForm`, whose id, class (and so severity) and languages come from
//! `rules/callback-form.toml`. A test checks that every file's examples hold and that the
//! languages it names are those the engine reports it in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::report::Severity;

include!(concat!(env!("OUT_DIR"), "/rules.rs"));

/// What a rule does to a program, and so the severity of its diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An edit; what it changes that a user can see is a note.
    Safe,
    /// A refusal: the program is left untouched.
    Manual,
    /// The program is migrated, but something needs a look.
    Warning,
    /// The program is migrated; this says what changed.
    Note,
    /// Not a rule: input that could not be read or parsed, or a bug.
    Error,
}

impl Class {
    pub fn name(self) -> &'static str {
        match self {
            Class::Safe => "safe",
            Class::Manual => "manual",
            Class::Warning => "warning",
            Class::Note => "note",
            Class::Error => "error",
        }
    }
}

/// Where a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Language {
    /// The BPF side in C (`*.bpf.c`, headers, object sources).
    BpfC,
    /// A libbpf loader in C.
    LibbpfC,
    /// A BCC tool's Python.
    BccPython,
    /// The C of a BCC tool (in its strings or a `src_file`).
    BccC,
    /// A libbpf-rs crate.
    Rust,
    /// A Go reader (cilium/ebpf).
    Go,
}

impl Language {
    pub fn name(self) -> &'static str {
        match self {
            Language::BpfC => "bpf-c",
            Language::LibbpfC => "libbpf-c",
            Language::BccPython => "bcc-python",
            Language::BccC => "bcc-c",
            Language::Rust => "rust",
            Language::Go => "go",
        }
    }
}

impl Rule {
    /// The severity of this rule's diagnostics, from its class. Linking softens one kind of
    /// refusal in code that belongs to no program (`Diagnostic::program_only`); nothing else
    /// picks a severity of its own.
    pub const fn severity(self) -> Severity {
        match self.class() {
            Class::Safe | Class::Note => Severity::Note,
            Class::Manual => Severity::Manual,
            Class::Warning => Severity::Warning,
            Class::Error => Severity::Error,
        }
    }

    pub fn from_id(id: &str) -> Option<Rule> {
        Rule::ALL.iter().copied().find(|r| r.id() == id)
    }

    /// A rule of the catalogue (not an input error).
    pub fn in_catalogue(self) -> bool {
        self.class() != Class::Error
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

impl Serialize for Rule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

/// A rule's catalogue file: its documentation and examples.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub id: String,
    pub summary: String,
    pub languages: Vec<String>,
    /// `safe` (an edit), `manual` (a refusal), `warning` or `note`.
    pub class: String,
    pub explanation: String,
    #[serde(default)]
    pub example: Vec<Example>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub name: String,
    /// Rule ids of the diagnostics the example must produce (in any order).
    #[serde(default)]
    pub diagnostics: Vec<String>,
    pub before: BTreeMap<String, String>,
    /// The files that change, as they must read after migration.
    #[serde(default)]
    pub after: BTreeMap<String, String>,
    /// Command-line options the example runs with (`--strategy reserve`).
    #[serde(default)]
    pub args: Vec<String>,
}

/// Every rule, sorted by id. Panics only if a compiled-in file is malformed, which the test
/// suite rules out.
pub fn catalogue() -> Vec<Entry> {
    let mut rules: Vec<Entry> = RULE_FILES
        .iter()
        .map(|(name, body)| toml::from_str(body).unwrap_or_else(|e| panic!("rules/{name}: {e}")))
        .collect();
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    rules
}

pub fn find(id: &str) -> Option<Entry> {
    catalogue().into_iter().find(|r| r.id == id)
}
