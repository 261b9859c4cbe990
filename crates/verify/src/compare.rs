//! Comparing what user space received: per map, the original's records (first load) against
//! the migrated program's, with the bytes that differ between two loads of the original
//! calibrated as noise, perf sample padding ignored, and order ignored when the guest has
//! more than one CPU.

use serde::Serialize;

use super::btf::Layout;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Equivalent,
    Different,
    Inconclusive,
}

#[derive(Debug, Clone, Serialize)]
pub struct MapReport {
    pub map: String,
    pub original: usize,
    pub original_second_load: usize,
    pub migrated: usize,
    pub matched: usize,
    pub noise_offsets: Vec<usize>,
    /// Bytes past a string's terminating NUL that the original left unset (stack garbage, not
    /// zeros) and the migrated program set otherwise: ignored, as a reader of the string does.
    pub unset_string_bytes: usize,
    pub lost_original: u64,
    pub verdict: Verdict,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finding: Option<String>,
}

/// What the second load of the original finds in its per-CPU arrays (the first finds zeros).
pub const HEAP_POISON: u8 = 0xa5;
/// What the migrated program finds in ring buffer space it reserves and leaves unset.
pub const RING_POISON: u8 = 0xa5;

/// The size of a perf sample's raw data for an n-byte record: the kernel pads the sample
/// (with its 4-byte size header) to 8 bytes.
pub fn perf_padded(n: usize) -> usize {
    (n + 4).div_ceil(8) * 8 - 4
}

/// `layouts` are the event structs written to the map, when BTF tells them: findings name
/// fields, and noise covers whole integer fields of any of them.
pub fn compare_map(
    map: &str,
    orig: &[Vec<u8>],
    orig2: &[Vec<u8>],
    new: &[Vec<u8>],
    lost: u64,
    cpus: u32,
    layouts: &[Layout],
) -> MapReport {
    let mut r = MapReport {
        map: map.to_string(),
        original: orig.len(),
        original_second_load: orig2.len(),
        migrated: new.len(),
        matched: 0,
        noise_offsets: Vec::new(),
        unset_string_bytes: 0,
        lost_original: lost,
        verdict: Verdict::Inconclusive,
        finding: None,
    };
    if let Some(why) = incomparable(orig, orig2, new, lost) {
        r.finding = Some(why);
        return r;
    }
    let noise = noise_mask(orig, orig2, layouts);
    r.noise_offsets = (0..noise.len()).filter(|&i| noise[i]).collect();
    let mut c = Comparison {
        orig,
        orig2,
        new,
        noise,
        heap: shows_heap(orig, orig2),
        layouts,
        matched: 0,
        unset_string_bytes: 0,
    };
    if cpus <= 1
        && let Some(why) = c.boundary_cut()
    {
        r.matched = orig.len().min(new.len());
        r.finding = Some(why);
        return r;
    }
    let outcome = c.compare(cpus);
    r.matched = c.matched;
    r.unset_string_bytes = c.unset_string_bytes;
    match outcome {
        Ok(()) => r.verdict = Verdict::Equivalent,
        Err(finding) => {
            r.verdict = Verdict::Different;
            r.finding = Some(finding);
        }
    }
    r
}

/// Why the map's records say nothing either way, when they do not.
fn incomparable(orig: &[Vec<u8>], orig2: &[Vec<u8>], new: &[Vec<u8>], lost: u64) -> Option<String> {
    if orig.is_empty() && new.is_empty() {
        return Some(
            "no events: the workload never reached this program's hooks (try --workload)".into(),
        );
    }
    if orig.len() != orig2.len() || lost > 0 {
        return Some(format!(
            "the original delivered {} and {} events in two loads ({} lost): the run is not repeatable enough to compare",
            orig.len(),
            orig2.len(),
            lost
        ));
    }
    None
}

