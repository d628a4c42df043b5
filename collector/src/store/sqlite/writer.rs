//! The store's one writer: a thread that owns its own SQLite connection (rusqlite, no
//! hop to another thread per statement) and takes pushes from a bounded queue. It
//! stores every push waiting in the queue in one transaction, one commit and one
//! `fsync` (group commit), then answers each push: a push is acknowledged only after the
//! commit that holds it. Rows are summed in memory per key before they are written, so
//! a commit writes each hourly, daily and monthly row it touches once.
//!
//! A push that would break the store is refused whole, and nothing of it is written:
//! a value past `i64::MAX` (SQLite's integers), or a host's energy in an hour past
//! `max_host_power_watts` × 1 h across every batch stored for that hour.

use std::collections::{BTreeMap, HashMap, hash_map::Entry};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use empreinte_shared::wire::{AgentInfo, Counter, SpoolStatus, WireProblem};
use empreinte_shared::{Component, SourceKind};
use jiff::tz::TimeZone;
use rusqlite::{OptionalExtension, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::super::runs::{MAX_HOLES, RunSeqs};
use super::super::{
    AddedPart, ImportOutcome, IngestOutcome, IngestSet, IntensityImport, StoreError,
};
use crate::footprint::{Coefficient, HostPlan, HourlyDelta, operational_ug};

/// The most pushes stored in one transaction.
const MAX_GROUP: usize = 512;

/// A push, owned, ready for the writer (parsed and split by hour off the writer).
pub struct PreparedPush {
    pub agent: AgentInfo,
    pub spool: SpoolStatus,
    pub plan: Arc<HostPlan>,
    pub now_ms: u64,
    pub batches: Vec<PreparedBatch>,
}

pub struct PreparedBatch {
    pub run_id: String,
    pub seq: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    pub deltas: Vec<HourlyDelta>,
    pub counters: Vec<Counter>,
    /// Inference counts and model-tagged energy by hour (`super::inference`).
    pub inference: crate::inference::InferenceParts,
}

impl PreparedPush {
    pub fn from_set(set: &IngestSet<'_>) -> PreparedPush {
        PreparedPush {
            agent: set.agent.clone(),
            spool: set.spool.clone(),
            plan: Arc::new(set.plan.clone()),
            now_ms: set.now_ms,
            batches: set
                .batches
                .iter()
                .map(|(b, d)| PreparedBatch {
                    run_id: b.run_id.clone(),
                    seq: b.seq,
                    start_ms: b.start_unix_ms,
                    end_ms: b.end_unix_ms,
                    deltas: d.clone(),
                    counters: b.counters.clone(),
                    inference: crate::inference::batch_inference(b),
                })
                .collect(),
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub enum Job {
    Ingest(Box<PreparedPush>, Reply<IngestOutcome>),
    Import(Box<IntensityImport>, Reply<ImportOutcome>),
    /// Compact the hourly rows of the local days that end before this Unix second.
    Compact(i64, Reply<u64>),
    /// Stop: the connection is closed (the WAL checkpointed) before the answer.
    Close(oneshot::Sender<()>),
}

/// Days and months of the rollups: the Unix second where the local day (month) of an
/// hour starts, in the store's time zone.
pub struct Calendar {
    tz: TimeZone,
    cache: HashMap<i64, (i64, i64)>,
}

impl Calendar {
    pub fn new(tz: TimeZone) -> Calendar {
        Calendar {
            tz,
            cache: HashMap::new(),
        }
    }

    /// `(day_s, month_s)` of the hour starting at `hour_s`.
    pub fn of(&mut self, hour_s: i64) -> (i64, i64) {
        if let Some(v) = self.cache.get(&hour_s) {
            return *v;
        }
        let v = day_month(&self.tz, hour_s);
        if self.cache.len() > 100_000 {
            self.cache.clear();
        }
        self.cache.insert(hour_s, v);
        v
    }
}

/// `(day_s, month_s)` of the instant `s` in `tz` (a boundary hour that does not start on
/// a local midnight, in zones with half-hour offsets, counts in the day it starts in).
pub fn day_month(tz: &TimeZone, s: i64) -> (i64, i64) {
    let Ok(t) = jiff::Timestamp::from_second(s) else {
        return (s, s);
    };
    let z = t.to_zoned(tz.clone());
    let start = |d: jiff::civil::Date| {
        d.to_zoned(tz.clone())
            .map(|z| z.timestamp().as_second())
            .unwrap_or(s)
    };
    (start(z.date()), start(z.date().first_of_month()))
}

/// The rounding of a row's facility energy: energy × PUE, rounded once.
pub fn facility_uj(energy_uj: u64, pue: f64) -> u64 {
    let v = energy_uj as f64 * pue;
    if v.is_finite() && v > 0.0 {
        v.round() as u64
    } else {
        0
    }
}

fn to_i64(v: u64) -> rusqlite::Result<i64> {
    i64::try_from(v).map_err(|_| {
        rusqlite::Error::ToSqlConversionFailure(format!("{v} is past i64::MAX").into())
    })
}

fn to_u64(v: i64) -> rusqlite::Result<u64> {
    u64::try_from(v).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Integer,
            format!("a stored quantity is negative ({v})").into(),
        )
    })
}

/// Sums of a rollup key (signed: an intensity import can lower emissions).
#[derive(Clone, Copy, Debug, Default)]
struct RollupDelta {
    energy: i64,
    facility: i64,
    location: i64,
    market: i64,
    embodied: i64,
}

impl RollupDelta {
    fn add(&mut self, o: &RollupDelta) {
        self.energy += o.energy;
        self.facility += o.facility;
        self.location += o.location;
        self.market += o.market;
        self.embodied += o.embodied;
    }
}

/// `(period start, host, project, component, source, site, zone)`.
type RollupKey = (i64, String, String, String, String, String, String);

#[derive(Default)]
struct Rollups {
    daily: BTreeMap<RollupKey, RollupDelta>,
    monthly: BTreeMap<RollupKey, RollupDelta>,
    /// `(day_s, coef_id)` → rows added (or removed).
    coef_use: BTreeMap<(i64, i64), i64>,
    zone_hours: std::collections::BTreeSet<(String, i64)>,
}

impl Rollups {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        cal: &mut Calendar,
        hour_s: i64,
        host: &str,
        project: &str,
        component: &str,
        source: &str,
        site: &str,
        zone: &str,
        d: RollupDelta,
    ) {
        let (day, month) = cal.of(hour_s);
        let key = |p: i64| {
            (
                p,
                host.to_string(),
                project.to_string(),
                component.to_string(),
                source.to_string(),
                site.to_string(),
                zone.to_string(),
            )
        };
        self.daily.entry(key(day)).or_default().add(&d);
        self.monthly.entry(key(month)).or_default().add(&d);
    }

    fn write(&self, tx: &Transaction<'_>) -> rusqlite::Result<()> {
        for (table, col, map) in [
            ("footprint_daily", "day_s", &self.daily),
            ("footprint_monthly", "month_s", &self.monthly),
        ] {
            let mut st = tx.prepare_cached(&format!(
                "INSERT INTO {table} ({col}, host, project, component, source, site, zone,
                    energy_uj, facility_uj, location_ug, market_ug, embodied_ug)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT DO UPDATE SET energy_uj = energy_uj + excluded.energy_uj,
                    facility_uj = facility_uj + excluded.facility_uj,
                    location_ug = location_ug + excluded.location_ug,
                    market_ug = market_ug + excluded.market_ug,
                    embodied_ug = embodied_ug + excluded.embodied_ug"
            ))?;
            for ((p, host, project, component, source, site, zone), d) in map {
                st.execute(params![
                    p, host, project, component, source, site, zone, d.energy, d.facility,
                    d.location, d.market, d.embodied
                ])?;
            }
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO coefficient_use (day_s, coef_id, rows) VALUES (?, ?, ?)
             ON CONFLICT DO UPDATE SET rows = rows + excluded.rows",
        )?;
        for ((day, coef), n) in &self.coef_use {
            st.execute(params![day, coef, n])?;
        }
        let mut st =
            tx.prepare_cached("INSERT OR IGNORE INTO zone_hours (zone, hour_s) VALUES (?, ?)")?;
        for (zone, hour) in &self.zone_hours {
            st.execute(params![zone, hour])?;
        }
        Ok(())
    }
}

