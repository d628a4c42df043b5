//! Access tokens: `emp_<id>_<secret>`, where the id names the token (to list and revoke
//! it) and the secret is 160 random bits. Only the SHA-256 of the secret is stored: a
//! plain hash is enough for a random secret of that length (no password to stretch).

use sha2::{Digest, Sha256};

use crate::store::{Store, StoreError, TokenKind, TokenRecord};

/// A token just created: the only moment its secret exists in clear.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuedToken {
    pub record: TokenRecord,
    /// The whole token, to hand to the agent or reader.
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(
        "no token: send `Authorization: Bearer <token>` (create one with `empreinte token create`)"
    )]
    Missing,
    #[error("the token is not in the form emp_<id>_<secret>")]
    Malformed,
    #[error("unknown or wrong token")]
    Unknown,
    #[error("token {0} was revoked")]
    Revoked(String),
    #[error("token {id} is {kind} token; this needs {needed} token")]
    WrongKind {
        id: String,
        kind: &'static str,
        needed: &'static str,
    },
    #[error("the system's random source failed: {0}")]
    Random(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn digest(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Equal in a time that does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Creates a token of `kind` (for `agent_id` when it is an agent token) and stores its
/// hash.
pub async fn issue(
    store: &dyn Store,
    kind: TokenKind,
    agent_id: Option<&str>,
    note: &str,
    now_ms: u64,
) -> Result<IssuedToken, AuthError> {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 20];
    getrandom::fill(&mut id).map_err(|e| AuthError::Random(e.to_string()))?;
    getrandom::fill(&mut secret).map_err(|e| AuthError::Random(e.to_string()))?;
    let id = hex(&id);
    let secret = hex(&secret);
    let record = TokenRecord {
        id: id.clone(),
        kind,
        agent_id: agent_id.map(str::to_string),
        secret_sha256: digest(&secret),
        note: note.to_string(),
        created_ms: now_ms,
        revoked_ms: None,
    };
    store.create_token(&record).await?;
    Ok(IssuedToken {
        record,
        token: format!("emp_{id}_{secret}"),
    })
}

/// The stored token that `header` (an `Authorization` value) presents, if it is valid
/// and of kind `needed`.
pub async fn verify(
    store: &dyn Store,
    header: Option<&str>,
    needed: TokenKind,
) -> Result<TokenRecord, AuthError> {
    let value = header.ok_or(AuthError::Missing)?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or(AuthError::Missing)?
        .trim();
    let rest = token.strip_prefix("emp_").ok_or(AuthError::Malformed)?;
    let (id, secret) = rest.split_once('_').ok_or(AuthError::Malformed)?;
    if id.is_empty() || secret.is_empty() {
        return Err(AuthError::Malformed);
    }
    let record = store.find_token(id).await?.ok_or(AuthError::Unknown)?;
    if !constant_time_eq(&record.secret_sha256, &digest(secret)) {
        return Err(AuthError::Unknown);
    }
    if record.revoked_ms.is_some() {
        return Err(AuthError::Revoked(record.id));
    }
    if record.kind != needed {
        return Err(AuthError::WrongKind {
            id: record.id,
            kind: record.kind.with_article(),
            needed: needed.with_article(),
        });
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn a_token_works_until_it_is_revoked_and_only_for_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let t = issue(&store, TokenKind::Agent, Some("web-01"), "test", 1)
            .await
            .unwrap();
        let header = format!("Bearer {}", t.token);
        let ok = verify(&store, Some(&header), TokenKind::Agent)
            .await
            .unwrap();
        assert_eq!(ok.agent_id.as_deref(), Some("web-01"));
        // The secret is not stored.
        let stored = store.find_token(&t.record.id).await.unwrap().unwrap();
        assert!(!t.token.contains(&hex(&stored.secret_sha256)));
        assert!(matches!(
            verify(&store, Some(&header), TokenKind::Read).await,
            Err(AuthError::WrongKind { .. })
        ));
        let wrong = format!("Bearer emp_{}_{}", t.record.id, "0".repeat(40));
        assert!(matches!(
            verify(&store, Some(&wrong), TokenKind::Agent).await,
            Err(AuthError::Unknown)
        ));
        assert!(matches!(
            verify(&store, None, TokenKind::Agent).await,
            Err(AuthError::Missing)
        ));
        assert!(matches!(
            verify(&store, Some("Bearer nope"), TokenKind::Agent).await,
            Err(AuthError::Malformed)
        ));
        assert!(store.revoke_token(&t.record.id, 2).await.unwrap());
        assert!(matches!(
            verify(&store, Some(&header), TokenKind::Agent).await,
            Err(AuthError::Revoked(_))
        ));
    }
}
