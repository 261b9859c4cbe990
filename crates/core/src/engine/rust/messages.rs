//! Messages that name the perf buffer: in a chain's error handling, and in string literals
//! elsewhere in a file where a migration was made.

use super::Rs;
use crate::edit::Edit;
use crate::rules::Rule;

/// Text with messages that name the perf buffer updated.
pub(super) fn message_text(s: &str) -> String {
    s.replace("perf buffer", "ring buffer")
        .replace("Perf buffer", "Ring buffer")
        .replace("perfbuf", "ringbuf")
}

/// String literals elsewhere in the file that name the perf buffer.
pub(super) fn messages(rs: &mut Rs, skip: &[(usize, usize)]) {
    let src = rs.src().to_string();
    for (s, e) in rs.strings.clone() {
        if skip.iter().any(|&(a, b)| s >= a && e <= b) {
            continue;
        }
        let lit = &src[s..e];
        if crate::engine::user::messages::about_its_size(lit) {
            continue;
        }
        let new = lit
            .replace("perf buffer", "ring buffer")
            .replace("Perf buffer", "Ring buffer");
        if new != lit {
            rs.edits
                .push(Edit::replace(s, e, new, Rule::PerfBufferMessage));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_crate::migrates;

    /// The chain's error handling (`perfbuf` too, put on one line) and other literals saying
    /// "perf buffer".
    #[test]
    fn messages_that_name_the_perf_buffer_follow() {
        migrates(
            r#"
            use libbpf_rs::PerfBufferBuilder;

            fn handle(_cpu: i32, data: &[u8]) {
                println!("{}", data.len());
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let perf = PerfBufferBuilder::new(&skel.maps.events)
                    .sample_cb(handle)
                    .build()
                    .map_err(|e| {
                        anyhow::anyhow!("perfbuf: {e}")
                    })?;
                perf.poll(std::time::Duration::from_millis(100))
                    .map_err(|e| anyhow::anyhow!("Perf buffer poll failed: {e}"))?;
                println!("perfbuf stays: only the chain's words change");
                Ok(())
            }
            "#,
            r#"
            use libbpf_rs::RingBufferBuilder;

            fn handle(data: &[u8]) -> i32 {
                println!("{}", data.len());
                0
            }

            fn open(skel: &x::XSkel) -> anyhow::Result<()> {
                let mut builder = RingBufferBuilder::new();
                builder.add(&skel.maps.events, handle).map_err(|e| {anyhow::anyhow!("ringbuf: {e}")})?;
                let perf = builder.build().map_err(|e| {anyhow::anyhow!("ringbuf: {e}")})?;
                perf.poll(std::time::Duration::from_millis(100))
                    .map_err(|e| anyhow::anyhow!("Ring buffer poll failed: {e}"))?;
                println!("perfbuf stays: only the chain's words change");
                Ok(())
            }
            "#,
        );
    }
}
