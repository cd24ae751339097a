//! Accounts (domains), their projects, credentials and console tokens.

use crate::sql::numbered;
use sqlx::Row;
use vpcep_model::{Rejection, DEFAULT_ENDPOINT_QUOTA, DEFAULT_SERVICE_QUOTA};

use super::{now_micros, SqlStore};
use crate::secrets::{hash_password, random_hex, random_text, token_hash, verify_password};
use crate::{Account, Caller, Credential, IssuedToken, NewAccount, Result, StoreError};

const UPPER_DIGITS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const MIXED: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789";
const TOKEN_LIFETIME_MICROS: i64 = 24 * 3600 * 1_000_000;

impl SqlStore {
    pub(crate) async fn create_account(&self, name: String, region: String) -> Result<NewAccount> {
        let ok_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !ok_name {
            return Err(Rejection::bad(format!(
                "account name {name:?}: 1-64 characters of letters, digits, '-', '_' and '.'"
            ))
            .into());
        }
        let acct = NewAccount {
            name,
            domain_id: random_hex(16),
            project_id: random_hex(16),
            access_key: random_text(20, UPPER_DIGITS),
            secret_key: random_text(40, MIXED),
            password: random_text(16, MIXED),
        };
        let now = now_micros();
        let mut tx = self.begin().await?;
        let taken: Option<String> =
            sqlx::query_scalar(&numbered("SELECT name FROM accounts WHERE name = ?"))
                .bind(&acct.name)
                .fetch_optional(&mut *tx)
                .await?;
        if taken.is_some() {
            return Err(Rejection::bad(format!("account {:?} already exists", acct.name)).into());
        }
        sqlx::query(&numbered("INSERT INTO accounts (domain_id, name, password_hash, service_quota, endpoint_quota, created_at) VALUES (?, ?, ?, ?, ?, ?)"))
            .bind(&acct.domain_id)
            .bind(&acct.name)
            .bind(hash_password(&acct.password))
            .bind(DEFAULT_SERVICE_QUOTA)
            .bind(DEFAULT_ENDPOINT_QUOTA)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&numbered(
            "INSERT INTO projects (id, domain_id, region) VALUES (?, ?, ?)",
        ))
        .bind(&acct.project_id)
        .bind(&acct.domain_id)
        .bind(&region)
        .execute(&mut *tx)
        .await?;
        sqlx::query(&numbered("INSERT INTO credentials (access_key, domain_id, secret_sealed, created_at) VALUES (?, ?, ?, ?)"))
            .bind(&acct.access_key)
            .bind(&acct.domain_id)
            .bind(self.key.seal(&acct.secret_key))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(acct)
    }

    async fn accounts_where(&self, clause: &str, arg: Option<&str>) -> Result<Vec<Account>> {
        let mut c = self.read().await?;
        let sql = format!("SELECT domain_id, name, service_quota, endpoint_quota, created_at FROM accounts {clause} ORDER BY created_at, name");
        let q_sql = numbered(&sql);
        let mut q = sqlx::query(&q_sql);
        if let Some(a) = arg {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&mut *c).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let domain_id: String = r.try_get("domain_id")?;
            let projects = sqlx::query(&numbered(
                "SELECT id, region FROM projects WHERE domain_id = ? ORDER BY region",
            ))
            .bind(&domain_id)
            .fetch_all(&mut *c)
            .await?
            .iter()
            .map(|p| Ok((p.try_get("region")?, p.try_get("id")?)))
            .collect::<Result<Vec<(String, String)>>>()?;
            out.push(Account {
                name: r.try_get("name")?,
                domain_id,
                project_ids: projects,
                service_quota: r.try_get("service_quota")?,
                endpoint_quota: r.try_get("endpoint_quota")?,
                created_at: r.try_get("created_at")?,
            });
        }
        Ok(out)
    }

    pub(crate) async fn list_accounts(&self) -> Result<Vec<Account>> {
        self.accounts_where("", None).await
    }

    pub(crate) async fn account_by_domain(&self, domain_id: String) -> Result<Option<Account>> {
        Ok(self
            .accounts_where("WHERE domain_id = ?", Some(&domain_id))
            .await?
            .into_iter()
            .next())
    }

    pub(crate) async fn set_quota(
        &self,
        name: String,
        services: Option<i64>,
        endpoints: Option<i64>,
    ) -> Result<Account> {
        for v in [services, endpoints].into_iter().flatten() {
            if !(0..=100_000).contains(&v) {
                return Err(Rejection::bad(format!("quota {v} is outside 0-100000")).into());
            }
        }
        let mut tx = self.begin().await?;
        let res = sqlx::query(&numbered("UPDATE accounts SET service_quota = COALESCE(?, service_quota), endpoint_quota = COALESCE(?, endpoint_quota) WHERE name = ?"))
            .bind(services)
            .bind(endpoints)
            .bind(&name)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(super::not_found(&format!("account {name:?}")));
        }
        self.commit(tx).await?;
        self.accounts_where("WHERE name = ?", Some(&name))
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| super::not_found("account"))
    }

    pub(crate) async fn credential(&self, access_key: String) -> Result<Option<Credential>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&numbered(
            "SELECT domain_id, secret_sealed FROM credentials WHERE access_key = ?",
        ))
        .bind(&access_key)
        .fetch_optional(&mut *c)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: String = row.try_get("secret_sealed")?;
        Ok(Some(Credential {
            access_key,
            secret_key: self.key.open(&sealed)?,
            domain_id: row.try_get("domain_id")?,
        }))
    }

    pub(crate) async fn project_of(
        &self,
        domain_id: String,
        region: String,
    ) -> Result<Option<String>> {
        let mut c = self.read().await?;
        Ok(sqlx::query_scalar(&numbered(
            "SELECT id FROM projects WHERE domain_id = ? AND region = ?",
        ))
        .bind(&domain_id)
        .bind(&region)
        .fetch_optional(&mut *c)
        .await?)
    }

    pub(crate) async fn login(
        &self,
        name: String,
        password: String,
        region: String,
    ) -> Result<Option<IssuedToken>> {
        let row = {
            let mut c = self.read().await?;
            sqlx::query(&numbered("SELECT a.domain_id, a.password_hash, p.id AS project_id FROM accounts a JOIN projects p ON p.domain_id = a.domain_id AND p.region = ? WHERE a.name = ?"))
                .bind(&region)
                .bind(&name)
                .fetch_optional(&mut *c)
                .await?
        };
        let Some(row) = row else { return Ok(None) };
        let hash: String = row.try_get("password_hash")?;
        // PBKDF2 is deliberately slow: keep it off the async workers.
        let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
            .await
            .map_err(|e| StoreError::Corrupt(format!("password check: {e}")))?;
        if !ok {
            return Ok(None);
        }
        let caller = Caller {
            domain_id: row.try_get("domain_id")?,
            project_id: row.try_get("project_id")?,
        };
        let token = random_hex(32);
        let issued_at = now_micros();
        let expires_at = issued_at + TOKEN_LIFETIME_MICROS;
        let mut tx = self.begin().await?;
        sqlx::query(&numbered("DELETE FROM tokens WHERE expires_at < ?"))
            .bind(issued_at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&numbered("INSERT INTO tokens (token_hash, domain_id, project_id, expires_at) VALUES (?, ?, ?, ?)"))
            .bind(token_hash(&token))
            .bind(&caller.domain_id)
            .bind(&caller.project_id)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
        self.commit(tx).await?;
        Ok(Some(IssuedToken {
            token,
            caller,
            account_name: name,
            issued_at,
            expires_at,
        }))
    }

    pub(crate) async fn token(&self, token: String) -> Result<Option<Caller>> {
        let mut c = self.read().await?;
        let row = sqlx::query(&numbered(
            "SELECT domain_id, project_id FROM tokens WHERE token_hash = ? AND expires_at > ?",
        ))
        .bind(token_hash(&token))
        .bind(now_micros())
        .fetch_optional(&mut *c)
        .await?;
        row.map(|r| {
            Ok(Caller {
                domain_id: r.try_get("domain_id")?,
                project_id: r.try_get("project_id")?,
            })
        })
        .transpose()
    }
}
