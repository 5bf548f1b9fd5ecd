//! Applications, clients, access tokens, sessions and signing keys in SQL.

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};
use temppass_core::{DeviceId, MvpdId, ServiceProviderId, Timestamp};
use temppass_store::{AccessGrant, AccessToken, ApiKey, Application, Client, Session, StoreError, StoredSigningKey};

use crate::to_store_error;

fn conversion(column: usize, error: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, Box::new(error))
}

fn json_list(row: &Row<'_>, column: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| conversion(column, e))
}

fn encode_list<S: AsRef<str>>(items: &[S]) -> String {
    serde_json::Value::from(items.iter().map(|s| s.as_ref()).collect::<Vec<_>>()).to_string()
}

fn timestamp(row: &Row<'_>, column: usize) -> rusqlite::Result<Timestamp> {
    row.get(column).map(Timestamp::from_millis)
}

const APPLICATION_COLUMNS: &str = "a.id, a.name, a.service_providers, a.scopes, a.created_at_ms, a.revoked_at_ms";

fn application(row: &Row<'_>, first: usize) -> rusqlite::Result<Application> {
    let service_providers = json_list(row, first + 2)?
        .iter()
        .map(|id| ServiceProviderId::parse(id).map_err(|e| conversion(first + 2, e)))
        .collect::<rusqlite::Result<_>>()?;
    Ok(Application {
        id: row.get(first)?,
        name: row.get(first + 1)?,
        service_providers,
        scopes: json_list(row, first + 3)?,
        created_at: timestamp(row, first + 4)?,
        revoked_at: row.get::<_, Option<i64>>(first + 5)?.map(Timestamp::from_millis),
    })
}

pub(crate) fn insert_application(conn: &Connection, application: &Application) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO applications (id, name, service_providers, scopes, created_at_ms, revoked_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            application.id,
            application.name,
            encode_list(&application.service_providers),
            encode_list(&application.scopes),
            application.created_at.as_millis(),
            application.revoked_at.map(Timestamp::as_millis),
        ])
    })
    .map_err(to_store_error)?;
    Ok(())
}

pub(crate) fn find_application(conn: &Connection, id: &str) -> rusqlite::Result<Option<Application>> {
    conn.prepare_cached(&format!("SELECT {APPLICATION_COLUMNS} FROM applications a WHERE a.id = ?1"))?
        .query_row(params![id], |row| application(row, 0))
        .optional()
}

pub(crate) fn find_active_application(conn: &Connection, name: &str) -> rusqlite::Result<Option<Application>> {
    conn.prepare_cached(&format!(
        "SELECT {APPLICATION_COLUMNS} FROM applications a WHERE a.name = ?1 AND a.revoked_at_ms IS NULL"
    ))?
    .query_row(params![name], |row| application(row, 0))
    .optional()
}

pub(crate) fn revoke_application(conn: &Connection, name: &str, now: Timestamp) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached("UPDATE applications SET revoked_at_ms = ?2 WHERE name = ?1 AND revoked_at_ms IS NULL")
        .and_then(|mut s| s.execute(params![name, now.as_millis()]))
        .map_err(to_store_error)?;
    Ok(changed > 0)
}

pub(crate) fn insert_client(conn: &Connection, client: &Client) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO clients (client_id, secret_hash, application_id, redirect_uris, issued_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut s| {
        s.execute(params![
            client.client_id,
            client.secret_hash,
            client.application_id,
            encode_list(&client.redirect_uris),
            client.issued_at.as_millis(),
        ])
    })
    .map_err(to_store_error)?;
    Ok(())
}

pub(crate) fn find_client(conn: &Connection, client_id: &str) -> rusqlite::Result<Option<Client>> {
    conn.prepare_cached(
        "SELECT client_id, secret_hash, application_id, redirect_uris, issued_at_ms FROM clients WHERE client_id = ?1",
    )?
    .query_row(params![client_id], |row| {
        Ok(Client {
            client_id: row.get(0)?,
            secret_hash: row.get(1)?,
            application_id: row.get(2)?,
            redirect_uris: json_list(row, 3)?,
            issued_at: timestamp(row, 4)?,
        })
    })
    .optional()
}

