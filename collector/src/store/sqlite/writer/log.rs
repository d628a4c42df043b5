//! The ingest log: every accepted push, appended to its own SQLite file
//! (`empreinte-ingest.db`, WAL, `synchronous = FULL`) in one transaction per group of
//! pushes, before the pushes are acknowledged. The footprint tables are brought up to
//! date from it in the background (the fold); the fold records in the main database, in
//! the same transaction as the rows it wrote, the last log entry it holds
//! (`store_meta.ingest_log_folded_through`), so entries up to there are never applied
//! again, and they are deleted from the log afterwards.
//!
//! Architecture invariant: an acknowledged push is in the log or folded (or both); it is
//! folded exactly once (the fold and its high-water mark commit together).
//!
//! The log's WAL is checkpointed by a thread of its own (passive checkpoints, after
//! appends, at most every [`CHECKPOINT_EVERY`]), not inside an append: SQLite's automatic
//! checkpoint ran in the commit that acknowledges pushes, copying and syncing megabytes
//! while they waited.

use std::path::{Path, PathBuf};

use rusqlite::params;

use super::PreparedPush;

/// The log file in the data directory.
pub const LOG_FILE: &str = "empreinte-ingest.db";

/// The format of an entry (its first byte); an entry of another format is refused.
const FORMAT: u8 = 1;

/// The least time between two checkpoints of the log's WAL.
pub const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(200);

pub struct IngestLog {
    conn: rusqlite::Connection,
    /// Tells the checkpoint thread that entries were appended (a full channel: it knows).
    appended: std::sync::mpsc::SyncSender<()>,
    path: PathBuf,
    /// The id the next entry gets.
    next_id: i64,
    /// Entries up to this id are folded and may be deleted.
    deletable: i64,
    deleted: i64,
}

impl IngestLog {
    /// Opens (creating it) the log in `data_dir`; entries are numbered after the log's
    /// last entry (and after the last folded one, once told: [`IngestLog::folded_through`]).
    pub fn open(data_dir: &Path) -> rusqlite::Result<IngestLog> {
        let path = data_dir.join(LOG_FILE);
        let conn = rusqlite::Connection::open(&path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(30))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS ingest_log (id INTEGER PRIMARY KEY, push BLOB NOT NULL)",
        )?;
        let last: Option<i64> =
            conn.query_row("SELECT MAX(id) FROM ingest_log", [], |r| r.get(0))?;
        // Appends never checkpoint; the checkpoint thread does, on its own connection.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        let checkpoints = rusqlite::Connection::open(&path)?;
        checkpoints.busy_timeout(std::time::Duration::from_secs(30))?;
        let (appended, wake) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("ingest-checkpt".into())
            .spawn(move || checkpoint_loop(&checkpoints, &wake))
            .map_err(|e| {
                rusqlite::Error::ToSqlConversionFailure(
                    format!("cannot start the ingest log's checkpoint thread: {e}").into(),
                )
            })?;
        Ok(IngestLog {
            appended,
            conn,
            path,
            next_id: last.unwrap_or(0) + 1,
            deletable: 0,
            deleted: 0,
        })
    }

    /// The log's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entries after `after`, in order.
    pub fn entries_after(&self, after: i64) -> rusqlite::Result<Vec<(i64, Vec<u8>)>> {
        let mut st = self
            .conn
            .prepare("SELECT id, push FROM ingest_log WHERE id > ? ORDER BY id")?;
        let rows = st.query_map(params![after], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Entries up to `id` are folded: deleted with the next append.
    pub fn folded_through(&mut self, id: i64) {
        self.deletable = self.deletable.max(id);
        self.next_id = self.next_id.max(id + 1);
    }

    /// Appends `entries` in one transaction (one fsync); gives the id of the last one.
    /// Folded entries are deleted in the same transaction.
    pub fn append(&mut self, entries: &[&[u8]]) -> rusqlite::Result<i64> {
        let tx = self.conn.transaction()?;
        let mut id = self.next_id;
        {
            let mut st = tx.prepare_cached("INSERT INTO ingest_log (id, push) VALUES (?, ?)")?;
            for e in entries {
                st.execute(params![id, e])?;
                id += 1;
            }
            if self.deletable > self.deleted {
                tx.prepare_cached("DELETE FROM ingest_log WHERE id <= ?")?
                    .execute(params![self.deletable])?;
            }
        }
        tx.commit()?;
        self.deleted = self.deletable;
        self.next_id = id;
        // Full: a checkpoint is already due. Gone: checkpoints stop, SQLite's own at close.
        let _ = self.appended.try_send(());
        Ok(id - 1)
    }

    /// Deletes the folded entries now (at close and after a replay).
    pub fn prune(&mut self) -> rusqlite::Result<()> {
        if self.deletable > self.deleted {
            self.conn.execute(
                "DELETE FROM ingest_log WHERE id <= ?",
                params![self.deletable],
            )?;
            self.deleted = self.deletable;
        }
        Ok(())
    }
}

/// Checkpoints the log's WAL after appends, passively (appends go on meanwhile), at most
/// every [`CHECKPOINT_EVERY`], below the priority of the threads that acknowledge pushes;
/// ends when the log is dropped.
fn checkpoint_loop(conn: &rusqlite::Connection, wake: &std::sync::mpsc::Receiver<()>) {
    super::run_in_background();
    while wake.recv().is_ok() {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "cannot checkpoint the ingest log; the next append tries again");
        }
        std::thread::sleep(CHECKPOINT_EVERY);
    }
}

