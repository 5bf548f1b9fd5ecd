//! What a batch's transaction writes for its plans: the statements, and
//! each plan's rows as their parameters.
//!
//! A plan (`temppass_store::Plan`) becomes [`Writes`]: the new trials of all
//! jobs go into one [`START_BATCH`] through [`NewTrials`], then each job's
//! other writes follow in its plan's order (its merge, its resources, its
//! bindings, its stale trials), so a job's start binds its keys before
//! anything they pointed to is deleted, and no two jobs write one row.

use temppass_core::TrialId;
use temppass_store::{AuthorizeOutcome, Plan, PlannedTrial, StoreError, plan};

use crate::batch::WriteJob;
use crate::connection::{Conn, Param};
use crate::lookup::Read;

/// [`START_BATCH`] and [`START_NEW_BATCH`], which differ only in what a key
/// that is bound already does: `$on_conflict`.
macro_rules! start_batch {
    ($on_conflict:literal) => {
        concat!(
            "
    WITH new AS MATERIALIZED (
        SELECT nextval('trials_id_seq') AS id, n.*
        FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::int[], $6::int[])
             WITH ORDINALITY AS n (sp, mvpd, started, expires, first, count, position)
    ), trial AS (
        INSERT INTO trials (id, service_provider, mvpd, started_at_ms, expires_at_ms, used_resources)
        OVERRIDING SYSTEM VALUE
        SELECT id, sp, mvpd, started, expires, ($7::text[])[first:first + count - 1] FROM new
    ), bound AS (
        INSERT INTO bindings (service_provider, mvpd, key_kind, key, generation, trial_id)
        SELECT new.sp, new.mvpd, k.kind, k.key, COALESCE(g.generation, 0), new.id
        FROM unnest($8::bigint[], $9::smallint[], $10::text[]) AS k (position, kind, key)
        JOIN new ON new.position = k.position
        LEFT JOIN LATERAL (
            SELECT x.generation FROM generations x
            WHERE x.service_provider = new.sp AND x.mvpd = new.mvpd AND x.key_kind = k.kind
            OFFSET 0) g ON true",
            $on_conflict,
            "
    )
    SELECT id FROM new ORDER BY position"
        )
    };
}

/// Starts the new trials of a batch's transaction and binds their keys, in
/// one statement. Its ten parameters are the columns of [`NewTrials`], one
/// array each (tokio-postgres binds arrays, not rows): per trial $1 service
/// provider, $2 mvpd, $3 started, $4 expires (ms), and its used resources,
/// `$6` of them from position `$5` (1-based) of $7; per key $8 its trial's
/// position (1-based) in $1, $9 its kind, $10 the key. Answers the new ids in
/// the order of $1.
///
/// The ids are drawn from the identity column's sequence first, so that each
/// is known to belong to its trial (`RETURNING` promises no order). Each
/// key's generation is a point probe, as in [`FIND_BATCH`].
pub(crate) const START_BATCH: &str = start_batch!(
    "
        ON CONFLICT (service_provider, mvpd, key_kind, key)
        DO UPDATE SET generation = excluded.generation, trial_id = excluded.trial_id"
);

/// [`START_BATCH`] for keys believed never bound: a key that has any row in
/// `bindings` after all (bound by another server, of an old generation, from
/// before a scheduled reset, moved by a merge) fails the statement with a
/// unique violation of `bindings_pkey`, and with it the transaction. A row
/// being deleted (background reclaiming) makes it wait for that delete,
/// within the lock timeout.
pub(crate) const START_NEW_BATCH: &str = start_batch!("");

/// Binds keys ($3 kinds, $4 keys) to trial $5 with the current generation.
pub(crate) const BIND: &str = "
    INSERT INTO bindings (service_provider, mvpd, key_kind, key, generation, trial_id)
    SELECT $1, $2, k.kind, k.key, COALESCE(g.generation, 0), $5
    FROM unnest($3::smallint[], $4::text[]) AS k (kind, key)
    LEFT JOIN generations g ON g.service_provider = $1 AND g.mvpd = $2 AND g.key_kind = k.kind
    ON CONFLICT (service_provider, mvpd, key_kind, key)
    DO UPDATE SET generation = excluded.generation, trial_id = excluded.trial_id";

const UPDATE_RESOURCES: &str = "UPDATE trials SET used_resources = $2 WHERE id = $1";
pub(crate) const MOVE_BINDINGS: &str = "UPDATE bindings SET trial_id = $1 WHERE trial_id = $2";
pub(crate) const DELETE_TRIAL: &str = "DELETE FROM trials WHERE id = $1";
/// Deletes those of the trials $1 that no binding points to; the caller holds their row locks.
pub(crate) const DELETE_UNBOUND: &str = "
    DELETE FROM trials t
    WHERE t.id = ANY($1::bigint[]) AND NOT EXISTS (SELECT 1 FROM bindings b WHERE b.trial_id = t.id)
    RETURNING t.id";

/// The write statements of a batch's transaction, prepared once per connection.
pub(crate) struct WriteStatements {
    pub(crate) start: tokio_postgres::Statement,
    pub(crate) start_new: tokio_postgres::Statement,
    bind: tokio_postgres::Statement,
    update_resources: tokio_postgres::Statement,
    move_bindings: tokio_postgres::Statement,
    delete_trial: tokio_postgres::Statement,
    delete_unbound: tokio_postgres::Statement,
}

