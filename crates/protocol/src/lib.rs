//! What verify's host and its guest agent say to each other.
//!
//! The host writes a manifest into the guest's initramfs; the agent answers over the second
//! serial port with frames, one a line: `BPFM1 <length> <fnv1a64> <json>`. A frame whose
//! length or checksum is off (kernel messages written over it) is not a frame.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The frame of one message, with its newline.
pub fn frame<T: Serialize>(message: &T) -> String {
    let body = serde_json::to_string(message).expect("protocol messages serialize");
    format!(
        "BPFM1 {} {:016x} {}\n",
        body.len(),
        fnv1a(body.as_bytes()),
        body
    )
}

/// The message of a frame found anywhere in `line`; `None` for anything else, or a frame
/// whose length or checksum is off.
pub fn parse_frame<T: DeserializeOwned>(line: &str) -> Option<T> {
    let at = line.find("BPFM1 ")?;
    let mut parts = line[at + 6..].splitn(3, ' ');
    let len: usize = parts.next()?.parse().ok()?;
    let sum = u64::from_str_radix(parts.next()?, 16).ok()?;
    let body = parts.next()?.trim_end_matches(['\r', '\n']);
    if body.len() != len || fnv1a(body.as_bytes()) != sum {
        return None;
    }
    serde_json::from_str(body).ok()
}

/// FNV-1a, 64 bits: cheap, and enough to tell a frame from one that console noise damaged.
pub fn fnv1a(b: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for x in b {
        h ^= u64::from(*x);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn frames_survive_noise_and_reject_damage() {
        let good = frame(&serde_json::json!({"type": "done"}));
        let good = good.trim_end();
        assert!(parse_frame::<Value>(&format!("[  1.0] noise {good}")).is_some());
        assert!(parse_frame::<Value>(&good.replace("done", "dona")).is_none());
        assert!(parse_frame::<Value>("BPFM1 3 0 {}").is_none());
    }
}
