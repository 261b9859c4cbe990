//! Packet samples: `bpf_perf_event_output(skb, &map, BPF_F_CURRENT_CPU | ((__u64)len << 32),
//! &hdr, sizeof(hdr))` in a program whose context is a `struct __sk_buff *` (tc, socket
//! filter, cgroup skb) or a `struct xdp_md *` (XDP): the kernel appends the first `len` bytes
//! of the packet to the record, after the header. `bpf_ringbuf_output()` has no such flag, so
//! the record is put together in a per-CPU scratch buffer (the header, then the bytes from
//! `bpf_skb_load_bytes()` or `bpf_xdp_load_bytes()`) and sent from there, by a helper written
//! once for each map, context, header type and bound (`MAP_output_packet`), before the first
//! function that calls it. The reader sees what it saw: the header, then `len` bytes.
//!
//! The buffer needs a constant size: the program's own bound on `len` (a constant length, a
//! clamp `if (len > MAX) len = MAX;`, `len = min(x, MAX)`, `x < MAX ? x : MAX`, a mask
//! `len & 0x3ff`), else `--max-packet BYTES`, which cuts longer packets; without either the
//! call is refused (`output-ctxlen`), since the perf buffer sent every byte asked for.

use tree_sitter::Node;

use super::super::context::{Ctx, Report};
use super::super::lost_counter;
use super::super::options::{MAX_PACKET_LIMIT, Strategy};
use super::cpu_site::{bare, declaration, event_var, sizes_whole};
use crate::edit::Edit;
use crate::lang::NodeExt;
use crate::lang::c;
use crate::rules::Rule;
use crate::source::{line_end_incl, line_start};

/// What a packet sample's context is, and so which helper loads its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Packet {
    Skb,
    Xdp,
}

impl Packet {
    fn ctx_type(self) -> &'static str {
        match self {
            Packet::Skb => "struct __sk_buff",
            Packet::Xdp => "struct xdp_md",
        }
    }
    fn param(self) -> &'static str {
        match self {
            Packet::Skb => "skb",
            Packet::Xdp => "ctx",
        }
    }
    fn load(self) -> &'static str {
        match self {
            Packet::Skb => "bpf_skb_load_bytes",
            Packet::Xdp => "bpf_xdp_load_bytes",
        }
    }
}

/// Which C the call is in: libbpf's `bpf_perf_event_output(ctx, &map, flags, data, size)`, or
/// BCC's `map.perf_submit_skb(ctx, len, data, size)` (the helper then uses BCC's tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Libbpf,
    Bcc,
}

impl Dialect {
    /// What a refusal is reported as.
    fn refusal(self) -> Rule {
        match self {
            Dialect::Libbpf => Rule::OutputCtxlen,
            Dialect::Bcc => Rule::BccSubmitSkb,
        }
    }
    /// The prefix of the kernel's fixed-width integer types: `__u8`, or BCC's `u8`.
    fn int(self) -> &'static str {
        match self {
            Dialect::Libbpf => "__",
            Dialect::Bcc => "",
        }
    }
}

/// A helper: one for each map, context, header type and bound.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    map: String,
    packet: Packet,
    header: String,
    max: String,
    dialect: Dialect,
}

/// A call that can be migrated, with what its helper is.
#[derive(Debug)]
pub struct PacketSite {
    call: (usize, usize),
    args: Vec<String>,
    key: Key,
    /// Where the helper goes: before the function (its comment and `SEC` line) that calls it.
    at: usize,
    flags_at: usize,
    len: String,
    /// The length without its casts, for messages.
    len_name: String,
    /// Where the bound comes from: the program's own (its line), or the option.
    own: Option<usize>,
    /// Lines that go with the call: a flags local's declaration and `|=` (`flags_variable`).
    gone: Vec<(usize, usize)>,
    /// The header's type when the function defines it in the header's declaration.
    hoist: Option<Hoist>,
}

/// A header type defined in its variable's declaration inside the function
/// (`struct S { ... } __packed hdr;`, as the kernel's XDP sample does): the helper before the
/// function could not name it, so the definition moves before the helper, and the
/// declaration keeps the name (`struct S hdr;`). The type is the same, so is the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hoist {
    /// From the specifier's start to the first declarator: the definition and any
    /// attributes after its body.
    span: (usize, usize),
    /// What the declaration keeps (`struct S `).
    keep: String,
    /// The definition at file scope, its lines moved left with the declaration's.
    definition: String,
}

/// The output `call` of a packet to `map` (arguments `args`: libbpf's five, the flags with
/// CTXLEN bits, or BCC's four), or `None` with the refusal reported.
pub fn packet_site(
    cx: &mut Ctx,
    call: Node,
    args: &[(usize, usize)],
    map: &str,
    dialect: Dialect,
) -> Option<PacketSite> {
    match site(cx, call, args, map, dialect) {
        Ok(s) => Some(s),
        Err((at, why, help)) => {
            cx.report(at, dialect.refusal(), why, &help);
            None
        }
    }
}

type Refusal = (usize, String, String);

fn site(
    cx: &Ctx,
    call: Node,
    args: &[(usize, usize)],
    map: &str,
    dialect: Dialect,
) -> Result<PacketSite, Refusal> {
    let src = cx.src();
    let argt = |i: usize| &src[args[i].0..args[i].1];
    let by_hand = "copy the packet bytes into the event with bpf_skb_load_bytes() (bpf_xdp_load_bytes() in XDP) and migrate by hand";
    let mut gone = Vec::new();
    // The length, the header and its size, and where the length is given.
    let (len, data, size, len_at) = match dialect {
        Dialect::Libbpf => {
            let flags = argt(2);
            let local = flags_variable(cx, call, flags);
            gone = local.as_ref().map_or_else(Vec::new, |l| l.gone.clone());
            let len = shifted_length(cx, args[2])
                .or(local.map(|l| l.len))
                .ok_or_else(|| {
                (
                    args[2].0,
                    format!("the flags `{flags}` append packet data (BPF_F_CTXLEN_MASK bits) to the event written to `{map}`, but not as `BPF_F_CURRENT_CPU | ((__u64)LEN << 32)`"),
                    format!("write the flags in that form and run bpf-migrate again, or {by_hand}"),
                )
            })?;
            (len, args[3], args[4], args[2].0)
        }
        Dialect::Bcc => {
            let len = cx
                .root()
                .descendant_for_byte_range(args[1].0, args[1].1)
                .ok_or_else(|| {
                    (
                        args[1].0,
                        "the length does not parse".to_string(),
                        by_hand.to_string(),
                    )
                })?;
            (len, args[2], args[3], args[1].0)
        }
    };
    let func = c::ancestor(call, "function_definition").ok_or_else(|| {
        (
            call.start_byte(),
            "the packet output is not in a function".to_string(),
            by_hand.to_string(),
        )
    })?;
    let packet = context(cx, func, args[0]).map_err(|why| {
        (
            args[0].0,
            format!("the packet data appended to the event written to `{map}` comes from {why}, not from a `struct __sk_buff *` (tc, socket filter) or `struct xdp_md *` (XDP) the ring buffer's copy can load it from"),
            by_hand.to_string(),
        )
    })?;
    if dialect == Dialect::Bcc && packet == Packet::Xdp {
        return Err((
            args[0].0,
            format!(
                "the packet data appended to the event written to `{map}` comes from an XDP context, and bpf-migrate loads packet bytes in BCC only from a `struct __sk_buff *`"
            ),
            by_hand.to_string(),
        ));
    }
    let (header, hoist) = header_type(cx, func, data, size).map_err(|(at, why)| {
        (
            at,
            format!("the packet bytes appended to the event written to `{map}` follow a header that {why}"),
            format!("send the header as `&hdr, sizeof(hdr)` (a local) or `e, sizeof(*e)` (a pointer) and run bpf-migrate again, or {by_hand}"),
        )
    })?;
    let len_text = c::strip_parens(c::text(len, src)).to_string();
    let len_name = c::text(uncast(len, src), src);
    let (max, own) = match own_bound(cx, func, call, len) {
        Some((max, at)) if literal_value(&max).is_none_or(|v| v <= MAX_PACKET_LIMIT) => {
            (max, Some(at))
        }
        own => match cx.opts.max_packet {
            Some(n) => (n.to_string(), None),
            None => {
                let why = match own {
                    Some((max, _)) => format!(
                        "the program bounds it at {max} bytes, more than the {MAX_PACKET_LIMIT} a per-CPU buffer is given"
                    ),
                    None => "the program sets no constant bound on it".to_string(),
                };
                return Err((
                    len.start_byte(),
                    format!("the length `{len_name}` of the packet data appended to the event written to `{map}` needs a constant bound in the ring buffer's copy, and {why}: packets longer than a bound picked here would be cut, where the perf buffer sent them whole"),
                    "bound the length in the program (`if (len > MAX) len = MAX;` with a constant MAX) and run bpf-migrate again, or accept that longer packets are cut with --max-packet BYTES (1500 for an Ethernet MTU)".to_string(),
                ));
            }
        },
    };
    Ok(PacketSite {
        call: (call.start_byte(), call.end_byte()),
        args: vec![argt(0).to_string(), src[data.0..data.1].to_string()],
        key: Key {
            map: map.to_string(),
            packet,
            header,
            max,
            dialect,
        },
        at: helper_at(src, func),
        flags_at: len_at,
        len: len_text,
        len_name: len_name.to_string(),
        own,
        gone,
        hoist,
    })
}

