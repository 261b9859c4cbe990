//! A newc cpio archive for the guest: the agent as `/init`, its shared libraries, the BPF
//! objects and the manifest.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use fs_err as fs;

#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
    /// The shared libraries in it: each once, whatever number of executables need it.
    libs: BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let name = name.trim_start_matches('/');
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// A directory and its parents.
    pub fn dir(&mut self, path: &str) {
        let mut cur = String::new();
        for part in path.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            if self.dirs.insert(cur.clone()) {
                let c = cur.clone();
                self.entry(&c, 0o040755, &[]);
            }
        }
    }

    pub fn file(&mut self, path: &str, data: &[u8], mode: u32) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(path, 0o100000 | mode, data);
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.buf
    }

    /// An executable and the shared libraries `ldd` says it needs, at the same paths.
    pub fn executable(&mut self, guest_path: &str, host_path: &Path) -> Result<()> {
        let data = fs::read(host_path)?;
        self.file(guest_path, &data, 0o755);
        for lib in shared_libs(host_path)? {
            if self.libs.insert(lib.clone()) {
                let data = fs::read(&lib)?;
                self.file(&lib, &data, 0o755);
            }
        }
        Ok(())
    }
}

/// Absolute paths of the shared libraries (and the dynamic loader) of an executable.
pub fn shared_libs(exe: &Path) -> Result<Vec<String>> {
    let out = Command::new("ldd")
        .arg(exe)
        .output()
        .context("ldd not found")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // A static executable: nothing to add.
        if text.contains("not a dynamic executable")
            || String::from_utf8_lossy(&out.stderr).contains("not a dynamic executable")
        {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed", exe.display());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("=> not found") {
            bail!("{}: shared library missing: {line}", exe.display());
        }
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(p.to_string());
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let mut c = Cpio::default();
        c.file("/a/b", b"xyz", 0o644);
        let out = c.finish();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("a\0") && text.contains("a/b\0") && text.contains("TRAILER!!!\0"));
        // The file entry: 110-byte header, name "a/b\0" padded to 4, data padded to 4.
        let at = text.find("070701").unwrap();
        assert_eq!(at, 0);
    }

    #[test]
    fn a_library_that_several_executables_need_goes_in_once() {
        let sh = Path::new("/bin/sh");
        let mut c = Cpio::default();
        c.executable("/a", sh).unwrap();
        let once = c.buf.len();
        c.executable("/b", sh).unwrap();
        let libs: usize = shared_libs(sh)
            .unwrap()
            .iter()
            .map(|l| fs::metadata(l).unwrap().len() as usize)
            .sum();
        assert!(libs > 0, "/bin/sh links no library here");
        // The second executable adds itself, not its libraries again.
        let sh_len = fs::metadata(sh).unwrap().len() as usize;
        assert!(
            c.buf.len() - once < sh_len + 512,
            "{} {once} {libs}",
            c.buf.len()
        );
    }
}
