//! The configuration history on SQLite: plans with their dates and the recomputations'
//! record (migration 0006). The recomputation itself is the fold's
//! (`writer/recompute.rs`): it rewrites footprint rows.

use sqlx::SqlitePool;

use crate::history::{
    PLAN_HISTORY_SQL, PlanRecord, PlanRow, RECOMPUTATIONS_COLUMNS, Recomputation, RecomputedRow,
    recomputations_of,
};
use crate::store::StoreError;

pub async fn plan_history(pool: &SqlitePool) -> Result<Vec<PlanRecord>, StoreError> {
    let rows: Vec<PlanRow> = sqlx::query_as(PLAN_HISTORY_SQL).fetch_all(pool).await?;
    Ok(rows.into_iter().map(PlanRecord::from).collect())
}

pub async fn record_plan(
    pool: &SqlitePool,
    from_s: i64,
    plan: &str,
    now_ms: u64,
) -> Result<(), StoreError> {
    let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
    let mut tx = pool.begin().await?;
    sqlx::query(
        "UPDATE plan_history SET replaced_ms = ? WHERE from_s >= ? AND replaced_ms IS NULL",
    )
    .bind(now)
    .bind(from_s)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO plan_history (from_s, recorded_ms, plan) VALUES (?, ?, ?)")
        .bind(from_s)
        .bind(now)
        .bind(plan)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn recomputations(
    pool: &SqlitePool,
    from_s: i64,
    to_s: i64,
) -> Result<Vec<Recomputation>, StoreError> {
    let rows: Vec<RecomputedRow> = sqlx::query_as(&format!(
        "SELECT {RECOMPUTATIONS_COLUMNS}
         FROM recomputations AS r JOIN recomputed_months AS m ON m.recomputation_id = r.id
         WHERE m.month_s >= ? AND m.month_s < ? ORDER BY r.id, m.month_s"
    ))
    .bind(from_s)
    .bind(to_s)
    .fetch_all(pool)
    .await?;
    Ok(recomputations_of(rows))
}