/// `LEN` of `BPF_F_CURRENT_CPU | ((__u64)LEN << 32)` (either side of the `|`, any casts and
/// parentheses), as written: the cast stays with it.
fn shifted_length<'t>(cx: &Ctx<'_, 't>, flags: (usize, usize)) -> Option<Node<'t>> {
    let src = cx.src();
    let or = bare(cx.root().descendant_for_byte_range(flags.0, flags.1)?);
    if or.kind() != "binary_expression" || c::text(or.field("operator")?, src) != "|" {
        return None;
    }
    let (l, r) = (bare(or.field("left")?), bare(or.field("right")?));
    let cpu = |n: Node| {
        n.kind() == "identifier"
            && matches!(c::text(n, src), "BPF_F_CURRENT_CPU" | "BPF_F_INDEX_MASK")
    };
    let shift = if cpu(l) {
        r
    } else if cpu(r) {
        l
    } else {
        return None;
    };
    (shift.kind() == "binary_expression"
        && c::text(shift.field("operator")?, src) == "<<"
        && c::strip_parens(c::text(shift.field("right")?, src)) == "32")
        .then(|| shift.field("left"))
        .flatten()
}

/// Flags kept in a local, and what goes with them once the call no longer takes them.
pub(super) struct FlagsLocal<'t> {
    pub(super) len: Node<'t>,
    /// The lines of its declaration and of its `|=`.
    pub(super) gone: Vec<(usize, usize)>,
}

/// The lines of statement `n`, when it has them to itself.
fn own_lines(src: &str, n: Node) -> Option<(usize, usize)> {
    let (s, e) = (
        line_start(src, n.start_byte()),
        line_end_incl(src, n.end_byte()),
    );
    (src[s..n.start_byte()].trim().is_empty() && src[n.end_byte()..e].trim().is_empty())
        .then_some((s, e))
}

/// `LEN` of flags kept in a local `name` of the function around `call`, set to
/// `BPF_F_CURRENT_CPU` where it is declared and given the length with one `name |= (__u64)LEN
/// << 32;` (or declared as `BPF_F_CURRENT_CPU | ((__u64)LEN << 32)`), and used for nothing
/// else but the call: `u64 flags = BPF_F_CURRENT_CPU; ... flags |= (u64)size << 32;`. The
/// declaration (of that name alone) and the `|=` statement must have their lines to themselves.
pub(super) fn flags_variable<'t>(
    cx: &Ctx<'_, 't>,
    call: Node<'t>,
    name: &str,
) -> Option<FlagsLocal<'t>> {
    let src = cx.src();
    if !c::is_ident(name) {
        return None;
    }
    let func = c::ancestor(call, "function_definition")?;
    let (fs, fe) = (func.start_byte(), func.end_byte());
    let cpu = |n: Node| {
        n.kind() == "identifier"
            && matches!(c::text(n, src), "BPF_F_CURRENT_CPU" | "BPF_F_INDEX_MASK")
    };
    let mut init = None;
    let mut or_len = None;
    let mut gone = Vec::new();
    for id in cx.of_kind("identifier") {
        if id.start_byte() < fs || id.end_byte() > fe || c::text(id, src) != name {
            continue;
        }
        let parent = id.parent()?;
        match parent.kind() {
            "init_declarator"
                if parent
                    .field("declarator")
                    .is_some_and(|d| d.id() == id.id()) =>
            {
                let decl = parent.parent().filter(|d| d.kind() == "declaration")?;
                let mut w = decl.walk();
                let declarators = decl.children_by_field_name("declarator", &mut w).count();
                if init.is_some() || declarators != 1 {
                    return None;
                }
                gone.push(own_lines(src, decl)?);
                init = Some(bare(parent.field("value")?));
            }
            "assignment_expression" if parent.field("left").is_some_and(|l| l.id() == id.id()) => {
                let op = c::text(parent.field("operator")?, src);
                let shift = bare(parent.field("right")?);
                if op != "|=" || or_len.is_some() || shift.kind() != "binary_expression" {
                    return None;
                }
                if c::text(shift.field("operator")?, src) != "<<"
                    || c::strip_parens(c::text(shift.field("right")?, src)) != "32"
                {
                    return None;
                }
                let stmt = parent
                    .parent()
                    .filter(|p| p.kind() == "expression_statement")?;
                gone.push(own_lines(src, stmt)?);
                or_len = Some(shift.field("left")?);
            }
            // The call's own argument.
            "argument_list" if parent.parent().is_some_and(|p| p.id() == call.id()) => {}
            _ => return None,
        }
    }
    let len = match (init?, or_len) {
        (i, Some(len)) if cpu(i) => len,
        (i, None) => shifted_length(cx, (i.start_byte(), i.end_byte()))?,
        _ => return None,
    };
    Some(FlagsLocal { len, gone })
}

/// Which context the call's first argument is, or what it is instead.
fn context(cx: &Ctx, func: Node, span: (usize, usize)) -> Result<Packet, String> {
    let src = cx.src();
    let text = &src[span.0..span.1];
    let n = cx
        .root()
        .descendant_for_byte_range(span.0, span.1)
        .map(bare)
        .filter(|n| n.kind() == "identifier")
        .ok_or_else(|| format!("`{text}`, not a variable"))?;
    let name = c::text(n, src);
    let decl = declaration(func, name, src).map_err(|why| format!("`{name}` ({why})"))?;
    let ty = c::text(decl.ty, src);
    match (ty, decl.pointer) {
        ("struct __sk_buff", true) => Ok(Packet::Skb),
        ("struct xdp_md", true) => Ok(Packet::Xdp),
        _ => Err(format!(
            "`{name}`, a `{ty}{}`",
            if decl.pointer { " *" } else { "" }
        )),
    }
}

/// The type of the header the call sends (`&hdr, sizeof(hdr)` or `e, sizeof(*e)`), with its
/// definition to move out of the function when the declaration defines it, or where and what
/// the header is instead.
fn header_type(
    cx: &Ctx,
    func: Node,
    data_span: (usize, usize),
    size_span: (usize, usize),
) -> Result<(String, Option<Hoist>), (usize, String)> {
    let src = cx.src();
    let data = &src[data_span.0..data_span.1];
    let (var, pointer) = event_var(cx, data_span).ok_or_else(|| {
        (
            data_span.0,
            format!("is `{data}`, not a local (`&hdr`) or a pointer (`e`)"),
        )
    })?;
    let decl = declaration(func, &var, src).map_err(|why| (data_span.0, format!("is {why}")))?;
    let (ty, hoist) = if decl.ty.field("body").is_some() {
        let h = hoist(cx, func, decl.ty, &var).map_err(|why| (data_span.0, why))?;
        (h.keep.trim_end().to_string(), Some(h))
    } else {
        let ty = c::text(decl.ty, src).to_string();
        if let Some(at) = defined_in(func, &ty, src) {
            return Err((
                data_span.0,
                format!(
                    "is of the type `{ty}`, which the function defines itself (line {}) and the helper written before the function cannot name; define the type outside the function",
                    cx.file.line_col(at).0
                ),
            ));
        }
        (ty, None)
    };
    if decl.pointer != pointer {
        return Err((
            data_span.0,
            format!(
                "is `{data}`, not `&{var}` for a local `{ty} {var}` or `{var}` for a `{ty} *{var}`"
            ),
        ));
    }
    if !sizes_whole(&src[size_span.0..size_span.1], &var, pointer, &ty) {
        return Err((
            size_span.0,
            format!(
                "is sent with the size `{}`, not the whole `{ty}` (`sizeof({}{var})`): the packet bytes follow the bytes sent",
                &src[size_span.0..size_span.1],
                if pointer { "*" } else { "" }
            ),
        ));
    }
    Ok((ty, hoist))
}

