//! The workload's NFS server and client (`Manifest::nfs`): for a boot whose programs trace
//! NFS (BCC's nfsslower), the guest runs the host's nfs-kernel-server in the host's root,
//! exports a directory in memory to itself and mounts it; the workload's `nfs` step does
//! file I/O there. Only the boots that want it load the modules (`MODULES`) and start it.

use std::path::Path;

use bpf_migrate_protocol::{NFS_EXPORTFS, NFS_MOUNT_PROGRAM, NFS_MOUNTD, NFS_NFSD};

/// The guest kernel modules (file names, of `kernel::GUEST_MODULES`) of the NFS server
/// (nfsd) and client (NFS version 4): only a boot with NFS gets them.
pub const MODULES: &[&str] = &[
    "sunrpc.ko",
    "grace.ko",
    "lockd.ko",
    "nfs_acl.ko",
    "auth_rpcgss.ko",
    "nfsd.ko",
    "dns_resolver.ko",
    "nfs.ko",
    "nfsv4.ko",
];

/// Whether a boot of programs with these texts gets the NFS server: a program names NFS's
/// client or server functions (`nfs_file_read`, `nfs4_file_open`, `nfsd_open`), or a tool's
/// command line names nfs (libbpf-tools' `fsslower -t nfs`).
pub fn wanted(texts: &[String]) -> bool {
    texts.iter().any(|t| {
        ["nfs", "nfs4", "nfsd"]
            .iter()
            .any(|w| crate::names_word(t, w))
    })
}

/// The boot's NFS server, or why it cannot have one: the host's root, where it runs, must
/// have nfs-kernel-server's programs.
pub fn provision() -> Result<(), String> {
    match missing(Path::new("/")) {
        Some(p) => Err(format!(
            "the host has no {p} (apt-get install nfs-kernel-server): the guest runs the host's NFS server"
        )),
        None => Ok(()),
    }
}

/// The first of the programs the guest runs that `root` lacks.
fn missing(root: &Path) -> Option<&'static str> {
    [NFS_EXPORTFS, NFS_MOUNTD, NFS_NFSD, NFS_MOUNT_PROGRAM]
        .into_iter()
        .find(|p| !root.join(p.trim_start_matches('/')).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_gets_nfs_when_a_program_names_its_functions() {
        let w = |t: &str| wanted(&[t.to_string()]);
        assert!(w(
            "b.attach_kprobe(event=\"nfs_file_read\", fn_name=\"trace_rw_entry\")"
        ));
        assert!(w("SEC(\"kprobe/nfs4_file_open\")"));
        assert!(w("fsslower -t nfs -m 0"));
        assert!(w("int BPF_KPROBE(nfsd_open)"));
        assert!(!w("nfsslower.py"));
        assert!(!w("confs_read"));
    }

    #[test]
    fn the_nfs_modules_are_guest_modules_in_their_order() {
        let names: Vec<&str> = crate::kernel::GUEST_MODULES
            .iter()
            .map(|m| m.rsplit('/').next().unwrap())
            .filter(|n| MODULES.contains(n))
            .collect();
        assert_eq!(names, MODULES);
    }

    #[test]
    fn a_host_without_the_servers_programs_is_named() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(missing(root.path()), Some(NFS_EXPORTFS));
        for p in [NFS_EXPORTFS, NFS_MOUNTD, NFS_NFSD] {
            let f = root.path().join(p.trim_start_matches('/'));
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, "").unwrap();
        }
        assert_eq!(missing(root.path()), Some(NFS_MOUNT_PROGRAM));
    }
}
