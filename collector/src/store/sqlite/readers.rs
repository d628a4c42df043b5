//! Reads that return many rows (a month's aggregate lines: one per host, project,
//! component and source, tens of thousands for a large fleet), on rusqlite connections of
//! their own, on tokio's blocking pool.
//!
//! sqlx's SQLite driver copies every value of every row and hands the rows over from its
//! connection thread: for 18,000 lines that was most of an API request's time
//! (BENCHMARKS.md, session 5). rusqlite reads the values in place, on the thread that
//! uses them. The connections are read-only and kept for the next read, a few at most.
//!
//! The energy per day and project is summed here too, from the rows in the table's
//! order: SQLite's `GROUP BY day, project` sorted every daily row of the period by
//! project name first (187 ms for a month of 1,000 hosts, most of a report's time).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use super::super::StoreError;
use super::super::reads;

/// Idle read connections kept for the next read.
const MAX_IDLE: usize = 4;

/// A small pool of read-only rusqlite connections to the store's file.
#[derive(Clone)]
pub(super) struct Readers {
    path: PathBuf,
    idle: Arc<Mutex<Vec<Connection>>>,
}

impl Readers {
    pub(super) fn new(path: &Path) -> Readers {
        Readers {
            path: path.to_path_buf(),
            idle: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn connect(path: &Path) -> Result<Connection, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(30))?;
        Ok(conn)
    }

    /// Runs `read` on an idle connection (or a new one) on the blocking pool, then keeps
    /// the connection for the next read.
    pub(super) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let readers = self.clone();
        tokio::task::spawn_blocking(move || {
            let idle = readers.idle.lock().ok().and_then(|mut idle| idle.pop());
            let conn = match idle {
                Some(conn) => conn,
                None => Readers::connect(&readers.path)?,
            };
            let out = read(&conn);
            if let Ok(mut idle) = readers.idle.lock()
                && idle.len() < MAX_IDLE
            {
                idle.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Write(format!("a read stopped before its end: {e}")))?
    }
}

/// `(period start, project, energy)` of `table`'s rows in `[from_s, to_s)` (`period`: its
/// period column), summed per period and project, in that order. Each sum is exact
/// (`i128`) and checked as a stored quantity ([`reads::energy_by_day`], as PostgreSQL's).
pub(super) fn energy_by_period(
    conn: &Connection,
    table: &str,
    period: &str,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<(i64, String, u64)>, StoreError> {
    let mut st = conn.prepare(&format!(
        "SELECT {period}, project, energy_uj FROM {table} WHERE {period} >= ?1 AND {period} < ?2"
    ))?;
    let mut rows = st.query(rusqlite::params![from_s, to_s])?;
    // Projects are few and repeat on every row: each name is kept once, rows refer to it
    // by number.
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut sums: BTreeMap<(i64, usize), i128> = BTreeMap::new();
    while let Some(r) = rows.next()? {
        let start_s: i64 = r.get(0)?;
        let project = r.get_ref(1)?.as_str().map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, Box::new(e))
        })?;
        let energy: i64 = r.get(2)?;
        let next = ids.len();
        let id = match ids.get(project) {
            Some(&id) => id,
            None => {
                ids.insert(project.to_string(), next);
                next
            }
        };
        *sums.entry((start_s, id)).or_default() += i128::from(energy);
    }
    let mut names = vec![String::new(); ids.len()];
    for (name, id) in ids {
        names[id] = name;
    }
    let mut out = Vec::with_capacity(sums.len());
    for ((start_s, id), sum) in sums {
        let sum = i64::try_from(sum).map_err(|_| {
            StoreError::Corrupt(format!(
                "the energy of a day of {} is {sum} µJ, past the largest stored value",
                names[id]
            ))
        })?;
        out.push((start_s, names[id].clone(), sum));
    }
    out.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    reads::energy_by_day(out)
}
