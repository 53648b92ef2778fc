use super::*;

const T: Timing = Timing {
    propagation_delay: 5,
    key_lifetime: None,
    algorithm: DnssecAlgorithm::EcdsaP256Sha256,
};
const TTLS: Ttls = Ttls {
    max: 300,
    dnskey: 60,
};

fn key(tag: u16, algorithm: DnssecAlgorithm) -> KeyEntry {
    KeyEntry {
        file: format!("k{tag}"),
        algorithm,
        key_tag: tag,
        roles: KeyRoles::default(),
        created: 0,
    }
}

fn parent(has_new: bool, has_old: bool) -> ParentView {
    ParentView {
        checked_at: 0,
        ds: Vec::new(),
        has_new,
        has_old,
        ttl: 100,
        error: None,
    }
}

fn tick(s: &RollState, now: u64, served: bool, p: Option<ParentView>) -> RollState {
    step(
        s,
        &Event::Tick {
            served: if served {
                Ok(())
            } else {
                Err("secondary behind".into())
            },
            ttls: TTLS,
            parent: p,
        },
        &T,
        now,
    )
}

/// Runs a roll to the end, returning every state it went through; the parent swaps the DS
/// `parent_delay` seconds after the swap phase starts.
fn run_roll(algorithm: DnssecAlgorithm, parent_delay: u64) -> Vec<RollState> {
    let mut s = initial(key(1, DnssecAlgorithm::EcdsaP256Sha256), 0);
    let mut now = 10;
    s = step(&s, &Event::Requested { algorithm }, &T, now);
    let mut seen = vec![s.clone()];
    let mut swapped_at = None;
    for _ in 0..10_000 {
        now += 1;
        let a = action(&s, &T, TTLS, now);
        s = match a {
            Action::Generate { algorithm } => step(
                &s,
                &Event::Generated {
                    key: key(2, algorithm),
                },
                &T,
                now,
            ),
            Action::Apply => step(&s, &Event::Applied { serial: now as u32 }, &T, now),
            Action::NoteConfig => step(&s, &Event::ConfigSeen, &T, now),
            Action::Retire { file } => {
                assert_eq!(file, "k1");
                step(&s, &Event::Retired, &T, now)
            }
            Action::Wait { parent: ask, .. } => {
                let p = ask.then(|| {
                    let start = swapped_at.get_or_insert(now);
                    let swapped = now >= *start + parent_delay;
                    parent(swapped, !swapped)
                });
                tick(&s, now, true, p)
            }
        };
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        if matches!(s.phase, Phase::Stable) && s.keys.len() == 1 && s.keys[0].key_tag == 2 {
            return seen;
        }
    }
    panic!("the roll did not end: {s:?}");
}

fn phases(states: &[RollState]) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for s in states {
        if out.last() != Some(&s.phase.name()) {
            out.push(s.phase.name());
        }
    }
    out
}

#[test]
fn a_roll_goes_through_every_phase_in_order_and_waits_each_ttl() {
    let states = run_roll(DnssecAlgorithm::EcdsaP256Sha256, 50);
    assert_eq!(
        phases(&states),
        [
            "stable", "pre-sign", "publish", "swap-ds", "withdraw", "unsign", "stable"
        ]
    );
    let entered = |name: &str| {
        states
            .iter()
            .find(|s| s.phase.name() == name)
            .unwrap()
            .since
    };
    // Each wait: served (one tick after applying), then the TTL, then the delay.
    assert!(entered("publish") - entered("pre-sign") >= 300 + 5);
    assert!(entered("swap-ds") - entered("publish") >= 60 + 5);
    // The parent swaps 50 s after asking begins; then its DS TTL (100) and the delay.
    assert!(entered("withdraw") - entered("swap-ds") >= 50 + 100 + 5);
    assert!(entered("unsign") - entered("withdraw") >= 60 + 5);
}

