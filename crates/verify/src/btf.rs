//! The layout of an event, read from the BTF of the compiled object (parsed on the host, never
//! loaded): names the field where records differ, and lets noise calibration treat an integer
//! field as a whole (a timestamp whose low byte differs between two loads may differ in its
//! higher bytes another time).

use std::path::Path;

use libbpf_rs::btf::types::{self, MemberAttr};
use libbpf_rs::btf::{Btf, BtfKind, BtfType, HasSize};

#[derive(Debug, Clone)]
pub struct Layout {
    pub name: String,
    pub size: usize,
    /// (name, byte offset, size), in offset order.
    pub fields: Vec<(String, usize, usize)>,
    /// The (byte offset, size) of the members that are `char` arrays: strings, whose bytes
    /// past the terminating NUL no reader of a C string sees.
    pub strings: Vec<(usize, usize)>,
}

impl Layout {
    /// The field holding byte `off`.
    pub fn field_at(&self, off: usize) -> Option<&(String, usize, usize)> {
        self.fields
            .iter()
            .find(|(_, o, s)| off >= *o && off < o + s)
    }
}

/// Whether `t` is an array of `char`.
fn is_char_array(t: BtfType) -> bool {
    let t = t.skip_mods_and_typedefs();
    t.kind() == BtfKind::Array
        && types::Array::try_from(t).is_ok_and(|a| {
            let e = a.contained_type().skip_mods_and_typedefs();
            e.kind() == BtfKind::Int && e.name().is_some_and(|n| n == "char")
        })
}

fn size_of(t: BtfType) -> Option<usize> {
    let t = t.skip_mods_and_typedefs();
    match t.kind() {
        BtfKind::Int => types::Int::try_from(t).ok().map(|x| x.size()),
        BtfKind::Struct => types::Struct::try_from(t).ok().map(|x| x.size()),
        BtfKind::Union => types::Union::try_from(t).ok().map(|x| x.size()),
        BtfKind::Enum => types::Enum::try_from(t).ok().map(|x| x.size()),
        BtfKind::Enum64 => types::Enum64::try_from(t).ok().map(|x| x.size()),
        BtfKind::Float => types::Float::try_from(t).ok().map(|x| x.size()),
        BtfKind::Ptr => Some(8),
        BtfKind::Array => {
            let a = types::Array::try_from(t).ok()?;
            Some(a.capacity() * size_of(a.contained_type())?)
        }
        _ => None,
    }
}

/// The struct that a record of `len` bytes most likely is: the one struct of exactly that
/// size (preferring names with "event"), else, for variable-length records, the one "event"
/// struct larger than the record.
pub fn layout_for(obj: &Path, len: usize) -> Option<Layout> {
    let btf = Btf::from_path(obj).ok()?;
    let mut exact = Vec::new();
    let mut larger = Vec::new();
    for s in btf.type_by_kind::<types::Struct>() {
        let Some(name) = s.name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if s.size() == len {
            exact.push((name, s));
        } else if s.size() > len && name.contains("event") {
            larger.push((name, s));
        }
    }
    let (name, s) = pick(exact).or_else(|| pick(larger))?;
    Some(btf_layout(&btf, name, &s))
}

/// The layout of struct `s` of `btf`, named `name`.
fn btf_layout(btf: &Btf, name: String, s: &types::Struct) -> Layout {
    let mut fields = Vec::new();
    let mut strings = Vec::new();
    for m in s.iter() {
        let off = match m.attr {
            MemberAttr::Normal { offset } | MemberAttr::BitField { offset, .. } => {
                offset as usize / 8
            }
        };
        let ty = btf.type_by_id::<BtfType>(m.ty);
        let size = ty.and_then(size_of).unwrap_or(0);
        if ty.is_some_and(is_char_array) {
            strings.push((off, size));
        }
        let fname = m
            .name
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "<anon>".into());
        fields.push((fname, off, size));
    }
    Layout {
        name,
        size: s.size(),
        fields,
        strings,
    }
}

/// The one candidate; of several, the one whose name says it is an event (`event_like`).
fn pick<T>(mut v: Vec<(String, T)>) -> Option<(String, T)> {
    if v.len() > 1 {
        v.retain(|(n, _)| event_like(n));
    }
    (v.len() == 1).then(|| v.remove(0))
}

/// A struct name that says it is an event record: event, data, sample.
pub fn event_like(name: &str) -> bool {
    name.contains("event") || name.contains("data") || name.contains("sample")
}

/// The layout of `struct name` from the object's DWARF (`pahole`, which sees types that are
/// only used on the stack and so never reach BTF), else from its BTF.
pub fn layout_named(obj: &Path, name: &str) -> Option<Layout> {
    if let Ok(out) = std::process::Command::new("pahole")
        .args(["-F", "dwarf", "-C", name])
        .arg(obj)
        .output()
        && out.status.success()
        && let Some(l) = parse_pahole(name, &String::from_utf8_lossy(&out.stdout))
    {
        return Some(l);
    }
    let btf = Btf::from_path(obj).ok()?;
    let s = btf
        .type_by_kind::<types::Struct>()
        .find(|s| s.name().is_some_and(|n| n == name))?;
    Some(btf_layout(&btf, name.to_string(), &s))
}

/// Members of pahole's `struct x { T name; /* offset size */ ... /* size: N, ... */ }`.
fn parse_pahole(name: &str, text: &str) -> Option<Layout> {
    let mut fields = Vec::new();
    let mut strings = Vec::new();
    let mut size = None;
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("/* size: ") {
            size = rest.split(',').next().and_then(|n| n.trim().parse().ok());
            continue;
        }
        // Only direct members (one tab deep), not those of nested anonymous types.
        if !line.starts_with('\t') || line.starts_with("\t\t") {
            continue;
        }
        let Some((decl, comment)) = t.split_once("/*") else {
            continue;
        };
        let nums: Vec<usize> = comment
            .trim_end_matches("*/")
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        let decl = decl.trim().trim_end_matches(';');
        let member = decl
            .split_whitespace()
            .last()
            .unwrap_or("")
            .trim_start_matches('*');
        let member = member
            .split('[')
            .next()
            .unwrap_or(member)
            .split(':')
            .next()
            .unwrap_or(member);
        if let [off, sz] = nums[..]
            && !member.is_empty()
        {
            if decl.starts_with("char ") && decl.contains('[') {
                strings.push((off, sz));
            }
            fields.push((member.to_string(), off, sz));
        }
    }
    Some(Layout {
        name: name.to_string(),
        size: size?,
        fields,
        strings,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn pahole_output() {
        let text = "struct event {\n\t__u64                      delta_us;             /*     0     8 */\n\tchar                       comm[16];             /*    32    16 */\n\n\t/* size: 80, cachelines: 2, members: 7 */\n};\n";
        let l = super::parse_pahole("event", text).unwrap();
        assert_eq!(l.size, 80);
        assert_eq!(
            l.fields,
            vec![("delta_us".to_string(), 0, 8), ("comm".to_string(), 32, 16)]
        );
        assert_eq!(l.field_at(40).unwrap().0, "comm");
        assert_eq!(l.strings, vec![(32, 16)]);
    }
}
