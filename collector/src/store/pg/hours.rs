//! A push's hourly rows: added to the rows stored (emissions recomputed from each row's
//! whole energy, as the SQLite writer does), with the rollups' differences; new rows in
//! one `INSERT … SELECT FROM UNNEST`, changed rows in one `UPDATE … FROM UNNEST`.

use std::collections::{BTreeSet, HashMap};

use sqlx::{Postgres, Transaction};

use super::super::sqlite::writer::facility_uj;
use super::super::{AddedPart, IngestOutcome, StoreError};
use super::ingest::PlanCoefs;
use super::stage::{Staged, q, to_i64};
use crate::footprint::{HostPlan, operational_ug};

/// An hourly row as stored.
#[derive(sqlx::FromRow)]
struct OldRow {
    hour_s: i64,
    project: String,
    component: String,
    source: String,
    energy_uj: i64,
    facility_uj: i64,
    location_co2e_ug: i64,
    market_co2e_ug: Option<i64>,
    embodied_co2e_ug: i64,
    pue: f64,
    intensity_g_per_kwh: f64,
    market_g_per_kwh: Option<f64>,
    site: String,
    zone: String,
    embodied_coef: Option<i64>,
}

/// Columns of rows to write with one statement (`UNNEST` of arrays).
#[derive(Default)]
struct NewRows {
    hour: Vec<i64>,
    project: Vec<String>,
    component: Vec<String>,
    source: Vec<String>,
    energy: Vec<i64>,
    facility: Vec<i64>,
    pue_coef: Vec<i64>,
    g: Vec<f64>,
    grid_coef: Vec<Option<i64>>,
    import: Vec<Option<i64>>,
    location: Vec<i64>,
    market: Vec<Option<i64>>,
    embodied: Vec<i64>,
    emb_coef: Vec<Option<i64>>,
}

/// One staged part of a push: its row's key, energy and embodied emissions.
struct Part<'a> {
    host: &'a str,
    hour_s: i64,
    project: &'a str,
    component: &'a str,
    source: &'a str,
    energy: u64,
    embodied: u64,
    /// The site's tariff: the row's facility energy is priced with it.
    tariff: Option<&'a crate::cost::Tariff>,
}

/// The hourly rows of a push: added to the rows stored (emissions recomputed from the
/// row's whole energy, as the SQLite writer does), with the rollups' differences.
pub(super) async fn write_hours(
    tx: &mut Transaction<'_, Postgres>,
    host: &str,
    plan: &HostPlan,
    coefs: PlanCoefs,
    staged: &Staged,
    rollups: &mut super::maintain::Rollups,
    outcome: &mut IngestOutcome,
) -> Result<(), StoreError> {
    if staged.parts.is_empty() {
        return Ok(());
    }
    let hours: Vec<i64> = staged
        .parts
        .keys()
        .map(|k| k.0)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let intensity = intensity_of(tx, &plan.zone, &hours).await?;
    let old = old_rows(tx, host, &hours).await?;
    let mut ins = NewRows::default();
    let mut upd = NewRows::default();
    for ((hour_s, project, component, source), (energy, embodied)) in &staged.parts {
        let (hour_s, energy, embodied) = (*hour_s, *energy, *embodied);
        let (g_per_kwh, import_id) = intensity
            .get(&hour_s)
            .copied()
            .unwrap_or((plan.grid_default.value, None));
        outcome.added.push(AddedPart {
            project: project.clone(),
            component: *component,
            energy_uj: energy,
            location_ug: operational_ug(energy, plan.pue.value, g_per_kwh),
            market_ug: plan
                .market
                .as_ref()
                .map(|m| operational_ug(energy, plan.pue.value, m.value)),
            embodied_ug: embodied,
        });
        let part = Part {
            host,
            hour_s,
            project,
            component: component.as_str(),
            source: source.as_str(),
            energy,
            embodied,
            tariff: plan.tariff.as_deref(),
        };
        let key = (
            hour_s,
            project.clone(),
            part.component.to_string(),
            part.source.to_string(),
        );
        match old.get(&key) {
            Some(o) => add_to_row(o, &part, coefs, rollups, &mut upd)?,
            None => new_row(
                &part,
                plan,
                coefs,
                (g_per_kwh, import_id),
                rollups,
                &mut ins,
            )?,
        }
    }
    if !ins.hour.is_empty() {
        insert_rows(tx, host, plan, coefs, &ins).await?;
    }
    if !upd.hour.is_empty() {
        update_rows(tx, host, &upd).await?;
    }
    Ok(())
}