/// The offsets where the two loads of the same original differ (same hook invocation, same
/// index, so the same event), widened to the whole of any integer field they touch.
fn noise_mask(orig: &[Vec<u8>], orig2: &[Vec<u8>], layouts: &[Layout]) -> Vec<bool> {
    let width = orig.iter().map(Vec::len).max().unwrap_or(0);
    let mut noise = vec![false; width];
    for (a, b) in orig.iter().zip(orig2) {
        for i in 0..a.len().min(b.len()) {
            if a[i] != b[i] {
                noise[i] = true;
            }
        }
    }
    for l in layouts {
        for (_, off, size) in &l.fields {
            let end = (off + size).min(width);
            if *size <= 8 && (*off..end).any(|i| noise[i]) {
                noise[*off..end].iter_mut().for_each(|b| *b = true);
            }
        }
    }
    noise
}

/// A per-CPU "heap" is not cleared between events: bytes an event leaves unset hold the
/// previous event's, the same in both loads. A record reserved in the ring holds older ring
/// data there instead (the poison). The map shows heap behaviour when its first event
/// carried each load's heap poison.
fn shows_heap(orig: &[Vec<u8>], orig2: &[Vec<u8>]) -> bool {
    orig.first()
        .zip(orig2.first())
        .is_some_and(|(a, b)| a.iter().zip(b).any(|(x, y)| *x == 0 && *y == HEAP_POISON))
}

/// Sizes: a ring record of n bytes matches a perf sample of perf_padded(n) bytes.
fn pair_size_ok(p: &[u8], q: &[u8]) -> bool {
    p.len() == perf_padded(q.len()) || p.len() == q.len()
}

/// The records of a comparable map, and how many of the migrated ones have matched so far.
struct Comparison<'a> {
    orig: &'a [Vec<u8>],
    orig2: &'a [Vec<u8>],
    new: &'a [Vec<u8>],
    noise: Vec<bool>,
    heap: bool,
    layouts: &'a [Layout],
    matched: usize,
    unset_string_bytes: usize,
}

