//! The secrets vault (`/egress/secrets`, `/egress/bindings`). A value is
//! sealed before it is stored ([`crate::seal`], bound to its tenant and
//! id) and leaves the server only into a guest's environment: bound to a
//! sandbox, a secret is in the env of every exec, process and terminal
//! started there afterwards; named in a call's `secrets`, in that call's
//! only. No route answers a value; command output that holds one has it
//! replaced by `***` ([`Redactor`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{Error, FieldError, Kind, Result};
use crate::ids::new_id;
use crate::keys::Caller;
use crate::model::{SecretBindingRecord, SecretRecord};
use crate::store::{SecretFilter, StoreError};
use crate::Core;

/// The largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Secrets one tenant may keep.
pub const MAX_SECRETS_PER_TENANT: u64 = 1000;
/// Secrets or bindings one listing answers at most.
pub const MAX_LISTED: u32 = 1000;
/// The kinds a secret may be.
pub const KINDS: &[&str] = &["api_key", "token", "password", "certificate", "generic"];
/// Who a secret belongs to.
pub const SCOPES: &[&str] = &["user", "workspace", "tenant"];
/// What a secret can be bound to.
pub const RESOURCE_TYPES: &[&str] = &["sandbox"];
/// Values shorter than this are not redacted from output: masking every
/// `1` or `ab` would garble output and tell nothing.
pub const MIN_REDACTED_BYTES: usize = 4;

/// A secret to create (its fields checked by the API layer).
#[derive(Debug, Clone, Default)]
pub struct NewSecret {
    pub name: String,
    pub value: String,
    pub kind: String,
    pub scope: String,
    pub expose_as_env: Option<String>,
    pub resource_id: Option<String>,
    pub resource_type: Option<String>,
    pub expires_at: Option<i64>,
    pub metadata: Map<String, Value>,
}

/// What a command gets from the vault: variables to add to its env, and
/// the values to mask in what it prints.
#[derive(Debug, Clone, Default)]
pub struct SecretEnv {
    pub env: BTreeMap<String, String>,
    pub redactor: Redactor,
}

/// Masks secret values in output: every exact occurrence becomes `***`.
#[derive(Debug, Clone, Default)]
pub struct Redactor(Arc<Vec<Vec<u8>>>);

