//! At start, the pushes the log holds beyond the last fold (acknowledged, then the
//! collector stopped before their fold) are staged again, in order, and folded, before
//! anything else runs: a crash between an acknowledgement and its fold loses nothing,
//! and nothing is folded twice (the fold's high-water mark commits with its rows).

use std::collections::HashMap;

use super::super::super::StoreError;
use super::fold::{Folder, folded_through};
use super::log::{IngestLog, decode};
use super::stage;
use super::state::Group;

/// Folds what the log holds beyond the last fold; gives the last entry folded.
pub(super) fn replay(
    folder: &mut Folder,
    log: &mut IngestLog,
    max_hour_uj: u64,
) -> Result<i64, StoreError> {
    let through = folded_through(&folder.conn)?;
    log.folded_through(through);
    let entries = log.entries_after(through)?;
    let Some(last) = entries.last().map(|e| e.0) else {
        log.prune()?;
        return Ok(through);
    };
    let mut g = Group::default();
    let (runs, host_hours) = (HashMap::new(), HashMap::new());
    let mut plans = HashMap::new();
    let mut ctx = stage::Ctx {
        runs: &runs,
        host_hours: &host_hours,
        max_hour_uj,
        intensity: HashMap::new(),
        plans: &mut plans,
        replay: true,
    };
    for (id, entry) in &entries {
        let push = decode(entry).map_err(|message| StoreError::Integrity {
            path: log.path().to_path_buf(),
            message: format!(
                "entry {id} of the ingest log cannot be read ({message}); it holds acknowledged pushes: start the collector version that wrote it once (it folds the log), then this one"
            ),
        })?;
        // Accepted when it was logged: stored now whatever today's checks say.
        let _ = stage::stage(&folder.conn, &mut ctx, &mut g, &push)?;
    }
    folder.fold(&g, last)?;
    log.folded_through(last);
    log.prune()?;
    tracing::warn!(
        pushes = entries.len(),
        "acknowledged pushes not yet in the footprint tables at the last stop were folded from the ingest log"
    );
    Ok(last)
}