/// The zone's imported intensity for `hours` (g/kWh and the import's id).
async fn intensity_of(
    tx: &mut Transaction<'_, Postgres>,
    zone: &str,
    hours: &[i64],
) -> Result<HashMap<i64, (f64, Option<i64>)>, StoreError> {
    let rows: Vec<(i64, f64, i64)> = sqlx::query_as(
        "SELECT hour_s, g_per_kwh, import_id FROM intensity_hourly
         WHERE zone = $1 AND hour_s = ANY($2)",
    )
    .bind(zone)
    .bind(hours)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(h, g, i)| (h, (g, Some(i))))
        .collect())
}

/// The host's stored rows of `hours`, by (hour, project, component, source).
async fn old_rows(
    tx: &mut Transaction<'_, Postgres>,
    host: &str,
    hours: &[i64],
) -> Result<HashMap<(i64, String, String, String), OldRow>, StoreError> {
    let rows: Vec<OldRow> = sqlx::query_as(
        "SELECT hour_s, project, component, source, energy_uj, facility_uj,
            location_co2e_ug, market_co2e_ug, embodied_co2e_ug, pue, intensity_g_per_kwh,
            market_g_per_kwh, site, zone, embodied_coef
         FROM footprint_hourly WHERE host = $1 AND hour_s = ANY($2)",
    )
    .bind(host)
    .bind(hours)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                (
                    r.hour_s,
                    r.project.clone(),
                    r.component.clone(),
                    r.source.clone(),
                ),
                r,
            )
        })
        .collect())
}

/// `part` added to the row `o` that exists: the row's totals recomputed with its own
/// coefficients, the rollups given the differences.
fn add_to_row(
    o: &OldRow,
    part: &Part<'_>,
    coefs: PlanCoefs,
    rollups: &mut super::maintain::Rollups,
    upd: &mut NewRows,
) -> Result<(), StoreError> {
    let total = q(o.energy_uj, "footprint_hourly.energy_uj")?
        .checked_add(part.energy)
        .ok_or_else(|| StoreError::Write("an hourly row's energy would pass u64::MAX".into()))?;
    let facility = to_i64(facility_uj(total, o.pue), "facility energy")?;
    let location = to_i64(
        operational_ug(total, o.pue, o.intensity_g_per_kwh),
        "emissions",
    )?;
    let market = o
        .market_g_per_kwh
        .map(|m| to_i64(operational_ug(total, o.pue, m), "emissions"))
        .transpose()?;
    let emb = to_i64(
        q(o.embodied_co2e_ug, "footprint_hourly.embodied_co2e_ug")?
            .checked_add(part.embodied)
            .ok_or_else(|| {
                StoreError::Write("an hourly row's embodied emissions would pass u64::MAX".into())
            })?,
        "embodied emissions",
    )?;
    let coef = o.embodied_coef.or(coefs.embodied);
    if o.embodied_coef.is_none() {
        if let Some(c) = coefs.embodied {
            let day = rollups.day(part.hour_s);
            rollups.use_coef(day, c, 1);
        }
    }
    rollups.add(
        part.hour_s,
        [
            part.host,
            part.project,
            part.component,
            part.source,
            &o.site,
            &o.zone,
        ],
        [
            to_i64(part.energy, "energy")?,
            facility - o.facility_uj,
            location - o.location_co2e_ug,
            market.unwrap_or(location) - o.market_co2e_ug.unwrap_or(o.location_co2e_ug),
            emb - o.embodied_co2e_ug,
        ],
    );
    rollups.costs.add(
        part.hour_s,
        &o.site,
        part.project,
        part.tariff,
        facility - o.facility_uj,
    );
    upd.hour.push(part.hour_s);
    upd.project.push(part.project.to_string());
    upd.component.push(part.component.to_string());
    upd.source.push(part.source.to_string());
    upd.energy.push(to_i64(total, "energy")?);
    upd.facility.push(facility);
    upd.location.push(location);
    upd.market.push(market);
    upd.embodied.push(emb);
    upd.emb_coef.push(coef);
    Ok(())
}