impl Redactor {
    fn new(mut values: Vec<Vec<u8>>) -> Redactor {
        values.retain(|v| v.len() >= MIN_REDACTED_BYTES);
        // Longest first, so a value that contains another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Redactor(Arc::new(values))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `bytes` with every value replaced by `***`.
    pub fn redact(&self, bytes: Vec<u8>) -> Vec<u8> {
        let mut out = bytes;
        for v in self.0.iter() {
            if out.len() < v.len() {
                continue;
            }
            let mut next = Vec::with_capacity(out.len());
            let mut i = 0;
            while i < out.len() {
                if out[i..].starts_with(v) {
                    next.extend_from_slice(b"***");
                    i += v.len();
                } else {
                    next.push(out[i]);
                    i += 1;
                }
            }
            out = next;
        }
        out
    }
}

/// The prefix shown for a value: a few characters, never more than a
/// quarter of it; and its last four when it is long enough to spare them.
fn hints(value: &str) -> (String, Option<String>) {
    let chars: Vec<char> = value.chars().collect();
    let shown = (chars.len() / 4).min(4);
    let prefix = chars[..shown].iter().collect();
    let last4 = (chars.len() >= 16).then(|| chars[chars.len() - 4..].iter().collect());
    (prefix, last4)
}

fn aad(tenant: &str, id: &str) -> Vec<u8> {
    format!("secret\0{tenant}\0{id}").into_bytes()
}

fn secret_not_found(id: &str) -> Error {
    Error::new(
        Kind::NotFound,
        "secret_not_found",
        format!("secret {id} not found"),
    )
}

impl Core {
    /// Stores a secret (sealed); with `expose_as_env` and `resource_id`,
    /// binds it there too.
    pub async fn create_secret(
        &self,
        caller: &Caller,
        new: NewSecret,
    ) -> Result<(SecretRecord, Option<SecretBindingRecord>)> {
        let tenant = &caller.tenant_id;
        if let Some(rid) = &new.resource_id {
            self.get_sandbox(caller, rid).await?;
        }
        if self.store.count_secrets(tenant).await? >= MAX_SECRETS_PER_TENANT {
            return Err(Error::new(
                Kind::QuotaExceeded,
                "quota_exceeded",
                format!("a tenant keeps at most {MAX_SECRETS_PER_TENANT} secrets"),
            )
            .with_quota("secrets", MAX_SECRETS_PER_TENANT, MAX_SECRETS_PER_TENANT));
        }
        let id = new_id("sec");
        let (value_prefix, last4) = hints(&new.value);
        let rec = SecretRecord {
            sealed: self.sealer.seal(&aad(tenant, &id), new.value.as_bytes()),
            id,
            tenant_id: tenant.clone(),
            name: new.name,
            kind: new.kind,
            scope: new.scope,
            value_prefix,
            last4,
            expose_as_env: new.expose_as_env,
            resource_id: new.resource_id,
            resource_type: new.resource_type,
            metadata: new.metadata,
            created_at: self.now_ms(),
            rotated_at: None,
            expires_at: new.expires_at,
        };
        match self.store.insert_secret(&rec).await {
            Err(StoreError::Duplicate(_)) => {
                return Err(Error::conflict(
                    "conflict",
                    format!("a secret named {} exists", rec.name),
                ))
            }
            r => r?,
        }
        let binding = match (&rec.expose_as_env, &rec.resource_id) {
            (Some(env), Some(rid)) => {
                let kind = rec
                    .resource_type
                    .clone()
                    .unwrap_or_else(|| "sandbox".into());
                match self.bind_secret(caller, &rec.id, rid, &kind, env).await {
                    Ok(b) => Some(b),
                    Err(e) => {
                        // Nothing half made: the secret goes with its binding.
                        self.store.delete_secret(tenant, &rec.id).await?;
                        return Err(e);
                    }
                }
            }
            _ => None,
        };
        Ok((rec, binding))
    }

    pub async fn get_secret(&self, caller: &Caller, id: &str) -> Result<SecretRecord> {
        self.store
            .get_secret(&caller.tenant_id, id)
            .await?
            .ok_or_else(|| secret_not_found(id))
    }

    pub async fn list_secrets(
        &self,
        caller: &Caller,
        filter: &SecretFilter,
    ) -> Result<Vec<SecretRecord>> {
        Ok(self
            .store
            .list_secrets(&caller.tenant_id, filter, MAX_LISTED)
            .await?)
    }

    /// Rotates a secret's value (and its expiry, when given): the next
    /// command started gets the new one.
    pub async fn rotate_secret(
        &self,
        caller: &Caller,
        id: &str,
        value: Option<String>,
        expires_at: Option<Option<i64>>,
    ) -> Result<SecretRecord> {
        let mut rec = self.get_secret(caller, id).await?;
        if let Some(v) = value {
            rec.sealed = self
                .sealer
                .seal(&aad(&rec.tenant_id, &rec.id), v.as_bytes());
            (rec.value_prefix, rec.last4) = hints(&v);
            rec.rotated_at = Some(self.now_ms());
        }
        if let Some(e) = expires_at {
            rec.expires_at = e;
        }
        self.store.update_secret(&rec).await?;
        Ok(rec)
    }

    /// Deletes a secret and its bindings.
    pub async fn delete_secret(&self, caller: &Caller, id: &str) -> Result<SecretRecord> {
        let rec = self.get_secret(caller, id).await?;
        self.store.delete_secret(&caller.tenant_id, id).await?;
        Ok(rec)
    }

    /// Binds a secret to one of the caller's sandboxes as `env`.
    pub async fn bind_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
        resource_id: &str,
        resource_type: &str,
        env: &str,
    ) -> Result<SecretBindingRecord> {
        self.get_secret(caller, secret_id).await?;
        self.get_sandbox(caller, resource_id).await?;
        let b = SecretBindingRecord {
            id: new_id("sbd"),
            tenant_id: caller.tenant_id.clone(),
            secret_id: secret_id.to_string(),
            resource_id: resource_id.to_string(),
            resource_type: resource_type.to_string(),
            expose_as_env: env.to_string(),
            created_at: self.now_ms(),
        };
        match self.store.insert_binding(&b).await {
            Err(StoreError::Duplicate(_)) => Err(Error::conflict(
                "conflict",
                format!("{resource_id} already has a secret bound as {env}"),
            )),
            r => Ok(r.map(|()| b)?),
        }
    }

