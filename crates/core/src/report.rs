//! Diagnostics: what could not be migrated (and why), what a migration changed that a user
//! should know, and errors reading input. Rendered rustc-style for people, JSON for tools.

use serde::Serialize;

use crate::rules::Rule;
use crate::source::SourceFile;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Input could not be read or parsed; exit code 2.
    Error,
    /// A program was left untouched: it needs manual work.
    Manual,
    /// A program was migrated, but something needs a look.
    Warning,
    /// A program was migrated; this says what changed that a user can see.
    Note,
}

impl Severity {
    /// A diagnostic of this severity keeps its program from migrating.
    pub fn refuses(self) -> bool {
        matches!(self, Severity::Manual | Severity::Error)
    }

    pub fn label(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Manual => "manual",
            Severity::Warning => "warning",
            Severity::Note => "note",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Diagnostic {
    pub rule: Rule,
    pub severity: Severity,
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    #[serde(skip)]
    pub snippet: Option<String>,
    #[serde(skip)]
    pub offset: usize,
    /// A manual diagnostic that refuses only in a program bpf-migrate migrates; in code that
    /// belongs to none (a mention of the perf map type in generic code) linking makes it a
    /// warning.
    #[serde(skip)]
    pub program_only: bool,
}

impl Diagnostic {
    /// A diagnostic of `rule` at `offset`, with the severity of the rule's class.
    pub fn at(file: &SourceFile, offset: usize, rule: Rule, message: impl Into<String>) -> Self {
        let (line, column) = file.line_col(offset);
        Diagnostic {
            rule,
            severity: rule.severity(),
            file: file.display.clone(),
            line,
            column,
            message: message.into(),
            help: None,
            snippet: Some(file.line_text(line).to_string()),
            offset,
            program_only: false,
        }
    }

    /// A diagnostic about a file as a whole (it could not be read).
    pub fn file_error(display: &str, rule: Rule, message: impl Into<String>) -> Self {
        Diagnostic {
            rule,
            severity: rule.severity(),
            file: display.to_string(),
            line: 0,
            column: 0,
            message: message.into(),
            help: None,
            snippet: None,
            offset: 0,
            program_only: false,
        }
    }

    /// The diagnostic with a lower severity than its rule's: for the rare site whose finding
    /// is not yet the rule's verdict (the severity otherwise comes from the rule alone).
    pub fn demote(&mut self, severity: Severity) {
        debug_assert!(severity > self.severity, "a demotion lowers the severity");
        self.severity = severity;
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// rustc-style text: header, location, snippet with a caret, help.
    pub fn render(&self, color: bool) -> String {
        let (sev_on, bold, blue, off) = if color {
            let c = match self.severity {
                Severity::Error | Severity::Manual => "\x1b[1;31m",
                Severity::Warning => "\x1b[1;33m",
                Severity::Note => "\x1b[1;32m",
            };
            (c, "\x1b[1m", "\x1b[1;34m", "\x1b[0m")
        } else {
            ("", "", "", "")
        };
        let mut s = format!(
            "{sev_on}{}[{}]{off}{bold}: {}{off}\n",
            self.severity.label(),
            self.rule,
            self.message
        );
        if self.line == 0 {
            s.push_str(&format!("  {blue}-->{off} {}\n", self.file));
        } else {
            let num = self.line.to_string();
            let pad = " ".repeat(num.len());
            s.push_str(&format!(
                "{pad}{blue}-->{off} {}:{}:{}\n",
                self.file, self.line, self.column
            ));
            if let Some(snippet) = &self.snippet {
                let shown = snippet.replace('\t', "    ");
                let before: String = snippet.chars().take(self.column - 1).collect();
                let caret_col = before.replace('\t', "    ").chars().count();
                s.push_str(&format!("{pad} {blue}|{off}\n"));
                s.push_str(&format!("{blue}{num} |{off} {shown}\n"));
                s.push_str(&format!(
                    "{pad} {blue}|{off} {}{sev_on}^{off}\n",
                    " ".repeat(caret_col)
                ));
            }
        }
        if let Some(help) = &self.help {
            let pad = " ".repeat(self.line.max(1).to_string().len());
            s.push_str(&format!("{pad} {blue}={off} {bold}help{off}: {help}\n"));
        }
        s
    }
}
