//! Pools of numbers (the addresses of a subnet, the SNAT host numbers towards a provider
//! VPC) whose held numbers are also kept as runs of consecutive numbers in `held_runs`
//! (migration 5), so that the lowest free number is one index lookup however many are
//! held. Whoever inserts or deletes a row that holds a number calls `hold` or `release`
//! in the same transaction.

use crate::sql::numbered;
use sqlx::AnyConnection;

use crate::{Result, StoreError};

/// A pool of numbers, by what it numbers.
#[derive(Clone, Copy)]
pub(super) enum Pool<'a> {
    /// The addresses of a subnet (its id), as integers; its reserved ones are held too.
    Subnet(&'a str),
    /// The SNAT host numbers held towards a provider VPC (its id).
    Snat(&'a str),
    /// The subnets' VXLAN network identifiers.
    Vni,
}

impl<'a> Pool<'a> {
    /// The pool's `kind` and `pool` columns.
    fn key(self) -> (&'static str, &'a str) {
        match self {
            Pool::Subnet(id) => ("address", id),
            Pool::Snat(id) => ("snat", id),
            Pool::Vni => ("vni", ""),
        }
    }
}

/// The run starting nearest at or below `n`: the only one that may hold `n` or end
/// right below it.
async fn run_from_below(
    conn: &mut AnyConnection,
    pool: Pool<'_>,
    n: i64,
) -> Result<Option<(i64, i64)>> {
    let (kind, id) = pool.key();
    Ok(sqlx::query_as(&numbered("SELECT lo, hi FROM held_runs WHERE kind = ? AND pool = ? AND lo <= ? ORDER BY lo DESC LIMIT 1",))
    .bind(kind)
    .bind(id)
    .bind(n)
    .fetch_optional(conn)
    .await?)
}

/// Writes one change to the pool's runs: `sql` binds kind and pool, then `numbers`.
async fn write(conn: &mut AnyConnection, pool: Pool<'_>, sql: &str, numbers: &[i64]) -> Result<()> {
    let (kind, id) = pool.key();
    let q_sql = numbered(sql);
    let mut q = sqlx::query(&q_sql).bind(kind).bind(id);
    for n in numbers {
        q = q.bind(n);
    }
    q.execute(conn).await?;
    Ok(())
}

/// A new run: lo, hi.
const INSERT: &str = "INSERT INTO held_runs (kind, pool, lo, hi) VALUES (?, ?, ?, ?)";
/// A run (by its lo) ends elsewhere: lo, the new hi.
const SET_HI: &str = "UPDATE held_runs SET hi = ?4 WHERE kind = ?1 AND pool = ?2 AND lo = ?3";
/// A run (by its lo) goes.
const DELETE: &str = "DELETE FROM held_runs WHERE kind = ? AND pool = ? AND lo = ?";

/// Takes the lowest number of the pool that it does not hold, or `None` when it holds
/// them all. The pool's numbers are `first..=last`: nothing outside is ever held.
pub(super) async fn take_lowest(
    conn: &mut AnyConnection,
    pool: Pool<'_>,
    first: i64,
    last: i64,
) -> Result<Option<i64>> {
    let (kind, id) = pool.key();
    // The first run tells the number, and the second (or the first) the run it touches.
    let runs: Vec<(i64, i64)> = sqlx::query_as(&numbered(
        "SELECT lo, hi FROM held_runs WHERE kind = ? AND pool = ? ORDER BY lo LIMIT 2",
    ))
    .bind(kind)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    let (n, below) = match runs.first() {
        Some(&(lo, hi)) if lo <= first => (hi + 1, Some(lo)),
        _ => (first, None),
    };
    if n > last {
        return Ok(None);
    }
    let above = runs.iter().find(|&&(lo, _)| lo == n + 1).map(|&(_, hi)| hi);
    join(conn, pool, n, below, above).await?;
    Ok(Some(n))
}

/// Records that the pool holds `n`, which it must not hold yet.
pub(super) async fn hold(conn: &mut AnyConnection, pool: Pool<'_>, n: i64) -> Result<()> {
    let (kind, id) = pool.key();
    let below = run_from_below(conn, pool, n).await?;
    if below.is_some_and(|(_, hi)| hi >= n) {
        return Err(StoreError::Corrupt(format!(
            "held_runs: {kind} pool {id} holds {n} already"
        )));
    }
    let above: Option<i64> = sqlx::query_scalar(&numbered(
        "SELECT hi FROM held_runs WHERE kind = ? AND pool = ? AND lo = ?",
    ))
    .bind(kind)
    .bind(id)
    .bind(n + 1)
    .fetch_optional(&mut *conn)
    .await?;
    let below = below.filter(|&(_, hi)| hi == n - 1).map(|(lo, _)| lo);
    join(conn, pool, n, below, above).await
}

/// Makes the free number `n` held: it joins the run starting at `below` (which ends at
/// n - 1) and the run ending at `above` (which starts at n + 1), where there are such.
async fn join(
    conn: &mut AnyConnection,
    pool: Pool<'_>,
    n: i64,
    below: Option<i64>,
    above: Option<i64>,
) -> Result<()> {
    let hi = match above {
        Some(hi) => {
            write(conn, pool, DELETE, &[n + 1]).await?;
            hi
        }
        None => n,
    };
    match below {
        Some(lo) => write(conn, pool, SET_HI, &[lo, hi]).await,
        None => write(conn, pool, INSERT, &[n, hi]).await,
    }
}

/// Records that the pool no longer holds `n`, splitting the run that held it. Releasing
/// a number that is not held changes nothing.
pub(super) async fn release(conn: &mut AnyConnection, pool: Pool<'_>, n: i64) -> Result<()> {
    let Some((lo, hi)) = run_from_below(conn, pool, n)
        .await?
        .filter(|&(_, hi)| hi >= n)
    else {
        return Ok(());
    };
    if lo < n {
        write(conn, pool, SET_HI, &[lo, n - 1]).await?;
    } else {
        write(conn, pool, DELETE, &[lo]).await?;
    }
    if n < hi {
        write(conn, pool, INSERT, &[n + 1, hi]).await?;
    }
    Ok(())
}