/// Every combination a validator can hold across two adjacent phases (a DS set, a DNSKEY
/// RRset and an RRset's signatures, each from either phase, the DS also from the parent's
/// side of the swap) validates: a key of the DS is in the DNSKEY RRset and signed it, and the
/// RRset carries a signature of a key in that DNSKEY RRset.
#[test]
fn every_cached_combination_validates_during_a_roll() {
    for algorithm in [DnssecAlgorithm::EcdsaP256Sha256, DnssecAlgorithm::Ed25519] {
        let states = run_roll(algorithm, 30);
        let mut distinct: Vec<&RollState> = Vec::new();
        for s in &states {
            if distinct
                .last()
                .is_none_or(|l| l.phase.name() != s.phase.name())
            {
                distinct.push(s);
            }
        }
        let with = |s: &RollState, f: fn(&KeyRoles) -> bool| -> Vec<u16> {
            s.keys
                .iter()
                .filter(|k| f(&k.roles))
                .map(|k| k.key_tag)
                .collect()
        };
        // The DS the parent may serve while a phase is current.
        let parent_ds = |s: &RollState| -> Vec<Vec<u16>> {
            match s.phase {
                Phase::SwapDs { .. } => vec![vec![1], vec![2]],
                Phase::Withdraw | Phase::Unsign => vec![vec![2]],
                Phase::Stable if s.keys[0].key_tag == 2 => vec![vec![2]],
                _ => vec![vec![1]],
            }
        };
        for w in distinct.windows(2) {
            let (a, b) = (w[0], w[1]);
            let alg_of = |tag: u16| {
                a.keys
                    .iter()
                    .chain(&b.keys)
                    .find(|e| e.key_tag == tag)
                    .unwrap()
                    .algorithm
            };
            // A DS cached while `a` was current; at the end of the swap only the new one is
            // left (the swap ends a DS TTL after the parent served only it).
            let mut dss = parent_ds(b);
            dss.extend(match a.phase {
                Phase::SwapDs { .. } => vec![vec![2]],
                _ => parent_ds(a),
            });
            for ds in &dss {
                for dnskey_from in [a, b] {
                    let dnskeys = with(dnskey_from, |r| r.published);
                    let dnskey_signers = with(dnskey_from, |r| r.signs);
                    assert!(
                        ds.iter()
                            .any(|k| dnskeys.contains(k) && dnskey_signers.contains(k)),
                        "{algorithm:?}: DS {ds:?} with DNSKEY of {} ({dnskeys:?}, signed by {dnskey_signers:?}) between {} and {}",
                        dnskey_from.phase.name(),
                        a.phase.name(),
                        b.phase.name()
                    );
                    for rrset_from in [a, b] {
                        let sigs = with(rrset_from, |r| r.signs);
                        // RFC 4035 §2.2 (RFC 6781 §4.1.4): a signature of every algorithm in
                        // the DNSKEY RRset — which also means one of a key in it.
                        for k in &dnskeys {
                            assert!(
                                sigs.iter().any(|s| alg_of(*s) == alg_of(*k)),
                                "{algorithm:?}: RRset of {} signed by {sigs:?}, DNSKEY of {} {dnskeys:?}",
                                rrset_from.phase.name(),
                                dnskey_from.phase.name()
                            );
                        }
                        assert!(sigs.iter().any(|k| dnskeys.contains(k)));
                    }
                }
            }
        }
    }
}

#[test]
fn a_server_behind_holds_the_roll_and_says_why() {
    let mut s = initial(key(1, DnssecAlgorithm::EcdsaP256Sha256), 0);
    s = step(
        &s,
        &Event::Requested {
            algorithm: DnssecAlgorithm::EcdsaP256Sha256,
        },
        &T,
        1,
    );
    s = step(
        &s,
        &Event::Generated {
            key: key(2, DnssecAlgorithm::EcdsaP256Sha256),
        },
        &T,
        2,
    );
    assert_eq!(action(&s, &T, TTLS, 3), Action::Apply);
    s = step(&s, &Event::Applied { serial: 7 }, &T, 3);
    for now in 4..10_000 {
        s = tick(&s, now, false, None);
    }
    assert!(matches!(s.phase, Phase::PreSign));
    assert_eq!(s.held.as_deref(), Some("secondary behind"));
    s = tick(&s, 10_000, true, None);
    assert_eq!(s.served_at, Some(10_000));
    assert!(s.held.is_none());
}

