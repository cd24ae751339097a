//! A throwaway PostgreSQL cluster for tests: `initdb` into a fresh directory under
//! `/tmp`, a server on a Unix socket in that directory and on a free TCP port of
//! 127.0.0.1, trust authentication for the `postgres` role. Dropping the [`Cluster`]
//! stops the server (`pg_ctl stop -m immediate`) and removes the directory, also when
//! the test that held it panicked. Each cluster has a directory and a port of its own,
//! so tests and processes can run several at once.
//!
//! The server binaries are `$VPCEP_PG_BIN` when set, else the newest
//! `/usr/lib/postgresql/*/bin`, else the directory of `initdb` on `PATH`. Run as root,
//! the server runs as the `postgres` OS user (`runuser`), as PostgreSQL refuses root.

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

/// Environment variable naming the directory of `initdb`, `pg_ctl` and `psql`.
pub const BIN_ENV: &str = "VPCEP_PG_BIN";

/// Server starts tried, each on a newly picked port, before giving up on a port clash.
const START_ATTEMPTS: usize = 5;

/// A running PostgreSQL server in a temporary directory; dropping it stops the server and
/// removes the directory.
#[derive(Debug)]
pub struct Cluster {
    /// Removed on drop (`None` once removed).
    dir: Option<TempDir>,
    /// The temporary directory: the socket lives here, the cluster in `data/`.
    path: PathBuf,
    bin: PathBuf,
    /// Run `initdb` and `pg_ctl` as the `postgres` OS user (the caller is root).
    as_postgres: bool,
    port: u16,
    pid: u32,
    /// `pg_ctl start` was run: the drop stops the server.
    started: bool,
    /// The write end of the reaper's stdin: see [`Cluster::reap_on_exit`].
    reaper: Option<std::process::ChildStdin>,
}

/// The directory of the PostgreSQL server binaries, or why there is none.
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(BIN_ENV).filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(format!(
                "{BIN_ENV}={} holds no initdb (apt-get install postgresql, or point {BIN_ENV} at its bin directory)",
                dir.display()
            ))
        };
    }
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse::<u32>().ok())
                .collect::<Option<Vec<u32>>>()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| dir.join("initdb").is_file())
        .ok_or_else(|| {
            format!(
                "no PostgreSQL server found (no initdb in ${BIN_ENV}, /usr/lib/postgresql/*/bin or PATH): apt-get install postgresql"
            )
        })
}

/// Whether PostgreSQL server binaries are installed (tests skip themselves when not).
pub fn installed() -> bool {
    bin_dir().is_ok()
}

impl Cluster {
    /// Creates a cluster in a new temporary directory and starts its server.
    pub fn start() -> Result<Cluster, String> {
        let bin = bin_dir()?;
        let as_postgres = current_uid()? == 0;
        let dir = tempfile::Builder::new()
            .prefix("vpcep-testpg.")
            .tempdir_in("/tmp")
            .map_err(|e| format!("cannot create a directory in /tmp: {e}"))?;
        let path = dir.path().to_path_buf();
        // From here on the drop cleans up whatever a failure leaves.
        let mut cluster = Cluster {
            dir: Some(dir),
            path,
            bin,
            as_postgres,
            port: 0,
            pid: 0,
            started: false,
            reaper: None,
        };
        if as_postgres {
            let out = command("chown")
                .arg("-R")
                .arg("postgres:")
                .arg(&cluster.path)
                .output()
                .map_err(|e| format!("cannot run chown: {e}"))?;
            check("chown -R postgres:", &out)?;
        }
        cluster.initdb()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// URL of the `postgres` database, over the Unix socket (`host` is the socket's
    /// directory, as sqlx and libpq read it).
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// Creates a new empty database and returns its URL (as [`Cluster::url`]).
    pub fn create_database(&self, name: &str) -> Result<String, String> {
        if name.is_empty() || name.contains('\0') {
            return Err(format!("invalid database name {name:?}"));
        }
        let statement = format!("CREATE DATABASE \"{}\"", name.replace('"', "\"\""));
        let out = command(self.bin.join("psql"))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.url())
            .arg("-c")
            .arg(&statement)
            .output()
            .map_err(|e| format!("cannot run psql: {e}"))?;
        check(&statement, &out)?;
        Ok(self.url_of(name))
    }

