//! Differential test of `lock_many` and sessions against a reference model: random sequences of
//! all-or-nothing multi-key requests (try), single session requests, and drops, over a few keys,
//! checked step by step: the same outcome; on success every key held in the merged mode with a
//! token larger than any before for that key; on refusal nothing held changes (all or nothing);
//! and after every step each key's holders (by `inspect`) are exactly the model's, which the
//! compatibility matrix admits side by side.

use std::collections::HashMap;

use leasehold::compat::{compatible, join, Granule};
use leasehold::{FenceToken, LockError, LockManager, Mode};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// `lock_many(...).try_acquire()` (a session's when `session` is some).
    Many { keys: Vec<(u8, bool)>, session: Option<u8> },
    /// A single try of a session.
    One { key: u8, exclusive: bool, session: u8 },
    /// Drop the guard (or guard set) at this index.
    Drop { idx: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (proptest::collection::vec((0_u8..4, any::<bool>()), 0..5), proptest::option::of(0_u8..2))
            .prop_map(|(keys, session)| Op::Many { keys, session }),
        2 => (0_u8..4, any::<bool>(), 0_u8..2).prop_map(|(key, exclusive, session)| Op::One { key, exclusive, session }),
        3 => any::<usize>().prop_map(|idx| Op::Drop { idx }),
    ]
}

fn granule(exclusive: bool) -> Granule {
    if exclusive {
        Granule::X
    } else {
        Granule::S
    }
}

/// The model: for each live guard (set), the keys and modes it holds.
#[derive(Default)]
struct Model {
    held: Vec<Vec<(u8, Granule)>>,
    last_token: HashMap<u8, FenceToken>,
}

impl Model {
    fn holders(&self, key: u8) -> Vec<Granule> {
        self.held.iter().flatten().filter(|(k, _)| *k == key).map(|(_, m)| *m).collect()
    }

    /// Merged, sorted keys; the outcome of a try.
    fn try_many(&self, keys: &[(u8, bool)]) -> (Vec<(u8, Granule)>, bool) {
        let mut merged: Vec<(u8, Granule)> = Vec::new();
        let mut sorted = keys.to_vec();
        sorted.sort_by_key(|(k, _)| *k);
        for (k, x) in sorted {
            match merged.last_mut() {
                Some(last) if last.0 == k => last.1 = join(last.1, granule(x)),
                _ => merged.push((k, granule(x))),
            }
        }
        let ok = merged.iter().all(|(k, m)| self.holders(*k).iter().all(|h| compatible(*h, *m)));
        (merged, ok)
    }
}

#[allow(dead_code)] // held only to be dropped
enum Live<'s, 'm> {
    Many(leasehold::ManyGuard<'s, 'm, u8>),
    One(leasehold::SessionGuard<'s, 'm, u8>),
}

fn mode(g: Granule) -> Mode {
    if g == Granule::X {
        Mode::Exclusive
    } else {
        Mode::Shared
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn lock_many_matches_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        let locks = LockManager::<u8>::new();
        let sessions = [locks.session("a"), locks.session("b")];
        // Each live entry is a guard set or a guard (dropping one releases it).
        let mut live: Vec<Live<'_, '_>> = Vec::new();
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Many { keys, session } => {
                    let (merged, ok) = model.try_many(&keys);
                    let request = keys.iter().map(|(k, x)| (k, if *x { Mode::Exclusive } else { Mode::Shared }));
                    let got = match session {
                        Some(s) => sessions[s as usize].lock_many(request).try_acquire(),
                        None => locks.lock_many(request).try_acquire(),
                    };
                    match got {
                        Ok(all) => {
                            prop_assert!(ok, "granted {keys:?} beside {:?}", model.held);
                            let got_keys: Vec<(u8, Mode)> = all.iter().map(|g| (*g.key(), g.mode())).collect();
                            let want: Vec<(u8, Mode)> = merged.iter().map(|(k, m)| (*k, mode(*m))).collect();
                            prop_assert_eq!(got_keys, want);
                            for g in all.iter() {
                                let k = *g.key();
                                if let Some(t) = model.last_token.get(&k) {
                                    prop_assert!(g.token() > *t, "token of {} did not grow", k);
                                }
                                model.last_token.insert(k, g.token());
                            }
                            model.held.push(merged);
                            live.push(Live::Many(all));
                        }
                        Err(LockError::WouldBlock) => prop_assert!(!ok, "refused {keys:?} beside {:?}", model.held),
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
                Op::One { key, exclusive, session } => {
                    let ok = model.holders(key).iter().all(|h| compatible(*h, granule(exclusive)));
                    let s = &sessions[session as usize];
                    let got = if exclusive { s.exclusive(&key).try_acquire() } else { s.shared(&key).try_acquire() };
                    match got {
                        Ok(g) => {
                            prop_assert!(ok);
                            if let Some(t) = model.last_token.get(&key) {
                                prop_assert!(g.token() > *t);
                            }
                            model.last_token.insert(key, g.token());
                            model.held.push(vec![(key, granule(exclusive))]);
                            live.push(Live::One(g));
                        }
                        Err(LockError::WouldBlock) => prop_assert!(!ok),
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
                Op::Drop { idx } => {
                    if !live.is_empty() {
                        let i = idx % live.len();
                        drop(live.swap_remove(i));
                        model.held.swap_remove(i);
                    }
                }
            }
            for key in 0..4_u8 {
                let mut want: Vec<Mode> = model.holders(key).into_iter().map(mode).collect();
                let mut got: Vec<Mode> = locks.inspect(&key).map(|i| i.holders.iter().map(|h| h.mode).collect()).unwrap_or_default();
                want.sort_by_key(|m| format!("{m}"));
                got.sort_by_key(|m| format!("{m}"));
                prop_assert_eq!(got, want, "holders of {}", key);
                let hs = model.holders(key);
                for (i, a) in hs.iter().enumerate() {
                    for b in &hs[i + 1..] {
                        prop_assert!(compatible(*a, *b));
                    }
                }
            }
        }
        // The session guards borrow the sessions: release them first.
        drop(live);
    }
}
