//! Every error a caller can cause is a typed error, never a panic, a hang or a corrupted table.

use std::time::Duration;

use leasehold::{ConfigError, LockError, LockManager, MAX_PERMITS, MAX_TTL, MAX_UNITS};

#[test]
fn zero_and_too_many_permits() {
    let locks: LockManager<u64> = LockManager::new();
    assert_eq!(locks.semaphore(&1, 0).try_acquire().unwrap_err(), LockError::InvalidPermits { permits: 0 });
    assert_eq!(locks.semaphore(&1, 0).acquire().unwrap_err(), LockError::InvalidPermits { permits: 0 });
    let too_many = MAX_PERMITS + 1;
    assert_eq!(
        locks.semaphore(&1, too_many).try_acquire().unwrap_err(),
        LockError::InvalidPermits { permits: too_many }
    );
    assert!(locks.semaphore(&1, MAX_PERMITS).try_acquire().is_ok());
    assert_eq!(locks.slot_count(), 1, "a refused request creates no slot");
}

#[test]
fn conflicting_permit_counts_on_a_live_key() {
    let locks: LockManager<u64> = LockManager::new();
    let p = locks.semaphore(&1, 4).try_acquire().unwrap();
    assert_eq!(locks.semaphore(&1, 5).try_acquire().unwrap_err(), LockError::PermitMismatch { live: 4, requested: 5 });
    assert_eq!(
        locks.semaphore(&1, 5).acquire_timeout(Duration::from_secs(5)).unwrap_err(),
        LockError::PermitMismatch { live: 4, requested: 5 }
    );
    // A read/write key asked for as a semaphore.
    let w = locks.exclusive(&2).try_acquire().unwrap();
    assert_eq!(
        locks.semaphore(&2, 3).try_acquire().unwrap_err(),
        LockError::PermitMismatch { live: MAX_UNITS, requested: 3 }
    );
    // Once idle, a key takes whatever the next request says.
    drop((p, w));
    assert!(locks.semaphore(&1, 5).try_acquire().is_ok());
    assert!(locks.semaphore(&2, 3).try_acquire().is_ok());
}

#[test]
fn zero_and_overflowing_ttl() {
    let locks: LockManager<u64> = LockManager::new();
    for ttl in [Duration::ZERO, MAX_TTL + Duration::from_nanos(1), Duration::MAX] {
        assert_eq!(locks.exclusive(&1).lease(ttl).try_acquire().unwrap_err(), LockError::InvalidTtl { ttl });
        assert_eq!(locks.exclusive(&1).lease(ttl).acquire().unwrap_err(), LockError::InvalidTtl { ttl });
    }
    let g = locks.exclusive(&1).lease(MAX_TTL).try_acquire().unwrap();
    assert_eq!(g.renew(Duration::ZERO), Err(LockError::InvalidTtl { ttl: Duration::ZERO }));
    assert_eq!(g.renew(Duration::MAX), Err(LockError::InvalidTtl { ttl: Duration::MAX }));
    assert!(g.is_held(), "a refused renewal leaves the lease alone");
}

#[test]
fn capacity_is_an_error_and_the_table_stays_usable() {
    let locks: LockManager<u64> = LockManager::builder().shards(4).max_slots(8).build().unwrap();
    let held: Vec<_> = (0..8).map(|k| locks.exclusive(&k).try_acquire().unwrap()).collect();
    assert_eq!(locks.exclusive(&100).try_acquire().unwrap_err(), LockError::Capacity { max_slots: 8 });
    assert_eq!(locks.shared(&100).acquire().unwrap_err(), LockError::Capacity { max_slots: 8 });
    // Keys already in the table still work.
    assert_eq!(locks.exclusive(&3).try_acquire().unwrap_err(), LockError::WouldBlock);
    drop(held);
    // Released slots are reclaimed to make room.
    let fresh: Vec<_> = (100..108).map(|k| locks.exclusive(&k).try_acquire().unwrap()).collect();
    assert_eq!(fresh.len(), 8);
    assert!(locks.slot_count() <= 8);
}

#[test]
fn bad_configuration_is_a_config_error() {
    for shards in [0, 3, 100, 1 << 17] {
        assert_eq!(LockManager::<u64>::builder().shards(shards).build().unwrap_err(), ConfigError::Shards { shards });
    }
    assert_eq!(LockManager::<u64>::builder().max_slots(0).build().unwrap_err(), ConfigError::MaxSlots { max_slots: 0 });
    for tick in [Duration::ZERO, Duration::from_nanos(999), Duration::from_secs(2)] {
        assert_eq!(LockManager::<u64>::builder().tick(tick).build().unwrap_err(), ConfigError::Tick { tick });
    }
    assert!(LockManager::<u64>::builder().shards(1).tick(Duration::from_micros(1)).build().is_ok());
}

#[test]
fn would_block_timed_out_and_expired() {
    let locks: LockManager<u64> = LockManager::new();
    let g = locks.exclusive(&1).try_acquire().unwrap();
    assert_eq!(locks.exclusive(&1).try_acquire().unwrap_err(), LockError::WouldBlock);
    assert_eq!(locks.shared(&1).acquire_timeout(Duration::from_millis(3)).unwrap_err(), LockError::TimedOut);
    assert_eq!(locks.exclusive(&1).acquire_timeout(Duration::ZERO).unwrap_err(), LockError::TimedOut);
    drop(g);
    let clock = leasehold::ManualClock::new();
    let locks = LockManager::<u64>::builder().clock(clock.clone()).build().unwrap();
    let g = locks.exclusive(&1).lease(Duration::from_millis(1)).try_acquire().unwrap();
    clock.advance(Duration::from_millis(1));
    assert_eq!(g.renew(Duration::from_secs(1)), Err(LockError::Expired));
    assert_eq!(g.release(), Err(LockError::Expired));
}

#[test]
fn errors_read_as_sentences() {
    let msgs = [
        LockError::WouldBlock.to_string(),
        LockError::PermitMismatch { live: 4, requested: 5 }.to_string(),
        LockError::InvalidTtl { ttl: Duration::ZERO }.to_string(),
        ConfigError::Shards { shards: 3 }.to_string(),
    ];
    assert!(msgs[1].contains('4') && msgs[1].contains('5'));
    for m in msgs {
        assert!(m.len() > 10 && !m.contains("{"), "{m}");
    }
    let e: Box<dyn std::error::Error> = Box::new(LockError::TimedOut);
    assert!(e.to_string().contains("timed out"));
}
