//! The header phase's reads of the identity Envoy established for the request: the peer
//! certificate's URI SAN and the issuer / subject of the JWT that `jwt_authn` verified (see
//! `access/identity.rs`). Read only when some key is bound to one and the request presents no
//! key: no extra host call otherwise. A failed read counts as no identity (the request is then
//! refused like one without a key, never admitted); the values are never logged.

use super::host::{Host, HostError};
use crate::access::{property_value, Peer, Policy, JWT_ISS_PROPERTY, JWT_SUB_PROPERTY, PRINCIPAL_PROPERTY};

/// The raw property values behind a [`Peer`].
#[derive(Debug, Default)]
pub struct PeerProperties {
    principal: Option<Vec<u8>>,
    iss: Option<Vec<u8>>,
    sub: Option<Vec<u8>>,
}

impl PeerProperties {
    /// One host call for the principal when some key is bound to one; for JWT subjects one for
    /// the issuer and, only when it is there, one for the subject.
    pub fn read<H: Host>(host: &H, policy: &Policy) -> PeerProperties {
        let mut out = PeerProperties::default();
        if policy.needs_principal() {
            out.principal = read(host, &PRINCIPAL_PROPERTY);
        }
        if policy.needs_jwt() {
            out.iss = read(host, &JWT_ISS_PROPERTY);
            if property_value(out.iss.as_deref()).is_some() {
                out.sub = read(host, &JWT_SUB_PROPERTY);
            }
        }
        out
    }

    pub fn peer(&self) -> Peer<'_> {
        let jwt = property_value(self.iss.as_deref()).zip(property_value(self.sub.as_deref()));
        Peer { principal: property_value(self.principal.as_deref()), jwt }
    }
}

fn read<H: Host>(host: &H, path: &[&str]) -> Option<Vec<u8>> {
    match host.property(path) {
        Ok(v) => v,
        Err(HostError::NotFound) => None,
        Err(status) => {
            log::warn!("llm-router: reading property {} failed: {status:?} (no identity for this request)", path.join("."));
            None
        }
    }
}
