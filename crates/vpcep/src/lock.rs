//! One server per data directory: `vpcep serve` holds an exclusive `flock` on
//! `{data_dir}/serve.lock` for as long as it runs (the kernel lets it go when the process
//! ends, however it ends), and writes there who it is, so that a second server is
//! refused with a message naming the first. `vpcep admin` commands do not take it: they
//! keep working next to a running server, as SQLite's own locking allows.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

/// The lock file's name in the data directory.
pub const LOCK_FILE: &str = "serve.lock";

/// The data directory's lock, held until dropped.
pub struct DataDirLock(Flock<File>);

impl DataDirLock {
    /// Takes the lock of `dir` (made if missing), or says who holds it.
    pub fn acquire(dir: &Path) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("cannot make the data directory {}: {e}", dir.display())
        })?;
        let path = dir.join(LOCK_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => {
                let mut lock = DataDirLock(locked);
                lock.record(&format!("pid {}", std::process::id()))?;
                Ok(lock)
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                let holder = if holder.is_empty() {
                    "another process".to_owned()
                } else {
                    format!("another vpcep serve ({holder})")
                };
                anyhow::bail!(
                    "{holder} is using the data directory {}; stop it first, or give this server another --data-dir",
                    dir.display()
                )
            }
            Err((_, e)) => anyhow::bail!("cannot lock {}: {e}", path.display()),
        }
    }

    /// Says who holds the lock (read by a server refused on the same directory).
    pub fn record(&mut self, who: &str) -> anyhow::Result<()> {
        let file: &mut File = &mut self.0;
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{who}")?;
        Ok(())
    }
}