/// `part` as a new row with the plan's coefficients (and the hour's imported intensity
/// when there is one).
fn new_row(
    part: &Part<'_>,
    plan: &HostPlan,
    coefs: PlanCoefs,
    (g_per_kwh, import_id): (f64, Option<i64>),
    rollups: &mut super::maintain::Rollups,
    ins: &mut NewRows,
) -> Result<(), StoreError> {
    let pue = plan.pue.value;
    let facility = to_i64(facility_uj(part.energy, pue), "facility energy")?;
    let location = to_i64(operational_ug(part.energy, pue, g_per_kwh), "emissions")?;
    let market = plan
        .market
        .as_ref()
        .map(|m| to_i64(operational_ug(part.energy, pue, m.value), "emissions"))
        .transpose()?;
    let grid_coef = import_id.is_none().then_some(coefs.grid);
    let day = rollups.day(part.hour_s);
    for c in [Some(coefs.pue), grid_coef, coefs.market, coefs.embodied]
        .into_iter()
        .flatten()
    {
        rollups.use_coef(day, c, 1);
    }
    rollups.zone_hour(&plan.zone, part.hour_s);
    let e = to_i64(part.energy, "energy")?;
    let emb = to_i64(part.embodied, "embodied emissions")?;
    rollups.add(
        part.hour_s,
        [
            part.host,
            part.project,
            part.component,
            part.source,
            &plan.site,
            &plan.zone,
        ],
        [e, facility, location, market.unwrap_or(location), emb],
    );
    rollups
        .costs
        .add(part.hour_s, &plan.site, part.project, part.tariff, facility);
    ins.hour.push(part.hour_s);
    ins.project.push(part.project.to_string());
    ins.component.push(part.component.to_string());
    ins.source.push(part.source.to_string());
    ins.energy.push(e);
    ins.facility.push(facility);
    ins.pue_coef.push(coefs.pue);
    ins.g.push(g_per_kwh);
    ins.grid_coef.push(grid_coef);
    ins.import.push(import_id);
    ins.location.push(location);
    ins.market.push(market);
    ins.embodied.push(emb);
    ins.emb_coef.push(coefs.embodied);
    Ok(())
}

/// New hourly rows, in one statement.
async fn insert_rows(
    tx: &mut Transaction<'_, Postgres>,
    host: &str,
    plan: &HostPlan,
    coefs: PlanCoefs,
    ins: &NewRows,
) -> Result<(), StoreError> {
    let market_g = plan.market.as_ref().map(|m| m.value);
    sqlx::query(
        "INSERT INTO footprint_hourly (hour_s, host, project, component, source, site, zone,
            energy_uj, facility_uj, pue, pue_coef, intensity_g_per_kwh, intensity_coef,
            intensity_import, location_co2e_ug, market_g_per_kwh, market_coef, market_co2e_ug,
            embodied_co2e_ug, embodied_coef)
         SELECT u.hour_s, $1, u.project, u.component, u.source, $2, $3, u.energy, u.facility,
            $4, u.pue_coef, u.g, u.grid_coef, u.import, u.location, $5, $6, u.market,
            u.embodied, u.emb_coef
         FROM UNNEST($7::BIGINT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::BIGINT[],
            $12::BIGINT[], $13::BIGINT[], $14::FLOAT8[], $15::BIGINT[], $16::BIGINT[],
            $17::BIGINT[], $18::BIGINT[], $19::BIGINT[], $20::BIGINT[])
           AS u(hour_s, project, component, source, energy, facility, pue_coef, g,
            grid_coef, import, location, market, embodied, emb_coef)",
    )
    .bind(host)
    .bind(&plan.site)
    .bind(&plan.zone)
    .bind(plan.pue.value)
    .bind(market_g)
    .bind(coefs.market)
    .bind(&ins.hour)
    .bind(&ins.project)
    .bind(&ins.component)
    .bind(&ins.source)
    .bind(&ins.energy)
    .bind(&ins.facility)
    .bind(&ins.pue_coef)
    .bind(&ins.g)
    .bind(&ins.grid_coef)
    .bind(&ins.import)
    .bind(&ins.location)
    .bind(&ins.market)
    .bind(&ins.embodied)
    .bind(&ins.emb_coef)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Hourly rows added to, in one statement.
async fn update_rows(
    tx: &mut Transaction<'_, Postgres>,
    host: &str,
    upd: &NewRows,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE footprint_hourly AS f SET energy_uj = u.energy, facility_uj = u.facility,
            location_co2e_ug = u.location, market_co2e_ug = u.market,
            embodied_co2e_ug = u.embodied, embodied_coef = u.emb_coef
         FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[],
            $7::BIGINT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[])
           AS u(hour_s, project, component, source, energy, facility, location, market,
            embodied, emb_coef)
         WHERE f.hour_s = u.hour_s AND f.host = $1 AND f.project = u.project
           AND f.component = u.component AND f.source = u.source",
    )
    .bind(host)
    .bind(&upd.hour)
    .bind(&upd.project)
    .bind(&upd.component)
    .bind(&upd.source)
    .bind(&upd.energy)
    .bind(&upd.facility)
    .bind(&upd.location)
    .bind(&upd.market)
    .bind(&upd.embodied)
    .bind(&upd.emb_coef)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
