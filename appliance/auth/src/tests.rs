//! Full exchanges between [`HostAuth`] and [`ControllerAuth`], and the bad cases.

use std::sync::Arc;

use crate::*;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:6e5e8a6e-0000-4000-8000-000000000001";
const SUB: &str = "nqn.2026-01.io.ferrite:auth";

fn ctrl(keys: &HostKeys, policy: AuthPolicy) -> ControllerAuth {
    ControllerAuth::new(HOST, SUB, Arc::new(keys.clone()), Arc::new(policy))
}

fn policy(hash: HashId, group: DhGroup) -> AuthPolicy {
    AuthPolicy {
        digests: vec![hash],
        dhgroups: vec![group],
    }
}

/// Runs one exchange; Ok(bidirectional success) or the host's error.
fn exchange(c: &mut ControllerAuth, h: &mut HostAuth) -> Result<bool, AuthError> {
    c.send(&h.negotiate());
    let reply = h.reply(&c.receive())?;
    c.send(&reply);
    match h.success1(&c.receive())? {
        Some(s2) => {
            c.send(&s2);
            Ok(true)
        }
        None => Ok(false),
    }
}

#[test]
fn every_hash_with_null_and_ffdhe2048_both_directions() {
    for hash in HashId::ALL {
        for group in [DhGroup::Null, DhGroup::Ffdhe2048] {
            for transform in [None, Some(hash)] {
                let keys = HostKeys {
                    host: DhchapKey::generate(hash.len(), transform).unwrap(),
                    ctrl: Some(DhchapKey::generate(32, Some(HashId::Sha256)).unwrap()),
                };
                // One-way.
                let mut c = ctrl(&keys, policy(hash, group));
                let mut h = HostAuth::new(HOST, SUB, keys.host.clone(), None, 1);
                assert!(!exchange(&mut c, &mut h).unwrap());
                assert!(c.is_authenticated(), "{hash} {group}");
                assert_eq!(c.state(), AuthState::Authenticated);
                assert_eq!(c.negotiated(), (hash, group));
                // Bidirectional.
                let mut c = ctrl(&keys, policy(hash, group));
                let mut h = HostAuth::new(HOST, SUB, keys.host.clone(), keys.ctrl.clone(), 2);
                assert!(exchange(&mut c, &mut h).unwrap());
                assert!(c.is_authenticated());
            }
        }
    }
}

#[test]
fn larger_groups_agree() {
    let keys = HostKeys {
        host: DhchapKey::generate(48, None).unwrap(),
        ctrl: Some(DhchapKey::generate(48, None).unwrap()),
    };
    for group in [
        DhGroup::Ffdhe3072,
        DhGroup::Ffdhe4096,
        DhGroup::Ffdhe6144,
        DhGroup::Ffdhe8192,
    ] {
        let mut c = ctrl(&keys, policy(HashId::Sha384, group));
        let mut h = HostAuth::new(HOST, SUB, keys.host.clone(), keys.ctrl.clone(), 9);
        assert!(exchange(&mut c, &mut h).unwrap(), "{group}");
        assert!(c.is_authenticated());
    }
}

#[test]
fn wrong_host_secret_is_refused_with_failure1() {
    let keys = HostKeys {
        host: DhchapKey::generate(32, None).unwrap(),
        ctrl: None,
    };
    let wrong = DhchapKey::generate(32, None).unwrap();
    let mut c = ctrl(&keys, AuthPolicy::default());
    let mut h = HostAuth::new(HOST, SUB, wrong, None, 1);
    let e = exchange(&mut c, &mut h).unwrap_err();
    assert!(
        matches!(e, AuthError::Refused(FailureReason::Failed)),
        "{e}"
    );
    assert!(!c.is_authenticated());
    assert_eq!(c.state(), AuthState::Failed(FailureReason::Failed));
    // Same secret, other host NQN: the transform and the response bind the NQN.
    let k = DhchapKey::generate(32, Some(HashId::Sha256)).unwrap();
    let keys = HostKeys {
        host: k.clone(),
        ctrl: None,
    };
    let mut c = ctrl(&keys, AuthPolicy::default());
    let mut h = HostAuth::new("nqn.2014-08.org.nvmexpress:uuid:other", SUB, k, None, 1);
    assert!(exchange(&mut c, &mut h).is_err());
}

#[test]
fn wrong_controller_secret_is_detected_by_the_host() {
    let keys = HostKeys {
        host: DhchapKey::generate(32, None).unwrap(),
        ctrl: Some(DhchapKey::generate(32, None).unwrap()),
    };
    let mut c = ctrl(&keys, AuthPolicy::default());
    let other = DhchapKey::generate(32, None).unwrap();
    let mut h = HostAuth::new(HOST, SUB, keys.host.clone(), Some(other), 1);
    let e = exchange(&mut c, &mut h).unwrap_err();
    assert!(matches!(e, AuthError::ControllerNotAuthenticated), "{e}");
    // The host reports it; the controller does not count the queue as authenticated.
    c.send(&h.failure2(&e));
    assert!(!c.is_authenticated());
    assert!(matches!(c.state(), AuthState::Failed(_)));
}

