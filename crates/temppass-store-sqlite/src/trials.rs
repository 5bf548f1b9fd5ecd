//! Trials, bindings and generations in SQL (SPEC.md §2 and §7).
//!
//! A trial is found through a binding `(service provider, mvpd, key kind, key) → trial`.
//! A binding counts only while its generation equals the current generation of
//! its `(service provider, mvpd, key kind)`; "reset all" bumps that number.
//! The decision itself is `temppass_core::authorize`; this module only loads
//! and stores.

use rusqlite::{Connection, OptionalExtension, params};
use temppass_core::{
    AuthorizeVerdict, ResourceId, Rule, RuleScope, Timestamp, Trial, TrialId, TrialUpdate, authorize as decide, merge,
};
use temppass_store::{AuthorizeOutcome, BoundKeys, FoundTrials, StoreError, TrialLookup};

use crate::to_store_error;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Device = 0,
    Identity = 1,
}

// The filter of bound keys is loaded from `bindings.key_kind`: the codes must agree.
const _: () = assert!(
    KeyKind::Device as i64 == temppass_store::DEVICE_KEY && KeyKind::Identity as i64 == temppass_store::IDENTITY_KEY
);

/// The trial bound to one key of a lookup, of kind `$kind` and bound as
/// `$key` (?3 the device, ?4 the identity): ?1 service provider, ?2 mvpd, ?5 valid since.
macro_rules! find_branch {
    ($kind:literal, $key:literal) => {
        concat!(
            "SELECT ",
            $kind,
            ", t.id, t.started_at_ms, t.expires_at_ms, t.used_resources
             FROM bindings b JOIN trials t ON t.id = b.trial_id
             WHERE b.service_provider = ?1 AND b.mvpd = ?2 AND b.key_kind = ",
            $kind,
            " AND b.key = ",
            $key,
            "
               AND b.generation = COALESCE(
                     (SELECT generation FROM generations
                      WHERE service_provider = ?1 AND mvpd = ?2 AND key_kind = ",
            $kind,
            "), 0)
               AND t.started_at_ms >= ?5"
        )
    };
}

/// The trial bound to a lookup's device: ?1 service provider, ?2 mvpd, ?3
/// device, ?5 valid since (?4, the identity, is not used).
const FIND_DEVICE: &str = find_branch!("0", "?3");

/// The trials bound to a lookup's device and identity, in one statement so
/// one snapshot (and one read lock) answers for both: ?4 is the identity.
const FIND_BOTH: &str = concat!(find_branch!("0", "?3"), " UNION ALL ", find_branch!("1", "?4"));

/// A trial from a row of [`FIND_BOTH`] or [`FIND_DEVICE`]: its columns 1 to 4.
fn trial_from(row: &rusqlite::Row<'_>) -> rusqlite::Result<Trial> {
    let used: String = row.get(4)?;
    Ok(Trial {
        id: TrialId(row.get(1)?),
        started_at: Timestamp::from_millis(row.get(2)?),
        expires_at: Timestamp::from_millis(row.get(3)?),
        used_resources: decode_resources(&used)?,
    })
}

fn decode_resources(json: &str) -> rusqlite::Result<Vec<ResourceId>> {
    let raw: Vec<String> = serde_json::from_str(json)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))?;
    raw.iter()
        .map(|r| {
            ResourceId::parse(r)
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, Box::new(e)))
        })
        .collect()
}

fn encode_resources(resources: &[ResourceId]) -> String {
    let raw: Vec<&str> = resources.iter().map(ResourceId::as_str).collect();
    serde_json::Value::from(raw).to_string()
}

pub(crate) fn find(conn: &Connection, lookup: TrialLookup<'_>) -> rusqlite::Result<FoundTrials> {
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
    let mut found = FoundTrials { by_device: None, by_identity: None };
    while let Some(row) = rows.next()? {
        let trial = trial_from(row)?;
        if row.get::<_, i64>(0)? == KeyKind::Device as i64 {
            found.by_device = Some(trial);
        } else {
            found.by_identity = Some(trial);
        }
    }
    Ok(found)
}

/// Answers an authorization that changes nothing (every key bound to one
/// trial, and the resource needs no new slot), or `None` when a write is needed.
pub(crate) fn authorize_without_write(
    conn: &Connection,
    lookup: TrialLookup<'_>,
    rule: &Rule,
    resource: &ResourceId,
    now: Timestamp,
) -> rusqlite::Result<Option<AuthorizeOutcome>> {
    Ok(find(conn, lookup)?.answer_without_write(lookup.identity.is_some(), rule, resource, now))
}

