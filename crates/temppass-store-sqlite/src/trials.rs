//! Trials, bindings and generations in SQL (SPEC.md §2 and §7).
//!
//! A trial is found through a binding `(service provider, mvpd, key kind, key) → trial`.
//! A binding counts only while its generation equals the current generation of
//! its `(service provider, mvpd, key kind)`; "reset all" bumps that number.
//! What an authorization decides and writes is `temppass_store::plan`; this
//! module reads the bindings into a `Found` and writes the plan, all inside
//! the writer's one transaction.

use rusqlite::{Connection, OptionalExtension, params};
use temppass_core::{ResourceId, RuleScope, Timestamp, Trial, TrialId};
use temppass_store::{
    Authorization, AuthorizeOutcome, Bound, BoundKeys, Found, KeyKind, Plan, PlannedTrial, ResetPlan, ResetTarget,
    StoreError, TrialLookup, plan, plan_reset,
};

use crate::to_store_error;

/// The binding of one key of a lookup, whatever its generation, with its
/// trial: of kind `$kind`, bound as `$key` (?3 the device, ?4 the identity);
/// ?1 service provider, ?2 mvpd, ?5 valid since. Column 2 says whether it counts.
macro_rules! find_branch {
    ($kind:literal, $key:literal) => {
        concat!(
            "SELECT ",
            $kind,
            ", b.trial_id,
                    b.generation = COALESCE(
                        (SELECT generation FROM generations
                         WHERE service_provider = ?1 AND mvpd = ?2 AND key_kind = ",
            $kind,
            "), 0) AND t.started_at_ms >= ?5,
                    t.started_at_ms, t.expires_at_ms, t.used_resources
             FROM bindings b LEFT JOIN trials t ON t.id = b.trial_id
             WHERE b.service_provider = ?1 AND b.mvpd = ?2 AND b.key_kind = ",
            $kind,
            " AND b.key = ",
            $key
        )
    };
}

/// The binding of a lookup's device: ?1 service provider, ?2 mvpd, ?3
/// device, ?5 valid since (?4, the identity, is not used).
const FIND_DEVICE: &str = find_branch!("0", "?3");

/// The bindings of a lookup's device and identity, in one statement so
/// one snapshot (and one read lock) answers for both: ?4 is the identity.
const FIND_BOTH: &str = concat!(find_branch!("0", "?3"), " UNION ALL ", find_branch!("1", "?4"));

/// A binding from a row of [`FIND_BOTH`] or [`FIND_DEVICE`], with its kind.
fn bound_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, Bound)> {
    let trial_id = TrialId(row.get(1)?);
    let counts: Option<bool> = row.get(2)?;
    let current = match (counts, row.get::<_, Option<i64>>(3)?, row.get::<_, Option<i64>>(4)?) {
        (Some(true), Some(started), Some(expires)) => {
            let used: String = row.get(5)?;
            Some(Trial {
                id: trial_id,
                started_at: Timestamp::from_millis(started),
                expires_at: Timestamp::from_millis(expires),
                used_resources: decode_resources(&used)?,
            })
        }
        _ => None,
    };
    Ok((row.get(0)?, Bound { trial_id, current }))
}

fn decode_resources(json: &str) -> rusqlite::Result<Vec<ResourceId>> {
    let raw: Vec<String> = serde_json::from_str(json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e)))?;
    raw.iter()
        .map(|r| {
            ResourceId::parse(r)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, Box::new(e)))
        })
        .collect()
}

fn encode_resources(resources: &[ResourceId]) -> String {
    let raw: Vec<&str> = resources.iter().map(ResourceId::as_str).collect();
    serde_json::Value::from(raw).to_string()
}

pub(crate) fn find(conn: &Connection, lookup: TrialLookup<'_>) -> rusqlite::Result<Found> {
    let sp = lookup.scope.service_provider.as_str();
    let mvpd = lookup.scope.mvpd.as_str();
    let device = lookup.device.as_str();
    let since = lookup.valid_since.as_millis();
    let mut statement;
    let mut rows = match lookup.identity {
        None => {
            statement = conn.prepare_cached(FIND_DEVICE)?;
            statement.query(params![sp, mvpd, device, None::<&str>, since])?
        }
        Some(identity) => {
            statement = conn.prepare_cached(FIND_BOTH)?;
            statement.query(params![sp, mvpd, device, identity.as_str(), since])?
        }
    };
    let mut found = Found::default();
    while let Some(row) = rows.next()? {
        let (code, bound) = bound_from(row)?;
        let kind = KeyKind::from_code(code).ok_or(rusqlite::Error::IntegralValueOutOfRange(0, code))?;
        found.set(kind, bound);
    }
    Ok(found)
}

/// The whole authorization inside the writer's transaction: read the
/// bindings, plan, and write the plan.
pub(crate) fn authorize(conn: &Connection, request: Authorization<'_>) -> Result<AuthorizeOutcome, StoreError> {
    let found = find(conn, request.lookup).map_err(to_store_error)?;
    let plan = plan(&found, request)?;
    let started = write(conn, request.lookup, &plan).map_err(to_store_error)?;
    plan.outcome(started)
}

