//! `--write`: replace a file atomically (temp file in the same directory, fsync, rename),
//! keeping its mode and owner, and only if it still holds what was read.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Checks that `path` can be replaced: writable, and still holding what was read.
pub fn preflight(path: &Path, expected_old: &str) -> std::io::Result<()> {
    let target = fs::canonicalize(path)?;
    let meta = fs::metadata(&target)?;
    if meta.permissions().readonly() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "the file is read-only; make it writable or apply the diff by hand",
        ));
    }
    if fs::read(&target)? != expected_old.as_bytes() {
        return Err(std::io::Error::other(
            "the file changed while bpf-migrate was working; run it again",
        ));
    }
    Ok(())
}

pub fn atomic_replace(path: &Path, expected_old: &str, new: &str) -> std::io::Result<()> {
    preflight(path, expected_old)?;
    // Write through a symlink to its target, never over the link itself.
    let target = fs::canonicalize(path)?;
    let meta = fs::metadata(&target)?;
    let dir = target.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".bpf-migrate-")
        .tempfile_in(dir)?;
    tmp.write_all(new.as_bytes())?;
    tmp.as_file().set_permissions(meta.permissions())?;
    // Keep the owner where we may (as root); elsewhere the file is ours already.
    let _ = std::os::unix::fs::fchown(tmp.as_file(), Some(meta.uid()), Some(meta.gid()));
    tmp.as_file().sync_all()?;
    tmp.persist(&target).map_err(|e| e.error)?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Files with uncommitted changes in their git work tree (files outside one are never dirty).
pub fn dirty_files(files: &[&Path]) -> Vec<std::path::PathBuf> {
    let mut dirty = Vec::new();
    for f in files {
        let Ok(target) = fs::canonicalize(f) else {
            continue;
        };
        let dir = target.parent().unwrap_or(Path::new("."));
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["status", "--porcelain", "--"])
            .arg(&target)
            .output();
        if let Ok(o) = out
            && o.status.success()
            && !o.stdout.is_empty()
        {
            dirty.push(f.to_path_buf());
        }
    }
    dirty
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_changed_since_it_was_read_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.c");
        fs::write(&p, "changed by someone else").unwrap();
        let e = atomic_replace(&p, "what was read", "new").unwrap_err();
        assert!(
            e.to_string()
                .contains("changed while bpf-migrate was working")
        );
        assert_eq!(fs::read_to_string(&p).unwrap(), "changed by someone else");
        atomic_replace(&p, "changed by someone else", "new").unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), "new");
    }
}
