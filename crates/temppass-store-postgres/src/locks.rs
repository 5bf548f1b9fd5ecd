//! The lock order of every write transaction, stated once, and the numbers
//! of its advisory locks.
//!
//! Several servers write at once, so every write transaction takes its locks
//! in one global order, which rules out lock cycles between them:
//!
//! 1. shared advisory locks on the generations it reads (an "all" reset takes
//!    one exclusively, so it waits for the authorizations in flight and they
//!    never bind with a generation that is being superseded);
//! 2. exclusive advisory locks on its lookup keys, sorted (two first
//!    authorizations of one key queue here; the second then finds the trial,
//!    or, if it took the first-use path, fails on the key's binding and runs
//!    again to find it);
//! 3. `FOR UPDATE` row locks on the trials those keys point to, sorted by id.
//!
//! Rule that makes the row locks enough: the set of bindings pointing to a
//! trial changes only under that trial's row lock (bind, merge, reset,
//! reclaim all take it). So once a transaction holds the rows, a statement
//! started after that reads bindings that nobody else can change until it
//! commits. A key's binding can still move between the read that chose the
//! rows and the lock (a concurrent merge); the transaction reads again after
//! locking and starts over when a key now points to a trial it did not lock.
//!
//! First uses on keys this server never saw bound take no row locks and read
//! nothing (see `batch_tx.rs`): what makes that safe is the unique index of
//! `bindings`. Their plain insert fails on any row of their keys, whatever its
//! generation or trial, and once it has succeeded no other transaction can
//! insert those keys before they commit.

use std::time::Duration;

use temppass_core::RuleScope;
use temppass_store::KeyKind;

/// How long a batch's transaction waits for a lock before it gives up: its
/// authorizations then run one by one, and one that still cannot get its
/// lock runs last, alone, waiting as long as its statements may. One
/// contended key must not hold back, or fail, the unrelated authorizations
/// batched with it.
pub(crate) const BATCH_LOCK_TIMEOUT: Duration = Duration::from_millis(200);

/// The locks of an authorization in one statement: the generations' shared
/// ($1), then the keys' exclusive ($2). An `Append` runs its branches in
/// order and `unnest` yields each array in order, so the global lock order
/// holds; the lock functions are `PARALLEL RESTRICTED`, so no Parallel Append
/// can run the branches side by side.
pub(crate) const LOCK_SHARED_THEN_EXCLUSIVE: &str = "
    SELECT pg_advisory_xact_lock_shared(k) FROM unnest($1::bigint[]) AS k
    UNION ALL
    SELECT pg_advisory_xact_lock(k) FROM unnest($2::bigint[]) AS k";

/// Exclusive key locks ($1), taken in the (sorted) order given: `unnest` yields the array in order.
pub(crate) const LOCK_EXCLUSIVE: &str = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k";

/// Locks, in id order, the trials that the keys of a batch point to: $1
/// service providers, $2 mvpds, $3 key kinds, $4 keys, one element per key.
/// Each key is a correlated probe of `bindings` by its whole primary key, not
/// a join: a join against the keys may be planned as a scan of every binding
/// (see `lookup::FIND`).
pub(crate) const LOCK_BATCH_TRIALS: &str = "
    SELECT t.id FROM trials t
    WHERE t.id = ANY(ARRAY(
        SELECT (SELECT b.trial_id FROM bindings b
                WHERE b.service_provider = k.sp AND b.mvpd = k.mvpd AND b.key_kind = k.kind AND b.key = k.key)
        FROM unnest($1::text[], $2::text[], $3::smallint[], $4::text[]) AS k (sp, mvpd, kind, key)))
    ORDER BY t.id
    FOR UPDATE OF t";

/// Locks the trials $1, in id order.
pub(crate) const LOCK_TRIAL_IDS: &str = "SELECT id FROM trials WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE";

/// Locks the trial one key ($1 service provider, $2 mvpd, $3 kind, $4 key) points to.
pub(crate) const LOCK_KEY_TRIAL: &str = "
    SELECT t.id FROM trials t
    WHERE t.id IN (SELECT trial_id FROM bindings
                   WHERE service_provider = $1 AND mvpd = $2 AND key_kind = $3 AND key = $4)
    ORDER BY t.id
    FOR UPDATE OF t";

/// A 64-bit FNV-1a hash: the same on every server, unlike std's seeded
/// hasher. Each part is length-prefixed so no two key tuples share an input.
/// A collision only makes two unrelated keys wait for each other.
fn lock_key(parts: &[&[u8]]) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in (part.len() as u64).to_le_bytes().iter().chain(part.iter()) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash as i64
}

/// The advisory lock of the generation of `(scope, kind)`: shared by authorizations, exclusive for "reset all".
pub(crate) fn generation_lock(scope: &RuleScope, kind: KeyKind) -> i64 {
    let sp = scope.service_provider.as_str().as_bytes();
    lock_key(&[b"generation", sp, scope.mvpd.as_str().as_bytes(), &[kind.code() as u8]])
}

/// The advisory lock of one key.
pub(crate) fn key_lock(scope: &RuleScope, kind: KeyKind, key: &str) -> i64 {
    let sp = scope.service_provider.as_str().as_bytes();
    lock_key(&[b"binding", sp, scope.mvpd.as_str().as_bytes(), &[kind.code() as u8], key.as_bytes()])
}

/// Lock numbers (or trial ids) in the order they are taken: ascending, each once.
pub(crate) fn sorted(mut keys: Vec<i64>) -> Vec<i64> {
    keys.sort_unstable();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_numbers_are_the_same_on_every_server_and_keep_their_parts_apart() {
        // Fixed by FNV-1a: a change would make two versions of temppass in one cluster lock different numbers.
        assert_eq!(lock_key(&[b"binding", b"a"]), lock_key(&[b"binding", b"a"]));
        assert_ne!(lock_key(&[b"ab", b"c"]), lock_key(&[b"a", b"bc"]));
        assert_eq!(lock_key(&[]), 0xcbf2_9ce4_8422_2325_u64 as i64);
    }
}
