//! BCC C made with Python's `%` operator: a tool that writes its C per probe (a generic
//! tracer) names its tables with format fields, `BPF_PERF_OUTPUT(%s);` and
//! `%s.perf_submit(%s, &data, sizeof(data));`, filled in from a tuple when it runs. The C
//! parser reads each field as a name (`lang::c`); this module says which argument fills
//! each field of a string, so that a table can be told by its argument (`self.events_name`,
//! the same expression the tool's `b[self.events_name].open_perf_buffer(...)` subscripts
//! with), and so that a field the migration drops (the context argument `perf_submit` takes
//! and `ringbuf_output` does not) takes its argument out of the tuple with it.

use std::ops::Range;

use tree_sitter::Node;

use super::python::{ancestor_any, literal_string};
use crate::lang::c::{of_kind, text};

/// Whether a table name is an `identity` made for a format field's argument (`%(...)`), not
/// a name the C spells out.
pub fn is_identity(name: &str) -> bool {
    name.starts_with("%(")
}

/// Why `--strategy compat` cannot take a table a format field names (`written`, as the C
/// spells it): the helper both paths share is named after the table.
pub fn compat_refusal(written: &str) -> String {
    format!(
        "the table's name `{written}` is filled in by the tool's `%` formatting, and the helper both paths share is named after the table"
    )
}

/// One format field of a BCC string (`%s` at `at..end` of the file).
#[derive(Debug, Clone)]
pub struct FormatField {
    pub at: usize,
    pub end: usize,
    /// What the argument that fills it is known as (`identity`), when it is a name the
    /// tool's Python can be followed to.
    pub name: Option<String>,
    /// What to replace in the arguments, and with what, for the field to go: its argument
    /// and a comma, or the whole tuple when one or none is left (`(a,)`, `()`), or an
    /// argument alone (`()`).
    pub remove: (Range<usize>, String),
}

/// The fields of `string` (a Python string literal holding BCC C) with their arguments,
/// when the string is %-formatted: `"..." % (a, b)`, the last part of `x + "..."` so
/// formatted, or assigned to a variable that is formatted next (`text = "..."` then
/// `text % (a, b)` or `text = text % (a, b)`). Empty when it is not, or when its fields
/// cannot be matched with arguments (a dict, `*` widths, a string in the middle of a sum):
/// then no field has a name, and a table named by one is refused where it is used.
pub fn fields(nodes: &[Node], string: Node, src: &str) -> Vec<FormatField> {
    let Some(specs) = specs(string, src) else {
        return Vec::new();
    };
    if specs.is_empty() {
        return Vec::new();
    }
    let Some(args) = format_arguments(nodes, string, src) else {
        return Vec::new();
    };
    let (elements, tuple) = match args.kind() {
        "tuple" => (named(args), true),
        "parenthesized_expression" if args.named_child(0).is_some_and(|t| t.kind() == "tuple") => {
            (named(args.named_child(0).unwrap()), true)
        }
        _ => (vec![args], false),
    };
    if elements.iter().any(|e| {
        matches!(
            e.kind(),
            "list_splat" | "dictionary_splat" | "parenthesized_list_splat"
        )
    }) || (!tuple && specs.len() != 1)
        || elements.len() < specs.len()
    {
        return Vec::new();
    }
    // The string's fields are the last of the format's (what comes before it in a sum is
    // filled first): counted from the end.
    let first = elements.len() - specs.len();
    specs
        .into_iter()
        .enumerate()
        .map(|(k, (at, end))| {
            let i = first + k;
            let e = elements[i];
            let remove = if !tuple {
                // The argument alone: an empty tuple formats a string without fields.
                (e.start_byte()..e.end_byte(), "()".to_string())
            } else if elements.len() <= 2 {
                // A tuple of one, or of two that keeps one: written whole, as a tuple still.
                let t = match elements.iter().find(|x| x.id() != e.id()) {
                    None => "()".to_string(),
                    Some(kept) => format!("({},)", text(*kept, src)),
                };
                let whole = e.parent().unwrap_or(args);
                (whole.start_byte()..whole.end_byte(), t)
            } else if i > 0 {
                (elements[i - 1].end_byte()..e.end_byte(), String::new())
            } else {
                (e.start_byte()..elements[1].start_byte(), String::new())
            };
            FormatField {
                at,
                end,
                name: identity(nodes, e, src),
                remove,
            }
        })
        .collect()
}

