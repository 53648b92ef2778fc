//! The certificate manager as the DANE rollover's [`Issuer`]: the MX key in use, an order
//! for a given key, and installing plus deploying its certificate when the rollover says so.
//! Must not decide when (the rollover's state machine does).

use super::manager::*;
use crate::acme::deploy::{deploy, deployment_fingerprint};
use crate::acme::{self, Responder};
use crate::dane::executor::{Issuer, RollError};
use crate::state_dir as store;

impl<R: Responder> Manager<R> {
    fn spec_of(&self, host: &str) -> Result<CertSpec, RollError> {
        self.specs
            .load()
            .iter()
            .find(|s| s.name == host)
            .cloned()
            .ok_or_else(|| RollError::Order(format!("{host} is no longer configured")))
    }
}

#[async_trait::async_trait]
impl<R: Responder> Issuer for Manager<R> {
    fn current_key(&self, host: &str) -> Result<rcgen::KeyPair, RollError> {
        load_or_create_key(&self.state, host).map_err(|e| RollError::Key(e.to_string()))
    }

    async fn order(&self, host: &str, key: &rcgen::KeyPair) -> Result<String, RollError> {
        let spec = self.spec_of(host)?;
        self.order_chain(&spec, key, None)
            .await
            .map_err(|e| RollError::Order(e.message))
    }

    async fn install_and_deploy(
        &self,
        host: &str,
        key: &rcgen::KeyPair,
        chain_pem: &str,
    ) -> Result<(), RollError> {
        let spec = self.spec_of(host)?;
        let Role::Mx(mx) = &spec.role else {
            return Err(RollError::Deploy(format!("{host} is not an MX")));
        };
        let key_pem = key.serialize_pem();
        store::write_atomic(
            &acme::cert_path(self.state.root(), host, "key.pem"),
            key_pem.as_bytes(),
            store::SECRET_MODE,
        )?;
        let mut st = read_state(&self.state, host);
        self.commit_chain(&spec, &mut st, chain_pem)
            .await
            .map_err(|e| RollError::Deploy(e.message))?;
        let pid_file = acme::cert_path(self.state.root(), host, "reload.pid");
        let result = deploy(&mx.deploy, chain_pem, &key_pem, &pid_file).await;
        match &result {
            Ok(()) => {
                st.deployed = Some(deployment_fingerprint(&mx.deploy, chain_pem));
                st.deploy_error = None;
                st.next_deploy = None;
                st.deploy_attempts = 0;
            }
            Err(e) => st.deploy_error = Some(e.to_string()),
        }
        write_state(&self.state, host, &st).map_err(|e| RollError::Deploy(e.to_string()))?;
        result.map_err(|e| RollError::Deploy(e.to_string()))
    }
}