/// The move of the header type that `spec` (a struct or union specifier with a body, in the
/// declaration of `var` in `func`) defines, or why it cannot move: a tag defined twice in the
/// file (two functions' own types would clash at file scope), a body that names a type the
/// function defines.
fn hoist(cx: &Ctx, func: Node, spec: Node, var: &str) -> Result<Hoist, String> {
    let src = cx.src();
    let kind = spec.kind().trim_end_matches("_specifier");
    let decl = spec
        .parent()
        .filter(|d| d.kind() == "declaration")
        .ok_or_else(|| {
            format!("is a `{kind}` defined in a declaration bpf-migrate cannot split")
        })?;
    let first = decl
        .field("declarator")
        .ok_or_else(|| format!("is a `{kind}` defined in a declaration without a variable"))?;
    let tag = match spec.field("name") {
        Some(n) => {
            let tag = c::text(n, src);
            let defs = c::descendants(cx.root())
                .into_iter()
                .filter(|d| {
                    d.kind() == spec.kind()
                        && d.field("body").is_some()
                        && d.field("name").is_some_and(|n| c::text(n, src) == tag)
                })
                .count();
            if defs > 1 {
                return Err(format!(
                    "is a `{kind} {tag}` defined in the function, and the file defines another `{kind} {tag}`, so the type cannot move before the function where the helper can name it; rename one of them"
                ));
            }
            tag.to_string()
        }
        // An anonymous type gets a name of its own, free in the file.
        None => (1..)
            .map(|i| match i {
                1 => format!("{var}_t"),
                _ => format!("{var}_t{i}"),
            })
            .find(|n| !lost_counter::mentions(src, n))
            .expect("a free name"),
    };
    let body = spec.field("body").expect("a body");
    for n in c::descendants(body) {
        let tagged = matches!(
            n.kind(),
            "struct_specifier" | "union_specifier" | "enum_specifier"
        ) && n.field("body").is_none();
        if n.kind() == "type_identifier" || tagged {
            let named = c::text(n, src);
            if defined_in(func, named, src).is_some_and(|at| at != spec.start_byte()) {
                return Err(format!(
                    "is a `{kind}` defined in the function with a member of a type the function also defines (`{named}`), which cannot move before the function"
                ));
            }
        }
    }
    // The definition: its text with the tag, the attributes after its body, and its
    // continuation lines moved left by the declaration's indentation.
    let text = &src[spec.start_byte()..first.start_byte()];
    let text = match spec.field("name") {
        Some(_) => text.trim_end().to_string(),
        None => text.trim_end().replacen(kind, &format!("{kind} {tag}"), 1),
    };
    let line = line_start(src, decl.start_byte());
    let indent = &src[line..decl.start_byte()];
    let indent = if indent.trim().is_empty() { indent } else { "" };
    let definition: String = text
        .split_inclusive('\n')
        .map(|l| l.strip_prefix(indent).unwrap_or(l))
        .collect();
    Ok(Hoist {
        span: (spec.start_byte(), first.start_byte()),
        keep: format!("{kind} {tag} "),
        definition: format!("{definition};\n\n"),
    })
}

/// Where `func` defines the type `ty` (`struct S`, `union U` or a typedef name) itself, in a
/// statement of its own or in a declaration.
fn defined_in(func: Node, ty: &str, src: &str) -> Option<usize> {
    let (kind, name) = match ty.split_once(' ') {
        Some((k @ ("struct" | "union" | "enum"), n)) => (Some(k), n.trim()),
        _ => (None, ty.trim()),
    };
    c::descendants(func).into_iter().find_map(|n| {
        let found = match kind {
            Some(k) => {
                n.kind() == format!("{k}_specifier")
                    && n.field("body").is_some()
                    && n.field("name").is_some_and(|x| c::text(x, src) == name)
            }
            None => {
                n.kind() == "type_definition"
                    && n.field("declarator")
                        .is_some_and(|x| c::text(x, src) == name)
            }
        };
        found.then(|| n.start_byte())
    })
}

/// The program's own constant bound on the length `len` (casts and parentheses aside) where
/// `call` sends it, with the offset of what sets it: `len` is a constant or a bounded
/// expression, or a local whose last setting before the call, on every path to it, is one
/// (`u32 len = min(skb->len, 128);`, `len &= 0x3ff;`) or a clamp (`if (len > MAX) len = MAX;`).
fn own_bound(cx: &Ctx, func: Node, call: Node, len: Node) -> Option<(String, usize)> {
    let src = cx.src();
    let len = uncast(len, src);
    if let Some(b) = bounded(cx, len) {
        return Some((b, len.start_byte()));
    }
    // A local (`len`) or a member of a local struct (`meta.cap`), by its text; `base` the local.
    let var: String = c::text(len, src).split_whitespace().collect();
    let base = match len.kind() {
        "identifier" => len,
        "field_expression" => {
            let b = bare(len.field("argument")?);
            (b.kind() == "identifier" && c::text(len.field("operator")?, src) == ".")
                .then_some(b)?
        }
        _ => return None,
    };
    let base = c::text(base, src);
    declaration(func, base, src).ok().filter(|d| !d.pointer)?;
    let text_of =
        |n: Option<Node>| n.map(|n| c::text(bare(n), src).split_whitespace().collect::<String>());
    let is_var = |n: Option<Node>| text_of(n).as_deref() == Some(var.as_str());
    // The whole struct set (assigned or declared), which sets the member too.
    let is_base = |n: Option<Node>| text_of(n).as_deref() == Some(base);
    // The settings of `var` in the function, in order; its address (or its struct's) taken,
    // none can be trusted.
    let mut last = None;
    for n in c::descendants(func) {
        if n.start_byte() >= call.start_byte() {
            break;
        }
        match n.kind() {
            "pointer_expression"
                if n.field("operator").map(|o| c::text(o, src)) == Some("&")
                    && (is_var(n.field("argument")) || is_base(n.field("argument"))) =>
            {
                return None;
            }
            "update_expression" if is_var(n.field("argument")) => last = Some(n),
            "assignment_expression" if is_var(n.field("left")) || is_base(n.field("left")) => {
                last = Some(n)
            }
            "init_declarator"
                if is_var(n.field("declarator")) || is_base(n.field("declarator")) =>
            {
                last = Some(n)
            }
            _ => {}
        }
    }
    let var = var.as_str();
    let last = last?;
    // What bounds it, and the statement that does: the clamp's `if`, or the setting's own.
    let (bound, stmt) = match last.kind() {
        "init_declarator" => (bounded(cx, last.field("value")?)?, statement_of(last)?),
        "assignment_expression" => {
            let value = last.field("right")?;
            match c::text(last.field("operator")?, src) {
                "=" => match c::ancestor(last, "if_statement")
                    .and_then(|i| clamp(cx, i, var, value).map(|b| (b, i)))
                {
                    Some((b, i)) => (b, statement_of(i)?),
                    None => (bounded(cx, value)?, statement_of(last)?),
                },
                "&=" => (constant(cx, bare(value))?, statement_of(last)?),
                _ => return None,
            }
        }
        _ => return None,
    };
    // The statement runs on every way to the call: its block holds the call.
    let block = stmt.parent()?;
    (block.start_byte() <= call.start_byte() && call.end_byte() <= block.end_byte())
        .then(|| (bound, stmt.start_byte()))
}