pub(crate) fn insert_access_token(conn: &Connection, token: &AccessToken) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO access_tokens (token_hash, id, client_id, application_id, scopes, created_at_ms, expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            token.token_hash,
            token.id,
            token.client_id,
            token.application_id,
            encode_list(&token.scopes),
            token.created_at.as_millis(),
            token.expires_at.as_millis(),
        ])
    })
    .map_err(to_store_error)?;
    Ok(())
}

pub(crate) fn find_access_grant(conn: &Connection, token_hash: &str) -> rusqlite::Result<Option<AccessGrant>> {
    conn.prepare_cached(&format!(
        "SELECT t.token_hash, t.id, t.client_id, t.application_id, t.scopes, t.created_at_ms, t.expires_at_ms,
                {APPLICATION_COLUMNS}
         FROM access_tokens t JOIN applications a ON a.id = t.application_id
         WHERE t.token_hash = ?1"
    ))?
    .query_row(params![token_hash], |row| {
        Ok(AccessGrant {
            token: AccessToken {
                token_hash: row.get(0)?,
                id: row.get(1)?,
                client_id: row.get(2)?,
                application_id: row.get(3)?,
                scopes: json_list(row, 4)?,
                created_at: timestamp(row, 5)?,
                expires_at: timestamp(row, 6)?,
            },
            application: application(row, 7)?,
        })
    })
    .optional()
}

pub(crate) fn insert_session(conn: &Connection, session: &Session) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO sessions (code, service_provider, device, mvpd, domain_name, redirect_url, created_at_ms,
                               expires_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut s| s.execute(session_params(session)))
    .map_err(to_store_error)?;
    Ok(())
}

pub(crate) fn update_session(conn: &Connection, session: &Session) -> Result<(), StoreError> {
    conn.prepare_cached(
        "UPDATE sessions SET service_provider = ?2, device = ?3, mvpd = ?4, domain_name = ?5, redirect_url = ?6,
                             created_at_ms = ?7, expires_at_ms = ?8
         WHERE code = ?1",
    )
    .and_then(|mut s| s.execute(session_params(session)))
    .map_err(to_store_error)?;
    Ok(())
}

fn session_params(session: &Session) -> impl rusqlite::Params + '_ {
    (
        &session.code,
        session.service_provider.as_str(),
        session.device.as_ref().map(DeviceId::as_str),
        session.mvpd.as_ref().map(MvpdId::as_str),
        &session.domain_name,
        &session.redirect_url,
        session.created_at.as_millis(),
        session.expires_at.as_millis(),
    )
}

pub(crate) fn find_session(conn: &Connection, code: &str) -> rusqlite::Result<Option<Session>> {
    conn.prepare_cached(
        "SELECT code, service_provider, device, mvpd, domain_name, redirect_url, created_at_ms, expires_at_ms
         FROM sessions WHERE code = ?1",
    )?
    .query_row(params![code], |row| {
        let sp: String = row.get(1)?;
        let device: Option<String> = row.get(2)?;
        let mvpd: Option<String> = row.get(3)?;
        Ok(Session {
            code: row.get(0)?,
            service_provider: ServiceProviderId::parse(&sp).map_err(|e| conversion(1, e))?,
            device: device.map(|d| DeviceId::parse(&d)).transpose().map_err(|e| conversion(2, e))?,
            mvpd: mvpd.map(|m| MvpdId::parse(&m)).transpose().map_err(|e| conversion(3, e))?,
            domain_name: row.get(4)?,
            redirect_url: row.get(5)?,
            created_at: timestamp(row, 6)?,
            expires_at: timestamp(row, 7)?,
        })
    })
    .optional()
}