/// The whole authorization inside the writer's transaction: find, merge, decide, record, bind.
pub(crate) fn authorize(
    conn: &Connection,
    lookup: TrialLookup<'_>,
    rule: &Rule,
    resource: &ResourceId,
    now: Timestamp,
) -> Result<AuthorizeOutcome, StoreError> {
    let found = find(conn, lookup).map_err(to_store_error)?;
    let device_trial = found.by_device.as_ref().map(|t| t.id);
    let identity_trial = found.by_identity.as_ref().map(|t| t.id);
    let mut trial = match (found.by_device, found.by_identity) {
        (Some(a), Some(b)) if a.id != b.id => {
            let (survivor, absorbed) = merge(a, b);
            absorb(conn, &survivor, &absorbed).map_err(to_store_error)?;
            Some(survivor)
        }
        (a, b) => a.or(b),
    };
    let verdict = decide(rule, trial.as_ref(), resource, now);
    let decision = match verdict {
        AuthorizeVerdict::Deny(reason) => Err(reason),
        AuthorizeVerdict::Permit(TrialUpdate::Unchanged) => Ok(()),
        AuthorizeVerdict::Permit(TrialUpdate::Start { started_at, expires_at, used_resources }) => {
            let id =
                insert_trial(conn, lookup.scope, started_at, expires_at, &used_resources).map_err(to_store_error)?;
            trial = Some(Trial { id, started_at, expires_at, used_resources });
            Ok(())
        }
        AuthorizeVerdict::Permit(TrialUpdate::AddResource(resource)) => {
            let Some(current) = trial.as_mut() else {
                return Err(StoreError::Internal("a resource was added to no trial".into()));
            };
            current.used_resources.push(resource);
            update_resources(conn, current).map_err(to_store_error)?;
            Ok(())
        }
    };
    if let Some(trial) = &trial {
        if device_trial != Some(trial.id) {
            bind(conn, lookup.scope, KeyKind::Device, lookup.device.as_str(), trial.id).map_err(to_store_error)?;
        }
        if let Some(identity) = lookup.identity.filter(|_| identity_trial != Some(trial.id)) {
            bind(conn, lookup.scope, KeyKind::Identity, identity.as_str(), trial.id).map_err(to_store_error)?;
        }
    }
    Ok(AuthorizeOutcome { decision, trial })
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

/// Moves every binding of `absorbed` to `survivor` and drops `absorbed`.
fn absorb(conn: &Connection, survivor: &Trial, absorbed: &Trial) -> rusqlite::Result<()> {
    update_resources(conn, survivor)?;
    conn.prepare_cached("UPDATE bindings SET trial_id = ?1 WHERE trial_id = ?2")?
        .execute(params![survivor.id.0, absorbed.id.0])?;
    conn.prepare_cached("DELETE FROM trials WHERE id = ?1")?.execute(params![absorbed.id.0])?;
    Ok(())
}

/// Binds a key to a trial. A trial the key pointed to before (one that a
/// scheduled reset made absent) is deleted once nothing else finds it: lazy,
/// O(1) reclaiming on the path that made it garbage.
fn bind(conn: &Connection, scope: &RuleScope, kind: KeyKind, key: &str, trial: TrialId) -> rusqlite::Result<()> {
    let previous: Option<i64> = conn
        .prepare_cached(
            "SELECT trial_id FROM bindings WHERE service_provider = ?1 AND mvpd = ?2 AND key_kind = ?3 AND key = ?4",
        )?
        .query_row(params![scope.service_provider.as_str(), scope.mvpd.as_str(), kind as i64, key], |row| row.get(0))
        .optional()?;
    conn.prepare_cached(
        "INSERT INTO bindings (service_provider, mvpd, key_kind, key, generation, trial_id)
         VALUES (?1, ?2, ?3, ?4, COALESCE(
             (SELECT generation FROM generations WHERE service_provider = ?1 AND mvpd = ?2 AND key_kind = ?3), 0), ?5)
         ON CONFLICT (service_provider, mvpd, key_kind, key)
         DO UPDATE SET generation = excluded.generation, trial_id = excluded.trial_id",
    )?
    .execute(params![scope.service_provider.as_str(), scope.mvpd.as_str(), kind as i64, key, trial.0])?;
    if let Some(previous) = previous.filter(|p| *p != trial.0) {
        delete_if_unbound(conn, previous)?;
    }
    Ok(())
}

fn delete_if_unbound(conn: &Connection, trial: i64) -> rusqlite::Result<usize> {
    conn.prepare_cached("DELETE FROM trials WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM bindings WHERE trial_id = ?1)")?
        .execute(params![trial])
}

/// Removes one binding (and its trial once nothing finds it), or all bindings of a kind in O(1).
pub(crate) fn reset(conn: &Connection, scope: &RuleScope, kind: KeyKind, key: Option<&str>) -> Result<(), StoreError> {
    let sp = scope.service_provider.as_str();
    let mvpd = scope.mvpd.as_str();
    let result = match key {
        None => conn
            .prepare_cached(
                "INSERT INTO generations (service_provider, mvpd, key_kind, generation) VALUES (?1, ?2, ?3, 1)
                 ON CONFLICT (service_provider, mvpd, key_kind) DO UPDATE SET generation = generation + 1",
            )
            .and_then(|mut s| s.execute(params![sp, mvpd, kind as i64]))
            .map(drop),
        Some(key) => reset_one(conn, sp, mvpd, kind, key),
    };
    result.map_err(to_store_error)
}

fn reset_one(conn: &Connection, sp: &str, mvpd: &str, kind: KeyKind, key: &str) -> rusqlite::Result<()> {
    let trial: Option<i64> = conn
        .prepare_cached(
            "DELETE FROM bindings WHERE service_provider = ?1 AND mvpd = ?2 AND key_kind = ?3 AND key = ?4
             RETURNING trial_id",
        )?
        .query_map(params![sp, mvpd, kind as i64, key], |row| row.get(0))?
        // Stepping to the end finishes the statement (see insert_trial).
        .collect::<rusqlite::Result<Vec<i64>>>()?
        .into_iter()
        .next();
    if let Some(trial) = trial {
        delete_if_unbound(conn, trial)?;
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
            bound.insert(sp, mvpd, kind, key);
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