/// A push as a log entry.
pub fn encode(p: &PreparedPush) -> Result<Vec<u8>, String> {
    let mut out = vec![FORMAT];
    let body = postcard::to_allocvec(p).map_err(|e| e.to_string())?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// A log entry back into its push.
pub fn decode(entry: &[u8]) -> Result<PreparedPush, String> {
    match entry.split_first() {
        Some((&FORMAT, body)) => postcard::from_bytes(body).map_err(|e| e.to_string()),
        Some((other, _)) => Err(format!(
            "an ingest log entry has format {other}, this collector reads format {FORMAT}"
        )),
        None => Err("an ingest log entry is empty".to_string()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use empreinte_shared::wire::{AgentInfo, Counter, SpoolStatus};
    use empreinte_shared::{Component, SourceKind};

    use super::super::{PreparedBatch, PreparedPush};

    /// Appends never checkpoint (their commit acknowledges pushes); the log's own thread
    /// does: the entries reach the log's database file without another write.
    #[test]
    fn the_wal_is_checkpointed_beside_the_appends() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = super::IngestLog::open(dir.path()).unwrap();
        let auto: i64 = log
            .conn
            .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
            .unwrap();
        assert_eq!(auto, 0, "appends must not checkpoint");
        let file = dir.path().join(super::LOG_FILE);
        let before = std::fs::metadata(&file).unwrap().len();
        let entry = vec![7u8; 4096];
        for _ in 0..64 {
            log.append(&[&entry, &entry, &entry, &entry]).unwrap();
        }
        // 1 MiB appended: in the file once checkpointed.
        let waited = crate::clock::Stopwatch::start();
        while std::fs::metadata(&file).unwrap().len() < before + (1 << 20) {
            assert!(
                waited.elapsed_seconds() < 20.0,
                "the log's WAL was not checkpointed: {} bytes",
                std::fs::metadata(&file).unwrap().len()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    use super::{decode, encode};
    use crate::footprint::{
        COEFFICIENT_UNITS, Coefficient, CoefficientKind, EmbodiedRate, HostPlan, HourlyDelta,
    };

    fn coefficient(kind: CoefficientKind, unit: &'static str, year: Option<i32>) -> Coefficient {
        Coefficient {
            kind,
            subject: "site-é".into(),
            value: 1.234_567_890_123,
            unit,
            source: "a source".into(),
            year,
            is_default: year.is_none(),
            detail: "made of parts".into(),
        }
    }

    /// Every field filled, every unit: what is logged is read back equal.
    #[test]
    fn a_push_is_read_back_from_the_log_as_it_was_written() {
        let push = PreparedPush {
            agent: AgentInfo {
                agent_id: "host-1".into(),
                hostname: "host-1.example".into(),
                agent_version: "1.2.3".into(),
            },
            spool: SpoolStatus {
                batches: 7,
                bytes: 9_000,
                oldest_start_unix_ms: Some(1_700_000_000_000),
                dropped_batches_total: 2,
            },
            plan: Arc::new(HostPlan {
                site: "datacentre".into(),
                zone: "FR".into(),
                pue: coefficient(CoefficientKind::Pue, COEFFICIENT_UNITS[0], Some(2024)),
                grid_default: coefficient(
                    CoefficientKind::GridIntensity,
                    COEFFICIENT_UNITS[1],
                    None,
                ),
                market: Some(coefficient(
                    CoefficientKind::MarketFactor,
                    COEFFICIENT_UNITS[1],
                    Some(2025),
                )),
                embodied: Some(EmbodiedRate {
                    server_ug_per_hour: 5.5,
                    gpu_ug_per_hour: 7.25,
                    coefficient: coefficient(
                        CoefficientKind::Embodied,
                        COEFFICIENT_UNITS[2],
                        Some(2023),
                    ),
                }),
                tariff: Some(Arc::new(crate::cost::Tariff {
                    site: "datacentre".into(),
                    tz: jiff::tz::TimeZone::get("Europe/Paris").unwrap(),
                    periods: vec![crate::cost::Period {
                        from: Some(jiff::civil::date(2026, 3, 16)),
                        price_ueur_per_kwh: 251_600,
                        off_peak: Some((199_600, [true; 24])),
                        off_peak_hours: "22-06".into(),
                        source: "a contract".into(),
                    }],
                })),
                hardware: Some(Arc::new(crate::cost::hardware::HardwareRate {
                    host: "gpu-1".into(),
                    price_ueur: 45_000_000_000,
                    period_hours: 43_800,
                    purchased_on: "2024-03-01".into(),
                    from_s: Some(1_709_247_600),
                    source: "an invoice".into(),
                })),
            }),
            now_ms: 1_700_000_123_456,
            batches: vec![PreparedBatch {
                run_id: "0123456789abcdef".into(),
                seq: u64::MAX >> 1,
                start_ms: 1_700_000_000_000,
                end_ms: 1_700_000_015_000,
                deltas: vec![HourlyDelta {
                    hour_s: 1_699_999_200,
                    project: "projet-é".into(),
                    component: Component::Gpu,
                    source: SourceKind::Nvml,
                    energy_uj: 123_456_789,
                    embodied_ug: 42,
                }],
                counters: vec![Counter {
                    project: "projet-é".into(),
                    component: Component::Gpu,
                    source: SourceKind::Nvml,
                    total_uj: 987_654_321,
                }],
                inference: crate::inference::InferenceParts {
                    counts: vec![crate::inference::CountsDelta {
                        hour_s: 1_699_999_200,
                        project: "projet-é".into(),
                        model: "llama".into(),
                        server_kinds: 3,
                        counts: crate::inference::Counts {
                            requests: Some(7),
                            input_tokens: None,
                            cached_input_tokens: Some(5),
                            output_tokens: Some(u64::MAX),
                        },
                        span_ms: 15_000,
                        gap_ms: 1_000,
                        resets: 1,
                        allocated: true,
                    }],
                    energy: vec![crate::inference::ModelEnergyDelta {
                        hour_s: 1_699_999_200,
                        project: "projet-é".into(),
                        model: "llama".into(),
                        component: Component::Gpu,
                        energy_uj: 99,
                    }],
                },
            }],
        };
        let entry = encode(&push).unwrap();
        assert_eq!(decode(&entry).unwrap(), push);
        let mut other = entry.clone();
        other[0] = 9;
        assert!(decode(&other).unwrap_err().contains("format 9"));
        assert!(
            decode(&entry[..entry.len() / 2]).is_err(),
            "a cut entry is refused"
        );
    }
}