fn named(n: Node) -> Vec<Node> {
    let mut c = n.walk();
    n.named_children(&mut c)
        .filter(|x| x.kind() != "comment")
        .collect()
}

/// The conversion specifications of the string's contents, as file offsets; None when one
/// takes more than one argument or a key (`%*d`, `%(name)s`): then they cannot be counted.
fn specs(string: Node, src: &str) -> Option<Vec<(usize, usize)>> {
    let mut out = Vec::new();
    for r in super::python::string_contents(string) {
        let b = src.as_bytes();
        let mut i = r.start;
        while i < r.end {
            if b[i] != b'%' {
                i += 1;
                continue;
            }
            let at = i;
            i += 1;
            if b.get(i) == Some(&b'%') {
                i += 1;
                continue;
            }
            while i < r.end && b"#0- +".contains(&b[i]) {
                i += 1;
            }
            while i < r.end && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            while i < r.end && b"hlL".contains(&b[i]) {
                i += 1;
            }
            match b.get(i) {
                Some(c) if i < r.end && b"diouxXeEfFgGcrsa".contains(c) => {
                    i += 1;
                    out.push((at, i));
                }
                // `%(key)s`, `%*d`, or a `%` the format would reject.
                _ => return None,
            }
        }
    }
    Some(out)
}

/// The right operand of the `%` that formats `string`'s value.
fn format_arguments<'t>(nodes: &[Node<'t>], string: Node<'t>, src: &str) -> Option<Node<'t>> {
    let mut cur = string;
    loop {
        let p = cur.parent()?;
        match p.kind() {
            "parenthesized_expression" => cur = p,
            "binary_operator" => {
                let op = p.child_by_field_name("operator").map(|o| text(o, src));
                let right = p.child_by_field_name("right")?;
                let left = p.child_by_field_name("left")?;
                match op {
                    // Only the last part of a sum: fields after it would come after its own.
                    Some("+") if right.id() == cur.id() => cur = p,
                    Some("%") if left.id() == cur.id() => return Some(right),
                    _ => return None,
                }
            }
            "assignment" if p.child_by_field_name("right")?.id() == cur.id() => {
                let var = p.child_by_field_name("left")?;
                if var.kind() != "identifier" {
                    return None;
                }
                return formatted_next(nodes, p, text(var, src), src);
            }
            _ => return None,
        }
    }
}

/// After `name = ...` (statement `assign`), the next use of `name` in its function, when
/// it is `name % ARGS`: ARGS.
fn formatted_next<'t>(
    nodes: &[Node<'t>],
    assign: Node<'t>,
    name: &str,
    src: &str,
) -> Option<Node<'t>> {
    let scope = ancestor_any(assign, &["function_definition", "module"])?;
    let next = of_kind(nodes, "identifier")
        .into_iter()
        .filter(|n| {
            n.start_byte() >= assign.end_byte()
                && n.end_byte() <= scope.end_byte()
                && text(*n, src) == name
        })
        .min_by_key(|n| n.start_byte())?;
    let p = next.parent()?;
    // `name = name % ARGS`: the next use is the assignment's, formatting.
    let read = match p.kind() {
        "assignment"
            if p.child_by_field_name("left")
                .is_some_and(|l| l.id() == next.id()) =>
        {
            p.child_by_field_name("right")?
        }
        _ => p,
    };
    let formats = |b: Node| {
        b.kind() == "binary_operator"
            && b.child_by_field_name("left")
                .is_some_and(|l| l.kind() == "identifier" && text(l, src) == name)
            && b.child_by_field_name("operator")
                .is_some_and(|o| text(o, src) == "%")
    };
    formats(read)
        .then(|| read.child_by_field_name("right"))
        .flatten()
}

