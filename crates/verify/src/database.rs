//! The workload's database server (`Manifest::database`): the host's PostgreSQL, run in the
//! guest on a data directory that the host's `initdb` makes once into the cache. Tools that
//! trace a database's queries (BCC's dbslower and mysqld_qslower, through the USDT probes
//! `query__start` and `query__done` that PostgreSQL and MySQL both have) then see the
//! queries of the workload's `database` step.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use bpf_migrate_protocol::{DATABASE_PID, DATABASE_USER, Database};
use fs_err as fs;

/// An unprivileged user for `initdb` and the server when verify runs as root: PostgreSQL
/// refuses to run as root. `nobody`, in every Debian's `/etc/passwd`.
const NOBODY: u32 = 65534;

/// Whether a boot of programs with these texts (sources, loader files, command lines) gets
/// the database server: a program names a database's query probes, PostgreSQL itself, or
/// the server's backend (`DATABASE_PID`) on its command line.
pub fn wanted(texts: &[String]) -> bool {
    texts.iter().any(|t| {
        t.contains("query__start")
            || t.contains("query__done")
            || t.contains(DATABASE_PID)
            || crate::names_word(t, "postgres")
    })
}

/// The server for a boot: the host's newest PostgreSQL and its data directory in `cache`
/// (made now unless it is there), or why there is none.
pub fn provision(cache: &Path) -> Result<Database, String> {
    let (version, bin) = find_server(Path::new("/usr/lib/postgresql")).ok_or(
        "the host has no PostgreSQL server in /usr/lib/postgresql/VERSION/bin (apt-get install postgresql)",
    )?;
    let data = data_directory(&cache.join(format!("postgres-{version}")), &bin)
        .map_err(|e| format!("{e:#}"))?;
    Ok(Database {
        server: bin.join("postgres").display().to_string(),
        data: data.display().to_string(),
    })
}

/// The newest `ROOT/VERSION/bin` that has both `postgres` and `initdb`, with its version.
fn find_server(root: &Path) -> Option<(u32, PathBuf)> {
    fs::read_dir(root)
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("postgres").is_file() && bin.join("initdb").is_file())
                .then_some((version, bin))
        })
        .max_by_key(|(v, _)| *v)
}

/// `dir/data`, made by `bin/initdb` unless it is there (`dir/made` marks it whole): owned by
/// the user the server will run as (`NOBODY` when verify runs as root), trusting local
/// connections, in UTF-8 with the C locale, with 1 MiB WAL segments (a small copy in the
/// guest's memory).
fn data_directory(dir: &Path, bin: &Path) -> Result<PathBuf> {
    let data = dir.join("data");
    let made = dir.join("made");
    crate::kernel::make_once(dir, &made, "the database's data directory", || {
        // initdb, as the user it runs as, must reach the directory: a fresh one of its own in
        // the temporary directory (the cache may be in root's home), copied in after.
        let scratch = tempfile::Builder::new()
            .prefix("bpf-migrate-initdb-")
            .tempdir()
            .context("cannot create a temporary directory for initdb")?;
        // SAFETY: no arguments, cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        if root {
            std::os::unix::fs::chown(scratch.path(), Some(NOBODY), Some(NOBODY))
                .with_context(|| format!("{}", scratch.path().display()))?;
        }
        let new = scratch.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .arg("-D")
            .arg(&new)
            .args([
                "-U",
                DATABASE_USER,
                "--auth=trust",
                "--no-sync",
                "--no-instructions",
                "--wal-segsize=1",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .stdin(Stdio::null());
        if root {
            initdb.uid(NOBODY).gid(NOBODY);
        }
        let out = initdb
            .output()
            .with_context(|| format!("running {}", bin.join("initdb").display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}",
                bin.join("initdb").display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let _ = fs::remove_dir_all(&data);
        // `cp -a` keeps the owner and the modes the server checks (0700).
        let cp = Command::new("cp")
            .arg("-a")
            .arg(&new)
            .arg(&data)
            .status()
            .context("running cp")?;
        if !cp.success() {
            bail!(
                "cp -a of the new data directory into {} failed",
                data.display()
            );
        }
        fs::write(&made, "")?;
        Ok(())
    })?;
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_gets_the_database_when_a_program_names_its_probes_or_the_server() {
        let w = |t: &str| wanted(&[t.to_string()]);
        assert!(w(
            "u.enable_probe(probe=\"query__start\", fn_name=\"do_start\")"
        ));
        assert!(w("SEC(\"usdt/postgres:query__done\")"));
        assert!(w("dbslower postgres -m 0"));
        assert!(w("mysqld_qslower {database-pid}"));
        assert!(!w("tcp_v4_connect postgresql_port"));
        assert!(!w("vfs_read"));
    }

    #[test]
    fn the_data_directory_is_made_once_by_the_hosts_initdb() {
        // The host's real PostgreSQL (scripts/test installs it).
        let cache = tempfile::tempdir().unwrap();
        let db = provision(cache.path()).unwrap();
        assert!(db.server.ends_with("/bin/postgres"), "{db:?}");
        let data = Path::new(&db.data);
        assert!(data.join("PG_VERSION").is_file(), "{db:?}");
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let meta = fs::metadata(data).unwrap();
        // Not root's: the server refuses to run as root. Its own only: it checks.
        assert_ne!(meta.uid(), 0);
        assert_eq!(meta.permissions().mode() & 0o077, 0);
        // Made once: a second boot finds it.
        fs::write(data.join("kept"), "").unwrap();
        assert_eq!(provision(cache.path()), Ok(db.clone()));
        assert!(data.join("kept").is_file());
        let _ = fs::remove_dir_all(cache.path());
    }

    #[test]
    fn the_newest_server_with_initdb_is_found() {
        let root = tempfile::tempdir().unwrap();
        for (v, files) in [
            ("13", &["postgres", "initdb"][..]),
            ("15", &["postgres", "initdb"]),
            ("16", &["postgres"]),
        ] {
            let bin = root.path().join(v).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for f in files {
                fs::write(bin.join(f), "").unwrap();
            }
        }
        fs::create_dir_all(root.path().join("common")).unwrap();
        let (v, bin) = find_server(root.path()).unwrap();
        assert_eq!(v, 15);
        assert_eq!(bin, root.path().join("15/bin"));
        assert!(find_server(&root.path().join("none")).is_none());
    }
}
