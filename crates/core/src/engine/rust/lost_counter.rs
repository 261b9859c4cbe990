//! A libbpf-rs lost-sample callback kept (`--lost count`, the default): a ring buffer has
//! none, so the BPF program counts, per CPU, the records its ring could not take (a per-CPU
//! array `MAP_lost` that linking adds, `engine::lost_counter`), and the sample callback given
//! to the ring buffer first passes what is new to the lost callback, as `(cpu, count)`, as
//! the perf buffer did: `builder.add(&skel.maps.events,
//! lost_counted(libbpf_rs::MapHandle::try_from(&skel.maps.events_lost), LOST, SAMPLE))`, with
//! a small generic function `lost_counted` written once at the end of the file. The counter is
//! a handle of its own, so that the ring does not borrow the skeleton (which `attach` after the
//! ring is built needs mutably). A loss is told before the next record is handled.

use syn::Expr;
use syn::spanned::Spanned;

use super::Rs;
use crate::edit::Edit;
use crate::engine::context::Report;
use crate::engine::user::LOST_MAP_SUFFIX;
use crate::rules::Rule;

/// The function the sample callback is wrapped in.
const FN: &str = "lost_counted";

/// What is written at the end of the file.
const HELPER: &str = r#"
/// A ring buffer has no lost-sample callback: the BPF program counts the records its ring
/// could not take, per CPU, in a map beside it, and the sample callback this returns first
/// passes what is new to `lost`, as (cpu, count) (added by bpf-migrate).
fn lost_counted<'a>(
    counter: libbpf_rs::Result<libbpf_rs::MapHandle>,
    mut lost: impl FnMut(i32, u64) + 'a,
    mut sample: impl FnMut(&[u8]) -> i32 + 'a,
) -> impl FnMut(&[u8]) -> i32 + 'a {
    let counter = counter
        .map_err(|e| eprintln!("cannot read the count of lost events: {e}"))
        .ok();
    let mut seen: Vec<u64> = Vec::new();
    move |data: &[u8]| {
        let key = 0u32.to_ne_bytes();
        let now = counter
            .as_ref()
            .map(|c| libbpf_rs::MapCore::lookup_percpu(c, &key, libbpf_rs::MapFlags::ANY));
        if let Some(Ok(Some(now))) = now {
            seen.resize(now.len(), 0);
            for (cpu, value) in now.iter().enumerate() {
                let n = value
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_ne_bytes)
                    .unwrap_or(0);
                if n > seen[cpu] {
                    lost(cpu as i32, n - seen[cpu]);
                    seen[cpu] = n;
                }
            }
        }
        sample(data)
    }
}
"#;

/// The skeleton and the map of `&X.maps.NAME` (libbpf-rs 0.24 and later, whose maps are
/// skeleton fields): `X` as written, and `NAME`.
pub(super) fn skel_map(rs: &Rs, map: &Expr) -> Option<(String, String)> {
    let Expr::Reference(r) = map else {
        return None;
    };
    let Expr::Field(f) = &*r.expr else {
        return None;
    };
    let Expr::Field(maps) = &*f.base else {
        return None;
    };
    let named = |m: &syn::Member| match m {
        syn::Member::Named(i) => Some(i.to_string()),
        syn::Member::Unnamed(_) => None,
    };
    if r.mutability.is_some() || named(&maps.member).as_deref() != Some("maps") {
        return None;
    }
    Some((rs.text(maps.base.span()).to_string(), named(&f.member)?))
}

/// A handle of the counter map of the chain's map `&X.maps.NAME`:
/// `libbpf_rs::MapHandle::try_from(&X.maps.NAME_lost)`.
fn counter_expr(rs: &Rs, map: &Expr, name: &str) -> Option<String> {
    let (skel, field) = skel_map(rs, map)?;
    (field == name)
        .then(|| format!("libbpf_rs::MapHandle::try_from(&{skel}.maps.{name}{LOST_MAP_SUFFIX})"))
}

/// The sample callback's text `cb` wrapped so that it reports the losses of ring `name` to
/// `lost` first; Err with the reason when that cannot be done.
pub(super) fn wrap(
    rs: &mut Rs,
    map: &Expr,
    name: &str,
    lost: &Expr,
    cb: &str,
) -> Result<String, String> {
    let counter = counter(rs, map, name, lost)?;
    let lost_text = rs.text(lost.span()).to_string();
    Ok(format!("{FN}({counter}, {lost_text}, {cb})"))
}

