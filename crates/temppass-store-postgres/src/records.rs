//! Applications, clients, access tokens, sessions, API keys and signing keys
//! in PostgreSQL: one statement each, except `ensure_signing_key`.

use temppass_core::{DeviceId, MvpdId, ServiceProviderId, Timestamp};
use temppass_store::{AccessGrant, AccessToken, ApiKey, Application, Client, Session, StoreError, StoredSigningKey};
use tokio_postgres::Row;

use crate::connection::Conn;
use crate::to_store_error;

/// The advisory lock that makes `ensure_signing_key` atomic across servers (the bytes of "tpsigkey").
const SIGNING_KEY_LOCK: i64 = 0x7470_7369_676b_6579;

fn get<'a, T: tokio_postgres::types::FromSql<'a>>(row: &'a Row, column: usize) -> Result<T, StoreError> {
    row.try_get(column).map_err(to_store_error)
}

fn corrupt(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("stored {what} is invalid: {error}"))
}

fn timestamp(row: &Row, column: usize) -> Result<Timestamp, StoreError> {
    get::<i64>(row, column).map(Timestamp::from_millis)
}

fn optional_timestamp(row: &Row, column: usize) -> Result<Option<Timestamp>, StoreError> {
    Ok(get::<Option<i64>>(row, column)?.map(Timestamp::from_millis))
}

fn service_provider(raw: &str) -> Result<ServiceProviderId, StoreError> {
    ServiceProviderId::parse(raw).map_err(|e| corrupt("service provider id", e))
}

const APPLICATION_COLUMNS: &str = "a.id, a.name, a.service_providers, a.scopes, a.created_at_ms, a.revoked_at_ms";

fn application(row: &Row, first: usize) -> Result<Application, StoreError> {
    let service_providers =
        get::<Vec<String>>(row, first + 2)?.iter().map(|id| service_provider(id)).collect::<Result<_, _>>()?;
    Ok(Application {
        id: get(row, first)?,
        name: get(row, first + 1)?,
        service_providers,
        scopes: get(row, first + 3)?,
        created_at: timestamp(row, first + 4)?,
        revoked_at: optional_timestamp(row, first + 5)?,
    })
}