/// What a commit adds to one hourly row.
struct HourAdd {
    energy: u64,
    embodied: u64,
    plan: Arc<HostPlan>,
    coefs: PlanCoefs,
    g_per_kwh: f64,
    import_id: Option<i64>,
}

#[derive(Clone, Copy)]
struct PlanCoefs {
    pue: i64,
    grid: i64,
    market: Option<i64>,
    embodied: Option<i64>,
}

type HourKey = (i64, String, Component, SourceKind);

/// Everything a group of pushes adds, summed per key.
#[derive(Default)]
struct Group {
    /// Per host: hourly rows.
    hours: BTreeMap<(String, HourKey), HourAdd>,
    /// `(host, hour_s)` → energy stored after this group.
    host_hours: HashMap<(String, i64), u64>,
    /// `(agent, run)` → the run after this group, with its stored energy and times.
    runs: HashMap<(String, String), RunState>,
    agents: BTreeMap<String, AgentRow>,
    inference: super::inference::InferenceGroup,
}

#[derive(Clone, Debug)]
pub struct RunState {
    pub seqs: RunSeqs,
    pub stored_uj: u64,
    pub first_ms: u64,
    pub last_ms: u64,
    counters: RunCounters,
    holes_changed: bool,
    is_new: bool,
}

impl RunState {
    fn counters_text(&self) -> String {
        let mut out = String::new();
        for ((p, c, s), (total, at)) in &self.counters {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(&format!("{p}\t{c}\t{s}\t{total}\t{at}"));
        }
        out
    }

    fn counted_uj(&self) -> u128 {
        self.counters.values().map(|(t, _)| u128::from(*t)).sum()
    }
}

/// `(project, component, source)` → latest `(total_uj, at_ms)`.
type RunCounters = BTreeMap<(String, String, String), (u64, u64)>;

fn parse_counters(text: &str) -> rusqlite::Result<RunCounters> {
    let bad = || {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            "runs.counters is not in its format".into(),
        )
    };
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let f: Vec<&str> = line.split('\t').collect();
        let [p, c, s, t, a] = f.as_slice() else {
            return Err(bad());
        };
        out.insert(
            (p.to_string(), c.to_string(), s.to_string()),
            (t.parse().map_err(|_| bad())?, a.parse().map_err(|_| bad())?),
        );
    }
    Ok(out)
}

struct AgentRow {
    hostname: String,
    version: String,
    now_ms: u64,
    last_end_ms: Option<u64>,
    waiting: u64,
    bytes: u64,
    oldest_ms: Option<u64>,
    dropped: u64,
}

/// The writer's state besides its connection: caches of committed rows, cleared when
/// a commit fails.
pub struct Writer {
    conn: rusqlite::Connection,
    cal: Calendar,
    max_hour_uj: u64,
    coef_ids: HashMap<String, i64>,
    runs: HashMap<(String, String), RunState>,
    /// Batches stored per second, smoothed: how fast a full queue drains.
    pace: Arc<AtomicU64>,
    /// Hourly rows and host hours as last committed.
    rows: RowCache,
    host_hours: HashMap<(String, i64), u64>,
    /// `PRAGMA data_version` when the caches were last known good.
    data_version: i64,
    /// Hourly rows kept for this many seconds; `None`: all.
    retention_s: Option<i64>,
    last_retention_s: i64,
}