    pub async fn list_bindings(
        &self,
        caller: &Caller,
        filter: &SecretFilter,
    ) -> Result<Vec<SecretBindingRecord>> {
        Ok(self
            .store
            .list_bindings(&caller.tenant_id, filter, MAX_LISTED)
            .await?)
    }

    pub async fn delete_binding(&self, caller: &Caller, id: &str) -> Result<()> {
        if self.store.delete_binding(&caller.tenant_id, id).await? {
            Ok(())
        } else {
            Err(Error::new(
                Kind::NotFound,
                "binding_not_found",
                format!("binding {id} not found"),
            ))
        }
    }

    /// The vault's part of a command's env in `sandbox_id`: every secret
    /// bound there, then each secret `names` names (as its
    /// `expose_as_env`, else its name), expired ones left out. A name the
    /// tenant has no secret of is a 422.
    pub async fn secret_env(
        &self,
        tenant: &str,
        sandbox_id: &str,
        names: &[String],
    ) -> Result<SecretEnv> {
        let now = self.now_ms();
        let live = |s: &SecretRecord| s.expires_at.is_none_or(|at| at > now);
        let mut env = BTreeMap::new();
        let mut values = Vec::new();
        for (b, s) in self
            .store
            .bound_secrets(tenant, "sandbox", sandbox_id)
            .await?
        {
            if live(&s) {
                let v = self.open_secret(&s)?;
                values.push(v.clone().into_bytes());
                env.insert(b.expose_as_env, v);
            }
        }
        if !names.is_empty() {
            let found = self.store.secrets_named(tenant, names).await?;
            let mut bad = Vec::new();
            for (i, n) in names.iter().enumerate() {
                match found.iter().find(|s| &s.name == n) {
                    Some(s) if live(s) => {
                        let v = self.open_secret(s)?;
                        values.push(v.clone().into_bytes());
                        env.insert(s.expose_as_env.clone().unwrap_or_else(|| n.clone()), v);
                    }
                    Some(_) => bad.push(FieldError::new(
                        format!("secrets[{i}]"),
                        format!("secret {n} has expired"),
                    )),
                    None => bad.push(FieldError::new(
                        format!("secrets[{i}]"),
                        format!("no secret named {n}"),
                    )),
                }
            }
            if !bad.is_empty() {
                return Err(Error::validation(bad));
            }
        }
        Ok(SecretEnv {
            env,
            redactor: Redactor::new(values),
        })
    }

    fn open_secret(&self, s: &SecretRecord) -> Result<String> {
        let plain = self
            .sealer
            .open(&aad(&s.tenant_id, &s.id), &s.sealed)
            .map_err(|e| Error::internal(anyhow::anyhow!("secret {}: {e}", s.id)))?;
        String::from_utf8(plain)
            .map_err(|_| Error::internal(anyhow::anyhow!("secret {} is not UTF-8", s.id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_masked_longest_first_and_short_ones_left() {
        let r = Redactor::new(vec![
            b"abc".to_vec(),
            b"s3cr3t".to_vec(),
            b"s3cr3t-long".to_vec(),
        ]);
        let out = r.redact(b"x s3cr3t-long y s3cr3ts3cr3t abc".to_vec());
        assert_eq!(out, b"x *** y ****** abc".to_vec());
        assert_eq!(Redactor::default().redact(b"same".to_vec()), b"same");
    }

    #[test]
    fn hints_never_show_more_than_a_quarter() {
        assert_eq!(hints("abc"), (String::new(), None));
        assert_eq!(hints("abcdefgh"), ("ab".into(), None));
        assert_eq!(
            hints("sk-0123456789abcdefXYZW"),
            ("sk-0".into(), Some("XYZW".into()))
        );
    }
}
