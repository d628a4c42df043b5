//! Coefficient ids: each coefficient a row was computed with is stored once in
//! `coefficients`, and rows refer to it by id. Resolved when a group is written.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, Transaction, params};

use super::state::PlanCoefs;
use crate::footprint::{Coefficient, HostPlan};

/// Ids of coefficients already stored (cleared when another connection wrote).
pub(super) type CoefIds = HashMap<String, i64>;

pub(super) fn coefficient_id(
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

/// The ids of a plan's coefficients (stored if new).
pub(super) fn plan_coefs(
    tx: &Transaction<'_>,
    coef_ids: &mut CoefIds,
    plan: &HostPlan,
) -> rusqlite::Result<PlanCoefs> {
    Ok(PlanCoefs {
        pue: coefficient_id(tx, coef_ids, &plan.pue)?,
        grid: coefficient_id(tx, coef_ids, &plan.grid_default)?,
        market: plan
            .market
            .as_ref()
            .map(|m| coefficient_id(tx, coef_ids, m))
            .transpose()?,
        embodied: plan
            .embodied
            .as_ref()
            .map(|e| coefficient_id(tx, coef_ids, &e.coefficient))
            .transpose()?,
    })
}