impl Comparison<'_> {
    /// The finding, when the migrated records differ.
    fn compare(&mut self, cpus: u32) -> Result<(), String> {
        if cpus <= 1 {
            if self.orig.len() != self.new.len() {
                self.find_missing()?;
            }
            self.compare_in_order()?;
        } else {
            self.compare_multisets()?;
        }
        compare_counts(self.orig.len(), self.new.len())
    }

    fn masked(&self, rec: &[u8], n: usize) -> Vec<u8> {
        rec.iter()
            .take(n)
            .enumerate()
            .map(|(i, &b)| {
                if self.noise.get(i).copied().unwrap_or(false) {
                    0
                } else {
                    b
                }
            })
            .collect()
    }

    fn same(&self, p: &[u8], q: &[u8]) -> bool {
        pair_size_ok(p, q) && self.first_difference(None, p, q, &mut 0).is_none()
    }

    /// The first byte where migrated record `q` differs from original `p` (event `i` of the
    /// original, when compared in order), but for noise, stale heap bytes, and the bytes past
    /// a string's end that the original left unset, which are added to `tails`.
    fn first_difference(
        &self,
        i: Option<usize>,
        p: &[u8],
        q: &[u8],
        tails: &mut usize,
    ) -> Option<usize> {
        let (mp, mq) = (self.masked(p, q.len()), self.masked(q, q.len()));
        let mut from = 0;
        loop {
            let off = (from..q.len())
                .find(|&k| mp[k] != mq[k] && !i.is_some_and(|i| self.stale(i, k, q)))?;
            match unset_string_tail(self.layouts, p, q.len(), off) {
                Some((nul, end)) => {
                    *tails += end - nul - 1;
                    from = end;
                }
                None => return Some(off),
            }
        }
    }

    /// Whether byte `k` of migrated event `i` is unset reserved ring space where the original
    /// carried a byte over from its previous event in both loads: a match in a heap map.
    fn stale(&self, i: usize, k: usize, q: &[u8]) -> bool {
        let (orig, orig2) = (self.orig, self.orig2);
        self.heap
            && i > 0
            && q[k] == RING_POISON
            && orig[i - 1].get(k) == Some(&orig[i][k])
            && orig2[i - 1].get(k) == orig2[i].get(k)
    }

    /// A flood (hundreds of events or more) whose counts differ by a few events at its very
    /// start or end, all the others matching in order: the buffers are drained one after
    /// another where the workload starts and ends, and an event between two drains reaches
    /// some of them only. Inconclusive, not different: says so.
    fn boundary_cut(&self) -> Option<String> {
        let (o, n) = (self.orig, self.new);
        let k = o.len().abs_diff(n.len());
        if k == 0 || k > 4 || o.len().min(n.len()) < 500 {
            return None;
        }
        let all = |a: &[Vec<u8>], b: &[Vec<u8>]| a.iter().zip(b).all(|(p, q)| self.same(p, q));
        let (at_start, at_end) = if o.len() > n.len() {
            (all(&o[k..], n), all(o, n))
        } else {
            (all(o, &n[k..]), all(o, n))
        };
        // Records that match at either alignment (alike but for noise) do not place the cut:
        // events missing anywhere would look the same.
        let at = match (at_start, at_end) {
            (true, false) => "start",
            (false, true) => "end",
            _ => return None,
        };
        Some(format!(
            "the migrated program delivered {} events, the original {}: all match in order but {k} at the {at} of the run, where the buffers were drained one after another while events kept coming: too many to cut the same in each (often a threshold the tool's loader sets, which the event level leaves at the program's default)",
            n.len(),
            o.len()
        ))
    }

    /// Events missing (or added) in order: say which, rather than the first byte that differs
    /// once the sequences are out of step. No finding leaves nothing matched, for the
    /// comparison in order that follows.
    fn find_missing(&mut self) -> Result<(), String> {
        let (orig, new) = (self.orig, self.new);
        let (mut i, mut j, mut missing) = (0, 0, Vec::new());
        while i < orig.len() {
            if j < new.len() && self.same(&orig[i], &new[j]) {
                j += 1;
                self.matched += 1;
            } else {
                missing.push(i);
            }
            i += 1;
        }
        if j == new.len() && !missing.is_empty() {
            let first = missing[0];
            let shown: Vec<String> = missing.iter().take(8).map(|m| format!("#{m}")).collect();
            return Err(format!(
                "the migrated program delivered {} events, the original {}: original event(s) {}{} have no counterpart (an event dropped on some path, a full ring, or a program that no longer runs)\n  first missing: {}",
                new.len(),
                orig.len(),
                shown.join(", "),
                if missing.len() > 8 { ", ..." } else { "" },
                hexdump(&orig[first], usize::MAX)
            ));
        }
        self.matched = 0;
        Ok(())
    }

    fn compare_in_order(&mut self) -> Result<(), String> {
        let (orig, new, layouts) = (self.orig, self.new, self.layouts);
        for (i, (p, q)) in orig.iter().zip(new).enumerate() {
            if !pair_size_ok(p, q) {
                return Err(format!(
                    "event #{i}: the migrated record has {} bytes, the original {} (a perf sample of n bytes arrives padded to {} bytes)",
                    q.len(),
                    p.len(),
                    perf_padded(q.len())
                ));
            }
            let mut tails = 0;
            if let Some(off) = self.first_difference(Some(i), p, q, &mut tails) {
                return Err(format!(
                    "event #{i} differs at byte {off}{}: original {:02x}, migrated {:02x}\n  original: {}\n  migrated: {}",
                    byte_name(layouts, q.len(), off),
                    p[off],
                    q[off],
                    hexdump(&p[..q.len()], off),
                    hexdump(q, off)
                ));
            }
            self.matched += 1;
            self.unset_string_bytes += tails;
        }
        Ok(())
    }

    /// Perf buffers deliver per CPU, a ring buffer in one global order: the records are
    /// compared as multisets.
    fn compare_multisets(&mut self) -> Result<(), String> {
        let mut a: Vec<Vec<u8>> = self.orig.to_vec();
        let mut b: Vec<Vec<u8>> = Vec::new();
        for q in self.new {
            match a.iter().position(|p| self.same(p, q)) {
                Some(k) => {
                    let mut tails = 0;
                    self.first_difference(None, &a[k], q, &mut tails);
                    self.unset_string_bytes += tails;
                    a.swap_remove(k);
                    self.matched += 1;
                }
                None => b.push(q.clone()),
            }
        }
        match b.first() {
            Some(q) => Err(format!(
                "{} migrated event(s) have no equal among the original's; the first: {}",
                b.len(),
                hexdump(q, usize::MAX)
            )),
            None => Ok(()),
        }
    }
}