impl WriteStatements {
    pub(crate) async fn prepare(conn: &mut Conn) -> Result<Self, StoreError> {
        Ok(Self {
            start: conn.prepare(START_BATCH).await?,
            start_new: conn.prepare(START_NEW_BATCH).await?,
            bind: conn.prepare(BIND).await?,
            update_resources: conn.prepare(UPDATE_RESOURCES).await?,
            move_bindings: conn.prepare(MOVE_BINDINGS).await?,
            delete_trial: conn.prepare(DELETE_TRIAL).await?,
            delete_unbound: conn.prepare(DELETE_UNBOUND).await?,
        })
    }
}

/// One job's plan and the parameters of its writes.
pub(crate) struct Writes<'a> {
    plan: Plan,
    service_provider: &'a str,
    mvpd: &'a str,
    /// The keys of `plan.bind`.
    kinds: Vec<i16>,
    keys: Vec<&'a str>,
    delete_if_unbound: Vec<i64>,
    merge: Option<(i64, i64)>,
    /// The trial's id and used resources: the kept trial's, or the new one's (id 0).
    trial_id: i64,
    resources: Vec<String>,
    started_ms: i64,
    expires_ms: i64,
}

impl<'a> Writes<'a> {
    pub(crate) fn new(job: &'a WriteJob, read: &Read) -> Result<Self, StoreError> {
        let lookup = job.request().lookup;
        let plan = plan(&read.found, job.request())?;
        let (kinds, keys) =
            plan.bind.iter().filter_map(|&kind| job.key(kind)).map(|(kind, key)| (kind.code(), key)).unzip();
        let (trial_id, resources, started_ms, expires_ms) = match &plan.trial {
            PlannedTrial::Keep(kept) => (kept.id.0, &kept.used_resources, 0, 0),
            PlannedTrial::Start(new) => {
                (0, &new.used_resources, new.started_at.as_millis(), new.expires_at.as_millis())
            }
        };
        Ok(Self {
            service_provider: lookup.scope.service_provider.as_str(),
            mvpd: lookup.scope.mvpd.as_str(),
            kinds,
            keys,
            delete_if_unbound: plan.delete_if_unbound.iter().map(|id| id.0).collect(),
            merge: plan.merge.map(|merge| (merge.survivor.0, merge.absorbed.0)),
            trial_id,
            resources: resources.iter().map(|r| r.as_str().to_owned()).collect(),
            started_ms,
            expires_ms,
            plan,
        })
    }

    /// The answer once committed; `started` is the id of the trial it started, if any.
    pub(crate) fn outcome(self, started: Option<TrialId>) -> Result<AuthorizeOutcome, StoreError> {
        self.plan.outcome(started)
    }

    fn starts(&self) -> bool {
        matches!(self.plan.trial, PlannedTrial::Start(_))
    }

    /// Appends this job's writes but its start (see [`NewTrials`]), in the plan's order.
    pub(crate) fn push<'p>(
        &'p self,
        s: &'p WriteStatements,
        writes: &mut Vec<(&'p tokio_postgres::Statement, Vec<Param<'p>>)>,
    ) {
        if let Some((survivor, absorbed)) = &self.merge {
            writes.push((&s.move_bindings, vec![survivor, absorbed]));
            writes.push((&s.delete_trial, vec![absorbed]));
        }
        if !self.starts() && self.plan.resources_changed {
            writes.push((&s.update_resources, vec![&self.trial_id, &self.resources]));
        }
        if !self.starts() && !self.keys.is_empty() {
            writes.push((&s.bind, vec![&self.service_provider, &self.mvpd, &self.kinds, &self.keys, &self.trial_id]));
        }
        if !self.delete_if_unbound.is_empty() {
            writes.push((&s.delete_unbound, vec![&self.delete_if_unbound]));
        }
    }
}

/// The trials a batch's transaction starts, with their keys: the parameters
/// of [`START_BATCH`], one array per column.
#[derive(Default)]
pub(crate) struct NewTrials<'p> {
    sps: Vec<&'p str>,
    mvpds: Vec<&'p str>,
    started_ms: Vec<i64>,
    expires_ms: Vec<i64>,
    first_resource: Vec<i32>,
    resource_count: Vec<i32>,
    resources: Vec<&'p str>,
    key_positions: Vec<i64>,
    kinds: Vec<i16>,
    keys: Vec<&'p str>,
}

impl<'p> NewTrials<'p> {
    /// Adds the trial `job` starts, if it starts one; answers the row of its id in [`START_BATCH`]'s answer.
    pub(crate) fn push(&mut self, job: &'p Writes<'_>) -> Option<usize> {
        if !job.starts() {
            return None;
        }
        let row = self.sps.len();
        self.sps.push(job.service_provider);
        self.mvpds.push(job.mvpd);
        self.started_ms.push(job.started_ms);
        self.expires_ms.push(job.expires_ms);
        // Positions in SQL arrays count from 1.
        self.first_resource.push(self.resources.len() as i32 + 1);
        self.resource_count.push(job.resources.len() as i32);
        self.resources.extend(job.resources.iter().map(String::as_str));
        for (kind, key) in job.kinds.iter().zip(&job.keys) {
            self.key_positions.push(row as i64 + 1);
            self.kinds.push(*kind);
            self.keys.push(key);
        }
        Some(row)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sps.is_empty()
    }

    pub(crate) fn params(&self) -> Vec<Param<'_>> {
        vec![
            &self.sps,
            &self.mvpds,
            &self.started_ms,
            &self.expires_ms,
            &self.first_resource,
            &self.resource_count,
            &self.resources,
            &self.key_positions,
            &self.kinds,
            &self.keys,
        ]
    }
}