#[test]
fn the_parent_not_swapping_holds_the_roll_before_the_old_key_goes() {
    let mut s = initial(key(1, DnssecAlgorithm::EcdsaP256Sha256), 0);
    s.keys.push(key(2, DnssecAlgorithm::EcdsaP256Sha256));
    s = enter(&s, next(&next(&Phase::PreSign)), 0);
    s = step(&s, &Event::Applied { serial: 1 }, &T, 0);
    for (now, p) in [
        (1, parent(false, true)),
        (1_000, parent(true, true)),
        (2_000, parent(false, false)),
    ] {
        s = tick(&s, now, true, Some(p));
        assert!(
            matches!(
                s.phase,
                Phase::SwapDs {
                    ds_seen_at: None,
                    ..
                }
            ),
            "{s:?}"
        );
        assert!(s.held.is_some());
    }
    assert!(s.held.as_deref().unwrap().contains("parent"));
    // Seen, then gone again: the TTL wait starts over.
    s = tick(&s, 3_000, true, Some(parent(true, false)));
    assert!(matches!(
        s.phase,
        Phase::SwapDs {
            ds_seen_at: Some(3_000),
            ds_ttl: 100
        }
    ));
    s = tick(&s, 3_050, true, Some(parent(true, true)));
    assert!(matches!(
        s.phase,
        Phase::SwapDs {
            ds_seen_at: None,
            ..
        }
    ));
    s = tick(&s, 3_060, true, Some(parent(true, false)));
    s = tick(&s, 3_060 + 100 + 4, true, Some(parent(true, false)));
    assert!(matches!(s.phase, Phase::SwapDs { .. }));
    s = tick(&s, 3_060 + 100 + 5, true, Some(parent(true, false)));
    assert!(matches!(s.phase, Phase::Withdraw));
}

#[test]
fn rolls_start_on_request_key_age_and_algorithm_change_only() {
    let s = initial(key(1, DnssecAlgorithm::EcdsaP256Sha256), 100);
    assert!(matches!(
        action(&s, &T, TTLS, 1_000_000),
        Action::Wait { deadline: None, .. }
    ));
    let aged = Timing {
        key_lifetime: Some(1_000),
        ..T
    };
    let mut s2 = s.clone();
    s2.keys[0].created = 100;
    assert_eq!(
        action(&s2, &aged, TTLS, 500),
        Action::Wait {
            deadline: Some(1_100),
            parent: false
        }
    );
    assert_eq!(
        action(&s2, &aged, TTLS, 1_100),
        Action::Generate {
            algorithm: DnssecAlgorithm::EcdsaP256Sha256
        }
    );
    let other = Timing {
        algorithm: DnssecAlgorithm::Ed25519,
        ..T
    };
    assert_eq!(
        action(&s, &other, TTLS, 200),
        Action::Generate {
            algorithm: DnssecAlgorithm::Ed25519
        }
    );
    // A generated key that is not wanted (no roll due) or has a tag in use changes nothing.
    let unwanted = step(
        &s,
        &Event::Generated {
            key: key(2, DnssecAlgorithm::EcdsaP256Sha256),
        },
        &T,
        300,
    );
    assert_eq!(unwanted, s);
    let state = step(
        &s,
        &Event::Requested {
            algorithm: DnssecAlgorithm::Ed25519,
        },
        &T,
        1,
    );
    let same_tag = step(
        &state,
        &Event::Generated {
            key: key(1, DnssecAlgorithm::Ed25519),
        },
        &T,
        2,
    );
    assert_eq!(same_tag, state);
}

#[test]
fn the_state_round_trips_through_json() {
    let states = run_roll(DnssecAlgorithm::Ed25519, 10);
    for s in states {
        let text = serde_json::to_string(&s).unwrap();
        let back: RollState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s, "{text}");
    }
}

#[test]
fn a_requested_algorithm_stays_until_the_config_changes() {
    let ecdsa = DnssecAlgorithm::EcdsaP256Sha256;
    let ed = DnssecAlgorithm::Ed25519;
    // Rolled to Ed25519 on request while the config says ECDSA: no roll back.
    let mut s = initial(key(2, ed), 0);
    s.config_algorithm = Some(ecdsa);
    assert!(matches!(action(&s, &T, TTLS, 10), Action::Wait { .. }));
    let to_ed = Timing { algorithm: ed, ..T };
    // Config now says Ed25519, which the key already has: noted, no roll.
    assert_eq!(action(&s, &to_ed, TTLS, 10), Action::NoteConfig);
    s = step(&s, &Event::ConfigSeen, &to_ed, 10);
    assert_eq!(s.config_algorithm, Some(ed));
    assert!(matches!(action(&s, &to_ed, TTLS, 11), Action::Wait { .. }));
    // And back to ECDSA in the config: a roll to it.
    assert_eq!(
        action(&s, &T, TTLS, 12),
        Action::Generate { algorithm: ecdsa }
    );
    // Before any roll, a key of another algorithm than the config's is rolled.
    let fresh = initial(key(3, ed), 0);
    assert_eq!(
        action(&fresh, &T, TTLS, 1),
        Action::Generate { algorithm: ecdsa }
    );
}

