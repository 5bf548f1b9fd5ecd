//! Which keys may ever have been bound to a trial: a Bloom filter that lets a
//! store skip a lookup that can only find nothing.
//!
//! A store may answer an authorization that changes nothing from a read, and
//! write only when that read finds the keys unbound (see
//! [`crate::Plan::writes_nothing`]). For a first authorization the
//! read is wasted: the device was never seen. This filter says "never bound"
//! for a key it was never given, so the store can go straight to the write,
//! which checks every key again inside its own transaction anyway (by a
//! lookup, or, in PostgreSQL's first-use path, by an insert that fails on a
//! key that has a binding).
//!
//! The filter is a hint and no decision stands on it alone: a wrong "never
//! bound" costs a write that finds the trial and changes nothing (and, in
//! PostgreSQL, the failed first-use transaction before it); a wrong "may be
//! bound" (a false positive, about 1% at the planned size, or any key before
//! the store has loaded the keys it already holds) costs the read it would have
//! cost without the filter. Keys are never removed (a reset leaves them), which
//! only adds such false positives.
//!
//! Blocked layout: the bits of one key lie in one 64-byte block, so a test is
//! one cache line; bits are set with atomic `fetch_or`, so inserts and tests
//! run concurrently without a lock.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::{KeyKind, TrialLookup};

/// Bits planned per key: with [`BITS_PER_KEY_SET`] bits per key in 512-bit
/// blocks this gives about 1% false positives at the planned number of keys.
const BITS_PER_KEY: usize = 12;
const BITS_PER_KEY_SET: u32 = 6;
/// The largest filter: 64 MiB. Beyond 45 million keys false positives grow.
const MAX_BLOCKS: usize = (64 << 20) / 64;
/// The smallest filter (96 KiB): room for 64k keys.
const MIN_KEYS: usize = 1 << 16;

#[repr(align(64))]
struct Block([AtomicU64; 8]);

/// A concurrent Bloom filter of `(service provider, mvpd, key kind, key)`.
pub struct BoundKeys {
    blocks: Box<[Block]>,
    hasher: RandomState,
    /// False until the store has given every key it held when it opened.
    complete: AtomicBool,
}

impl std::fmt::Debug for BoundKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundKeys")
            .field("bytes", &(self.blocks.len() * 64))
            .field("complete", &self.complete.load(Ordering::Relaxed))
            .finish()
    }
}

impl BoundKeys {
    /// An empty filter planned for `keys` keys (at least 64k, at most 64 MiB of
    /// bits). Every key "may be bound" until [`BoundKeys::mark_complete`].
    pub fn with_capacity(keys: usize) -> Self {
        let blocks = (keys.max(MIN_KEYS).saturating_mul(BITS_PER_KEY) / 512).clamp(1, MAX_BLOCKS);
        let blocks = (0..blocks).map(|_| Block(Default::default())).collect();
        Self { blocks, hasher: RandomState::new(), complete: AtomicBool::new(false) }
    }

    /// The filter's size in bytes.
    pub fn bytes(&self) -> usize {
        self.blocks.len() * std::mem::size_of::<Block>()
    }

    /// The store has inserted every key it held; from now on "never bound" answers count.
    pub fn mark_complete(&self) {
        self.complete.store(true, Ordering::Release);
    }

    /// True once the store has inserted every key it held (see [`BoundKeys::mark_complete`]).
    pub fn is_complete(&self) -> bool {
        self.complete.load(Ordering::Acquire)
    }

    pub fn insert(&self, service_provider: &str, mvpd: &str, kind: KeyKind, key: &str) {
        let (block, bits) = self.locate(service_provider, mvpd, kind, key);
        for (word, mask) in block.0.iter().zip(bits) {
            if mask != 0 {
                word.fetch_or(mask, Ordering::Relaxed);
            }
        }
    }

    /// False only when the key was certainly never inserted.
    pub fn may_contain(&self, service_provider: &str, mvpd: &str, kind: KeyKind, key: &str) -> bool {
        if !self.is_complete() {
            return true;
        }
        let (block, bits) = self.locate(service_provider, mvpd, kind, key);
        block.0.iter().zip(bits).all(|(word, mask)| word.load(Ordering::Relaxed) & mask == mask)
    }

    /// Inserts every key of the lookup: call it before a write may bind them.
    pub fn insert_lookup(&self, lookup: TrialLookup<'_>) {
        let (sp, mvpd) = (lookup.scope.service_provider.as_str(), lookup.scope.mvpd.as_str());
        self.insert(sp, mvpd, KeyKind::Device, lookup.device.as_str());
        if let Some(identity) = lookup.identity {
            self.insert(sp, mvpd, KeyKind::Identity, identity.as_str());
        }
    }

    /// False when some key of the lookup was certainly never bound: then no
    /// read can find every key bound to one trial, and only a write can answer.
    pub fn may_all_be_bound(&self, lookup: TrialLookup<'_>) -> bool {
        let (sp, mvpd) = (lookup.scope.service_provider.as_str(), lookup.scope.mvpd.as_str());
        self.may_contain(sp, mvpd, KeyKind::Device, lookup.device.as_str())
            && lookup.identity.is_none_or(|identity| self.may_contain(sp, mvpd, KeyKind::Identity, identity.as_str()))
    }

    /// False when every key of the lookup was certainly never bound: then
    /// the lookup can only start a trial, unless another server bound a key
    /// meanwhile (which a write finds out).
    pub fn may_any_be_bound(&self, lookup: TrialLookup<'_>) -> bool {
        let (sp, mvpd) = (lookup.scope.service_provider.as_str(), lookup.scope.mvpd.as_str());
        self.may_contain(sp, mvpd, KeyKind::Device, lookup.device.as_str())
            || lookup.identity.is_some_and(|identity| self.may_contain(sp, mvpd, KeyKind::Identity, identity.as_str()))
    }