#[test]
fn bidirectional_without_a_controller_key_fails() {
    let keys = HostKeys {
        host: DhchapKey::generate(32, None).unwrap(),
        ctrl: None,
    };
    let mut c = ctrl(&keys, AuthPolicy::default());
    let mut h = HostAuth::new(
        HOST,
        SUB,
        keys.host.clone(),
        Some(DhchapKey::generate(32, None).unwrap()),
        1,
    );
    assert!(matches!(
        exchange(&mut c, &mut h),
        Err(AuthError::Refused(FailureReason::Failed))
    ));
}

#[test]
fn out_of_order_and_replayed_messages_are_refused() {
    let keys = HostKeys {
        host: DhchapKey::generate(32, None).unwrap(),
        ctrl: None,
    };
    let failure_of = |bytes: Vec<u8>| match Message::parse(&bytes).unwrap() {
        Message::Failure1(f) => FailureReason::from_code(f.explanation).unwrap(),
        m => panic!("expected Failure1, got {m:?}"),
    };
    // A Reply before any Negotiate.
    let mut c = ctrl(&keys, AuthPolicy::default());
    let mut h = HostAuth::new(HOST, SUB, keys.host.clone(), None, 1);
    let mut c2 = ctrl(&keys, AuthPolicy::default());
    c2.send(&h.negotiate());
    let reply = h.reply(&c2.receive()).unwrap();
    c.send(&reply);
    assert_eq!(failure_of(c.receive()), FailureReason::IncorrectMessage);
    // Receive with nothing due.
    let mut c = ctrl(&keys, AuthPolicy::default());
    assert_eq!(failure_of(c.receive()), FailureReason::IncorrectMessage);
    // The earlier Reply replayed against a fresh challenge: the response does not match.
    let mut c = ctrl(&keys, AuthPolicy::default());
    c.send(&h.negotiate());
    let _ = c.receive();
    c.send(&reply);
    assert_eq!(failure_of(c.receive()), FailureReason::Failed);
    // A replayed Reply after success.
    let mut c = ctrl(&keys, AuthPolicy::default());
    let mut h = HostAuth::new(HOST, SUB, keys.host.clone(), None, 4);
    c.send(&h.negotiate());
    let reply = h.reply(&c.receive()).unwrap();
    c.send(&reply);
    let _ = c.receive();
    assert!(c.is_authenticated());
    c.send(&reply);
    assert!(!c.is_authenticated());
    assert_eq!(failure_of(c.receive()), FailureReason::IncorrectMessage);
    // Wrong transaction id.
    let mut c = ctrl(&keys, AuthPolicy::default());
    let mut h = HostAuth::new(HOST, SUB, keys.host.clone(), None, 5);
    c.send(&h.negotiate());
    let mut reply = h.reply(&c.receive()).unwrap();
    reply[4] ^= 1;
    c.send(&reply);
    assert_eq!(failure_of(c.receive()), FailureReason::IncorrectPayload);
    // Garbage.
    let mut c = ctrl(&keys, AuthPolicy::default());
    c.send(&[1, 0x77, 0, 0, 0, 0]);
    assert_eq!(failure_of(c.receive()), FailureReason::IncorrectMessage);
}

#[test]
fn negotiation_failures_name_the_reason() {
    let keys = HostKeys {
        host: DhchapKey::generate(32, None).unwrap(),
        ctrl: None,
    };
    let mut h = HostAuth::new(HOST, SUB, keys.host.clone(), None, 1);
    h.digests = vec![HashId::Sha256];
    let mut c = ctrl(&keys, policy(HashId::Sha512, DhGroup::Null));
    c.send(&h.negotiate());
    assert_eq!(c.state(), AuthState::Failed(FailureReason::HashUnusable));
    h.digests = HashId::ALL.to_vec();
    h.dhgroups = vec![DhGroup::Ffdhe2048];
    let mut c = ctrl(&keys, policy(HashId::Sha512, DhGroup::Null));
    c.send(&h.negotiate());
    assert_eq!(c.state(), AuthState::Failed(FailureReason::DhGroupUnusable));
    assert!(matches!(
        h.reply(&c.receive()),
        Err(AuthError::Refused(FailureReason::DhGroupUnusable))
    ));
}

#[test]
fn reauthentication_keeps_the_queue_until_it_fails() {
    let keys = HostKeys {
        host: DhchapKey::generate(32, None).unwrap(),
        ctrl: None,
    };
    let mut c = ctrl(&keys, AuthPolicy::default());
    let mut h = HostAuth::new(HOST, SUB, keys.host.clone(), None, 1);
    exchange(&mut c, &mut h).unwrap();
    // Second exchange: authenticated throughout.
    let mut h = HostAuth::new(HOST, SUB, keys.host.clone(), None, 2);
    c.send(&h.negotiate());
    assert!(c.is_authenticated());
    let reply = h.reply(&c.receive()).unwrap();
    c.send(&reply);
    h.success1(&c.receive()).unwrap();
    assert!(c.is_authenticated());
    // Third, with a wrong key: the queue loses its authentication.
    let mut h = HostAuth::new(HOST, SUB, DhchapKey::generate(32, None).unwrap(), None, 3);
    assert!(exchange(&mut c, &mut h).is_err());
    assert!(!c.is_authenticated());
}
