//! The credits ledger: every movement is a row, the balance per organization is kept in
//! `credit_balances` (locked while it changes, never below zero).

use sqlx::PgConnection;

use crate::error::Error;

/// Adds `amount` (negative to correct) to `org_id`'s balance with a ledger row; returns the
/// new balance. A correction below zero is refused.
pub async fn grant(
    conn: &mut PgConnection,
    org_id: &str,
    amount: i64,
    reason: &str,
) -> Result<i64, Error> {
    sqlx::query(
        "INSERT INTO credit_balances (org_id, balance) VALUES ($1, 0) ON CONFLICT DO NOTHING",
    )
    .bind(org_id)
    .execute(&mut *conn)
    .await?;
    let balance: i64 = sqlx::query_scalar(
        "UPDATE credit_balances SET balance = balance + $2 \
         WHERE org_id = $1 AND balance + $2 >= 0 RETURNING balance",
    )
    .bind(org_id)
    .bind(amount)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| {
        Error::InvalidField(plangrep_core::validate::FieldError::new(
            "amount",
            "would make the balance negative",
        ))
    })?;
    sqlx::query(
        "INSERT INTO credit_ledger (org_id, amount, reason, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(org_id)
    .bind(amount)
    .bind(reason)
    .bind(super::now())
    .execute(conn)
    .await?;
    Ok(balance)
}

/// The current balance (zero when nothing was ever granted).
pub async fn balance(conn: &mut PgConnection, org_id: &str) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT balance FROM credit_balances WHERE org_id = $1")
            .bind(org_id)
            .fetch_optional(conn)
            .await?
            .unwrap_or(0),
    )
}