/// `n` without parentheses and casts, `(u64)(x)` too (which parses as a call of `(u64)`).
fn uncast<'t>(n: Node<'t>, src: &str) -> Node<'t> {
    let mut n = bare(n);
    while n.kind() == "call_expression"
        && let Some(f) = n.field("function")
        && f.kind() == "parenthesized_expression"
        && f.named_child(0)
            .is_some_and(|t| c::is_ident(c::text(t, src)))
        && let Some(args) = n.field("arguments")
        && args.named_child_count() == 1
        && let Some(a) = args.named_child(0)
    {
        n = bare(a);
    }
    n
}

/// The statement of a block that holds `n`, if `n` runs whenever it does (not in a branch
/// or a loop of it).
fn statement_of(n: Node) -> Option<Node> {
    let mut n = n;
    loop {
        let p = n.parent()?;
        if p.kind() == "compound_statement" {
            return Some(n);
        }
        if matches!(
            p.kind(),
            "if_statement"
                | "else_clause"
                | "for_statement"
                | "while_statement"
                | "do_statement"
                | "switch_statement"
                | "case_statement"
                | "labeled_statement"
        ) {
            return None;
        }
        n = p;
    }
}

/// `if (var > C) var = C;` (or `>=`, or `C < var`, or the assignment in braces), no `else`,
/// whose assignment is `value`.
fn clamp(cx: &Ctx, stmt: Node, var: &str, value: Node) -> Option<String> {
    let src = cx.src();
    if stmt.field("alternative").is_some() {
        return None;
    }
    let body = stmt.field("consequence")?;
    let body_text: String = c::text(body, src)
        .chars()
        .filter(|c| !c.is_whitespace() && !matches!(c, '{' | '}'))
        .collect();
    let c_text = constant(cx, bare(value))?;
    let value_text = c::text(value, src);
    if body_text
        != format!("{var}={value_text};")
            .split_whitespace()
            .collect::<String>()
    {
        return None;
    }
    let cond = bare(stmt.field("condition")?);
    if cond.kind() != "binary_expression" {
        return None;
    }
    let (l, r) = (bare(cond.field("left")?), bare(cond.field("right")?));
    let op = c::text(cond.field("operator")?, src);
    let (v, k) = match op {
        ">" | ">=" => (l, r),
        "<" | "<=" => (r, l),
        _ => return None,
    };
    (c::text(v, src) == var && constant(cx, k).as_deref() == Some(c_text.as_str()))
        .then_some(c_text)
}

/// The constant bound of an expression that is at most a constant: the constant, `min(x, C)`
/// (`MIN`, `min_t(type, x, C)`), `x < C ? x : C` (and its mirror images), `x & C`.
fn bounded(cx: &Ctx, n: Node) -> Option<String> {
    let src = cx.src();
    let n = bare(n);
    if let Some(k) = constant(cx, n) {
        return Some(k);
    }
    match n.kind() {
        "call_expression" => {
            let name = c::call_name(n, src)?;
            let args = n.field("arguments")?;
            let mut cur = args.walk();
            let a: Vec<Node> = args.named_children(&mut cur).collect();
            let a = match (name, a.len()) {
                ("min" | "MIN" | "__min" | "umin", 2) => &a[..],
                ("min_t", 3) => &a[1..],
                _ => return None,
            };
            constant(cx, bare(a[0])).or_else(|| constant(cx, bare(a[1])))
        }
        "conditional_expression" => {
            let cond = bare(n.field("condition")?);
            if cond.kind() != "binary_expression" {
                return None;
            }
            let (l, r) = (bare(cond.field("left")?), bare(cond.field("right")?));
            let op = c::text(cond.field("operator")?, src);
            let (yes, no) = (bare(n.field("consequence")?), bare(n.field("alternative")?));
            let t = |n: Node| c::text(n, src).split_whitespace().collect::<String>();
            // x is the smaller when the condition holds.
            let (x, k, x_smaller) = if let Some(k) = constant(cx, r) {
                (l, k, matches!(op, "<" | "<="))
            } else if let Some(k) = constant(cx, l) {
                (r, k, matches!(op, ">" | ">="))
            } else {
                return None;
            };
            if !matches!(op, "<" | "<=" | ">" | ">=") {
                return None;
            }
            let (small, large) = if x_smaller { (yes, no) } else { (no, yes) };
            (t(small) == t(x) && constant(cx, large).as_deref() == Some(k.as_str())).then_some(k)
        }
        "binary_expression" if n.field("operator").map(|o| c::text(o, src)) == Some("&") => {
            constant(cx, bare(n.field("left")?)).or_else(|| constant(cx, bare(n.field("right")?)))
        }
        _ => None,
    }
}

/// A compile-time constant the scratch buffer's size can be written with: a number, or a
/// name in capitals (a macro or an enumerator) that no variable of the file has.
fn constant(cx: &Ctx, n: Node) -> Option<String> {
    let src = cx.src();
    let t = c::text(n, src);
    match n.kind() {
        "number_literal" => literal_value(t).map(|_| t.to_string()),
        "identifier"
            if t.chars().any(|c| c.is_ascii_uppercase())
                && !t.chars().any(|c| c.is_ascii_lowercase())
                && !cx.of_kind("identifier").into_iter().any(|m| {
                    c::text(m, src) == t
                        && c::is_declared_name(cx.root(), m.start_byte(), m.end_byte())
                        && !m
                            .parent()
                            .is_some_and(|p| matches!(p.kind(), "enumerator" | "preproc_def"))
                }) =>
        {
            Some(t.to_string())
        }
        _ => None,
    }
}

/// The value of an integer literal (`128`, `0x3ff`, `64ULL`).
fn literal_value(t: &str) -> Option<u64> {
    let t = t.trim_end_matches(['u', 'U', 'l', 'L']);
    match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None if t.len() > 1 && t.starts_with('0') => u64::from_str_radix(&t[1..], 8).ok(),
        None => t.parse().ok(),
    }
}

/// The start of the function's first line, or of the comment and `SEC(...)` lines right
/// above it.
fn helper_at(src: &str, func: Node) -> usize {
    let mut at = line_start(src, func.start_byte());
    while at > 0 {
        let prev = line_start(src, at - 1);
        let t = src[prev..at].trim();
        let above = t.starts_with("SEC(")
            || t.starts_with("//")
            || t.starts_with("/*")
            || t.starts_with('*')
            || t.ends_with("*/");
        if !above || t.is_empty() {
            break;
        }
        at = prev;
    }
    at
}

