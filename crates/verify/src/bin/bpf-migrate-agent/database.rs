//! The workload's database server (`Manifest::database`): the host's PostgreSQL, started in
//! the host's root before the tools (a tool finds the server's processes when it starts, as
//! BCC's dbslower does with `pidof postgres`), and one connection to it, opened then too, on
//! which the workload's `database` step sends its queries. The server's backend for that
//! connection is the process that runs them: its PID replaces `DATABASE_PID` in the tools'
//! command lines.
//!
//! The connection speaks PostgreSQL's frontend/backend protocol (version 3.0) over the
//! server's Unix socket: a startup message, trust authentication, simple queries.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use bpf_migrate_protocol::{DATABASE_USER, Database};

/// Where the data directory is bound in the host's root: a short path (the server's socket
/// is made there, and a socket's path is at most 107 bytes) that the server's unprivileged
/// user reaches (the cache may be in root's home).
const DATA: &str = "/tmp/bpf-migrate-db";

/// The server's log, outside the host's root: quoted when it does not start.
const LOG: &str = "/tmp/database.log";

/// How long the server may take to accept connections, under emulation.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Small and quick: one connection is all the workload makes, nothing needs to survive the
/// boot, and no process but the server's few runs beside the tools.
const SETTINGS: &[&str] = &[
    "listen_addresses=",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "autovacuum=off",
    "shared_buffers=1MB",
    "max_connections=4",
    "dynamic_shared_memory_type=mmap",
    "max_wal_senders=0",
    "wal_level=minimal",
    "max_worker_processes=0",
    "jit=off",
];

/// The step's queries: each sleeps well past the 1 ms that query tools take as slow by
/// default, so that every instance of a tool prints the same ones.
pub const QUERIES: &[&str] = &[
    "SELECT pg_sleep(0.02)",
    "SELECT pg_sleep(0.03), 'bpf-migrate' AS workload",
];

struct Connection {
    stream: UnixStream,
    backend: u32,
}

static CONNECTION: OnceLock<Result<Mutex<Connection>, String>> = OnceLock::new();

/// Starts the server in `root` (the host's root) and connects, unless the boot cannot have
/// it (`db`'s error). What went wrong is the `database` step's error.
pub fn start(db: Result<&Database, String>, root: &str) {
    let _ = CONNECTION.set(db.and_then(|db| start_server(db, root)).map(Mutex::new));
}

/// The PID of the backend serving the connection, or why there is none (`None`: the boot
/// has no database).
pub fn backend_pid() -> Option<Result<u32, String>> {
    CONNECTION.get().map(|c| match c {
        Ok(c) => c.lock().map(|c| c.backend).map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    })
}

/// The workload's step: each of `QUERIES` on the connection. `None`: the boot has none.
pub fn queries() -> Option<Result<(), String>> {
    CONNECTION.get().map(|c| {
        let c = c.as_ref().map_err(Clone::clone)?;
        let mut c = c.lock().map_err(|e| e.to_string())?;
        for q in QUERIES {
            query(&mut c.stream, q).map_err(|e| format!("{q}: {e}"))?;
        }
        Ok(())
    })
}