/// The struct a record of `record_len` bytes is: the one of that size, else the first.
fn layout_of(layouts: &[Layout], record_len: usize) -> Option<&Layout> {
    layouts
        .iter()
        .find(|l| l.size == record_len)
        .or(layouts.first())
}

/// When byte `off` of original record `p` (`len` bytes compared) lies in a `char` array past
/// the NUL that ends its string, and the original left that tail unset (not all zeros: stack
/// garbage, which a second load repeats): the NUL's offset and the array's end. A reader of
/// the string never sees those bytes; a tail the original zeroed must stay zero.
fn unset_string_tail(
    layouts: &[Layout],
    p: &[u8],
    len: usize,
    off: usize,
) -> Option<(usize, usize)> {
    let &(at, size) = layout_of(layouts, len)?
        .strings
        .iter()
        .find(|&&(at, size)| off >= at && off < at + size)?;
    let end = (at + size).min(len).min(p.len());
    let nul = at + p[at..off].iter().position(|&b| b == 0)?;
    p[nul + 1..end]
        .iter()
        .any(|&b| b != 0)
        .then_some((nul, end))
}

/// Byte `off` of a record of `record_len` bytes, named in the struct of that size if one is
/// (or else the first): ` (field ... of struct ...)`, or nothing when no layout is known.
fn byte_name(layouts: &[Layout], record_len: usize, off: usize) -> String {
    layout_of(layouts, record_len)
        .and_then(|l| match l.field_at(off) {
            Some((f, o, _)) => Some(format!(
                " (field `{f}` of struct {}, byte {} of it)",
                l.name,
                off - o
            )),
            // Padding: no field holds the byte; say which one it follows.
            None => l
                .fields
                .iter()
                .filter(|(_, o, size)| o + size <= off)
                .max_by_key(|(_, o, _)| *o)
                .map(|(f, _, _)| format!(" (padding after field `{f}` of struct {})", l.name)),
        })
        .unwrap_or_default()
}

/// Every record matched one: what is left is a difference in number.
fn compare_counts(orig: usize, new: usize) -> Result<(), String> {
    if orig == new {
        return Ok(());
    }
    Err(if new < orig {
        format!(
            "the migrated program delivered {new} events, the original {orig}: event #{new} and later are missing (an event dropped on some path, a full ring, or a program that no longer runs)"
        )
    } else {
        format!("the migrated program delivered {new} events, the original only {orig}")
    })
}

