//! The daemon's ACME challenge responder: http-01 on the plain HTTP listener, tls-alpn-01 on
//! the HTTPS listener, dns-01 through the record sink. Holds only the pending challenges.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::acme::tls::CertResolver;
use crate::acme::{Challenge, ChallengeError, Responder};
use crate::mtasts::http::Served;
use crate::publish::records::{self as rec};
use crate::publish::{self, RecordSink};

/// Answers ACME challenges from the daemon's own listeners.
pub(super) struct DaemonResponder {
    pub(super) served: Arc<Served>,
    pub(super) resolver: Arc<CertResolver>,
    pub(super) sink: Option<Arc<dyn RecordSink>>,
    /// Pending dns-01 values by host: the `_acme-challenge` RRset is their union.
    pub(super) dns01: tokio::sync::Mutex<BTreeMap<String, Vec<String>>>,
    /// How long dns-01 waits for every authoritative server to serve a challenge.
    pub(super) dns01_timeout: Duration,
}

impl Responder for DaemonResponder {
    async fn publish(&self, ch: &Challenge) -> Result<(), ChallengeError> {
        match ch {
            Challenge::Http01 {
                token,
                key_authorization,
                ..
            } => {
                let (token, ka) = (token.clone(), Arc::<str>::from(key_authorization.as_str()));
                self.served.challenges.rcu(|old| {
                    let mut m = HashMap::clone(old);
                    m.insert(token.clone(), ka.clone());
                    m
                });
                Ok(())
            }
            Challenge::TlsAlpn01 { host, digest } => {
                let ck = crate::acme::tls_alpn_certificate(host, digest)
                    .map_err(ChallengeError::Certificate)?;
                self.resolver.set_alpn_challenge(host, Some(ck));
                Ok(())
            }
            Challenge::Dns01 { host, value } => {
                let Some(sink) = &self.sink else {
                    return Err(ChallengeError::Unsupported(format!(
                        "dns-01 for {host} needs mxguard's DNS (listen.dns); use http-01 or tls-alpn-01"
                    )));
                };
                let change = {
                    let mut pending = self.dns01.lock().await;
                    let values = pending.entry(host.clone()).or_default();
                    if !values.contains(value) {
                        values.push(value.clone());
                    }
                    rec::acme_challenge(host, values)?
                };
                let applied = sink.apply(vec![change]).await?;
                publish::wait_served(sink.as_ref(), &applied.serials, self.dns01_timeout).await?;
                Ok(())
            }
        }
    }

    async fn withdraw(&self, ch: &Challenge) {
        match ch {
            Challenge::Http01 { token, .. } => {
                self.served.challenges.rcu(|old| {
                    let mut m = HashMap::clone(old);
                    m.remove(token);
                    m
                });
            }
            Challenge::TlsAlpn01 { host, .. } => self.resolver.set_alpn_challenge(host, None),
            Challenge::Dns01 { host, value } => {
                if let Some(sink) = &self.sink {
                    let change = {
                        let mut pending = self.dns01.lock().await;
                        let values = pending.entry(host.clone()).or_default();
                        values.retain(|x| x != value);
                        let change = rec::acme_challenge(host, values);
                        if values.is_empty() {
                            pending.remove(host);
                        }
                        change
                    };
                    let r = match change {
                        Ok(c) => sink
                            .apply(vec![c])
                            .await
                            .map(|_| ())
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    if let Err(e) = r {
                        tracing::warn!(host = %host, err = %e, "could not withdraw dns-01 challenge");
                    }
                }
            }
        }
    }
}
