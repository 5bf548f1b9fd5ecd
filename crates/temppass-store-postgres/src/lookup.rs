//! Reading the bindings of a lookup's keys into a [`Found`], for the read
//! path (`shared_reads.rs`) and the batch transaction (`batch_tx.rs`) alike.

use temppass_core::{ResourceId, Timestamp, Trial, TrialId};
use temppass_store::{Bound, Found, KeyKind, StoreError, TrialLookup};
use tokio_postgres::Row;

use crate::connection::Param;
use crate::to_store_error;

/// One branch of [`FIND`]: the binding of kind `$kind` whose key is parameter `$key`.
macro_rules! find_branch {
    ($kind:literal, $key:literal) => {
        concat!(
            "SELECT ",
            $kind,
            "::smallint AS kind, b.trial_id,
                    COALESCE(b.generation = COALESCE(g.generation, 0) AND t.started_at_ms >= $5, false) AS valid,
                    t.started_at_ms, t.expires_at_ms, t.used_resources
             FROM bindings b
             LEFT JOIN generations g ON g.service_provider = $1 AND g.mvpd = $2 AND g.key_kind = ",
            $kind,
            "
             LEFT JOIN trials t ON t.id = b.trial_id
             WHERE b.service_provider = $1 AND b.mvpd = $2 AND b.key_kind = ",
            $kind,
            " AND b.key = ",
            $key,
            "::text"
        )
    };
}

/// The bindings of a device and (optionally) an identity, whatever their
/// generation, with their trials: $1 service provider, $2 mvpd, $3 device id,
/// $4 identity hash or NULL, $5 valid since (ms). One statement: per key, one
/// primary-key probe into `bindings`, `generations` and `trials` each.
///
/// Each key is its own branch with the whole primary key bound, so every plan
/// PostgreSQL may cache for it — including a generic plan made while the
/// tables were nearly empty and never analyzed since — is a point probe. (A
/// join against a `VALUES` list of both keys was planned as a scan of every
/// binding of the service provider and MVPD, filtered by key: O(trials) per
/// request until an ANALYZE, found by `bench/load` on a database without autovacuum.)
pub(crate) const FIND: &str = concat!(find_branch!("0", "$3"), " UNION ALL ", find_branch!("1", "$4"));

fn decode_trial(id: i64, started_at_ms: i64, expires_at_ms: i64, used: Vec<String>) -> Result<Trial, StoreError> {
    let used_resources = used
        .iter()
        .map(|raw| {
            ResourceId::parse(raw).map_err(|e| StoreError::Internal(format!("trial {id}: resource {raw:?}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Trial {
        id: TrialId(id),
        started_at: Timestamp::from_millis(started_at_ms),
        expires_at: Timestamp::from_millis(expires_at_ms),
        used_resources,
    })
}

/// What [`FIND`] answers for the keys of one lookup.
#[derive(Debug, Default)]
pub(crate) struct Read {
    pub(crate) found: Found,
    /// The trials the bindings point to that exist. (A binding to a trial
    /// that is gone is what the locking rules prevent; such a binding finds nothing.)
    pub(crate) existing: Vec<TrialId>,
}

impl Read {
    pub(crate) fn from_rows(rows: &[Row]) -> Result<Self, StoreError> {
        let mut read = Self::default();
        for row in rows {
            read.add(row, 0)?;
        }
        Ok(read)
    }

    /// Adds the binding of `row`, whose [`FIND`] columns start at `first`.
    pub(crate) fn add(&mut self, row: &Row, first: usize) -> Result<(), StoreError> {
        let kind: i16 = row.try_get(first).map_err(to_store_error)?;
        let trial_id: i64 = row.try_get(first + 1).map_err(to_store_error)?;
        let valid: bool = row.try_get(first + 2).map_err(to_store_error)?;
        let started: Option<i64> = row.try_get(first + 3).map_err(to_store_error)?;
        let expires: Option<i64> = row.try_get(first + 4).map_err(to_store_error)?;
        let used: Option<Vec<String>> = row.try_get(first + 5).map_err(to_store_error)?;
        let trial = match (started, expires, used) {
            (Some(started), Some(expires), Some(used)) => Some(decode_trial(trial_id, started, expires, used)?),
            _ => None,
        };
        if trial.is_some() {
            self.existing.push(TrialId(trial_id));
        }
        let kind = KeyKind::from_code(i64::from(kind))
            .ok_or_else(|| StoreError::Internal(format!("a binding of key kind {kind}")))?;
        self.found.set(kind, Bound { trial_id: TrialId(trial_id), current: trial.filter(|_| valid) });
        Ok(())
    }
}

/// The parameters of [`FIND`].
struct LookupParams<'a> {
    service_provider: &'a str,
    mvpd: &'a str,
    device: &'a str,
    identity: Option<&'a str>,
    valid_since_ms: i64,
}

impl<'a> LookupParams<'a> {
    fn new(lookup: TrialLookup<'a>) -> Self {
        Self {
            service_provider: lookup.scope.service_provider.as_str(),
            mvpd: lookup.scope.mvpd.as_str(),
            device: lookup.device.as_str(),
            identity: lookup.identity.map(|i| i.as_str()),
            valid_since_ms: lookup.valid_since.as_millis(),
        }
    }

    fn all(&self) -> [Param<'_>; 5] {
        [&self.service_provider, &self.mvpd, &self.device, &self.identity, &self.valid_since_ms]
    }
}

/// The bindings of a lookup's keys: one statement, on a connection that other
/// reads share (see `shared_reads.rs`); `find` is [`FIND`] prepared on it.
pub(crate) async fn find(
    client: &tokio_postgres::Client,
    find: &tokio_postgres::Statement,
    lookup: TrialLookup<'_>,
) -> Result<Found, StoreError> {
    let params = LookupParams::new(lookup);
    let rows = client.query(find, &params.all()).await.map_err(to_store_error)?;
    Ok(Read::from_rows(&rows)?.found)
}