/// What the table name an expression holds when the tool runs is known as, the same for
/// the format argument that names a table in the C and the key a Python subscript reads it
/// by: a string literal's value (the name itself); `self.x` in class `C`: `%(C.x)`; a
/// variable `x` of function `f`: `%(f:x)`, of the module: `%(x)`. Only for a name bound
/// once in its scope (one assignment, no loop variable or parameter of that name): two
/// bindings could hold two tables.
pub fn identity(nodes: &[Node], e: Node, src: &str) -> Option<String> {
    match e.kind() {
        "string" => literal_string(e, src).filter(|v| crate::lang::c::is_ident(v)),
        "identifier" => {
            let name = text(e, src);
            let scope = ancestor_any(e, &["function_definition", "class_definition", "module"])?;
            if scope.kind() == "class_definition" {
                return None;
            }
            (bindings(nodes, scope, name, src) == Some(1)).then(|| {
                match scope
                    .child_by_field_name("name")
                    .filter(|_| scope.kind() == "function_definition")
                {
                    Some(f) => format!("%({}:{name})", text(f, src)),
                    None => format!("%({name})"),
                }
            })
        }
        "attribute" => {
            let object = e.child_by_field_name("object")?;
            if object.kind() != "identifier" || text(object, src) != "self" {
                return None;
            }
            let attr = text(e.child_by_field_name("attribute")?, src);
            let class = ancestor_any(e, &["class_definition"])?;
            let whole = format!("self.{attr}");
            let class_name = text(class.child_by_field_name("name")?, src);
            (bindings(nodes, class, &whole, src) == Some(1))
                .then(|| format!("%({class_name}.{attr})"))
        }
        _ => None,
    }
}

