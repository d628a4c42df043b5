//! `empreinte db migrate`: a SQLite store copied into an empty PostgreSQL store, table by
//! table with the same ids, in one transaction (all or nothing) under the store-wide
//! lock; then every table checked: its row count, and the sum of each of its number
//! columns (integers exactly, reals to 1e-9), read back from PostgreSQL.
//!
//! The tables copied are those of the SQLite file, not a fixed list: a table added by a
//! later migration (costs, inference counts, configuration history) is copied as soon
//! as PostgreSQL's schema has it too; a SQLite table with rows that PostgreSQL's schema
//! lacks refuses the whole copy before anything is written, naming it.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::types::Value;
use sqlx::{Postgres, QueryBuilder};

use super::super::StoreError;
use super::{PgStore, STORE_LOCK};

/// The footprint's tables, parents before children (foreign keys): copied first, in this
/// order; the file's other tables follow ([`tables_to_copy`]).
pub const TABLES: [&str; 14] = [
    "coefficients",
    "intensity_imports",
    "intensity_hourly",
    "footprint_hourly",
    "footprint_daily",
    "footprint_monthly",
    "coefficient_use",
    "zone_hours",
    "host_hours",
    "agents",
    "runs",
    "run_holes",
    "tokens",
    "store_meta",
];

/// A table as copied and as checked.
#[derive(Clone, Debug, PartialEq)]
pub struct TableCheck {
    pub table: String,
    pub sqlite_rows: u64,
    pub postgres_rows: u64,
    /// `(column, SQLite's sum, PostgreSQL's sum)` of every number column.
    pub totals: Vec<(String, String, String)>,
    /// Columns whose sums differ.
    pub differences: Vec<String>,
}

impl TableCheck {
    pub fn equal(&self) -> bool {
        self.sqlite_rows == self.postgres_rows && self.differences.is_empty()
    }
}

#[derive(Default)]
struct Sum {
    int: i128,
    real: f64,
}

fn sqlite_error(e: rusqlite::Error) -> StoreError {
    StoreError::Sqlite(e)
}

/// Is the PostgreSQL store empty (no footprint, token, agent, run or coefficient)?
pub async fn is_empty(pg: &PgStore) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM footprint_hourly) + (SELECT COUNT(*) FROM footprint_daily)
            + (SELECT COUNT(*) FROM tokens) + (SELECT COUNT(*) FROM agents)
            + (SELECT COUNT(*) FROM runs) + (SELECT COUNT(*) FROM coefficients)
            + (SELECT COUNT(*) FROM intensity_imports)",
    )
    .fetch_one(&pg.pool)
    .await?;
    Ok(n == 0)
}

/// The SQLite file's tables (but SQLite's and the migrator's own), in copy order:
/// [`TABLES`] first, then the others, each after the tables its foreign keys name.
fn sqlite_tables(src: &rusqlite::Connection) -> Result<Vec<String>, StoreError> {
    let names: Vec<String> = {
        let mut st = src
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'table'
                 AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name",
            )
            .map_err(sqlite_error)?;
        st.query_map([], |r| r.get::<_, String>(0))
            .map_err(sqlite_error)?
            .collect::<Result<_, _>>()
            .map_err(sqlite_error)?
    };
    let mut order: Vec<String> = TABLES
        .iter()
        .filter(|t| names.iter().any(|n| n == *t))
        .map(|t| t.to_string())
        .collect();
    let mut rest: Vec<String> = names.into_iter().filter(|n| !order.contains(n)).collect();
    while !rest.is_empty() {
        let before = rest.len();
        let mut i = 0;
        while i < rest.len() {
            let parents: Vec<String> = {
                let mut st = src
                    .prepare(&format!(
                        "SELECT \"table\" FROM pragma_foreign_key_list('{}')",
                        rest[i]
                    ))
                    .map_err(sqlite_error)?;
                st.query_map([], |r| r.get::<_, String>(0))
                    .map_err(sqlite_error)?
                    .collect::<Result<_, _>>()
                    .map_err(sqlite_error)?
            };
            if parents.iter().all(|p| order.contains(p) || *p == rest[i]) {
                order.push(rest.remove(i));
            } else {
                i += 1;
            }
        }
        if rest.len() == before {
            // A cycle of foreign keys: copied in name order (one transaction, checked).
            order.append(&mut rest);
        }
    }
    Ok(order)
}

