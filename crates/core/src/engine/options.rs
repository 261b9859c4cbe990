//! What a run is asked to do: the ring buffer size, the strategy and the rules selected.

use crate::rules::Rule;

#[derive(Debug, Clone)]
pub struct Options {
    /// Ring buffer size in bytes: a power of two and a multiple of 4096.
    pub ring_size: u64,
    /// The user asked for this size (rather than the default).
    pub ring_size_given: bool,
    pub rules: RuleFilter,
    pub strategy: Strategy,
    /// `--max-packet`: the bytes of packet a migrated packet sample keeps when the program
    /// does not bound the length itself (`bpf::packet`); None refuses such a sample.
    pub max_packet: Option<u64>,
    /// What becomes of a lost-sample callback (`--lost`).
    pub lost: Lost,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ring_size: 256 * 1024,
            ring_size_given: false,
            rules: RuleFilter::default(),
            strategy: Strategy::Copy,
            max_packet: None,
            lost: Lost::Count,
        }
    }
}

/// What becomes of a perf buffer's lost-sample callback, which a ring buffer does not have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lost {
    /// The BPF program counts the records its ring could not take, per CPU, and the loader
    /// passes new counts to the callback after each poll (`lost_counter`), where the
    /// reader's language and form allow; else as `Drop`, with a note saying why.
    #[default]
    Count,
    /// The callback is dropped (removed when nothing else uses it), with a note.
    Drop,
}

impl std::str::FromStr for Lost {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "count" => Ok(Lost::Count),
            "drop" => Ok(Lost::Drop),
            _ => Err(format!(
                "`{s}` is not a way to treat lost samples: count or drop"
            )),
        }
    }
}

/// How an event gets into the ring buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// `bpf_ringbuf_output`: the event is built where it was and copied in.
    #[default]
    Copy,
    /// `bpf_ringbuf_reserve`/`submit`: the event is built in the ring (see `reserve`).
    Reserve,
    /// One program for kernels with and without the ring buffer (`compat`): each output goes
    /// through a helper that takes the path user space picked before load, and the loader
    /// probes the kernel, then reads a ring buffer or a perf buffer with the same callbacks.
    Compat,
}

impl std::str::FromStr for Strategy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "copy" => Ok(Strategy::Copy),
            "reserve" => Ok(Strategy::Reserve),
            "compat" => Ok(Strategy::Compat),
            _ => Err(format!("`{s}` is not a strategy: copy, reserve or compat")),
        }
    }
}

/// A ring buffer size as the command lines take it: bytes, or `256K`, `1M`; a power of two,
/// at least 4096.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1024),
        Some((i, 'M' | 'm')) => (&t[..i], 1024 * 1024),
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size in bytes (e.g. 262144, 256K, 1M)"))?;
    let bytes = n.checked_mul(mult).ok_or("size too large")?;
    check_ring_size(bytes)?;
    Ok(bytes)
}

/// The largest bound a packet sample's per-CPU scratch buffer is given (a per-CPU array's
/// value holds at most 32 KiB, the header included).
pub const MAX_PACKET_LIMIT: u64 = 16384;

/// `--max-packet` as the command lines take it: bytes, 1 to `MAX_PACKET_LIMIT`.
pub fn parse_max_packet(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_PACKET_LIMIT).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a packet length in bytes from 1 to {MAX_PACKET_LIMIT} (e.g. 1500)"
        )),
    }
}

/// `--select` and `--ignore`: rule ids or prefixes ending in `*` (`bcc-*`). A program is
/// migrated only if every rule it needs is selected: a partial migration would break it.
#[derive(Debug, Clone, Default)]
pub struct RuleFilter {
    pub select: Vec<String>,
    pub ignore: Vec<String>,
}

impl RuleFilter {
    fn matches(pat: &str, id: &str) -> bool {
        match pat.strip_suffix('*') {
            Some(prefix) => id.starts_with(prefix),
            None => pat == id,
        }
    }

    pub fn allows(&self, rule: Rule) -> bool {
        let id = rule.id();
        (self.select.is_empty() || self.select.iter().any(|p| Self::matches(p, id)))
            && !self.ignore.iter().any(|p| Self::matches(p, id))
    }

    /// Every pattern names a rule or, with `*`, a prefix of one; else the pattern that names
    /// none.
    pub fn check(&self) -> Result<(), String> {
        let known = |p: &String| {
            Rule::ALL
                .iter()
                .any(|r| r.in_catalogue() && Self::matches(p, r.id()))
        };
        match self.select.iter().chain(&self.ignore).find(|p| !known(p)) {
            Some(p) => Err(format!("no rule `{p}`; `bpf-migrate rules` lists them")),
            None => Ok(()),
        }
    }
}

/// Checks a ring buffer size the way the kernel does (libbpf >= 0.8 rounds up; other loaders
/// do not, so the tool never writes a size that needs rounding).
pub fn check_ring_size(bytes: u64) -> Result<(), String> {
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!(
            "ring buffer size {bytes} must be a power of two and a multiple of 4096 (e.g. 262144 or 256K)"
        ));
    }
    Ok(())
}

/// A ring's size in an edit's text, which linking fills in once it knows what the map's
/// readers asked for (`link::report_maps`): the page count of BCC's
/// `BPF_RINGBUF_OUTPUT(name, PAGES)`, the `max_entries` of a libbpf map.
pub fn size_marker(map: &str) -> String {
    format!("\u{1}{map}\u{1}")
}

/// Whether an edit holds a size linking has yet to fill in: one that writes a ring's size
/// (a map definition's, BCC's table), not text the edit copies from the input, which may
/// hold any byte.
pub fn has_size_marker(e: &crate::edit::Edit) -> bool {
    use crate::rules::Rule;
    matches!(
        e.rule,
        Rule::BccPerfOutput | Rule::PerfMapDef | Rule::LegacyPerfMapDef
    ) && e.text.contains('\u{1}')
}

/// `text` with each size marker replaced by a number: what linking will make of it, as far
/// as a parser can tell.
pub fn stand_in_sizes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(s) = rest.find('\u{1}') {
        let Some(len) = rest[s + 1..].find('\u{1}') else {
            break;
        };
        out.push_str(&rest[..s]);
        out.push('8');
        rest = &rest[s + len + 2..];
    }
    out.push_str(rest);
    out
}

/// The C expression written for a ring buffer size: `256 * 1024`, `4 * 1024 * 1024`.
pub fn size_expr(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} * 1024 * 1024", bytes >> 20)
    } else {
        format!("{} * 1024", bytes >> 10)
    }
}