/// Writes `plan` in its order; answers the id of the trial it started, if any.
fn write(conn: &Connection, lookup: TrialLookup<'_>, plan: &Plan) -> rusqlite::Result<Option<TrialId>> {
    if let Some(merge) = plan.merge {
        conn.prepare_cached("UPDATE bindings SET trial_id = ?1 WHERE trial_id = ?2")?
            .execute(params![merge.survivor.0, merge.absorbed.0])?;
        conn.prepare_cached("DELETE FROM trials WHERE id = ?1")?.execute(params![merge.absorbed.0])?;
    }
    let (trial, started) = match &plan.trial {
        PlannedTrial::Start(new) => {
            let id = insert_trial(conn, lookup.scope, new.started_at, new.expires_at, &new.used_resources)?;
            (id, Some(id))
        }
        PlannedTrial::Keep(kept) => {
            if plan.resources_changed {
                update_resources(conn, kept)?;
            }
            (kept.id, None)
        }
    };
    for key in plan.bind.iter().filter_map(|&kind| lookup.key(kind)) {
        bind(conn, lookup.scope, key, trial)?;
    }
    for old in &plan.delete_if_unbound {
        delete_if_unbound(conn, old.0)?;
    }
    Ok(started)
}

fn insert_trial(
    conn: &Connection,
    scope: &RuleScope,
    started_at: Timestamp,
    expires_at: Timestamp,
    used_resources: &[ResourceId],
) -> rusqlite::Result<TrialId> {
    let mut statement = conn.prepare_cached(
        "INSERT INTO trials (service_provider, mvpd, started_at_ms, expires_at_ms, used_resources)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    // A plain INSERT and last_insert_rowid: `INSERT … RETURNING` read with
    // query_row leaves the statement unfinished and blocks WAL checkpoints.
    statement.execute(params![
        scope.service_provider.as_str(),
        scope.mvpd.as_str(),
        started_at.as_millis(),
        expires_at.as_millis(),
        encode_resources(used_resources),
    ])?;
    Ok(TrialId(conn.last_insert_rowid()))
}

fn update_resources(conn: &Connection, trial: &Trial) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE trials SET used_resources = ?2 WHERE id = ?1")?
        .execute(params![trial.id.0, encode_resources(&trial.used_resources)])?;
    Ok(())
}

/// Binds a key to a trial with its current generation.
fn bind(conn: &Connection, scope: &RuleScope, (kind, key): (KeyKind, &str), trial: TrialId) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO bindings (service_provider, mvpd, key_kind, key, generation, trial_id)
         VALUES (?1, ?2, ?3, ?4, COALESCE(
             (SELECT generation FROM generations WHERE service_provider = ?1 AND mvpd = ?2 AND key_kind = ?3), 0), ?5)
         ON CONFLICT (service_provider, mvpd, key_kind, key)
         DO UPDATE SET generation = excluded.generation, trial_id = excluded.trial_id",
    )?
    .execute(params![scope.service_provider.as_str(), scope.mvpd.as_str(), kind.code(), key, trial.0])?;
    Ok(())
}

fn delete_if_unbound(conn: &Connection, trial: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM trials WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM bindings WHERE trial_id = ?1)")?
        .execute(params![trial])
}

/// Resets one key ([`plan_reset`]), or, with `None`, every key of the scope
/// in O(1): the generations of both kinds move on, so every trial of the
/// scope is superseded, whichever keys found it (SPEC.md §2).
pub(crate) fn reset(conn: &Connection, scope: &RuleScope, kind: KeyKind, key: Option<&str>) -> Result<(), StoreError> {
    let sp = scope.service_provider.as_str();
    let mvpd = scope.mvpd.as_str();
    let result = match key {
        None => KeyKind::ALL.iter().try_for_each(|every| {
            conn.prepare_cached(
                "INSERT INTO generations (service_provider, mvpd, key_kind, generation) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT (service_provider, mvpd, key_kind) DO UPDATE SET generation = generation + 1",
            )?
            .execute(params![sp, mvpd, every.code()])
            .map(drop)
        }),
        Some(key) => reset_one(conn, sp, mvpd, kind, key),
    };
    result.map_err(to_store_error)
}

