//! Loom models of leasehold, through its public API. The models live in `tests/`; this crate has
//! no code of its own.
//!
//! Run them (release mode: they run hundreds of thousands of executions):
//!
//! ```text
//! cd loom-tests
//! RUSTFLAGS="--cfg leasehold_loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release
//! ```
//!
//! | file | model | invariant |
//! |---|---|---|
//! | `exclusion.rs` | `exclusive_holders_never_overlap` | two exclusive holders never overlap, and each sees the other's writes |
//! | | `writer_never_beside_a_reader` | two readers and a writer: never a writer beside a reader |
//! | | `semaphore_admits_at_most_its_permits` | three threads, two permits: never more than two holders |
//! | | `capacity_change_never_admits_beside_exclusive` | a semaphore request reshaping an idle key never holds beside an exclusive holder |
//! | `wakeup.rs` | `release_wakes_a_parked_waiter` | a plain release wakes a thread parked in `acquire()` |
//! | | `leased_release_wakes_a_parked_waiter` | the same through a managed (leased) release |
//! | | `writer_release_wakes_every_waiting_reader` | a writer's release wakes both waiting readers |
//! | `expiry.rs` | `release_races_expiry_one_winner` | release xor `expire_due` ends the holding; its unit comes back once |
//! | | `renew_races_expiry_one_winner` | a renewal either wins (and the lease still expires later) or fails `Expired` |
//! | | `expiry_wakes_a_parked_waiter` | an expiry wakes a thread parked in `acquire()` |
//! | `keepalive.rs` | `renewal_races_release` | the shared renewer's renewal and the guard's release: the release always succeeds, no renewal after it (per-holding counter) |
//! | | `renewal_races_expiry` | a keep-alive renewal and expiry at the deadline: one compare-exchange decides; the loser's side agrees (loss signal fired iff expired) |
//! | `reclaim.rs` | `tokens_grow_across_reclamation` | tokens strictly increase across reclamation and re-creation |
//! | | `acquire_racing_reclamation_holds_a_live_slot` | readers racing the reclamation of the key's slot hold one live slot |
//! | `many.rs` | `overlapping_lock_many_never_deadlocks` | two `lock_many` calls naming two keys in opposite orders both finish, never holding both keys at once |
//!
//! Models use a manager with one shard, a manual clock, no reaper (no background threads exist
//! under loom: models call `expire_due`) and a fixed-seed hasher (loom replays executions by
//! counting branch points, so a model must do the same thing each time it runs).