impl Writer {
    pub fn new(
        conn: rusqlite::Connection,
        tz: TimeZone,
        max_host_power_watts: f64,
        pace: Arc<AtomicU64>,
    ) -> Writer {
        let max = max_host_power_watts * 3.6e9;
        Writer {
            conn,
            cal: Calendar::new(tz),
            max_hour_uj: if max.is_finite() && max > 0.0 && max < 9.0e18 {
                max as u64
            } else {
                i64::MAX as u64
            },
            coef_ids: HashMap::new(),
            runs: HashMap::new(),
            pace,
            rows: HashMap::new(),
            host_hours: HashMap::new(),
            retention_s: None,
            last_retention_s: 0,
            data_version: -1,
        }
    }

    /// Keeps hourly rows for `keep` only (see [`Writer::compact`]).
    pub fn with_retention(mut self, keep: Option<std::time::Duration>) -> Writer {
        self.retention_s = keep.map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self
    }

    /// Takes jobs until told to close or every sender is gone.
    pub fn run(mut self, mut rx: mpsc::Receiver<Job>) {
        let mut pending: Option<Job> = None;
        let closed = loop {
            let first = match pending.take() {
                Some(j) => j,
                None => match rx.blocking_recv() {
                    Some(j) => j,
                    None => break None,
                },
            };
            match first {
                Job::Close(done) => break Some(done),
                Job::Compact(before_s, reply) => {
                    let r = self.compact(before_s, usize::MAX);
                    self.forget();
                    let _ = reply.send(r);
                }
                Job::Import(import, reply) => {
                    let r = self.import(&import);
                    // The series changed rows' emissions.
                    self.forget();
                    let _ = reply.send(r);
                }
                Job::Ingest(push, reply) => {
                    let mut group = vec![(push, reply)];
                    while group.len() < MAX_GROUP {
                        match rx.try_recv() {
                            Ok(Job::Ingest(p, r)) => group.push((p, r)),
                            Ok(other) => {
                                pending = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.ingest_group(group);
                    self.retain();
                }
            }
        };
        drop(self);
        if let Some(done) = closed {
            let _ = done.send(());
        }
    }

    /// Deletes the hourly rows of whole local days before `before_s`, at most
    /// `max_days` days; the rollups keep their sums. Gives the rows deleted.
    pub fn compact(&mut self, before_s: i64, max_days: usize) -> Result<u64, StoreError> {
        let cutoff = self.cal.of(before_s).0;
        let mut deleted = 0u64;
        for _ in 0..max_days {
            let first: Option<i64> =
                self.conn
                    .query_row("SELECT MIN(hour_s) FROM footprint_hourly", [], |r| r.get(0))?;
            let Some(first) = first.filter(|&f| f < cutoff) else {
                break;
            };
            let (day, _) = self.cal.of(first);
            let next = self.cal.of(day + 30 * 3600).0.min(cutoff);
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)?;
            let n = tx.execute(
                "DELETE FROM footprint_hourly WHERE hour_s < ?",
                params![next],
            )?;
            tx.execute(
                "INSERT INTO store_meta (key, value) VALUES ('hourly_compacted_before', ?)
                 ON CONFLICT DO UPDATE SET value = MAX(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))",
                params![next.to_string()],
            )?;
            tx.commit()?;
            deleted += n as u64;
        }
        Ok(deleted)
    }

    /// A bounded step of retention after a commit, at most once an hour.
    fn retain(&mut self) {
        let Some(keep_s) = self.retention_s else {
            return;
        };
        let now_s = i64::try_from(crate::clock::now_unix_ms() / 1000).unwrap_or(i64::MAX);
        if now_s - self.last_retention_s < 3600 {
            return;
        }
        self.last_retention_s = now_s;
        match self.compact(now_s.saturating_sub(keep_s), 7) {
            Ok(0) => {}
            Ok(rows) => tracing::info!(
                rows,
                "hourly rows past the retention horizon compacted into the daily rollups"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot compact old hourly rows"),
        }
        self.forget();
    }

    fn forget(&mut self) {
        self.coef_ids.clear();
        self.runs.clear();
        self.rows.clear();
        self.host_hours.clear();
    }

    fn ingest_group(&mut self, group: Vec<(Box<PreparedPush>, Reply<IngestOutcome>)>) {
        let watch = crate::clock::Stopwatch::start();
        let result = self.store_group(&group);
        let batches: usize = group.iter().map(|(p, _)| p.batches.len()).sum();
        let secs = watch.elapsed_seconds();
        if secs > 0.0 {
            let now = batches as f64 / secs;
            let before = self.pace.load(Ordering::Relaxed) as f64;
            let smoothed = if before == 0.0 {
                now
            } else {
                0.8 * before + 0.2 * now
            };
            self.pace.store(smoothed as u64, Ordering::Relaxed);
        }
        match result {
            Ok(outcomes) => {
                for ((_, reply), outcome) in group.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                self.forget();
                tracing::error!(error = %e, pushes = group.len(), "a group of pushes could not be stored");
                let message = e.to_string();
                for (_, reply) in group {
                    let _ = reply.send(Err(StoreError::Write(message.clone())));
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn store_group(
        &mut self,
        group: &[(Box<PreparedPush>, Reply<IngestOutcome>)],
    ) -> rusqlite::Result<Vec<Result<IngestOutcome, StoreError>>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another connection (a command such as `empreinte carbon import`, or a token
        // written by the read pool) committed since our last look: the caches may be
        // stale. Under the write lock, nobody else can commit until we do.
        let version: i64 = tx.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if version != self.data_version {
            self.data_version = version;
            self.coef_ids.clear();
            self.runs.clear();
            self.rows.clear();
            self.host_hours.clear();
        }
        let mut g = Group::default();
        let mut outcomes = Vec::with_capacity(group.len());
        let mut ctx = Ctx {
            coef_ids: &mut self.coef_ids,
            runs: &self.runs,
            host_hours: &self.host_hours,
            max_hour_uj: self.max_hour_uj,
            intensity: HashMap::new(),
        };
        for (push, _) in group {
            outcomes.push(stage(&tx, &mut ctx, &mut g, push)?);
        }
        let mut rollups = Rollups::default();
        let mut written = Vec::new();
        apply(
            &tx,
            &mut self.cal,
            &mut rollups,
            &g,
            &self.rows,
            &mut written,
        )?;
        rollups.write(&tx)?;
        super::inference::write(&tx, &g.inference)?;
        tx.commit()?;
        if self.rows.len() + written.len() > MAX_CACHED_ROWS {
            self.rows.clear();
        }
        self.rows.extend(written);
        if self.host_hours.len() + g.host_hours.len() > MAX_CACHED_ROWS {
            self.host_hours.clear();
        }
        self.host_hours
            .extend(g.host_hours.iter().map(|(k, v)| (k.clone(), *v)));
        for (k, mut r) in g.runs {
            r.holes_changed = false;
            r.is_new = false;
            self.runs.insert(k, r);
        }
        if self.runs.len() > 200_000 {
            self.runs.clear();
        }
        Ok(outcomes)
    }

    fn import(&mut self, import: &IntensityImport) -> Result<ImportOutcome, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let first = import.hours.iter().map(|h| h.0).min().unwrap_or(0);
        let last = import.hours.iter().map(|h| h.0).max().unwrap_or(0);
        tx.execute(
            "INSERT INTO intensity_imports (zone, source, kind, file, imported_ms, points, first_s, last_s)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            params![
                import.zone,
                import.source,
                import.kind,
                import.file,
                to_i64(import.now_ms)?,
                to_i64(import.hours.len() as u64)?,
                first,
                last
            ],
        )?;
        let import_id = tx.last_insert_rowid();
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO intensity_hourly (zone, hour_s, g_per_kwh, covered, import_id)
                 VALUES (?, ?, ?, ?, ?)
                 ON CONFLICT (zone, hour_s) DO UPDATE SET g_per_kwh = excluded.g_per_kwh,
                    covered = excluded.covered, import_id = excluded.import_id",
            )?;
            for (hour_s, g, covered) in &import.hours {
                st.execute(params![import.zone, hour_s, g, covered, import_id])?;
            }
        }
        // The rows of the covered hours get the series' intensity; the rollups follow.
        let mut rollups = Rollups::default();
        let mut updated = 0u64;
        {
            let mut select = tx.prepare(
                "SELECT f.hour_s, f.host, f.project, f.component, f.source, f.site, f.zone,
                    f.energy_uj, f.pue, f.location_co2e_ug, f.market_co2e_ug, f.intensity_coef,
                    ih.g_per_kwh
                 FROM footprint_hourly AS f JOIN intensity_hourly AS ih
                   ON ih.zone = f.zone AND ih.hour_s = f.hour_s
                 WHERE ih.import_id = ?",
            )?;
            let mut update = tx.prepare_cached(
                "UPDATE footprint_hourly SET intensity_g_per_kwh = ?, intensity_import = ?,
                    intensity_coef = NULL, location_co2e_ug = ?
                 WHERE hour_s = ? AND host = ? AND project = ? AND component = ? AND source = ?",
            )?;
            let mut rows = select.query(params![import_id])?;
            while let Some(r) = rows.next()? {
                let hour_s: i64 = r.get(0)?;
                let (host, project, component, source, site, zone): (
                    String,
                    String,
                    String,
                    String,
                    String,
                    String,
                ) = (
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                    r.get(6)?,
                );
                let energy = to_u64(r.get(7)?)?;
                let pue: f64 = r.get(8)?;
                let old_loc: i64 = r.get(9)?;
                let market: Option<i64> = r.get(10)?;
                let old_coef: Option<i64> = r.get(11)?;
                let g: f64 = r.get(12)?;
                let loc = to_i64(operational_ug(energy, pue, g))?;
                update.execute(params![
                    g, import_id, loc, hour_s, host, project, component, source
                ])?;
                updated += 1;
                let delta = RollupDelta {
                    location: loc - old_loc,
                    // Market-based follows the location figure where no contract is set.
                    market: if market.is_none() { loc - old_loc } else { 0 },
                    ..RollupDelta::default()
                };
                rollups.add(
                    &mut self.cal,
                    hour_s,
                    &host,
                    &project,
                    &component,
                    &source,
                    &site,
                    &zone,
                    delta,
                );
                if let Some(c) = old_coef {
                    let (day, _) = self.cal.of(hour_s);
                    *rollups.coef_use.entry((day, c)).or_default() -= 1;
                }
            }
        }
        rollups.write(&tx)?;
        tx.commit()?;
        Ok(ImportOutcome {
            import_id,
            hours: import.hours.len() as u64,
            rows_updated: updated,
        })
    }
}

struct Ctx<'a> {
    coef_ids: &'a mut HashMap<String, i64>,
    runs: &'a HashMap<(String, String), RunState>,
    host_hours: &'a HashMap<(String, i64), u64>,
    max_hour_uj: u64,
    intensity: HashMap<(String, i64), (f64, Option<i64>)>,
}

fn coefficient_id(
    tx: &Transaction<'_>,
    cache: &mut HashMap<String, i64>,
    c: &Coefficient,
) -> rusqlite::Result<i64> {
    let key = format!(
        "{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{}\u{1f}{:?}\u{1f}{}\u{1f}{}",
        c.kind.as_str(),
        c.subject,
        c.value.to_bits(),
        c.unit,
        c.source,
        c.year,
        c.is_default,
        c.detail
    );
    if let Some(id) = cache.get(&key) {
        return Ok(*id);
    }
    let args = params![
        c.kind.as_str(),
        c.subject,
        c.value,
        c.unit,
        c.source,
        c.year,
        c.is_default,
        c.detail
    ];
    // Looked up first: the UNIQUE constraint does not match a NULL year, so an insert
    // that relied on it would store a coefficient again.
    let found: Option<i64> = tx
        .prepare_cached(
            "SELECT id FROM coefficients WHERE kind = ? AND subject = ? AND value = ? AND unit = ?
             AND source = ? AND year IS ? AND is_default = ? AND detail = ? ORDER BY id LIMIT 1",
        )?
        .query_row(args, |r| r.get(0))
        .optional()?;
    let id = match found {
        Some(id) => id,
        None => {
            tx.prepare_cached(
                "INSERT INTO coefficients (kind, subject, value, unit, source, year, is_default, detail)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )?
            .execute(args)?;
            tx.last_insert_rowid()
        }
    };
    cache.insert(key, id);
    Ok(id)
}

fn load_run(tx: &Transaction<'_>, agent: &str, run: &str) -> rusqlite::Result<Option<RunState>> {
    let row = tx
        .prepare_cached(
            "SELECT hwm, stored_uj, first_ms, last_ms, counters FROM runs WHERE agent_id = ? AND run_id = ?",
        )?
        .query_row(params![agent, run], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
            ))
        })
        .optional()?;
    let Some((hwm, stored, first, last, counters)) = row else {
        return Ok(None);
    };
    let mut holes = Vec::new();
    let mut st = tx.prepare_cached(
        "SELECT from_seq, to_seq FROM run_holes WHERE agent_id = ? AND run_id = ? ORDER BY from_seq",
    )?;
    let mut rows = st.query(params![agent, run])?;
    while let Some(r) = rows.next()? {
        holes.push((to_u64(r.get(0)?)?, to_u64(r.get(1)?)?));
    }
    Ok(Some(RunState {
        seqs: RunSeqs {
            hwm: to_u64(hwm)?,
            holes,
        },
        stored_uj: to_u64(stored)?,
        first_ms: to_u64(first)?,
        last_ms: to_u64(last)?,
        counters: parse_counters(&counters)?,
        holes_changed: false,
        is_new: false,
    }))
}