pub(crate) fn insert_signing_key(conn: &Connection, key: &StoredSigningKey) -> Result<(), StoreError> {
    conn.prepare_cached("INSERT INTO signing_keys (kid, seed, created_at_ms) VALUES (?1, ?2, ?3)")
        .and_then(|mut s| s.execute(params![key.kid, key.seed.as_slice(), key.created_at.as_millis()]))
        .map_err(to_store_error)?;
    Ok(())
}

pub(crate) fn signing_keys(conn: &Connection) -> rusqlite::Result<Vec<StoredSigningKey>> {
    conn.prepare_cached("SELECT kid, seed, created_at_ms FROM signing_keys ORDER BY created_at_ms DESC, rowid DESC")?
        .query_map([], |row| {
            let seed: Vec<u8> = row.get(1)?;
            let seed: [u8; 32] = seed
                .try_into()
                .map_err(|_| rusqlite::Error::FromSqlConversionFailure(1, Type::Blob, "seed is not 32 bytes".into()))?;
            Ok(StoredSigningKey { kid: row.get(0)?, seed, created_at: timestamp(row, 2)? })
        })?
        .collect()
}

pub(crate) fn insert_api_key(conn: &Connection, key: &ApiKey) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO api_keys (key_hash, service_provider, created_at_ms, revoked_at_ms) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| {
        s.execute(params![
            key.key_hash,
            key.service_provider.as_str(),
            key.created_at.as_millis(),
            key.revoked_at.map(Timestamp::as_millis),
        ])
    })
    .map_err(to_store_error)?;
    Ok(())
}

pub(crate) fn find_api_key(conn: &Connection, key_hash: &str) -> rusqlite::Result<Option<ApiKey>> {
    conn.prepare_cached(
        "SELECT key_hash, service_provider, created_at_ms, revoked_at_ms FROM api_keys WHERE key_hash = ?1",
    )?
    .query_row(params![key_hash], |row| {
        let sp: String = row.get(1)?;
        Ok(ApiKey {
            key_hash: row.get(0)?,
            service_provider: ServiceProviderId::parse(&sp).map_err(|e| conversion(1, e))?,
            created_at: timestamp(row, 2)?,
            revoked_at: row.get::<_, Option<i64>>(3)?.map(Timestamp::from_millis),
        })
    })
    .optional()
}

pub(crate) fn revoke_api_key(conn: &Connection, key_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
    let changed = conn
        .prepare_cached("UPDATE api_keys SET revoked_at_ms = ?2 WHERE key_hash = ?1 AND revoked_at_ms IS NULL")
        .and_then(|mut s| s.execute(params![key_hash, now.as_millis()]))
        .map_err(to_store_error)?;
    Ok(changed > 0)
}

/// Deletes up to `budget` expired sessions and access tokens, and idle clients.
/// Returns `(sessions, access_tokens, clients)`.
pub(crate) fn reclaim_expired(
    conn: &Connection,
    now: Timestamp,
    budget: usize,
) -> rusqlite::Result<(usize, usize, usize)> {
    let sessions = conn
        .prepare_cached(
            "DELETE FROM sessions WHERE code IN
               (SELECT code FROM sessions WHERE expires_at_ms <= ?1 ORDER BY expires_at_ms LIMIT ?2)",
        )?
        .execute(params![now.as_millis(), budget as i64])?;
    let tokens = conn
        .prepare_cached(
            "DELETE FROM access_tokens WHERE token_hash IN
               (SELECT token_hash FROM access_tokens WHERE expires_at_ms <= ?1 ORDER BY expires_at_ms LIMIT ?2)",
        )?
        .execute(params![now.as_millis(), budget as i64])?;
    let clients = conn
        .prepare_cached(
            "DELETE FROM clients WHERE client_id IN
               (SELECT c.client_id FROM clients c
                WHERE c.issued_at_ms <= ?1
                  AND NOT EXISTS (SELECT 1 FROM access_tokens t WHERE t.client_id = c.client_id)
                ORDER BY c.issued_at_ms LIMIT ?2)",
        )?
        .execute(params![now.as_millis() - temppass_store::CLIENT_IDLE_MS, budget as i64])?;
    Ok((sessions, tokens, clients))
}