/// The helpers of the file's packet outputs, each written once before the first function that
/// calls it, and the calls rewritten to call them.
pub fn plan(cx: &mut Ctx, sites: Vec<PacketSite>) {
    let mut keys: Vec<(Key, String, usize)> = Vec::new();
    let mut taken: Vec<String> = Vec::new();
    // Header types moved out of their functions, each once, with the helper's key.
    let mut hoisted: Vec<(Key, Hoist)> = Vec::new();
    for s in &sites {
        if let Some(h) = &s.hoist
            && !hoisted.iter().any(|(_, x)| x.span == h.span)
        {
            cx.edits.push(Edit::replace(
                h.span.0,
                h.span.1,
                h.keep.clone(),
                Rule::OutputPacket,
            ));
            hoisted.push((s.key.clone(), h.clone()));
        }
        let name = match keys.iter().find(|(k, _, _)| *k == s.key) {
            Some((_, name, _)) => name.clone(),
            None => {
                let name = helper_name(cx.src(), &s.key.map, s.key.packet, &taken);
                taken.push(name.clone());
                keys.push((s.key.clone(), name.clone(), s.at));
                name
            }
        };
        if let Some(k) = keys.iter_mut().find(|(k, _, _)| *k == s.key) {
            k.2 = k.2.min(s.at);
        }
        let src = cx.src();
        let text = c::layout_call(
            src,
            s.call.0,
            s.call.1,
            &name,
            &[s.args[0].clone(), s.args[1].clone(), s.len.clone()],
        );
        cx.edits
            .push(Edit::replace(s.call.0, s.call.1, text, Rule::OutputPacket));
        for &(a, b) in &s.gone {
            cx.edits.push(Edit::delete(a, b, Rule::OutputPacket));
        }
        let bound = match s.own {
            Some(at) => format!(
                "at most {} bytes of packet, the program's own bound (line {})",
                s.key.max,
                cx.file.line_col(at).0
            ),
            None => format!(
                "at most {} bytes of packet, from --max-packet: longer packets are cut to that, where the perf buffer sent all `{}` bytes",
                s.key.max, s.len_name
            ),
        };
        let help = match (s.own, s.key.packet) {
            (None, _) => Some(
                "a reader that takes the length from the header must check it against the record's size; bound the length in the program (`if (len > MAX) len = MAX;`) to keep whole packets up to MAX, or give a larger --max-packet",
            ),
            (Some(_), Packet::Xdp) => Some("bpf_xdp_load_bytes() needs Linux 5.18 or later"),
            (Some(_), Packet::Skb) => None,
        };
        cx.diag(
            s.flags_at,
            Rule::OutputPacket,
            format!(
                "the packet bytes appended to the events of `{}` are loaded with {}() behind the header in a per-CPU buffer and sent by `{name}()`: the record is the header, then the bytes, as before; {bound}",
                s.key.map,
                s.key.packet.load()
            ),
            help,
        );
        if cx.opts.strategy == Strategy::Reserve {
            cx.diag(
                s.call.0,
                Rule::ReserveFallback,
                "this event is copied into the ring buffer, not reserved in it: a packet sample is put together in a per-CPU buffer first",
                Some("the copy is correct, only slower"),
            );
        }
    }
    // One insertion at each place, the helpers in order.
    let mut at_points: Vec<usize> = keys.iter().map(|k| k.2).collect();
    at_points.sort();
    at_points.dedup();
    for at in at_points {
        let here: Vec<&(Key, String, usize)> = keys.iter().filter(|k| k.2 == at).collect();
        let helpers: String = here.iter().map(|(k, name, _)| helper(k, name)).collect();
        // A moved type goes before the helpers that name it, in the file's own layout.
        let types: String = hoisted
            .iter()
            .filter(|(k, _)| here.iter().any(|h| h.0 == *k))
            .map(|(_, h)| h.definition.as_str())
            .collect();
        let text = format!("{types}{}", indent_like(&helpers, &cx.src()[at..]));
        cx.edits.push(Edit::insert(at, text, Rule::OutputPacket));
    }
}

/// `MAP_output_skb` or `MAP_output_xdp`, or with a number when that name is taken.
fn helper_name(src: &str, map: &str, packet: Packet, taken: &[String]) -> String {
    let kind = match packet {
        Packet::Skb => "skb",
        Packet::Xdp => "xdp",
    };
    (1..)
        .map(|i| match i {
            1 => format!("{map}_output_{kind}"),
            _ => format!("{map}_output_{kind}{i}"),
        })
        .find(|n| {
            let buf = format!("{n}_buf");
            !taken.contains(n) && !src.contains(n.as_str()) && !src.contains(buf.as_str())
        })
        .expect("a free name")
}

/// `text` (indented with tabs) indented as the code `after` it is: with spaces, if its first
/// indented line begins with spaces, as many for a tab as that line has.
pub(crate) fn indent_like(text: &str, after: &str) -> String {
    let Some(first) = after
        .lines()
        .find(|l| l.starts_with([' ', '\t']) && !l.trim().is_empty())
    else {
        return text.to_string();
    };
    let n = first.len() - first.trim_start_matches(' ').len();
    if n == 0 {
        return text.to_string();
    }
    text.split_inclusive('\n')
        .map(|l| {
            let tabs = l.len() - l.trim_start_matches('\t').len();
            format!("{}{}", " ".repeat(n * tabs), &l[tabs..])
        })
        .collect()
}

/// `text` in lines of at most `width` columns, each begun with `lead`.
fn wrap(text: &str, lead: &str, width: usize) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for w in text.split_whitespace() {
        if !line.is_empty() && lead.len() + line.len() + 1 + w.len() > width {
            out.push_str(&format!("{lead}{line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    if !line.is_empty() {
        out.push_str(&format!("{lead}{line}\n"));
    }
    out
}

/// The scratch buffer and the helper that fills and sends it.
fn helper(k: &Key, name: &str) -> String {
    let (ctx_ty, p, load) = (k.packet.ctx_type(), k.packet.param(), k.packet.load());
    let (hdr, max, map) = (&k.header, &k.max, &k.map);
    let i = k.dialect.int();
    let comment = wrap(
        &format!(
            "bpf-migrate: a record of `{map}` is a `{hdr}` and then up to {max} bytes of the packet, which {} appended itself{} and the ring buffer cannot: the record is put together here.",
            match k.dialect {
                Dialect::Libbpf => "bpf_perf_event_output()",
                Dialect::Bcc => "perf_submit_skb()",
            },
            match k.dialect {
                Dialect::Libbpf => " (BPF_F_CTXLEN_MASK)",
                Dialect::Bcc => "",
            }
        ),
        " * ",
        80,
    );
    let inline = match k.dialect {
        Dialect::Libbpf => "static __always_inline",
        Dialect::Bcc => "static inline __attribute__((always_inline))",
    };
    // The buffer, how the helper finds it, where the header and the packet bytes go, and how
    // it sends the record.
    let (buffer, lookup, copy, data, output) = match k.dialect {
        Dialect::Libbpf => (
            format!(
                r#"struct {{
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[sizeof({hdr}) + {max}]);
}} {name}_buf SEC(".maps");"#
            ),
            format!("__u8 *buf = bpf_map_lookup_elem(&{name}_buf, &zero);"),
            "__builtin_memcpy(buf, hdr, sizeof(*hdr));".to_string(),
            "buf + sizeof(*hdr)",
            format!("bpf_ringbuf_output(&{map}, buf,"),
        ),
        // The header a member of its own type, so that BCC takes the record for one (for
        // `.event()`); the bytes follow it without padding, a struct's size being a multiple
        // of its alignment.
        Dialect::Bcc => (
            format!(
                "struct {name}_t {{\n\t{hdr} hdr;\n\tu8 data[{max}];\n}};\nBPF_PERCPU_ARRAY({name}_buf, struct {name}_t, 1);"
            ),
            format!("struct {name}_t *buf = {name}_buf.lookup(&zero);"),
            "buf->hdr = *hdr;".to_string(),
            "buf->data",
            format!("{map}.ringbuf_output(&buf->hdr,"),
        ),
    };
    format!(
        r#"/*
{comment} */
{buffer}

{inline} long
{name}({ctx_ty} *{p}, const {hdr} *hdr, {i}u64 len)
{{
	{i}u32 zero = 0;
	{lookup}
	long err;

	if (!buf)
		return -1;
	/*
	 * The verifier must see the length clamped in the register the helpers get,
	 * and learn that it is at least 1 from a signed test (before Linux 6.7 it
	 * learns nothing from len != 0): the empty asm keeps the compiler to both.
	 */
	asm volatile("" : "+r"(len));
	if (len > {max})
		len = {max};
	asm volatile("" : "+r"(len));
	{copy}
	if (({i}s64)len > 0) {{
		err = {load}({p}, 0, {data}, len);
		if (err)
			return err;
	}}
	return {output} sizeof(*hdr) + len, 0);
}}

"#
    )
}

#[cfg(test)]
mod tests {
    use super::super::snippets::{PERF_MAP, RING_MAP, bpf, migrates, refused};
    use crate::engine::testkit::{LOADER, check_refused, run};
    use crate::engine::{Options, Strategy};
    use crate::report::{Diagnostic, Severity};
    use crate::rules::Rule;

    /// A tc program that sends `hdr` and `len` bytes of the packet, `body` setting `len`.
    fn tc(body: &str) -> String {
        format!(
            "SEC(\"tc\")\nint capture(struct __sk_buff *skb)\n{{\n\tu32 hdr = skb->ifindex;\n{body}\n\tbpf_perf_event_output(skb, &events, BPF_F_CURRENT_CPU | ((__u64)len << 32), &hdr, sizeof(hdr));\n\treturn 0;\n}}\n"
        )
    }