/// The counter of ring `name` (`map` in the chain) for its kept lost callback `lost`: the
/// expression of a handle of it, with the note and `lost_counted` written once; Err with the
/// reason when that cannot be done.
pub(super) fn counter(rs: &mut Rs, map: &Expr, name: &str, lost: &Expr) -> Result<String, String> {
    let Some(counter) = counter_expr(rs, map, name) else {
        return Err(format!(
            "the map `{}` is not a skeleton's field (`&skel.maps.{name}`, libbpf-rs 0.24 and later), from which its counter could be named",
            rs.text(map.span())
        ));
    };
    let len = rs.src().len();
    for taken in [FN.to_string(), format!("{name}{LOST_MAP_SUFFIX}")] {
        if !rs.uses_in(&taken, 0, len).is_empty() {
            return Err(format!("the name `{taken}` is taken"));
        }
    }
    rs.report(
        rs.range(lost.span()).0,
        Rule::LostCounter,
        format!(
            "the lost-sample callback is kept: the BPF program counts the records the ring `{name}` could not take in `{name}{LOST_MAP_SUFFIX}`, and `{FN}()` passes what is new to it, per CPU, before the next record is handled; the counts are not the perf buffer's (one ring shared by all CPUs fills at other times)"
        ),
        "the skeleton is generated again from the migrated BPF source, which defines the counter",
    );
    if !rs.lost_helper {
        rs.lost_helper = true;
        rs.edits
            .push(Edit::insert(len, HELPER.to_string(), Rule::LostCounter));
    }
    Ok(counter)
}

#[cfg(test)]
mod tests {
    use super::super::test_crate::main_rs;
    use crate::engine::options::Options;
    use crate::engine::testkit::run;

    /// A reader whose lost callback is `lost` and whose map is `map`.
    fn reader(map: &str, lost: &str) -> String {
        format!(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {{
                println!("{{}}", data.len());
            }}

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {{
                let perf = PerfBufferBuilder::new({map})
                    .sample_cb(handle)
                    .lost_cb({lost})
                    .build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }}
            "#
        )
    }

    #[test]
    fn the_sample_callback_reports_new_losses_first() {
        let after = r#"
            use libbpf_rs::RingBufferBuilder;

            fn handle(data: &[u8]) -> i32 {
                println!("{}", data.len());
                0
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let mut builder = RingBufferBuilder::new();
                builder.add(&skel.maps.events, lost_counted(libbpf_rs::MapHandle::try_from(&skel.maps.events_lost), |cpu, n| eprintln!("lost {n} on {cpu}"), handle))?;
                let perf = builder.build()?;
                perf.poll(std::time::Duration::from_millis(100))?;
                Ok(())
            }
            "#;
        // The function comes after the skeleton's module, at the end of the file.
        let after = main_rs(after) + super::HELPER;
        let before = main_rs(&reader(
            "&skel.maps.events",
            "|cpu, n| eprintln!(\"lost {n} on {cpu}\")",
        ));
        let (changed, diags) = run(
            &[
                ("src/main.rs", &before),
                ("src/bpf/x.bpf.c", super::super::test_crate::BPF),
            ],
            &Options::default(),
        );
        assert_eq!(changed["src/main.rs"], after);
        assert!(changed["src/bpf/x.bpf.c"].contains("events_lost_count(bpf_ringbuf_output("));
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains("lost-sample callback is kept")),
            "{diags:?}"
        );
    }

    #[test]
    fn a_map_that_names_no_counter_drops_the_callback_with_the_reason() {
        for (map, why) in [
            ("skel.maps().events()", "is not a skeleton's field"),
            ("&mut skel.maps.events", "is not a skeleton's field"),
        ] {
            let (changed, diags) = run(
                &[
                    ("src/main.rs", &main_rs(&reader(map, "|_cpu, _n| {}"))),
                    ("src/bpf/x.bpf.c", super::super::test_crate::BPF),
                ],
                &Options::default(),
            );
            assert!(!changed["src/main.rs"].contains("lost_counted"), "{map}");
            let d = diags
                .iter()
                .find(|d| d.message.contains("cannot feed it from a counter"))
                .unwrap_or_else(|| panic!("{map}: {diags:?}"));
            assert!(d.message.contains(why), "{map}: {}", d.message);
        }
        // A name taken: the same, with the reason.
        let taken = reader("&skel.maps.events", "|_cpu, _n| {}")
            .replace("fn open", "fn lost_counted() {}\n\n            fn open");
        let (changed, diags) = run(
            &[
                ("src/main.rs", &main_rs(&taken)),
                ("src/bpf/x.bpf.c", super::super::test_crate::BPF),
            ],
            &Options::default(),
        );
        assert!(changed["src/main.rs"].contains("builder.add(&skel.maps.events, handle)?;"));
        assert!(
            diags
                .iter()
                .any(|d| d.message.contains("the name `lost_counted` is taken")),
            "{diags:?}"
        );
    }
}