/// The tables to copy, in order; refuses when a SQLite table with rows has no
/// PostgreSQL counterpart (what this PostgreSQL schema does not keep yet), and leaves
/// out the empty ones.
pub async fn tables_to_copy(
    src: &rusqlite::Connection,
    pg: &PgStore,
) -> Result<Vec<String>, StoreError> {
    let in_pg: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::TEXT FROM information_schema.tables
         WHERE table_schema = current_schema()",
    )
    .fetch_all(&pg.pool)
    .await?;
    let mut out = Vec::new();
    let mut lacking = Vec::new();
    for t in sqlite_tables(src)? {
        if in_pg.contains(&t) {
            out.push(t);
            continue;
        }
        let rows: i64 = src
            .query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get(0))
            .map_err(sqlite_error)?;
        if rows > 0 {
            lacking.push(format!("{t} ({rows} rows)"));
        }
    }
    if !lacking.is_empty() {
        return Err(StoreError::Invalid(format!(
            "the SQLite store has data that this PostgreSQL schema does not keep: {}; nothing was copied (see docs/postgresql.md, \"What each engine keeps\")",
            lacking.join(", ")
        )));
    }
    Ok(out)
}

/// Copies every table of the SQLite database `db` into `pg`; gives each table's check.
pub async fn copy_from_sqlite(db: &Path, pg: &PgStore) -> Result<Vec<TableCheck>, StoreError> {
    let src = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(sqlite_error)?;
    let tables = tables_to_copy(&src, pg).await?;
    let mut tx = pg.pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(STORE_LOCK)
        .execute(&mut *tx)
        .await?;
    // Opening the store wrote its time zone: the copy brings the source's.
    sqlx::query("DELETE FROM store_meta")
        .execute(&mut *tx)
        .await?;
    let mut checks = Vec::new();
    for table in &tables {
        let table = table.as_str();
        let types: HashMap<String, String> = sqlx::query_as(
            "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .collect();
        let columns: Vec<String> = {
            let mut st = src
                .prepare(&format!(
                    "SELECT name FROM pragma_table_info('{table}') ORDER BY cid"
                ))
                .map_err(sqlite_error)?;
            st.query_map([], |r| r.get::<_, String>(0))
                .map_err(sqlite_error)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sqlite_error)?
        };
        if let Some(c) = columns.iter().find(|c| !types.contains_key(*c)) {
            return Err(StoreError::Invalid(format!(
                "the SQLite table {table} has a column {c} that the PostgreSQL schema lacks: update empreinte on both sides"
            )));
        }
        let mut sums: Vec<Sum> = columns.iter().map(|_| Sum::default()).collect();
        let mut rows_read = 0u64;
        let list = columns.join(", ");
        let mut st = src
            .prepare(&format!("SELECT {list} FROM {table}"))
            .map_err(sqlite_error)?;
        let mut rows = st.query([]).map_err(sqlite_error)?;
        // PostgreSQL takes at most 65,535 parameters a statement.
        let per_statement = (60_000 / columns.len().max(1)).max(1);
        let mut chunk: Vec<Vec<Value>> = Vec::with_capacity(per_statement);
        loop {
            let row = rows.next().map_err(sqlite_error)?;
            if let Some(r) = row {
                let mut values = Vec::with_capacity(columns.len());
                for (i, sum) in sums.iter_mut().enumerate() {
                    let v: Value = r.get(i).map_err(sqlite_error)?;
                    match &v {
                        Value::Integer(n) => sum.int += i128::from(*n),
                        Value::Real(f) => sum.real += f,
                        _ => {}
                    }
                    values.push(v);
                }
                chunk.push(values);
                rows_read += 1;
            }
            if chunk.len() >= per_statement {
                insert(&mut tx, table, &columns, &types, &chunk).await?;
                chunk.clear();
            }
            if row.is_none() {
                if !chunk.is_empty() {
                    insert(&mut tx, table, &columns, &types, &chunk).await?;
                }
                break;
            }
        }
        checks.push((table, columns, types, sums, rows_read));
    }
    // Identity columns continue after the copied ids.
    for (table, columns, ..) in &checks {
        if !columns.iter().any(|c| c == "id") {
            continue;
        }
        let sequence: Option<String> =
            sqlx::query_scalar("SELECT pg_get_serial_sequence($1, 'id')")
                .bind(*table)
                .fetch_one(&mut *tx)
                .await?;
        if sequence.is_none() {
            continue;
        }
        sqlx::query(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'),
                GREATEST((SELECT MAX(id) FROM {table}), 1), (SELECT MAX(id) FROM {table}) IS NOT NULL)"
        ))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let mut out = Vec::new();
    for (table, columns, types, sums, rows_read) in checks {
        out.push(check(pg, table, &columns, &types, &sums, rows_read).await?);
    }
    Ok(out)
}