    /// The key's block and, per word of it, the bits it sets.
    fn locate(&self, service_provider: &str, mvpd: &str, kind: KeyKind, key: &str) -> (&Block, [u64; 8]) {
        let mut hasher = self.hasher.build_hasher();
        hasher.write(service_provider.as_bytes());
        hasher.write_u8(0xff);
        hasher.write(mvpd.as_bytes());
        hasher.write_u8(0xff);
        hasher.write_i64(i64::from(kind.code()));
        hasher.write(key.as_bytes());
        let hash = hasher.finish();
        // The high half picks the block (multiply-shift, no power of two
        // needed); the low half, spread by splitmix64's finaliser, picks
        // 9-bit positions inside it.
        let block = ((hash >> 32) * self.blocks.len() as u64) >> 32;
        let mut positions = spread(hash & 0xffff_ffff);
        let mut bits = [0u64; 8];
        for _ in 0..BITS_PER_KEY_SET {
            let position = (positions & 511) as usize;
            bits[position / 64] |= 1 << (position % 64);
            positions >>= 9;
        }
        (&self.blocks[block as usize], bits)
    }
}

fn spread(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(keys: usize) -> BoundKeys {
        let filter = BoundKeys::with_capacity(keys);
        for n in 0..keys {
            filter.insert("REF30", "TempPass", KeyKind::Device, &format!("device-{n}"));
        }
        filter.mark_complete();
        filter
    }

    #[test]
    fn every_inserted_key_may_be_bound() {
        let filter = full(200_000);
        assert!((0..200_000).all(|n| filter.may_contain("REF30", "TempPass", KeyKind::Device, &format!("device-{n}"))));
    }

    #[test]
    fn about_one_key_in_a_hundred_never_inserted_may_be_bound_when_the_filter_is_at_its_planned_size() {
        let filter = full(200_000);
        let false_positives = (0..100_000)
            .filter(|n| filter.may_contain("REF30", "TempPass", KeyKind::Device, &format!("other-{n}")))
            .count();
        assert!(false_positives < 2_500, "{false_positives} false positives in 100,000");
    }

    #[test]
    fn the_same_key_under_another_kind_scope_or_mvpd_is_another_key() {
        let filter = full(1);
        assert!(filter.may_contain("REF30", "TempPass", KeyKind::Device, "device-0"));
        assert!(!filter.may_contain("REF30", "TempPass", KeyKind::Identity, "device-0"));
        assert!(!filter.may_contain("REF31", "TempPass", KeyKind::Device, "device-0"));
        assert!(!filter.may_contain("REF30", "TempPass2", KeyKind::Device, "device-0"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        let filter = BoundKeys::with_capacity(1);
        filter.insert("ab", "c", KeyKind::Device, "k");
        filter.mark_complete();
        assert!(!filter.may_contain("a", "bc", KeyKind::Device, "k"));
    }

    #[test]
    fn until_marked_complete_every_key_may_be_bound() {
        let filter = BoundKeys::with_capacity(10);
        assert!(filter.may_contain("REF30", "TempPass", KeyKind::Device, "never-inserted"));
        filter.mark_complete();
        assert!(!filter.may_contain("REF30", "TempPass", KeyKind::Device, "never-inserted"));
    }

    #[test]
    fn keys_inserted_from_many_threads_at_once_are_all_found() {
        let filter = BoundKeys::with_capacity(80_000);
        std::thread::scope(|scope| {
            for thread in 0..8 {
                let filter = &filter;
                scope.spawn(move || {
                    for n in 0..10_000 {
                        filter.insert("REF30", "TempPass", KeyKind::Device, &format!("{thread}-{n}"));
                    }
                });
            }
        });
        filter.mark_complete();
        for thread in 0..8 {
            assert!((0..10_000).all(|n| filter.may_contain(
                "REF30",
                "TempPass",
                KeyKind::Device,
                &format!("{thread}-{n}")
            )));
        }
    }

    #[test]
    fn a_lookup_may_have_a_bound_key_when_any_of_its_keys_may_be_bound() {
        use temppass_core::{DeviceId, IdentityHash, MvpdId, RuleScope, ServiceProviderId, Timestamp};
        let scope = RuleScope {
            service_provider: ServiceProviderId::parse("REF30").expect("a valid service provider id"),
            mvpd: MvpdId::parse("flexibleTempPass").expect("a valid mvpd id"),
        };
        let (known, new) = (DeviceId::parse("known").expect("a valid device id"), DeviceId::parse("new"));
        let new = new.expect("a valid device id");
        let identity = IdentityHash::from_value("fan@example.com").expect("a valid identity");
        let filter = BoundKeys::with_capacity(10);
        filter.insert("REF30", "flexibleTempPass", KeyKind::Device, "known");
        filter.mark_complete();
        let lookup =
            |device, identity| TrialLookup { scope: &scope, device, identity, valid_since: Timestamp::from_millis(0) };

        let known_device_new_identity = lookup(&known, Some(&identity));
        assert!(filter.may_any_be_bound(known_device_new_identity));
        assert!(!filter.may_all_be_bound(known_device_new_identity));
        let all_new = lookup(&new, Some(&identity));
        assert!(!filter.may_any_be_bound(all_new));
        assert!(!filter.may_any_be_bound(lookup(&new, None)));
        assert!(filter.may_any_be_bound(lookup(&known, None)));
    }

    #[test]
    fn the_filter_is_bounded() {
        assert_eq!(BoundKeys::with_capacity(usize::MAX).bytes(), 64 << 20);
        assert_eq!(BoundKeys::with_capacity(0).bytes(), MIN_KEYS * BITS_PER_KEY / 8);
    }
}