    /// The migrated `x.bpf.c` of `parts` with `opts`, and the diagnostics; nothing refused.
    fn migrated_with(parts: &[&str], opts: &Options) -> (String, Vec<String>) {
        let (changed, diags) = run(&[("x.bpf.c", &bpf(parts)), ("x.c", LOADER)], opts);
        let text: Vec<String> = diags.iter().map(|d| d.render(false)).collect();
        assert!(
            !diags.iter().any(|d| d.severity.refuses()),
            "refused:\n{}",
            text.concat()
        );
        let notes = diags
            .iter()
            .filter(|d| d.rule == Rule::OutputPacket && d.severity == Severity::Note)
            .map(|d| d.message.clone())
            .collect();
        (changed["x.bpf.c"].clone(), notes)
    }

    /// A diagnostic of `rule` among `diags` says `what`.
    fn says(diags: &[Diagnostic], rule: Rule, what: &str) {
        assert!(
            diags
                .iter()
                .any(|d| d.rule == rule && d.message.contains(what)),
            "no {rule} saying `{what}`: {diags:?}"
        );
    }

    fn migrated(parts: &[&str]) -> (String, Vec<String>) {
        migrated_with(parts, &Options::default())
    }

    #[test]
    fn a_tc_sample_clamped_by_the_program() {
        let code = tc("\tu32 len = skb->len;\n\n\tif (len > 128)\n\t\tlen = 128;");
        let after = format!(
            "{}{}",
            r#"/*
 * bpf-migrate: a record of `events` is a `u32` and then up to 128 bytes of the
 * packet, which bpf_perf_event_output() appended itself (BPF_F_CTXLEN_MASK) and
 * the ring buffer cannot: the record is put together here.
 */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u8[sizeof(u32) + 128]);
} events_output_skb_buf SEC(".maps");

static __always_inline long
events_output_skb(struct __sk_buff *skb, const u32 *hdr, __u64 len)
{
	__u32 zero = 0;
	__u8 *buf = bpf_map_lookup_elem(&events_output_skb_buf, &zero);
	long err;

	if (!buf)
		return -1;
	/*
	 * The verifier must see the length clamped in the register the helpers get,
	 * and learn that it is at least 1 from a signed test (before Linux 6.7 it
	 * learns nothing from len != 0): the empty asm keeps the compiler to both.
	 */
	asm volatile("" : "+r"(len));
	if (len > 128)
		len = 128;
	asm volatile("" : "+r"(len));
	__builtin_memcpy(buf, hdr, sizeof(*hdr));
	if ((__s64)len > 0) {
		err = bpf_skb_load_bytes(skb, 0, buf + sizeof(*hdr), len);
		if (err)
			return err;
	}
	return bpf_ringbuf_output(&events, buf, sizeof(*hdr) + len, 0);
}

"#,
            code.replace(
                "bpf_perf_event_output(skb, &events, BPF_F_CURRENT_CPU | ((__u64)len << 32), &hdr, sizeof(hdr));",
                "events_output_skb(skb, &hdr, (__u64)len);"
            )
        );
        migrates(&[PERF_MAP, &code], &[RING_MAP, &after]);
        let (_, notes) = migrated(&[PERF_MAP, &code]);
        assert!(
            notes[0].contains("at most 128 bytes of packet, the program's own bound (line 16)"),
            "{notes:?}"
        );
    }

    /// Flags kept in a local, declared as the current CPU and given the length with `|=`
    /// (the kernel's and the XDP tutorial's samples): the same sample as written inline.
    #[test]
    fn flags_built_in_a_local_are_a_packet_sample() {
        let code = tc("\tu32 len = skb->len;\n\tu64 flags = BPF_F_CURRENT_CPU;\n\n\tif (len > 128)\n\t\tlen = 128;\n\tflags |= (__u64)len << 32;")
            .replace("BPF_F_CURRENT_CPU | ((__u64)len << 32), &hdr", "flags, &hdr");
        let (out, notes) = migrated(&[PERF_MAP, &code]);
        assert!(
            out.contains("\tevents_output_skb(skb, &hdr, (__u64)len);\n"),
            "{out}"
        );
        assert!(!out.contains("flags"), "{out}");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("at most 128 bytes of packet")),
            "{notes:?}"
        );
        // Used for something else too: not followed, refused as flags.
        let other = code.replace("\treturn 0;\n}", "\treturn flags > 1;\n}");
        let diags = super::super::snippets::diagnostics(&[PERF_MAP, &other]);
        says(
            &diags,
            Rule::OutputFlags,
            "goes to the buffer of CPU `flags`",
        );
    }

    #[test]
    fn an_xdp_sample_bounded_by_a_ternary_minimum() {
        let code = r#"struct event {
	u32 len;
};