pub(crate) async fn insert_application(conn: &mut Conn, application: &Application) -> Result<(), StoreError> {
    let service_providers: Vec<&str> = application.service_providers.iter().map(ServiceProviderId::as_str).collect();
    conn.query(
        "INSERT INTO applications (id, name, service_providers, scopes, created_at_ms, revoked_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6)",
        &[
            &application.id,
            &application.name,
            &service_providers,
            &application.scopes,
            &application.created_at.as_millis(),
            &application.revoked_at.map(Timestamp::as_millis),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn find_application(conn: &mut Conn, id: &str) -> Result<Option<Application>, StoreError> {
    let rows = conn.query(&format!("SELECT {APPLICATION_COLUMNS} FROM applications a WHERE a.id = $1"), &[&id]).await?;
    rows.first().map(|row| application(row, 0)).transpose()
}

pub(crate) async fn find_active_application(conn: &mut Conn, name: &str) -> Result<Option<Application>, StoreError> {
    let sql = format!("SELECT {APPLICATION_COLUMNS} FROM applications a WHERE a.name = $1 AND a.revoked_at_ms IS NULL");
    let rows = conn.query(&sql, &[&name]).await?;
    rows.first().map(|row| application(row, 0)).transpose()
}

pub(crate) async fn revoke_application(conn: &mut Conn, name: &str, now: Timestamp) -> Result<bool, StoreError> {
    let rows = conn
        .query(
            "UPDATE applications SET revoked_at_ms = $2 WHERE name = $1 AND revoked_at_ms IS NULL RETURNING 1",
            &[&name, &now.as_millis()],
        )
        .await?;
    Ok(!rows.is_empty())
}

pub(crate) async fn insert_client(conn: &mut Conn, client: &Client) -> Result<(), StoreError> {
    conn.query(
        "INSERT INTO clients (client_id, secret_hash, application_id, redirect_uris, issued_at_ms)
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &client.client_id,
            &client.secret_hash,
            &client.application_id,
            &client.redirect_uris,
            &client.issued_at.as_millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn find_client(conn: &mut Conn, client_id: &str) -> Result<Option<Client>, StoreError> {
    let rows = conn
        .query(
            "SELECT client_id, secret_hash, application_id, redirect_uris, issued_at_ms
             FROM clients WHERE client_id = $1",
            &[&client_id],
        )
        .await?;
    rows.first()
        .map(|row| {
            Ok(Client {
                client_id: get(row, 0)?,
                secret_hash: get(row, 1)?,
                application_id: get(row, 2)?,
                redirect_uris: get(row, 3)?,
                issued_at: timestamp(row, 4)?,
            })
        })
        .transpose()
}

pub(crate) async fn insert_access_token(conn: &mut Conn, token: &AccessToken) -> Result<(), StoreError> {
    conn.query(
        "INSERT INTO access_tokens (token_hash, id, client_id, application_id, scopes, created_at_ms, expires_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
        &[
            &token.token_hash,
            &token.id,
            &token.client_id,
            &token.application_id,
            &token.scopes,
            &token.created_at.as_millis(),
            &token.expires_at.as_millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn find_access_grant(conn: &mut Conn, token_hash: &str) -> Result<Option<AccessGrant>, StoreError> {
    let rows = conn
        .query(
            &format!(
                "SELECT t.token_hash, t.id, t.client_id, t.application_id, t.scopes, t.created_at_ms,
                        t.expires_at_ms, {APPLICATION_COLUMNS}
                 FROM access_tokens t JOIN applications a ON a.id = t.application_id
                 WHERE t.token_hash = $1"
            ),
            &[&token_hash],
        )
        .await?;
    rows.first()
        .map(|row| {
            Ok(AccessGrant {
                token: AccessToken {
                    token_hash: get(row, 0)?,
                    id: get(row, 1)?,
                    client_id: get(row, 2)?,
                    application_id: get(row, 3)?,
                    scopes: get(row, 4)?,
                    created_at: timestamp(row, 5)?,
                    expires_at: timestamp(row, 6)?,
                },
                application: application(row, 7)?,
            })
        })
        .transpose()
}

pub(crate) async fn insert_session(conn: &mut Conn, session: &Session) -> Result<(), StoreError> {
    write_session(
        conn,
        "INSERT INTO sessions (code, service_provider, device, mvpd, domain_name, redirect_url, created_at_ms,
                               expires_at_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        session,
    )
    .await
}

pub(crate) async fn update_session(conn: &mut Conn, session: &Session) -> Result<(), StoreError> {
    write_session(
        conn,
        "UPDATE sessions SET service_provider = $2, device = $3, mvpd = $4, domain_name = $5, redirect_url = $6,
                             created_at_ms = $7, expires_at_ms = $8
         WHERE code = $1",
        session,
    )
    .await
}

async fn write_session(conn: &mut Conn, sql: &str, session: &Session) -> Result<(), StoreError> {
    conn.query(
        sql,
        &[
            &session.code,
            &session.service_provider.as_str(),
            &session.device.as_ref().map(DeviceId::as_str),
            &session.mvpd.as_ref().map(MvpdId::as_str),
            &session.domain_name,
            &session.redirect_url,
            &session.created_at.as_millis(),
            &session.expires_at.as_millis(),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn find_session(conn: &mut Conn, code: &str) -> Result<Option<Session>, StoreError> {
    let rows = conn
        .query(
            "SELECT code, service_provider, device, mvpd, domain_name, redirect_url, created_at_ms, expires_at_ms
             FROM sessions WHERE code = $1",
            &[&code],
        )
        .await?;
    rows.first()
        .map(|row| {
            let device: Option<String> = get(row, 2)?;
            let mvpd: Option<String> = get(row, 3)?;
            Ok(Session {
                code: get(row, 0)?,
                service_provider: service_provider(&get::<String>(row, 1)?)?,
                device: device.map(|d| DeviceId::parse(&d)).transpose().map_err(|e| corrupt("device id", e))?,
                mvpd: mvpd.map(|m| MvpdId::parse(&m)).transpose().map_err(|e| corrupt("mvpd id", e))?,
                domain_name: get(row, 4)?,
                redirect_url: get(row, 5)?,
                created_at: timestamp(row, 6)?,
                expires_at: timestamp(row, 7)?,
            })
        })
        .transpose()
}

const SIGNING_KEYS: &str = "SELECT kid, seed, created_at_ms FROM signing_keys ORDER BY created_at_ms DESC, kid";
const INSERT_SIGNING_KEY: &str = "INSERT INTO signing_keys (kid, seed, created_at_ms) VALUES ($1, $2, $3)";

fn signing_key_rows(rows: &[Row]) -> Result<Vec<StoredSigningKey>, StoreError> {
    rows.iter()
        .map(|row| {
            let seed: Vec<u8> = get(row, 1)?;
            let seed: [u8; 32] = seed.try_into().map_err(|_| corrupt("signing key", "the seed is not 32 bytes"))?;
            Ok(StoredSigningKey { kid: get(row, 0)?, seed, created_at: timestamp(row, 2)? })
        })
        .collect()
}

pub(crate) async fn insert_signing_key(conn: &mut Conn, key: &StoredSigningKey) -> Result<(), StoreError> {
    conn.query(INSERT_SIGNING_KEY, &[&key.kid, &key.seed.as_slice(), &key.created_at.as_millis()]).await?;
    Ok(())
}

pub(crate) async fn signing_keys(conn: &mut Conn) -> Result<Vec<StoredSigningKey>, StoreError> {
    let rows = conn.query(SIGNING_KEYS, &[]).await?;
    signing_key_rows(&rows)
}

/// Stores `candidate` unless a key exists, then answers every key: one
/// transaction, one round trip. The advisory lock makes servers that start
/// at once take turns, so the second one's insert sees the first one's key.
pub(crate) async fn ensure_signing_key(
    conn: &mut Conn,
    candidate: &StoredSigningKey,
) -> Result<Vec<StoredSigningKey>, StoreError> {
    let begin = conn.prepare("BEGIN ISOLATION LEVEL READ COMMITTED").await?;
    let lock = conn.prepare("SELECT pg_advisory_xact_lock($1)").await?;
    let insert = conn
        .prepare(
            "INSERT INTO signing_keys (kid, seed, created_at_ms)
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM signing_keys)",
        )
        .await?;
    let select = conn.prepare(SIGNING_KEYS).await?;
    let commit = conn.prepare("COMMIT").await?;
    let (seed, created_ms) = (candidate.seed.as_slice(), candidate.created_at.as_millis());
    conn.transaction_opening();
    let answers = conn
        .pipeline(&[
            (&begin, &[]),
            (&lock, &[&SIGNING_KEY_LOCK]),
            (&insert, &[&candidate.kid, &seed, &created_ms]),
            (&select, &[]),
            (&commit, &[]),
        ])
        .await
        .map_err(to_store_error)?;
    conn.transaction_closed();
    signing_key_rows(&answers[3])
}

pub(crate) async fn insert_api_key(conn: &mut Conn, key: &ApiKey) -> Result<(), StoreError> {
    conn.query(
        "INSERT INTO api_keys (key_hash, service_provider, created_at_ms, revoked_at_ms) VALUES ($1, $2, $3, $4)",
        &[
            &key.key_hash,
            &key.service_provider.as_str(),
            &key.created_at.as_millis(),
            &key.revoked_at.map(Timestamp::as_millis),
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn find_api_key(conn: &mut Conn, key_hash: &str) -> Result<Option<ApiKey>, StoreError> {
    let rows = conn
        .query(
            "SELECT key_hash, service_provider, created_at_ms, revoked_at_ms FROM api_keys WHERE key_hash = $1",
            &[&key_hash],
        )
        .await?;
    rows.first()
        .map(|row| {
            Ok(ApiKey {
                key_hash: get(row, 0)?,
                service_provider: service_provider(&get::<String>(row, 1)?)?,
                created_at: timestamp(row, 2)?,
                revoked_at: optional_timestamp(row, 3)?,
            })
        })
        .transpose()
}

pub(crate) async fn revoke_api_key(conn: &mut Conn, key_hash: &str, now: Timestamp) -> Result<bool, StoreError> {
    let rows = conn
        .query(
            "UPDATE api_keys SET revoked_at_ms = $2 WHERE key_hash = $1 AND revoked_at_ms IS NULL RETURNING 1",
            &[&key_hash, &now.as_millis()],
        )
        .await?;
    Ok(!rows.is_empty())
}