async fn insert(
    tx: &mut sqlx::Transaction<'_, Postgres>,
    table: &str,
    columns: &[String],
    types: &HashMap<String, String>,
    rows: &[Vec<Value>],
) -> Result<(), StoreError> {
    let mut q: QueryBuilder<Postgres> =
        // The same ids, also into `GENERATED ALWAYS` identity columns.
        QueryBuilder::new(format!(
            "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE ",
            columns.join(", ")
        ));
    let mut bad: Option<String> = None;
    q.push_values(rows, |mut b, row| {
        for (c, v) in columns.iter().zip(row) {
            let ty = types.get(c).map(String::as_str).unwrap_or("");
            match (ty, v) {
                ("bigint", Value::Integer(n)) => b.push_bind(*n),
                ("bigint", Value::Null) => b.push_bind(None::<i64>),
                ("double precision", Value::Real(f)) => b.push_bind(*f),
                ("double precision", Value::Integer(n)) => b.push_bind(*n as f64),
                ("double precision", Value::Null) => b.push_bind(None::<f64>),
                ("boolean", Value::Integer(n)) => b.push_bind(*n != 0),
                ("boolean", Value::Null) => b.push_bind(None::<bool>),
                ("text", Value::Text(s)) => b.push_bind(s.clone()),
                ("text", Value::Null) => b.push_bind(None::<String>),
                ("bytea", Value::Blob(x)) => b.push_bind(x.clone()),
                ("bytea", Value::Null) => b.push_bind(None::<Vec<u8>>),
                (ty, v) => {
                    bad.get_or_insert(format!(
                        "{table}.{c}: a SQLite value {v:?} does not fit PostgreSQL's {ty}"
                    ));
                    b.push_bind(None::<i64>)
                }
            };
        }
    });
    if let Some(b) = bad {
        return Err(StoreError::Corrupt(b));
    }
    q.build().execute(&mut **tx).await?;
    Ok(())
}

async fn check(
    pg: &PgStore,
    table: &str,
    columns: &[String],
    types: &HashMap<String, String>,
    sums: &[Sum],
    sqlite_rows: u64,
) -> Result<TableCheck, StoreError> {
    let postgres_rows: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
        .fetch_one(&pg.pool)
        .await?;
    let mut totals = Vec::new();
    let mut differences = Vec::new();
    for (c, sum) in columns.iter().zip(sums) {
        match types.get(c).map(String::as_str) {
            Some("bigint") => {
                let got: String =
                    sqlx::query_scalar(&format!("SELECT COALESCE(SUM({c}), 0)::TEXT FROM {table}"))
                        .fetch_one(&pg.pool)
                        .await?;
                if got != sum.int.to_string() {
                    differences.push(c.clone());
                }
                totals.push((c.clone(), sum.int.to_string(), got));
            }
            Some("double precision") => {
                let got: f64 =
                    sqlx::query_scalar(&format!("SELECT COALESCE(SUM({c}), 0) FROM {table}"))
                        .fetch_one(&pg.pool)
                        .await?;
                if (got - sum.real).abs() > 1e-9 * sum.real.abs().max(1.0) {
                    differences.push(c.clone());
                }
                totals.push((c.clone(), sum.real.to_string(), got.to_string()));
            }
            _ => {}
        }
    }
    Ok(TableCheck {
        table: table.to_string(),
        sqlite_rows,
        postgres_rows: u64::try_from(postgres_rows).unwrap_or(0),
        totals,
        differences,
    })
}