fn intensity_of(
    tx: &Transaction<'_>,
    ctx: &mut Ctx<'_>,
    plan: &HostPlan,
    hour_s: i64,
) -> rusqlite::Result<(f64, Option<i64>)> {
    if let Some(v) = ctx.intensity.get(&(plan.zone.clone(), hour_s)) {
        return Ok(*v);
    }
    let v = tx
        .prepare_cached(
            "SELECT g_per_kwh, import_id FROM intensity_hourly WHERE zone = ? AND hour_s = ?",
        )?
        .query_row(params![plan.zone, hour_s], |r| {
            Ok((r.get(0)?, Some(r.get(1)?)))
        })
        .optional()?
        .unwrap_or((plan.grid_default.value, None));
    ctx.intensity.insert((plan.zone.clone(), hour_s), v);
    Ok(v)
}

/// Checks one push against the store and adds it to the group; nothing of a refused
/// push reaches the group.
fn stage(
    tx: &Transaction<'_>,
    ctx: &mut Ctx<'_>,
    g: &mut Group,
    p: &PreparedPush,
) -> rusqlite::Result<Result<IngestOutcome, StoreError>> {
    let host = p.agent.agent_id.as_str();
    let mut problems: Vec<WireProblem> = Vec::new();
    let mut problem = |path: String, message: String| problems.push(WireProblem { path, message });
    let mut outcome = IngestOutcome::default();
    // This push's view of its runs, host hours and rows; merged into the group if it
    // is accepted.
    let mut runs: HashMap<(String, String), RunState> = HashMap::new();
    let mut hour_sums: BTreeMap<i64, u64> = BTreeMap::new();
    let mut first_over: BTreeMap<i64, usize> = BTreeMap::new();
    let mut new_batches = Vec::new();
    for (field, v) in [
        ("spool.batches", Some(p.spool.batches)),
        ("spool.bytes", Some(p.spool.bytes)),
        ("spool.oldest_start_unix_ms", p.spool.oldest_start_unix_ms),
        (
            "spool.dropped_batches_total",
            Some(p.spool.dropped_batches_total),
        ),
    ] {
        if let Some(v) = v.filter(|&v| i64::try_from(v).is_err()) {
            problem(
                field.to_string(),
                format!("{v} is larger than the largest value stored ({})", i64::MAX),
            );
        }
    }
    for (i, b) in p.batches.iter().enumerate() {
        for (field, v) in [
            ("seq", b.seq),
            ("start_unix_ms", b.start_ms),
            ("end_unix_ms", b.end_ms),
        ] {
            if i64::try_from(v).is_err() {
                problem(
                    format!("batches[{i}].{field}"),
                    format!("{v} is larger than the largest value stored ({})", i64::MAX),
                );
            }
        }
        for (c, counter) in b.counters.iter().enumerate() {
            if i64::try_from(counter.total_uj).is_err() {
                problem(
                    format!("batches[{i}].counters[{c}].total_uj"),
                    format!(
                        "{} µJ is larger than the largest value stored ({} µJ)",
                        counter.total_uj,
                        i64::MAX
                    ),
                );
            }
        }
        let key = (host.to_string(), b.run_id.clone());
        let run = match runs.entry(key.clone()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let state = match g.runs.get(&key).or_else(|| ctx.runs.get(&key)) {
                    Some(s) => s.clone(),
                    None => load_run(tx, host, &b.run_id)?.unwrap_or(RunState {
                        seqs: RunSeqs::default(),
                        stored_uj: 0,
                        first_ms: p.now_ms,
                        last_ms: p.now_ms,
                        counters: BTreeMap::new(),
                        holes_changed: false,
                        is_new: true,
                    }),
                };
                v.insert(state)
            }
        };
        let holes_before = run.seqs.holes.len();
        if b.seq == 0 || !run.seqs.insert(b.seq) {
            outcome.ack.duplicates += 1;
            continue;
        }
        if run.seqs.holes.len() != holes_before || holes_before > 0 {
            run.holes_changed = true;
        }
        if run.seqs.holes.len() > MAX_HOLES {
            problem(
                format!("batches[{i}].seq"),
                format!(
                    "run {} would have more than {MAX_HOLES} missing sequence numbers",
                    b.run_id
                ),
            );
        }
        outcome.ack.accepted += 1;
        let energy: u128 = b.deltas.iter().map(|d| u128::from(d.energy_uj)).sum();
        match u64::try_from(u128::from(run.stored_uj) + energy)
            .ok()
            .filter(|&v| i64::try_from(v).is_ok())
        {
            Some(v) => run.stored_uj = v,
            None => problem(
                format!("batches[{i}].records"),
                format!("the run's stored energy would pass {} µJ", i64::MAX),
            ),
        }
        run.last_ms = run.last_ms.max(p.now_ms);
        for c in &b.counters {
            let e = run
                .counters
                .entry((
                    c.project.clone(),
                    c.component.as_str().to_string(),
                    c.source.as_str().to_string(),
                ))
                .or_default();
            if b.end_ms >= e.1 {
                *e = (c.total_uj, b.end_ms);
            }
        }
        if !b.counters.is_empty() && i64::try_from(run.counted_uj()).is_err() {
            problem(
                format!("batches[{i}].counters"),
                format!(
                    "the run's counters would add up past the largest value stored ({} µJ)",
                    i64::MAX
                ),
            );
        }
        for d in &b.deltas {
            let e = hour_sums.entry(d.hour_s).or_default();
            *e = e.saturating_add(d.energy_uj);
            let hk = (host.to_string(), d.hour_s);
            let before = match g.host_hours.get(&hk).or_else(|| ctx.host_hours.get(&hk)) {
                Some(v) => *v,
                None => tx
                    .prepare_cached(
                        "SELECT energy_uj FROM host_hours WHERE host = ? AND hour_s = ?",
                    )?
                    .query_row(params![host, d.hour_s], |r| r.get::<_, i64>(0))
                    .optional()?
                    .map(to_u64)
                    .transpose()?
                    .unwrap_or(0),
            };
            g.host_hours
                .entry((host.to_string(), d.hour_s))
                .or_insert(before);
            if before.saturating_add(*e) > ctx.max_hour_uj {
                first_over.entry(d.hour_s).or_insert(i);
            }
        }
        new_batches.push(b);
    }
    for (hour_s, i) in &first_over {
        let before = g
            .host_hours
            .get(&(host.to_string(), *hour_s))
            .copied()
            .unwrap_or(0);
        problem(
            format!("batches[{i}].records"),
            format!(
                "host {host} would have {} µJ in the hour starting at {}, more than max_host_power_watts for one hour ({} µJ): batches overlap or a counter is wrong",
                before.saturating_add(hour_sums.get(hour_s).copied().unwrap_or(0)),
                jiff::Timestamp::from_second(*hour_s)
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
                ctx.max_hour_uj
            ),
        );
    }
    if !problems.is_empty() {
        return Ok(Err(StoreError::Rejected(problems)));
    }
    // Accepted: into the group.
    let plan = &p.plan;
    let coefs = PlanCoefs {
        pue: coefficient_id(tx, ctx.coef_ids, &plan.pue)?,
        grid: coefficient_id(tx, ctx.coef_ids, &plan.grid_default)?,
        market: plan
            .market
            .as_ref()
            .map(|m| coefficient_id(tx, ctx.coef_ids, m))
            .transpose()?,
        embodied: plan
            .embodied
            .as_ref()
            .map(|e| coefficient_id(tx, ctx.coef_ids, &e.coefficient))
            .transpose()?,
    };
    for (hour_s, e) in hour_sums {
        if let Some(v) = g.host_hours.get_mut(&(host.to_string(), hour_s)) {
            *v = v.saturating_add(e);
        }
    }
    for (k, r) in runs {
        g.runs.insert(k, r);
    }
    let mut parts: BTreeMap<(i64, &str, Component, SourceKind), (u64, u64)> = BTreeMap::new();
    let mut last_end: Option<u64> = None;
    for b in &p.batches {
        last_end = Some(last_end.unwrap_or(0).max(b.end_ms));
    }
    for b in &new_batches {
        g.inference.add(host, &b.inference);
        for d in &b.deltas {
            let e = parts
                .entry((d.hour_s, d.project.as_str(), d.component, d.source))
                .or_default();
            e.0 += d.energy_uj;
            e.1 += d.embodied_ug;
        }
    }
    for ((hour_s, project, component, source), (energy, embodied)) in parts {
        let (g_per_kwh, import_id) = intensity_of(tx, ctx, plan, hour_s)?;
        let location = operational_ug(energy, plan.pue.value, g_per_kwh);
        let market = plan
            .market
            .as_ref()
            .map(|m| operational_ug(energy, plan.pue.value, m.value));
        outcome.added.push(AddedPart {
            project: project.to_string(),
            component,
            energy_uj: energy,
            location_ug: location,
            market_ug: market,
            embodied_ug: embodied,
        });
        let add = g
            .hours
            .entry((
                host.to_string(),
                (hour_s, project.to_string(), component, source),
            ))
            .or_insert_with(|| HourAdd {
                energy: 0,
                embodied: 0,
                plan: plan.clone(),
                coefs,
                g_per_kwh,
                import_id,
            });
        add.energy += energy;
        add.embodied += embodied;
    }
    let waiting = p.spool.batches.saturating_sub(p.batches.len() as u64);
    g.agents.insert(
        host.to_string(),
        AgentRow {
            hostname: p.agent.hostname.clone(),
            version: p.agent.agent_version.clone(),
            now_ms: p.now_ms,
            last_end_ms: match (g.agents.get(host).and_then(|a| a.last_end_ms), last_end) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            waiting,
            bytes: if waiting == 0 { 0 } else { p.spool.bytes },
            oldest_ms: if waiting == 0 {
                None
            } else {
                p.spool.oldest_start_unix_ms
            },
            dropped: p.spool.dropped_batches_total,
        },
    );
    Ok(Ok(outcome))
}