fn reset_one(conn: &Connection, sp: &str, mvpd: &str, kind: KeyKind, key: &str) -> rusqlite::Result<()> {
    let target = conn
        .prepare_cached(
            "SELECT b.trial_id, b.generation = COALESCE(
                 (SELECT generation FROM generations WHERE service_provider = ?1 AND mvpd = ?2 AND key_kind = ?3), 0)
             FROM bindings b WHERE b.service_provider = ?1 AND b.mvpd = ?2 AND b.key_kind = ?3 AND b.key = ?4",
        )?
        .query_row(params![sp, mvpd, kind.code(), key], |row| {
            Ok(ResetTarget { trial_id: TrialId(row.get(0)?), counts: row.get(1)? })
        })
        .optional()?;
    match plan_reset(target) {
        ResetPlan::Nothing => {}
        ResetPlan::EndTrial(trial) => {
            conn.prepare_cached("DELETE FROM bindings WHERE trial_id = ?1")?.execute(params![trial.0])?;
            conn.prepare_cached("DELETE FROM trials WHERE id = ?1")?.execute(params![trial.0])?;
        }
        ResetPlan::DropStale(trial) => {
            conn.prepare_cached(
                "DELETE FROM bindings WHERE service_provider = ?1 AND mvpd = ?2 AND key_kind = ?3 AND key = ?4",
            )?
            .execute(params![sp, mvpd, kind.code(), key])?;
            delete_if_unbound(conn, trial.0)?;
        }
    }
    Ok(())
}

pub(crate) fn count_bindings(conn: &Connection) -> rusqlite::Result<usize> {
    conn.query_row("SELECT count(*) FROM bindings", [], |row| row.get::<_, i64>(0)).map(|n| n.max(0) as usize)
}

/// Puts every binding's key into `bound`, walking the bindings in primary-key
/// order a chunk per statement. `Ok(None)` when stopped before the end.
pub(crate) fn load_bound_keys(
    conn: &Connection,
    bound: &BoundKeys,
    stop_requested: impl Fn() -> bool,
) -> rusqlite::Result<Option<usize>> {
    const CHUNK: i64 = 10_000;
    let mut statement = conn.prepare(
        "SELECT service_provider, mvpd, key_kind, key FROM bindings
         WHERE (service_provider, mvpd, key_kind, key) > (?1, ?2, ?3, ?4)
         ORDER BY service_provider, mvpd, key_kind, key
         LIMIT ?5",
    )?;
    let mut last = (String::new(), String::new(), -1_i64, String::new());
    let mut keys = 0;
    loop {
        if stop_requested() {
            return Ok(None);
        }
        let mut rows = statement.query(params![last.0, last.1, last.2, last.3, CHUNK])?;
        let mut in_chunk = 0;
        while let Some(row) = rows.next()? {
            let (sp, mvpd, kind, key) =
                (row.get_ref(0)?.as_str()?, row.get_ref(1)?.as_str()?, row.get(2)?, row.get_ref(3)?.as_str()?);
            // A kind the schema does not have is left out: the filter is a hint (see `BoundKeys`).
            if let Some(kind) = KeyKind::from_code(kind) {
                bound.insert(sp, mvpd, kind, key);
            }
            in_chunk += 1;
            if in_chunk == CHUNK {
                last = (sp.to_owned(), mvpd.to_owned(), kind, key.to_owned());
            }
        }
        keys += in_chunk as usize;
        if in_chunk < CHUNK {
            return Ok(Some(keys));
        }
    }
}

/// Where the reclaiming walk over bindings stopped: the last primary key it saw.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReclaimCursor(Option<(String, String, i64, String)>);

/// Removes up to `budget` superseded bindings (and the trials only they found),
/// walking the bindings in primary-key order from `cursor`.
/// Returns `(bindings, trials, pass_complete)`.
pub(crate) fn reclaim_bindings(
    conn: &Connection,
    cursor: &mut ReclaimCursor,
    budget: usize,
) -> rusqlite::Result<(usize, usize, bool)> {
    let (sp, mvpd, kind, key) = cursor.0.clone().unwrap_or_else(|| (String::new(), String::new(), -1, String::new()));
    let rows: Vec<(String, String, i64, String, i64, i64, i64)> = conn
        .prepare_cached(
            "SELECT b.service_provider, b.mvpd, b.key_kind, b.key, b.generation, b.trial_id,
                    COALESCE(g.generation, 0)
             FROM bindings b LEFT JOIN generations g
               ON g.service_provider = b.service_provider AND g.mvpd = b.mvpd AND g.key_kind = b.key_kind
             WHERE (b.service_provider, b.mvpd, b.key_kind, b.key) > (?1, ?2, ?3, ?4)
             ORDER BY b.service_provider, b.mvpd, b.key_kind, b.key
             LIMIT ?5",
        )?
        .query_map(params![sp, mvpd, kind, key, budget as i64], |row| {
            Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?, row.get(5)?, row.get(6)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    let pass_complete = rows.len() < budget;
    let (mut bindings, mut trials) = (0, 0);
    for (sp, mvpd, kind, key, generation, trial, current) in &rows {
        if generation < current {
            bindings += conn
                .prepare_cached(
                    "DELETE FROM bindings WHERE service_provider = ?1 AND mvpd = ?2 AND key_kind = ?3 AND key = ?4",
                )?
                .execute(params![sp, mvpd, kind, key])?;
            trials += delete_if_unbound(conn, *trial)?;
        }
    }
    cursor.0 = if pass_complete { None } else { rows.last().map(|r| (r.0.clone(), r.1.clone(), r.2, r.3.clone())) };
    Ok((bindings, trials, pass_complete))
}