/// Hex bytes with the byte at `mark` in brackets (at most 64 bytes around it).
fn hexdump(b: &[u8], mark: usize) -> String {
    let start = if mark == usize::MAX {
        0
    } else {
        mark.saturating_sub(16) & !7
    };
    let end = (start + 64).min(b.len());
    let mut s = String::new();
    if start > 0 {
        s.push_str(&format!("[+{start}] "));
    }
    for (i, x) in b[start..end].iter().enumerate() {
        if start + i == mark {
            s.push_str(&format!("[{x:02x}]"));
        } else {
            s.push_str(&format!("{x:02x}"));
        }
        if (start + i) % 8 == 7 {
            s.push(' ');
        }
    }
    if end < b.len() {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_cut_differently_at_its_start_or_end_is_inconclusive() {
        let flood: Vec<Vec<u8>> = (0..600u32).map(|i| i.to_le_bytes().to_vec()).collect();
        for (orig, new) in [
            (&flood[..], &flood[3..]),
            (&flood[..], &flood[..598]),
            (&flood[2..], &flood[..]),
        ] {
            let r = compare_map("events", orig, orig, new, 0, 1, &[]);
            assert_eq!(r.verdict, Verdict::Inconclusive, "{:?}", r.finding);
            assert!(r.finding.unwrap().contains("drained one after another"));
        }
        // Missing in the middle: different.
        let mut holed = flood.clone();
        holed.remove(300);
        let r = compare_map("events", &flood, &flood, &holed, 0, 1, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        // Records alike but for noise: where the cut lies cannot be told, so it is no cut.
        let alike = vec![vec![1u8, 0, 0, 0]; 600];
        let r = compare_map("events", &alike, &alike, &alike[2..], 0, 1, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        // A few events: different too.
        let r = compare_map(
            "events",
            &flood[..10],
            &flood[..10],
            &flood[1..10],
            0,
            1,
            &[],
        );
        assert_eq!(r.verdict, Verdict::Different);
    }

    #[test]
    fn padding_and_noise_are_ignored_but_real_differences_are_not() {
        // 12-byte events: the perf copy is padded to 12 (12+4=16); bytes 8..12 are a timestamp.
        let o1 = vec![vec![1, 0, 0, 0, 7, 0, 0, 0, 0xaa, 0xbb, 0xcc, 0xdd]];
        let o2 = vec![vec![1, 0, 0, 0, 7, 0, 0, 0, 0x11, 0x22, 0x33, 0x44]];
        let same = vec![vec![1, 0, 0, 0, 7, 0, 0, 0, 0x99, 0x98, 0x97, 0x96]];
        let r = compare_map("e", &o1, &o2, &same, 0, 1, &[]);
        assert_eq!(r.verdict, Verdict::Equivalent, "{:?}", r.finding);
        let wrong = vec![vec![1, 0, 0, 0, 8, 0, 0, 0, 0x99, 0x98, 0x97, 0x96]];
        let r = compare_map("e", &o1, &o2, &wrong, 0, 1, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        assert!(r.finding.unwrap().contains("byte 4"));
        // A 10-byte event arrives as a 12-byte perf sample.
        let p = vec![vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0]];
        let q = vec![vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 10]];
        assert_eq!(
            compare_map("e", &p, &p, &q, 0, 1, &[]).verdict,
            Verdict::Equivalent
        );
        assert_eq!(
            compare_map("e", &[], &[], &[], 0, 1, &[]).verdict,
            Verdict::Inconclusive
        );
        let fewer = compare_map(
            "e",
            &[q[0].clone(), q[0].clone()],
            &[q[0].clone(), q[0].clone()],
            &q,
            0,
            1,
            &[],
        );
        assert_eq!(fewer.verdict, Verdict::Different);
    }

    #[test]
    fn stale_heap_bytes_match_unset_ring_bytes_but_unzeroed_stack_bytes_do_not() {
        // Heap events: byte 3 is never written (each load's heap poison shows in event #0);
        // event #1 writes a shorter string than event #0, so bytes 2.. carry over.
        let o1 = vec![vec![1, b'a', b'b', 0], vec![2, 0, b'b', 0]];
        let o2 = vec![
            vec![1, b'a', b'b', HEAP_POISON],
            vec![2, 0, b'b', HEAP_POISON],
        ];
        let reserved = vec![
            vec![1, b'a', b'b', RING_POISON],
            vec![2, 0, RING_POISON, RING_POISON],
        ];
        let r = compare_map("e", &o1, &o2, &reserved, 0, 1, &[]);
        assert_eq!(r.verdict, Verdict::Equivalent, "{:?}", r.finding);
        // A byte the migration forgot to write is not a carried-over one.
        let forgot = vec![
            vec![1, b'a', b'b', RING_POISON],
            vec![RING_POISON, 0, RING_POISON, RING_POISON],
        ];
        let r = compare_map("e", &o1, &o2, &forgot, 0, 1, &[]);
        assert_eq!(r.verdict, Verdict::Different);
        // Stack events zeroed by `= {}`: no heap poison in event #0, so unset reserved bytes
        // are differences, even where the original's zeros repeat.
        let z = vec![vec![1, 0, 0, 0], vec![2, 0, 0, 0]];
        let unzeroed = vec![vec![1, 0, 0, 0], vec![2, RING_POISON, 0, 0]];
        let r = compare_map("e", &z, &z, &unzeroed, 0, 1, &[]);
        assert_eq!(r.verdict, Verdict::Different);
    }

    #[test]
    fn a_strings_unset_tail_is_ignored_but_a_zeroed_one_is_not() {
        // bashreadline's `struct str_t data;` on the stack: pid, then a string read with
        // bpf_probe_read_user_str, past whose NUL the stack's old bytes stay (the same in
        // both loads of the original, others in the migrated program's frame).
        let layout = Layout {
            name: "str_t".into(),
            size: 12,
            fields: vec![("pid".into(), 0, 4), ("str".into(), 4, 8)],
            strings: vec![(4, 8)],
        };
        let rec = |tail: [u8; 4]| {
            let mut r = vec![96, 0, 0, 0, b'l', b's', b'\0', 0x11];
            r.extend(tail);
            r
        };
        let orig = vec![rec([0x40, 0x6e, 0x19, 0x1f])];
        let new = vec![rec([0x30, 0xdb, 0xe3, 0x1c])];
        let layouts = std::slice::from_ref(&layout);
        let r = compare_map("e", &orig, &orig, &new, 0, 1, layouts);
        assert_eq!(r.verdict, Verdict::Equivalent, "{:?}", r.finding);
        assert_eq!(r.unset_string_bytes, 5);
        assert_eq!(
            compare_map("e", &orig, &orig, &new, 0, 2, layouts).verdict,
            Verdict::Equivalent
        );
        // The string itself differs: a difference.
        let mut other = new.clone();
        other[0][5] = b'x';
        let r = compare_map("e", &orig, &orig, &other, 0, 1, layouts);
        assert_eq!(r.verdict, Verdict::Different);
        assert!(r.finding.unwrap().contains("field `str`"));
        // The original zeroed the tail (`= {}`): the migration must too.
        let zeroed = vec![
            rec([0; 4])
                .into_iter()
                .map(|b| if b == 0x11 { 0 } else { b })
                .collect(),
        ];
        let r = compare_map("e", &zeroed, &zeroed, &new, 0, 1, layouts);
        assert_eq!(r.verdict, Verdict::Different);
        // Without a layout nothing is known to be a string.
        assert_eq!(
            compare_map("e", &orig, &orig, &new, 0, 1, &[]).verdict,
            Verdict::Different
        );
    }

    #[test]
    fn order_is_ignored_with_several_cpus() {
        let a = vec![vec![1u8; 4], vec![2u8; 4]];
        let b = vec![vec![2u8; 4], vec![1u8; 4]];
        assert_eq!(
            compare_map("e", &a, &a, &b, 0, 2, &[]).verdict,
            Verdict::Equivalent
        );
        assert_eq!(
            compare_map("e", &a, &a, &b, 0, 1, &[]).verdict,
            Verdict::Different
        );
    }
}
