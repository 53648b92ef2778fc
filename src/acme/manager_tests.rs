//! Tests of the certificate manager's schedule and deployment decisions.
use super::*;

fn https_spec() -> CertSpec {
    CertSpec {
        name: "mta-sts.example.com".into(),
        challenge: ChallengeKind::Http01,
        role: Role::Https,
    }
}

fn mx_spec(dir: &Path) -> CertSpec {
    CertSpec {
        name: "mx1.example.com".into(),
        challenge: ChallengeKind::Http01,
        role: Role::Mx(Box::new(MxRole {
            deploy: Arc::new(Deploy {
                cert_file: dir.join("mx1.crt"),
                key_file: dir.join("mx1.key"),
                owner: None,
                cert_mode: 0o644,
                key_mode: 0o600,
                reload: vec![],
                reload_timeout: Duration::from_secs(5),
            }),
            verify: None,
            rollover: false,
        })),
    }
}

const STAGING: &str = "acme:https://acme-staging-v02.api.letsencrypt.org/directory";
const PRODUCTION: &str = "acme:https://acme-v02.api.letsencrypt.org/directory";

#[test]
fn switching_ca_orders_at_once_instead_of_waiting_for_the_old_renewal_time() {
    let in_60_days = unix(SystemTime::now()) + 60 * 86_400;
    let st = CertState {
        issuer: Some(STAGING.into()),
        next_attempt: Some(in_60_days),
        ..CertState::default()
    };
    let spec = https_spec();
    assert_eq!(due(&spec, &st, PRODUCTION, true, None), UNIX_EPOCH);
    // Same issuer: the renewal time stands.
    assert_eq!(due(&spec, &st, STAGING, true, None), from_unix(in_60_days));
    // A retry after a failure with the new issuer is honoured...
    let failed = CertState {
        attempts: 2,
        failed_issuer: Some(PRODUCTION.into()),
        next_attempt: Some(in_60_days),
        ..st.clone()
    };
    assert_eq!(
        due(&spec, &failed, PRODUCTION, true, None),
        from_unix(in_60_days)
    );
    // ...but not one scheduled for another issuer (the user switched CA to fix it).
    let failed_elsewhere = CertState {
        failed_issuer: Some(STAGING.into()),
        ..failed
    };
    assert_eq!(
        due(&spec, &failed_elsewhere, PRODUCTION, true, None),
        UNIX_EPOCH
    );
}

#[test]
fn lost_chain_is_ordered_at_once_instead_of_at_the_renewal_time() {
    let st = CertState {
        issuer: Some(PRODUCTION.into()),
        next_attempt: Some(unix(SystemTime::now()) + 86_400),
        ..CertState::default()
    };
    assert_eq!(due(&https_spec(), &st, PRODUCTION, false, None), UNIX_EPOCH);
}

#[test]
fn changed_mx_deployment_target_is_deployed_at_once_not_at_next_renewal() {
    let dir = tempfile::tempdir().unwrap();
    let spec = mx_spec(dir.path());
    let Role::Mx(mx) = &spec.role else {
        unreachable!()
    };
    let d = &mx.deploy;
    std::fs::write(&d.cert_file, "CHAIN").unwrap();
    std::fs::write(&d.key_file, "KEY").unwrap();
    let renewal = unix(SystemTime::now()) + 86_400;
    let st = CertState {
        issuer: Some(PRODUCTION.into()),
        next_attempt: Some(renewal),
        deployed: Some(deployment_fingerprint(d, "CHAIN")),
        ..CertState::default()
    };
    assert_eq!(
        due(&spec, &st, PRODUCTION, true, Some("CHAIN")),
        from_unix(renewal)
    );
    // The config now names another file: deploy now.
    let moved = Deploy {
        cert_file: dir.path().join("new.crt"),
        ..Deploy::clone(d)
    };
    let moved_spec = CertSpec {
        role: Role::Mx(Box::new(MxRole {
            deploy: Arc::new(moved),
            ..MxRole::clone(mx)
        })),
        ..spec.clone()
    };
    assert_eq!(
        due(&moved_spec, &st, PRODUCTION, true, Some("CHAIN")),
        UNIX_EPOCH
    );
    // The deployed file was deleted: deploy again.
    std::fs::remove_file(&d.key_file).unwrap();
    assert_eq!(due(&spec, &st, PRODUCTION, true, Some("CHAIN")), UNIX_EPOCH);
    // A failed deployment waits for its retry time.
    let retry = renewal - 3600;
    let failed = CertState {
        deploy_error: Some("reload failed".into()),
        next_deploy: Some(retry),
        ..st
    };
    assert_eq!(
        due(&spec, &failed, PRODUCTION, true, Some("CHAIN")),
        from_unix(retry)
    );
}