fn in_swap(now: u64) -> RollState {
    let mut s = initial(key(1, DnssecAlgorithm::EcdsaP256Sha256), 0);
    s.keys.push(key(2, DnssecAlgorithm::EcdsaP256Sha256));
    s = enter(&s, next(&next(&Phase::PreSign)), now);
    s = step(&s, &Event::Applied { serial: 1 }, &T, now);
    tick(&s, now, true, None)
}

#[test]
fn a_failed_parent_query_neither_restarts_nor_ends_the_ds_wait() {
    let mut s = in_swap(0);
    s = tick(&s, 10, true, Some(parent(true, false)));
    assert!(matches!(
        s.phase,
        Phase::SwapDs {
            ds_seen_at: Some(10),
            ..
        }
    ));
    let failed = ParentView {
        error: Some("parent server 192.0.2.53:53: timed out".into()),
        ..parent(false, false)
    };
    // A timeout keeps the time seen; after the wait, only a confirming answer moves on.
    s = tick(&s, 50, true, Some(failed.clone()));
    assert!(matches!(
        s.phase,
        Phase::SwapDs {
            ds_seen_at: Some(10),
            ..
        }
    ));
    assert!(s.held.as_deref().unwrap().contains("timed out"));
    s = tick(&s, 10 + 100 + 5, true, Some(failed));
    assert!(matches!(s.phase, Phase::SwapDs { .. }), "{s:?}");
    s = tick(&s, 10 + 100 + 6, true, None);
    assert!(
        matches!(s.phase, Phase::SwapDs { .. }),
        "no answer, no swap: {s:?}"
    );
    s = tick(&s, 10 + 100 + 7, true, Some(parent(true, false)));
    assert!(matches!(s.phase, Phase::Withdraw), "{s:?}");
}

#[test]
fn waits_use_the_largest_ttl_served_during_the_roll() {
    let mut s = initial(key(1, DnssecAlgorithm::EcdsaP256Sha256), 0);
    s.keys.push(key(2, DnssecAlgorithm::EcdsaP256Sha256));
    s = enter(&s, Phase::PreSign, 0);
    s = step(&s, &Event::Applied { serial: 1 }, &T, 0);
    let high = Ttls {
        max: 3_000,
        dnskey: 60,
    };
    s = step(
        &s,
        &Event::Tick {
            served: Ok(()),
            ttls: high,
            parent: None,
        },
        &T,
        1,
    );
    // The zone's TTLs are lowered: caches may still hold the old ones.
    s = tick(&s, 400, true, None);
    assert!(
        matches!(s.phase, Phase::PreSign),
        "moved on after the lowered TTL"
    );
    s = tick(&s, 1 + 3_000 + 5, true, None);
    assert!(matches!(s.phase, Phase::Publish));
}

#[test]
fn the_active_key_is_never_retired() {
    // A state in `unsign` with one key (damaged by hand): nothing is deleted.
    let mut s = initial(key(1, DnssecAlgorithm::EcdsaP256Sha256), 0);
    s.phase = Phase::Unsign;
    s.serial = Some(1);
    s.served_at = Some(1);
    assert!(!matches!(
        action(&s, &T, TTLS, 1_000),
        Action::Retire { .. }
    ));
    // A lifetime roll keeps an algorithm chosen by request.
    let mut ed = initial(key(3, DnssecAlgorithm::Ed25519), 0);
    ed.config_algorithm = Some(DnssecAlgorithm::EcdsaP256Sha256);
    let aged = Timing {
        key_lifetime: Some(100),
        ..T
    };
    assert_eq!(
        action(&ed, &aged, TTLS, 200),
        Action::Generate {
            algorithm: DnssecAlgorithm::Ed25519
        }
    );
}
