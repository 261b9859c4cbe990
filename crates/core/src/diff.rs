//! Unified diffs with `a/` and `b/` headers, as `git apply` and `patch -p1` read them.

use similar::TextDiff;

pub fn unified(display_path: &str, old: &str, new: &str) -> String {
    // An absolute path is written as git writes one: `a/tmp/x.c`, to apply from `/`.
    let display_path = display_path.trim_start_matches('/');
    let diff = TextDiff::from_lines(old, new);
    let mut out = format!("diff --git a/{display_path} b/{display_path}\n");
    out.push_str(
        &diff
            .unified_diff()
            .context_radius(3)
            .missing_newline_hint(true)
            .header(&format!("a/{display_path}"), &format!("b/{display_path}"))
            .to_string(),
    );
    out
}

/// Colours a unified diff for a terminal.
pub fn colorize(diff: &str) -> String {
    let mut out = String::with_capacity(diff.len() + diff.len() / 4);
    for line in diff.split_inclusive('\n') {
        let (pre, post) =
            if line.starts_with("+++") || line.starts_with("---") || line.starts_with("diff ") {
                ("\x1b[1m", "\x1b[0m")
            } else if line.starts_with('+') {
                ("\x1b[32m", "\x1b[0m")
            } else if line.starts_with('-') {
                ("\x1b[31m", "\x1b[0m")
            } else if line.starts_with("@@") {
                ("\x1b[36m", "\x1b[0m")
            } else {
                ("", "")
            };
        let body = line.trim_end_matches('\n');
        out.push_str(pre);
        out.push_str(body);
        out.push_str(post);
        if line.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn headers_and_hunks() {
        let d = super::unified("x/y.c", "a\nb\nc\n", "a\nB\nc\n");
        assert!(d.starts_with(
            "diff --git a/x/y.c b/x/y.c\n--- a/x/y.c\n+++ b/x/y.c\n@@ -1,3 +1,3 @@\n"
        ));
        assert!(d.contains("-b\n+B\n"));
        let abs = super::unified("/tmp/y.c", "a\n", "b\n");
        assert!(abs.starts_with("diff --git a/tmp/y.c b/tmp/y.c\n--- a/tmp/y.c\n+++ b/tmp/y.c\n"));
    }
}
