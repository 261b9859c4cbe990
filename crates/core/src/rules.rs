//! The rules catalogue: one TOML file a rule under `rules/`, compiled in by `build.rs`.
//!
//! The engine refers to rules by the id constants below; a test checks that every id has a
//! catalogue entry and every entry's examples hold.

use std::collections::BTreeMap;

use serde::Deserialize;

include!(concat!(env!("OUT_DIR"), "/rules.rs"));

// Edits.
pub const PERF_MAP_DEF: &str = "perf-map-def";
pub const LEGACY_PERF_MAP_DEF: &str = "legacy-perf-map-def";
pub const PERF_EVENT_OUTPUT: &str = "perf-event-output";
pub const PERF_BUFFER_NEW: &str = "perf-buffer-new";
pub const PERF_BUFFER_OPTS: &str = "perf-buffer-opts";
pub const PERF_BUFFER_API: &str = "perf-buffer-api";
pub const NULL_CHECK: &str = "null-check";
pub const SAMPLE_CALLBACK: &str = "sample-callback";
pub const LOST_CALLBACK: &str = "lost-callback";
pub const PERF_BUFFER_MESSAGE: &str = "perf-buffer-message";
pub const BCC_PERF_OUTPUT: &str = "bcc-perf-output";
pub const BCC_PERF_SUBMIT: &str = "bcc-perf-submit";
pub const BCC_OPEN_PERF_BUFFER: &str = "bcc-open-perf-buffer";
pub const BCC_POLL: &str = "bcc-poll";
pub const BCC_CALLBACK: &str = "bcc-callback";
pub const RS_PERF_BUFFER_BUILDER: &str = "rs-perf-buffer-builder";
pub const RS_CALLBACK: &str = "rs-callback";
pub const RS_LOST_CALLBACK: &str = "rs-lost-callback";
pub const RESERVE_SUBMIT: &str = "reserve-submit";
pub const RESERVE_HEAP: &str = "reserve-heap";
// Refusals: the program is left untouched.
pub const OUTPUT_FLAGS: &str = "output-flags";
pub const OUTPUT_CTXLEN: &str = "output-ctxlen";
pub const SKB_XDP_OUTPUT: &str = "skb-xdp-output";
pub const NO_RING_EQUIVALENT: &str = "no-ring-equivalent";
pub const CALLBACK_USES_CPU: &str = "callback-uses-cpu";
pub const CALLBACK_FORM: &str = "callback-form";
pub const UNSUPPORTED_FORM: &str = "unsupported-form";
pub const MAP_OTHER_USE: &str = "map-other-use";
pub const MAP_DEF_FIELD: &str = "map-def-field";
pub const UNRESOLVED_MAP: &str = "unresolved-map";
pub const UNLINKED_PROGRAM: &str = "unlinked-program";
pub const OPTS_UNSUPPORTED: &str = "opts-unsupported";
pub const CONSUME_RESULT: &str = "consume-result";
pub const BCC_SUBMIT_SKB: &str = "bcc-submit-skb";
// Warnings on a migrated program.
pub const NMI_CONTEXT: &str = "nmi-context";
// Notes.
pub const RESERVE_FALLBACK: &str = "reserve-fallback";
// Not rules: input that could not be processed.
pub const IO_ERROR: &str = "io-error";
pub const PARSE_ERROR: &str = "parse-error";
pub const INTERNAL_ERROR: &str = "internal-error";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
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
pub fn catalogue() -> Vec<Rule> {
    let mut rules: Vec<Rule> = RULE_FILES
        .iter()
        .map(|(name, body)| toml::from_str(body).unwrap_or_else(|e| panic!("rules/{name}: {e}")))
        .collect();
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    rules
}

pub fn find(id: &str) -> Option<Rule> {
    catalogue().into_iter().find(|r| r.id == id)
}