SEC("xdp")
int capture(struct xdp_md *ctx)
{
	struct event e = {};
	u32 len = ctx->data_end - ctx->data;
	u32 cap = len < MAX_CAP ? len : MAX_CAP;

	e.len = len;
	bpf_perf_event_output(ctx, &events, (u64)(cap) << 32 | BPF_F_CURRENT_CPU, &e, sizeof(e));
	return XDP_PASS;
}
"#;
        let (text, notes) = migrated(&["#define MAX_CAP 256\n", PERF_MAP, code]);
        assert!(
            text.contains(
                "events_output_xdp(struct xdp_md *ctx, const struct event *hdr, __u64 len)"
            ),
            "{text}"
        );
        assert!(
            text.contains("__type(value, __u8[sizeof(struct event) + MAX_CAP]);"),
            "{text}"
        );
        assert!(
            text.contains("err = bpf_xdp_load_bytes(ctx, 0, buf + sizeof(*hdr), len);"),
            "{text}"
        );
        assert!(
            text.contains("\tevents_output_xdp(ctx, &e, (u64)(cap));\n"),
            "{text}"
        );
        assert!(
            notes[0].contains("at most MAX_CAP bytes of packet, the program's own bound"),
            "{notes:?}"
        );
    }

    #[test]
    fn bounds_the_program_sets_itself() {
        for (body, bound) in [
            ("\tu32 len = min(skb->len, 96);", "96"),
            ("\tu32 len = min_t(u32, skb->len, SNAPLEN);", "SNAPLEN"),
            ("\tu32 len = skb->len > 200 ? 200 : skb->len;", "200"),
            ("\tu32 len = skb->len & 0x3ff;", "0x3ff"),
            ("\tu32 len = skb->len;\n\n\tlen &= 0xff;", "0xff"),
            (
                "\tu32 len = skb->len;\n\n\tif (len >= 64) {\n\t\tlen = 64;\n\t}",
                "64",
            ),
            (
                "\tu32 len = skb->len;\n\n\tif (1500 < len)\n\t\tlen = 1500;",
                "1500",
            ),
        ] {
            let code = tc(body);
            let (text, notes) = migrated(&["#define SNAPLEN 80\n", PERF_MAP, &code]);
            assert!(
                text.contains(&format!("\tif (len > {bound})\n\t\tlen = {bound};")),
                "{body}:\n{text}"
            );
            assert!(
                notes[0].contains("the program's own bound"),
                "{body}: {notes:?}"
            );
        }
        // A constant length is its own bound.
        let code = "SEC(\"tc\")\nint capture(struct __sk_buff *skb)\n{\n\tu32 hdr = 0;\n\n\tbpf_perf_event_output(skb, &events, BPF_F_CURRENT_CPU | (64ULL << 32), &hdr, sizeof(hdr));\n\treturn 0;\n}\n";
        let (text, _) = migrated(&[PERF_MAP, code]);
        assert!(
            text.contains("__u8[sizeof(u32) + 64ULL]")
                && text.contains("events_output_skb(skb, &hdr, 64ULL);"),
            "{text}"
        );
    }

    #[test]
    fn two_calls_share_a_helper_and_each_context_has_its_own() {
        let code = r#"static __always_inline void send(struct __sk_buff *skb, u32 hdr)
{
	u32 len = skb->len < 64 ? skb->len : 64;

	bpf_perf_event_output(skb, &events, BPF_F_CURRENT_CPU | ((__u64)len << 32), &hdr, sizeof(hdr));
}

SEC("tc")
int on_tc(struct __sk_buff *skb)
{
	u32 len = skb->len < 64 ? skb->len : 64;
	u32 hdr = 1;

	bpf_perf_event_output(skb, &events, BPF_F_CURRENT_CPU | ((__u64)len << 32), &hdr, sizeof(hdr));
	send(skb, 2);
	return 0;
}

SEC("xdp")
int on_xdp(struct xdp_md *ctx)
{
	u32 hdr = 3;

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU | (32ULL << 32), &hdr, sizeof(hdr));
	return XDP_PASS;
}
"#;
        let (text, notes) = migrated(&[PERF_MAP, code]);
        assert_eq!(
            text.matches("static __always_inline long").count(),
            2,
            "{text}"
        );
        assert_eq!(
            text.matches("events_output_skb(skb, &hdr, (__u64)len);")
                .count(),
            2,
            "{text}"
        );
        assert!(
            text.contains("events_output_xdp(ctx, &hdr, 32ULL);"),
            "{text}"
        );
        // The helper comes before the first function that calls it.
        assert!(text.find("events_output_skb_buf SEC").unwrap() < text.find("void send(").unwrap());
        assert!(
            text.find("events_output_xdp_buf SEC").unwrap() < text.find("SEC(\"xdp\")").unwrap()
        );
        assert!(text.find("events_output_xdp_buf SEC").unwrap() > text.find("int on_tc(").unwrap());
        assert_eq!(notes.len(), 3);
    }

    #[test]
    fn max_packet_bounds_a_length_the_program_does_not() {
        let code = tc("\tu32 len = skb->len;");
        let opts = Options {
            max_packet: Some(1500),
            ..Options::default()
        };
        let (text, notes) = migrated_with(&[PERF_MAP, &code], &opts);
        assert!(
            text.contains("\tif (len > 1500)\n\t\tlen = 1500;"),
            "{text}"
        );
        assert!(
            notes[0].contains("at most 1500 bytes of packet, from --max-packet: longer packets are cut to that, where the perf buffer sent all `len` bytes"),
            "{notes:?}"
        );
        // The program's own bound wins over the option.
        let code = tc("\tu32 len = skb->len;\n\n\tif (len > 128)\n\t\tlen = 128;");
        let (text, _) = migrated_with(&[PERF_MAP, &code], &opts);
        assert!(
            text.contains("\tif (len > 128)\n\t\tlen = 128;") && !text.contains("1500"),
            "{text}"
        );
    }

    #[test]
    fn the_reserve_strategy_keeps_the_copy_with_a_note() {
        let code = tc("\tu32 len = skb->len & 0xff;");
        let opts = Options {
            strategy: Strategy::Reserve,
            ..Options::default()
        };
        let (changed, diags) = run(
            &[("x.bpf.c", &bpf(&[PERF_MAP, &code])), ("x.c", LOADER)],
            &opts,
        );
        assert!(changed["x.bpf.c"].contains("events_output_skb(skb, &hdr, (__u64)len);"));
        says(
            &diags,
            Rule::ReserveFallback,
            "a packet sample is put together in a per-CPU buffer first",
        );
    }

    #[test]
    fn refuses_a_length_without_a_constant_bound() {
        refused(
            &[PERF_MAP, &tc("\tu32 len = skb->len;")],
            Rule::OutputCtxlen,
            "the length `len` of the packet data appended to the event written to `events` needs a constant bound in the ring buffer's copy, and the program sets no constant bound on it",
        );
        // Bounded by a variable (set by the loader).
        refused(
            &[
                "const volatile u32 max_cap = 128;\n",
                PERF_MAP,
                &tc("\tu32 len = min(skb->len, max_cap);"),
            ],
            Rule::OutputCtxlen,
            "the program sets no constant bound on it",
        );
        // A name in capitals that is a variable is no constant.
        refused(
            &[
                "volatile u32 MAX_CAP = 128;\n",
                PERF_MAP,
                &tc("\tu32 len = min(skb->len, MAX_CAP);"),
            ],
            Rule::OutputCtxlen,
            "the program sets no constant bound on it",
        );
    }

    #[test]
    fn refuses_a_clamp_not_on_every_path_or_a_length_set_through_a_pointer() {
        for body in [
            "\tu32 len = skb->len;\n\n\tif (skb->mark) {\n\t\tif (len > 64)\n\t\t\tlen = 64;\n\t}",
            "\tu32 len = skb->len;\n\n\tif (len > 64)\n\t\tlen = 64;\n\telse\n\t\tlen = skb->len;",
            "\tu32 len = 64;\n\tu32 *p = &len;\n\n\t*p = skb->len;",
            "\tu32 len = 64;\n\n\tlen += skb->len;",
            "\tu32 len = skb->len;\n\n\tif (len > 64)\n\t\tlen = 65;",
        ] {
            refused(
                &[PERF_MAP, &tc(body)],
                Rule::OutputCtxlen,
                "the program sets no constant bound on it",
            );
        }
    }

    #[test]
    fn refuses_a_bound_larger_than_a_per_cpu_buffer() {
        refused(
            &[PERF_MAP, &tc("\tu32 len = skb->len & 0xffff;")],
            Rule::OutputCtxlen,
            "the program bounds it at 0xffff bytes, more than the 16384 a per-CPU buffer is given",
        );
    }

    #[test]
    fn refuses_a_context_that_is_no_packet() {
        let code = r#"SEC("tracepoint/syscalls/sys_enter_execve")
int trace_exec(void *ctx)
{
	u32 pid = bpf_get_current_pid_tgid() >> 32;

	bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU | (64ULL << 32), &pid, sizeof(pid));
	return 0;
}
"#;
        refused(
            &[PERF_MAP, code],
            Rule::OutputCtxlen,
            "comes from `ctx`, a `void *`, not from a `struct __sk_buff *` (tc, socket filter) or `struct xdp_md *` (XDP)",
        );
    }

    /// The tc program with `len = 64`, `from` replaced by `to`, is refused saying `says`.
    fn refused_as(from: &str, to: &str, says: &str) {
        let code = tc("\tu32 len = 64;");
        assert!(code.contains(from), "{from}");
        refused(
            &[PERF_MAP, &code.replace(from, to)],
            Rule::OutputCtxlen,
            says,
        );
    }

    #[test]
    fn refuses_a_header_it_cannot_copy_or_flags_in_another_form() {
        for (from, to, says) in [
            (
                "&hdr, sizeof(hdr)",
                "&hdr, 2",
                "follow a header that is sent with the size `2`, not the whole `u32` (`sizeof(hdr)`)",
            ),
            (
                "&hdr, sizeof(hdr)",
                "hdrs + 1, sizeof(hdr)",
                "follow a header that is `hdrs + 1`, not a local (`&hdr`) or a pointer (`e`)",
            ),
            (
                "\tu32 hdr = skb->ifindex;",
                "\ttypedef struct { u32 ifindex; } event_t;\n\tevent_t hdr = { skb->ifindex };",
                "is of the type `event_t`, which the function defines itself (line 13) and the helper written before the function cannot name",
            ),
            (
                "BPF_F_CURRENT_CPU | ((__u64)len << 32)",
                "BPF_F_CURRENT_CPU | (BPF_F_CTXLEN_MASK & ((__u64)len << 32))",
                "but not as `BPF_F_CURRENT_CPU | ((__u64)LEN << 32)`",
            ),
            ("(__u64)len << 32)", "(__u64)len << 31)", "but not as"),
        ] {
            refused_as(from, to, says);
        }
    }

    /// An XDP sampler whose header type is defined in the header's declaration, `attr` after
    /// its body, `tag` its name (or none).
    fn xdp_own_type(tag: &str, attr: &str) -> String {
        format!(
            r#"#define SNAP_LEN 96

SEC("xdp")
int sample_drops(struct xdp_md *ctx)
{{
	void *end = (void *)(long)ctx->data_end;
	void *start = (void *)(long)ctx->data;
	/* what the reader finds before the bytes */
	struct {tag}{{
		__u32 ifindex;
		__u16 wire_len;
		__u8 proto;
	}}{attr} meta = {{}};
	__u64 flags = BPF_F_CURRENT_CPU;
	__u32 snap;

	if (start >= end)
		return XDP_PASS;
	meta.ifindex = ctx->ingress_ifindex;
	meta.wire_len = end - start;
	snap = meta.wire_len > SNAP_LEN ? SNAP_LEN : meta.wire_len;
	flags |= (__u64)snap << 32;
	bpf_perf_event_output(ctx, &events, flags,
			      &meta, sizeof(meta));
	return XDP_PASS;
}}
"#
        )
    }

    /// The kernel's own XDP sample defines its header type inside the function: the type moves
    /// before the helper, attributes and layout kept, and the declaration keeps its name.
    #[test]
    fn a_header_type_defined_in_the_function_moves_before_the_helper() {
        for attr in [" __attribute__((packed))", " __packed", ""] {
            let code = xdp_own_type("drop_meta ", attr);
            let (out, _) = migrated(&[PERF_MAP, &code]);
            let def = format!(
                "struct drop_meta {{\n\t__u32 ifindex;\n\t__u16 wire_len;\n\t__u8 proto;\n}}{attr};\n\n/*\n * bpf-migrate: a record of `events` is a `struct drop_meta` and then up to\n"
            );
            assert!(out.contains(&def), "{attr}:\n{out}");
            assert!(
                out.contains("\t/* what the reader finds before the bytes */\n\tstruct drop_meta meta = {};\n"),
                "{out}"
            );
            assert!(
                out.contains(
                    "events_output_xdp(struct xdp_md *ctx, const struct drop_meta *hdr, __u64 len)"
                ),
                "{out}"
            );
            assert!(
                out.contains("\tevents_output_xdp(ctx, &meta, (__u64)snap);\n"),
                "{out}"
            );
            // The definition comes before the helper's comment, once, after the map.
            assert_eq!(out.matches("struct drop_meta {").count(), 1, "{out}");
        }
        // An anonymous type is named after its variable.
        let (out, _) = migrated(&[PERF_MAP, &xdp_own_type("", "")]);
        assert!(
            out.contains(
                "struct meta_t {\n\t__u32 ifindex;\n\t__u16 wire_len;\n\t__u8 proto;\n};\n\n"
            ),
            "{out}"
        );
        assert!(out.contains("\tstruct meta_t meta = {};\n"), "{out}");
        assert!(out.contains("const struct meta_t *hdr"), "{out}");
    }

    #[test]
    fn refuses_to_move_a_header_type_whose_tag_the_file_defines_twice() {
        let code = xdp_own_type("drop_meta ", "");
        let other =
            "static int other(void)\n{\n\tstruct drop_meta { int x; } m = {};\n\treturn m.x;\n}\n";
        refused(
            &[PERF_MAP, other, &code],
            Rule::OutputCtxlen,
            "and the file defines another `struct drop_meta`",
        );
    }

    #[test]
    fn a_callback_that_reads_the_cpu_is_refused_for_a_packet_sample() {
        let loader = LOADER.replace(
            "static void on_event(void *ctx, int cpu, void *data, __u32 size)\n{\n}",
            "static void on_event(void *ctx, int cpu, void *data, __u32 size)\n{\n\tprintf(\"%d\\n\", cpu);\n}",
        );
        let code = tc("\tu32 len = 64;");
        let (changed, diags) = run(
            &[("x.bpf.c", &bpf(&[PERF_MAP, &code])), ("x.c", &loader)],
            &Options::default(),
        );
        assert!(changed.is_empty());
        assert!(
            diags.iter().any(|d| d.rule == Rule::CallbackUsesCpu
                && d.message.contains("followed by packet bytes")),
            "{diags:?}"
        );
    }

    /// A BCC tool whose C sends `hdr` and `cap` bytes of the packet, `body` setting `cap`,
    /// from a function whose context is `ctx`.
    fn bcc_tool(ctx: &str, body: &str) -> String {
        format!(
            "from bcc import BPF\n\nb = BPF(text=\"\"\"\nBPF_PERF_OUTPUT(events);\n\nint on_packet({ctx})\n{{\n    u32 hdr = 1;\n{body}\n    events.perf_submit_skb(skb, cap, &hdr, sizeof(hdr));\n    return 0;\n}}\n\"\"\")\n\ndef show(cpu, data, size):\n    print(size)\n\nb[\"events\"].open_perf_buffer(show)\nwhile 1:\n    b.perf_buffer_poll()\n"
        )
    }

    const CLAMP: &str = "    u32 cap = skb->len;\n\n    if (cap > 64)\n        cap = 64;";

    #[test]
    fn a_bcc_packet_sample_in_bcc_dialect() {
        let tool = bcc_tool("struct __sk_buff *skb", CLAMP);
        let (changed, diags) = run(&[("tool.py", &tool)], &Options::default());
        assert!(!diags.iter().any(|d| d.severity.refuses()), "{diags:?}");
        let text = &changed["tool.py"];
        for want in [
            "struct events_output_skb_t {\n    u32 hdr;\n    u8 data[64];\n};\nBPF_PERCPU_ARRAY(events_output_skb_buf, struct events_output_skb_t, 1);\n",
            "static inline __attribute__((always_inline)) long\nevents_output_skb(struct __sk_buff *skb, const u32 *hdr, u64 len)\n{\n    u32 zero = 0;\n    struct events_output_skb_t *buf = events_output_skb_buf.lookup(&zero);\n",
            "    buf->hdr = *hdr;\n    if ((s64)len > 0) {\n        err = bpf_skb_load_bytes(skb, 0, buf->data, len);\n",
            "    return events.ringbuf_output(&buf->hdr, sizeof(*hdr) + len, 0);\n}\n\nint on_packet(",
            "    events_output_skb(skb, &hdr, cap);\n",
            "def show(ctx, data, size):",
        ] {
            assert!(text.contains(want), "no {want:?} in:\n{text}");
        }
        says(
            &diags,
            Rule::OutputPacket,
            "at most 64 bytes of packet, the program's own bound (line 11)",
        );
    }

    #[test]
    fn a_bcc_length_in_a_member_of_a_local_struct() {
        let body = "    struct meta { u32 len; u32 cap; } m = {};\n\n    m.len = skb->len;\n    m.cap = skb->len < 96 ? skb->len : 96;";
        let tool =
            bcc_tool("struct __sk_buff *skb", body).replace("skb, cap, &hdr", "skb, m.cap, &hdr");
        let (changed, diags) = run(&[("tool.py", &tool)], &Options::default());
        assert!(!diags.iter().any(|d| d.severity.refuses()), "{diags:?}");
        assert!(changed["tool.py"].contains("events_output_skb(skb, &hdr, m.cap);"));
        // Set whole after the member was bounded: no bound.
        let tool = tool.replace("    m.len = skb->len;\n", "").replace(
            "    m.cap = skb->len < 96 ? skb->len : 96;",
            "    m.cap = skb->len < 96 ? skb->len : 96;\n    m = (struct meta){ skb->len, skb->len };",
        );
        check_refused(
            &[("tool.py", &tool)],
            Rule::BccSubmitSkb,
            "the program sets no constant bound on it",
        );
    }

    #[test]
    fn refuses_bcc_packet_samples_it_cannot_migrate() {
        for (ctx, body, says) in [
            (
                "struct __sk_buff *skb",
                "    u32 cap = skb->len;",
                "the program sets no constant bound on it",
            ),
            (
                "struct xdp_md *skb",
                "    u32 cap = 64;",
                "comes from an XDP context, and bpf-migrate loads packet bytes in BCC only from a `struct __sk_buff *`",
            ),
            (
                "struct pt_regs *skb",
                "    u32 cap = 64;",
                "comes from `skb`, a `struct pt_regs *`",
            ),
        ] {
            check_refused(
                &[("tool.py", &bcc_tool(ctx, body))],
                Rule::BccSubmitSkb,
                says,
            );
        }
    }
}