/// Writes a group: hourly rows (read, summed, written), rollup deltas, host hours,
/// runs, counters, agents.
/// An hourly row as the writer last wrote it (the writer is the only one to write
/// them, so a cached row is the stored row).
#[derive(Clone, Debug)]
pub struct CachedRow {
    energy: i64,
    facility: i64,
    location: i64,
    market: Option<i64>,
    embodied: i64,
    pue: f64,
    g: f64,
    market_g: Option<f64>,
    site: String,
    zone: String,
    emb_coef: Option<i64>,
}

pub type RowCache = HashMap<(String, HourKey), CachedRow>;

/// The most hourly rows the writer keeps in memory (the current hours of a large fleet).
const MAX_CACHED_ROWS: usize = 100_000;

fn apply(
    tx: &Transaction<'_>,
    cal: &mut Calendar,
    rollups: &mut Rollups,
    g: &Group,
    cache: &RowCache,
    written: &mut Vec<((String, HourKey), CachedRow)>,
) -> rusqlite::Result<()> {
    let mut select = tx.prepare_cached(
        "SELECT energy_uj, facility_uj, location_co2e_ug, market_co2e_ug, embodied_co2e_ug,
            pue, intensity_g_per_kwh, market_g_per_kwh, site, zone, embodied_coef
         FROM footprint_hourly
         WHERE hour_s = ? AND host = ? AND project = ? AND component = ? AND source = ?",
    )?;
    let mut update = tx.prepare_cached(
        "UPDATE footprint_hourly SET energy_uj = ?, facility_uj = ?, location_co2e_ug = ?,
            market_co2e_ug = ?, embodied_co2e_ug = ?, embodied_coef = ?
         WHERE hour_s = ? AND host = ? AND project = ? AND component = ? AND source = ?",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO footprint_hourly (hour_s, host, project, component, source, site, zone,
            energy_uj, facility_uj, pue, pue_coef, intensity_g_per_kwh, intensity_coef,
            intensity_import, location_co2e_ug, market_g_per_kwh, market_coef, market_co2e_ug,
            embodied_co2e_ug, embodied_coef)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    for (row_key, add) in &g.hours {
        let (host, (hour_s, project, component, source)) = row_key;
        let (component, source) = (component.as_str(), source.as_str());
        let old = match cache.get(row_key) {
            Some(r) => Some(r.clone()),
            None => select
                .query_row(params![hour_s, host, project, component, source], |r| {
                    Ok(CachedRow {
                        energy: r.get(0)?,
                        facility: r.get(1)?,
                        location: r.get(2)?,
                        market: r.get(3)?,
                        embodied: r.get(4)?,
                        pue: r.get(5)?,
                        g: r.get(6)?,
                        market_g: r.get(7)?,
                        site: r.get(8)?,
                        zone: r.get(9)?,
                        emb_coef: r.get(10)?,
                    })
                })
                .optional()?,
        };
        let (day, _) = cal.of(*hour_s);
        match old {
            Some(CachedRow {
                energy: e0,
                facility: f0,
                location: l0,
                market: m0,
                embodied: b0,
                pue,
                g,
                market_g: mg,
                site,
                zone,
                emb_coef,
            }) => {
                let energy = to_u64(e0)?
                    .checked_add(add.energy)
                    .ok_or_else(|| overflow("an hourly row's energy"))?;
                let facility = to_i64(facility_uj(energy, pue))?;
                let location = to_i64(operational_ug(energy, pue, g))?;
                let market = mg
                    .map(|m| to_i64(operational_ug(energy, pue, m)))
                    .transpose()?;
                let embodied = to_i64(
                    to_u64(b0)?
                        .checked_add(add.embodied)
                        .ok_or_else(|| overflow("an hourly row's embodied emissions"))?,
                )?;
                let coef = emb_coef.or(add.coefs.embodied);
                if emb_coef.is_none() {
                    if let Some(c) = add.coefs.embodied {
                        *rollups.coef_use.entry((day, c)).or_default() += 1;
                    }
                }
                update.execute(params![
                    to_i64(energy)?,
                    facility,
                    location,
                    market,
                    embodied,
                    coef,
                    hour_s,
                    host,
                    project,
                    component,
                    source
                ])?;
                let delta = RollupDelta {
                    energy: to_i64(add.energy)?,
                    facility: facility - f0,
                    location: location - l0,
                    market: market.unwrap_or(location) - m0.unwrap_or(l0),
                    embodied: embodied - b0,
                };
                rollups.add(
                    cal, *hour_s, host, project, component, source, &site, &zone, delta,
                );
                written.push((
                    row_key.clone(),
                    CachedRow {
                        energy: to_i64(energy)?,
                        facility,
                        location,
                        market,
                        embodied,
                        pue,
                        g,
                        market_g: mg,
                        site,
                        zone,
                        emb_coef: coef,
                    },
                ));
            }
            None => {
                let plan = &add.plan;
                let pue = plan.pue.value;
                let facility = to_i64(facility_uj(add.energy, pue))?;
                let location = to_i64(operational_ug(add.energy, pue, add.g_per_kwh))?;
                let market_g = plan.market.as_ref().map(|m| m.value);
                let market = market_g
                    .map(|m| to_i64(operational_ug(add.energy, pue, m)))
                    .transpose()?;
                let grid_coef = if add.import_id.is_none() {
                    Some(add.coefs.grid)
                } else {
                    None
                };
                insert.execute(params![
                    hour_s,
                    host,
                    project,
                    component,
                    source,
                    plan.site,
                    plan.zone,
                    to_i64(add.energy)?,
                    facility,
                    pue,
                    add.coefs.pue,
                    add.g_per_kwh,
                    grid_coef,
                    add.import_id,
                    location,
                    market_g,
                    add.coefs.market,
                    market,
                    to_i64(add.embodied)?,
                    add.coefs.embodied,
                ])?;
                for c in [
                    Some(add.coefs.pue),
                    grid_coef,
                    add.coefs.market,
                    add.coefs.embodied,
                ]
                .into_iter()
                .flatten()
                {
                    *rollups.coef_use.entry((day, c)).or_default() += 1;
                }
                rollups.zone_hours.insert((plan.zone.clone(), *hour_s));
                let delta = RollupDelta {
                    energy: to_i64(add.energy)?,
                    facility,
                    location,
                    market: market.unwrap_or(location),
                    embodied: to_i64(add.embodied)?,
                };
                written.push((
                    row_key.clone(),
                    CachedRow {
                        energy: to_i64(add.energy)?,
                        facility,
                        location,
                        market,
                        embodied: to_i64(add.embodied)?,
                        pue,
                        g: add.g_per_kwh,
                        market_g,
                        site: plan.site.clone(),
                        zone: plan.zone.clone(),
                        emb_coef: add.coefs.embodied,
                    },
                ));
                rollups.add(
                    cal, *hour_s, host, project, component, source, &plan.site, &plan.zone, delta,
                );
            }
        }
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO host_hours (host, hour_s, energy_uj) VALUES (?, ?, ?)
         ON CONFLICT DO UPDATE SET energy_uj = excluded.energy_uj",
    )?;
    for ((host, hour_s), e) in &g.host_hours {
        st.execute(params![host, hour_s, to_i64(*e)?])?;
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO runs (agent_id, run_id, hwm, stored_uj, first_ms, last_ms, counters, counted_uj)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT DO UPDATE SET hwm = excluded.hwm, stored_uj = excluded.stored_uj,
            last_ms = excluded.last_ms, counters = excluded.counters,
            counted_uj = excluded.counted_uj",
    )?;
    let mut del = tx.prepare_cached("DELETE FROM run_holes WHERE agent_id = ? AND run_id = ?")?;
    let mut hole = tx.prepare_cached(
        "INSERT INTO run_holes (agent_id, run_id, from_seq, to_seq) VALUES (?, ?, ?, ?)",
    )?;
    for ((agent, run), r) in &g.runs {
        st.execute(params![
            agent,
            run,
            to_i64(r.seqs.hwm)?,
            to_i64(r.stored_uj)?,
            to_i64(r.first_ms)?,
            to_i64(r.last_ms)?,
            r.counters_text(),
            i64::try_from(r.counted_uj()).map_err(|_| overflow("a run's counters"))?
        ])?;
        if r.holes_changed {
            if !r.is_new {
                del.execute(params![agent, run])?;
            }
            for (a, b) in &r.seqs.holes {
                hole.execute(params![agent, run, to_i64(*a)?, to_i64(*b)?])?;
            }
        }
    }
    let mut st = tx.prepare_cached(
        "INSERT INTO agents (agent_id, hostname, agent_version, first_push_ms, last_push_ms,
            last_batch_end_ms, spool_batches, spool_bytes, spool_oldest_ms, spool_dropped)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (agent_id) DO UPDATE SET hostname = excluded.hostname,
            agent_version = excluded.agent_version, last_push_ms = excluded.last_push_ms,
            last_batch_end_ms = MAX(COALESCE(last_batch_end_ms, 0), COALESCE(excluded.last_batch_end_ms, 0)),
            spool_batches = excluded.spool_batches, spool_bytes = excluded.spool_bytes,
            spool_oldest_ms = excluded.spool_oldest_ms, spool_dropped = excluded.spool_dropped",
    )?;
    for (agent, a) in &g.agents {
        st.execute(params![
            agent,
            a.hostname,
            a.version,
            to_i64(a.now_ms)?,
            to_i64(a.now_ms)?,
            a.last_end_ms.map(to_i64).transpose()?,
            to_i64(a.waiting)?,
            to_i64(a.bytes)?,
            a.oldest_ms.map(to_i64).transpose()?,
            to_i64(a.dropped)?
        ])?;
    }
    Ok(())
}

fn overflow(what: &str) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(format!("{what} would pass u64::MAX").into())
}