/// How many times `name` (a variable or `self.x`) is bound within `scope`: assignments,
/// augmented ones, loop targets, `as` targets; None when it is also a parameter there.
fn bindings(nodes: &[Node], scope: Node, name: &str, src: &str) -> Option<usize> {
    let within =
        |n: &Node| n.start_byte() >= scope.start_byte() && n.end_byte() <= scope.end_byte();
    let squeeze = |n: Node| -> String { text(n, src).split_whitespace().collect() };
    let mut count = 0;
    for n in nodes.iter().filter(|n| within(n)) {
        let target = match n.kind() {
            "assignment" | "augmented_assignment" | "for_statement" | "for_in_clause" => {
                n.child_by_field_name("left")
            }
            "as_pattern_target" => Some(*n),
            "parameters" | "lambda_parameters" => {
                let mut c = n.walk();
                if n.named_children(&mut c).any(|p| {
                    let id = if p.kind() == "identifier" {
                        Some(p)
                    } else {
                        p.child_by_field_name("name").or_else(|| p.named_child(0))
                    };
                    id.is_some_and(|id| text(id, src) == name)
                }) {
                    return None;
                }
                None
            }
            _ => None,
        };
        let Some(t) = target else {
            continue;
        };
        // `a, b = ...` binds each name of the pattern.
        if squeeze(t) == name {
            count += 1;
        } else if matches!(t.kind(), "pattern_list" | "tuple_pattern" | "list_pattern") {
            let mut c = t.walk();
            count += t
                .named_children(&mut c)
                .filter(|x| squeeze(*x) == name)
                .count();
        }
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lang::c::named_descendants;

    fn fields_of(py: &str, needle: &str) -> Vec<(String, Option<String>, String)> {
        let tree = crate::lang::python::parse(py).unwrap();
        let nodes = named_descendants(tree.root_node());
        let s = of_kind(&nodes, "string")
            .into_iter()
            .find(|s| text(*s, py).contains(needle))
            .unwrap();
        fields(&nodes, s, py)
            .into_iter()
            .map(|f| {
                let mut removed = py.to_string();
                removed.replace_range(f.remove.0, &f.remove.1);
                (py[f.at..f.end].to_string(), f.name, removed)
            })
            .collect()
    }

    #[test]
    fn a_classes_template_names_its_table_by_the_attribute_that_fills_it() {
        let py = "class Probe(object):\n    def decl(self):\n        self.events = \"%s_events\" % self.name\n        text = \"\"\"\nBPF_PERF_OUTPUT(%s);\n%s\n\"\"\"\n        return text % (self.events,\n                       self.extra)\n    def body(self, heading, ctx):\n        text = heading + \"\"\"{\n        %s.perf_submit(%s, &d, sizeof(d));\n}\"\"\"\n        text = text % (self.events, ctx)\n        return text\n";
        let decl = fields_of(py, "BPF_PERF_OUTPUT");
        assert_eq!(decl.len(), 2);
        assert_eq!(decl[0].0, "%s");
        assert_eq!(decl[0].1.as_deref(), Some("%(Probe.events)"));
        // `self.extra` is never assigned in the class: no name.
        assert_eq!(decl[1].1, None);
        let body = fields_of(py, "perf_submit");
        assert_eq!(body[0].1.as_deref(), Some("%(Probe.events)"));
        // A parameter may hold anything; dropping the field drops its argument and comma.
        assert_eq!(body[1].1, None);
        assert!(body[1].2.contains("text = text % (self.events,)\n"));
        assert!(decl[0].2.contains("return text % (self.extra,)\n"));
    }

    #[test]
    fn fields_without_countable_arguments_have_no_names() {
        for py in [
            // A key.
            "t = \"BPF_PERF_OUTPUT(%(name)s);\" % {\"name\": n}\n",
            // More fields than arguments.
            "n = 'a'\nt = \"BPF_PERF_OUTPUT(%s); %s\" % n\n",
            // Not formatted at all.
            "t = \"BPF_PERF_OUTPUT(%s);\"\n",
            // The string first in a sum: what follows has fields of its own.
            "n = 'a'\nt = (\"BPF_PERF_OUTPUT(%s);\" + tail) % (n, m)\n",
        ] {
            assert!(
                fields_of(py, "BPF_PERF_OUTPUT")
                    .iter()
                    .all(|f| f.1.is_none()),
                "{py}"
            );
        }
        // A literal names the table itself; a variable bound once in the module, by its
        // name; a variable bound twice, not at all.
        let once = "name = 'ev'\nt = \"BPF_PERF_OUTPUT(%s); x.perf_submit(%s, &d, 4);\" % (name, \"ctx\")\n";
        let f = fields_of(once, "BPF_PERF_OUTPUT");
        assert_eq!(f[0].1.as_deref(), Some("%(name)"));
        assert_eq!(f[1].1.as_deref(), Some("ctx"));
        let twice = "name = 'ev'\nname = 'other'\nt = \"BPF_PERF_OUTPUT(%s);\" % name\n";
        assert_eq!(fields_of(twice, "BPF_PERF_OUTPUT")[0].1, None);
        // The argument alone goes as `()`, and so does a tuple of one.
        let alone = "def f():\n    n = 'a'\n    return \"BPF_PERF_OUTPUT(%s);\" % n\n";
        let f = fields_of(alone, "BPF_PERF_OUTPUT");
        assert_eq!(f[0].1.as_deref(), Some("%(f:n)"));
        assert!(f[0].2.contains("% ()\n"));
        let one = "n = 'a'\nt = \"BPF_PERF_OUTPUT(%s);\" % (n,)\n";
        assert!(fields_of(one, "BPF_PERF_OUTPUT")[0].2.contains("% ()\n"));
    }
}