    /// Process id of the server (the postmaster).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The server's TCP port on 127.0.0.1 (also the number of its Unix socket).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding the server's Unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.path
    }

    /// The directory of the PostgreSQL binaries used (`psql` among them).
    pub fn bin_dir(&self) -> &Path {
        &self.bin
    }

    fn data_dir(&self) -> PathBuf {
        self.path.join("data")
    }

    fn url_of(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost/{}?host={}&port={}",
            percent_encode(database),
            percent_encode(&self.path.to_string_lossy()),
            self.port
        )
    }

    /// Runs a server binary, as the `postgres` OS user when the caller is root.
    fn server_command(&self, program: &str) -> Command {
        let program = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut cmd = command("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(program);
            cmd
        } else {
            command(program)
        };
        // The postgres user may not be able to enter the caller's directory.
        cmd.current_dir(&self.path);
        cmd
    }

    fn initdb(&self) -> Result<(), String> {
        let out = self
            .server_command("initdb")
            .arg("-D")
            .arg(self.data_dir())
            .args([
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .output()
            .map_err(|e| format!("cannot run initdb: {e}"))?;
        check("initdb", &out)?;
        // fsync stays on (the default): crash tests rely on durable commits.
        let settings = format!(
            "\n# vpcep-testpg\nunix_socket_directories = '{}'\nlisten_addresses = '127.0.0.1'\n\
             max_connections = 200\nshared_buffers = 32MB\nfsync = on\n",
            self.path.display()
        );
        fs::OpenOptions::new()
            .append(true)
            .open(self.data_dir().join("postgresql.conf"))
            .and_then(|mut f| f.write_all(settings.as_bytes()))
            .map_err(|e| format!("cannot write postgresql.conf: {e}"))
    }

    /// Stops the server at once, as a crash would (`pg_ctl stop -m immediate`), keeping
    /// the cluster: [`Cluster::start_again`] brings it back on the same port.
    pub fn stop(&mut self) {
        self.stop_server();
    }

    /// Starts the stopped server again, on the port (and so at the URLs) it had.
    pub fn start_again(&mut self) -> Result<(), String> {
        self.start_on(Some(self.port))
    }

    fn start_server(&mut self) -> Result<(), String> {
        self.start_on(None)
    }

    /// Starts the server on `port`, or on a free port (tried a few times).
    fn start_on(&mut self, port: Option<u16>) -> Result<(), String> {
        let log = self.path.join("server.log");
        let mut last_error = String::new();
        for _ in 0..START_ATTEMPTS {
            self.port = match port {
                Some(p) => p,
                None => free_port()?,
            };
            let log_before = fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            self.started = true;
            let out = self
                .server_command("pg_ctl")
                .arg("-D")
                .arg(self.data_dir())
                .arg("-l")
                .arg(&log)
                .arg("-o")
                .arg(format!("-p {}", self.port))
                .args(["-w", "-t", "60", "start"])
                .output()
                .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
            if out.status.success() {
                self.pid = read_pid(&self.data_dir().join("postmaster.pid"))?;
                return Ok(());
            }
            let log_text = fs::read(&log)
                .map(|bytes| {
                    String::from_utf8_lossy(&bytes[(log_before as usize).min(bytes.len())..])
                        .into_owned()
                })
                .unwrap_or_default();
            last_error = format!(
                "pg_ctl start failed ({}): {}{}\nserver log:\n{log_text}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let clash = [
                "Address already in use",
                "could not bind",
                "could not create any TCP/IP sockets",
            ]
            .iter()
            .any(|m| log_text.contains(m));
            if !clash {
                break;
            }
        }
        Err(last_error)
    }

    fn stop_server(&mut self) {
        if !std::mem::take(&mut self.started) {
            return;
        }
        let stopped = self
            .server_command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(["-m", "immediate", "-w", "-t", "20", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !stopped && self.pid != 0 && self.data_dir().join("postmaster.pid").exists() {
            // Last resort, so that the directory can go: the postmaster we started.
            let _ = command("kill")
                .args(["-KILL", &self.pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Cluster {
    /// Makes sure the server stops and the directory goes when this process ends, even
    /// without a drop (a cluster in a `static`, a test process killed): a shell waits
    /// for its stdin, whose write end only this process holds, to close, then stops the
    /// server and removes the directory.
    pub fn reap_on_exit(&mut self) -> Result<(), String> {
        let stop =
            format!(
            "cat >/dev/null; {} -D '{}' -m immediate -w -t 20 stop >/dev/null 2>&1; rm -rf '{}'",
            if self.as_postgres {
                format!("runuser -u postgres -- '{}'", self.bin.join("pg_ctl").display())
            } else {
                format!("'{}'", self.bin.join("pg_ctl").display())
            },
            self.data_dir().display(),
            self.path.display(),
        );
        let mut child = command("sh")
            .args(["-c", &stop])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the reaper: {e}"))?;
        self.reaper = child.stdin.take();
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_server();
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                eprintln!("vpcep-testpg: cannot remove {}: {e}", self.path.display());
            }
        }
    }
}

/// A command that does not see the caller's libpq environment (`PGHOST`, `PGDATA`, ...).
fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    let pg_vars: Vec<OsString> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.to_string_lossy().starts_with("PG"))
        .collect();
    for k in pg_vars {
        cmd.env_remove(k);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn check(what: &str, out: &Output) -> Result<(), String> {
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn current_uid() -> Result<u32, String> {
    let out = command("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run id -u: {e}"))?;
    check("id -u", &out)?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|e| format!("id -u printed no uid: {e}"))
}

/// A port of 127.0.0.1 free right now (the server may still lose it to another process:
/// the start is then retried).
fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

fn read_pid(pid_file: &Path) -> Result<u32, String> {
    let text = fs::read_to_string(pid_file)
        .map_err(|e| format!("cannot read {}: {e}", pid_file.display()))?;
    text.lines()
        .next()
        .and_then(|line| line.trim().parse().ok())
        .ok_or_else(|| format!("{} holds no pid", pid_file.display()))
}

/// Percent-encodes all but unreserved URL characters and `/` (kept for socket paths).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn psql(cluster: &Cluster, args: &[&str]) -> Output {
        command(cluster.bin_dir().join("psql"))
            .args(["-X", "-At", "-v", "ON_ERROR_STOP=1"])
            .args(args)
            .output()
            .expect("run psql")
    }

    #[test]
    fn starts_serves_and_goes() {
        if !installed() {
            eprintln!(
                "skipped: no PostgreSQL installed ({})",
                bin_dir().unwrap_err()
            );
            return;
        }
        let cluster = Cluster::start().expect("start a cluster");
        let dir = cluster.socket_dir().to_path_buf();
        let pid = cluster.pid();
        assert!(dir.is_dir());
        assert!(pid > 0);

        let url = cluster
            .create_database("vpcep_unit")
            .expect("create a database");
        assert!(url.starts_with("postgres://postgres@localhost/vpcep_unit?host=/tmp/"));
        let out = psql(&cluster, &["-d", &url, "-c", "select 1"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
        // The same server over TCP.
        let port = cluster.port().to_string();
        let out = psql(
            &cluster,
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "vpcep_unit",
                "-c",
                "select current_database()",
            ],
        );
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "vpcep_unit");
        // A database name that needs quoting, in SQL and in the URL.
        let odd = cluster
            .create_database("odd \"name\"")
            .expect("create a database");
        let out = psql(&cluster, &["-d", &odd, "-c", "select current_database()"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "odd \"name\"");
        assert!(cluster.create_database("vpcep_unit").is_err());

        drop(cluster);
        assert!(!dir.exists(), "{} is left", dir.display());
        if Path::new("/proc/self").exists() {
            // Gone, or a zombie its reaper has not collected yet; the postmaster removes
            // its pid file (which `pg_ctl stop -w` waits for) just before it exits.
            let running = || {
                fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                    !stat
                        .rsplit_once(") ")
                        .is_some_and(|(_, rest)| rest.starts_with('Z'))
                })
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while running() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            assert!(!running(), "server {pid} runs on");
        }
    }

    #[test]
    fn two_at_once_and_gone_after_a_panic() {
        if !installed() {
            eprintln!(
                "skipped: no PostgreSQL installed ({})",
                bin_dir().unwrap_err()
            );
            return;
        }
        let first = Cluster::start().expect("start a cluster");
        let dir = std::sync::Mutex::new(PathBuf::new());
        let result = std::panic::catch_unwind(|| {
            let second = Cluster::start().expect("start a second cluster");
            assert_ne!(second.port(), first.port());
            assert_ne!(second.socket_dir(), first.socket_dir());
            *dir.lock().unwrap() = second.socket_dir().to_path_buf();
            panic!("the test fails while the cluster runs");
        });
        assert!(result.is_err());
        let dir = dir.into_inner().unwrap();
        assert!(!dir.as_os_str().is_empty() && !dir.exists());
        let out = psql(&first, &["-d", &first.url(), "-c", "select 1"]);
        assert!(out.status.success(), "{out:?}");
    }
}
