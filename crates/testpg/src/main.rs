//! `vpcep-testpg`: starts a throwaway PostgreSQL cluster, prints its URL (the `postgres`
//! database, over the Unix socket) as one line on stdout, and runs it until stdin closes;
//! then stops it and removes its directory. For tests in other languages: hold the pipe
//! to its stdin open as long as the server is needed, close it to end. A line
//! `create NAME` on stdin makes a new empty database and answers its URL (or
//! `error: WHY`) as one line.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use vpcep_testpg::Cluster;

fn main() -> ExitCode {
    let cluster = match Cluster::start() {
        Ok(cluster) => cluster,
        Err(e) => {
            eprintln!("vpcep-testpg: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{}", cluster.url())
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    // Until EOF (or a read error: the writer is gone either way).
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = match line.trim().strip_prefix("create ") {
            Some(name) => cluster
                .create_database(name.trim())
                .unwrap_or_else(|e| format!("error: {e}")),
            None => format!("error: unknown request {line:?} (say: create NAME)"),
        };
        if writeln!(stdout, "{answer}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            break;
        }
    }
    drop(stdout);
    drop(cluster);
    ExitCode::SUCCESS
}