/// The server on the data directory bound at `DATA`, as the directory's owner, in `root`,
/// and a connection to it once it accepts one (it listens before it accepts: "the database
/// system is starting up").
fn start_server(db: &Database, root: &str) -> Result<Connection, String> {
    use std::os::unix::fs::MetadataExt;
    let at = format!("{root}{DATA}");
    crate::tools::bind(&format!("{root}{}", db.data), &at)?;
    let meta = std::fs::metadata(&at).map_err(|e| format!("{at}: {e}"))?;
    let (uid, gid) = (meta.uid(), meta.gid());
    if uid == 0 {
        return Err(format!(
            "{}: owned by root, as whom PostgreSQL does not run",
            db.data
        ));
    }
    let log = std::fs::File::create(LOG).map_err(|e| format!("{LOG}: {e}"))?;
    let mut cmd = Command::new(&db.server);
    cmd.args(["-D", DATA, "-k", DATA]);
    for s in SETTINGS {
        cmd.args(["-c", s]);
    }
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| format!("{LOG}: {e}"))?)
        .stderr(log);
    crate::tools::in_root(&mut cmd, root, Some((uid, gid)))?;
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", db.server))?;
    let socket = format!("{at}/.s.PGSQL.5432");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let e = match connect(&socket) {
            Ok(c) => return Ok(c),
            Err(e) => e,
        };
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{} exited {status}: {}", db.server, log_tail()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} took no connection within {} s ({e}): {}",
                db.server,
                START_TIMEOUT.as_secs(),
                log_tail()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn log_tail() -> String {
    let log = std::fs::read_to_string(LOG).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// A connection to the server listening at `socket`, as `DATABASE_USER` to the database
/// PostgreSQL always has (`postgres`).
fn connect(socket: &str) -> Result<Connection, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| format!("{socket}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| format!("{socket}: {e}"))?;
    let mut body = 196_608u32.to_be_bytes().to_vec(); // protocol 3.0
    for (k, v) in [("user", DATABASE_USER), ("database", "postgres")] {
        for s in [k, v] {
            body.extend_from_slice(s.as_bytes());
            body.push(0);
        }
    }
    body.push(0);
    let mut startup = (body.len() as u32 + 4).to_be_bytes().to_vec();
    startup.extend(body);
    stream
        .write_all(&startup)
        .map_err(|e| format!("{socket}: {e}"))?;
    let mut backend = None;
    until_ready(&mut stream, |kind, body| match kind {
        b'R' if body.get(..4) != Some(&[0, 0, 0, 0]) => Err(
            "the server asks for a password (its data directory does not trust local connections)"
                .into(),
        ),
        b'K' => {
            backend = body
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            Ok(())
        }
        _ => Ok(()),
    })?;
    let backend = backend.ok_or("the server named no backend (no BackendKeyData)")?;
    Ok(Connection { stream, backend })
}

/// Sends the simple query `sql` and reads its results.
fn query(stream: &mut UnixStream, sql: &str) -> Result<(), String> {
    let mut msg = vec![b'Q'];
    msg.extend((sql.len() as u32 + 5).to_be_bytes());
    msg.extend_from_slice(sql.as_bytes());
    msg.push(0);
    stream.write_all(&msg).map_err(|e| e.to_string())?;
    until_ready(stream, |_, _| Ok(()))
}

/// Reads messages up to ReadyForQuery, each given to `each`; an ErrorResponse is the error
/// (read past, so the connection stays usable).
fn until_ready(
    stream: &mut UnixStream,
    mut each: impl FnMut(u8, &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let mut error = None;
    loop {
        let mut head = [0u8; 5];
        stream
            .read_exact(&mut head)
            .map_err(|e| format!("reading the server's answer: {e}"))?;
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        if !(4..=1 << 24).contains(&len) {
            return Err(format!("a message of {len} bytes from the server"));
        }
        let mut body = vec![0; len - 4];
        stream
            .read_exact(&mut body)
            .map_err(|e| format!("reading the server's answer: {e}"))?;
        match head[0] {
            b'Z' => return error.map_or(Ok(()), Err),
            b'E' => error = Some(error_message(&body)),
            kind => each(kind, &body)?,
        }
    }
}

/// The message field (`M`) of an ErrorResponse.
fn error_message(body: &[u8]) -> String {
    body.split(|&b| b == 0)
        .find_map(|f| f.strip_prefix(b"M"))
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .unwrap_or_else(|| "an error without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_response_gives_its_message() {
        let body = b"SERROR\0VERROR\0C42601\0Msyntax error at or near \"SELEC\"\0P1\0\0";
        assert_eq!(error_message(body), "syntax error at or near \"SELEC\"");
        assert_eq!(error_message(b"SERROR\0\0"), "an error without a message");
    }
}
