//! The credits ledger: every movement is a row (grant, reserve, debit, release), the
//! available balance per organization is kept in `credit_balances` (locked while it
//! changes, never below zero), and the per-organization page rates.
//!
//! A job's credits move in three steps: preflight *reserves* the price of its pages (the
//! balance drops by it), each processed page *debits* its price from that reservation,
//! and the end of the job (whatever it is) *releases* the rest back to the balance.

use plangrep_core::pages::CreditRates;
use plangrep_core::validate::FieldError;
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
        Error::InvalidField(FieldError::new("amount", "would make the balance negative"))
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

/// The organization's credit rates (SPEC defaults until an operator sets them).
pub async fn rates(conn: &mut PgConnection, org_id: &str) -> Result<CreditRates, Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT drawing_page_rate, document_page_rate FROM credit_rates WHERE org_id = $1",
    )
    .bind(org_id)
    .fetch_optional(conn)
    .await?;
    Ok(
        row.map_or_else(CreditRates::default, |(drawing, document)| CreditRates {
            drawing,
            document,
        }),
    )
}

/// Sets some or all of the organization's rates; returns the rates now in force.
pub async fn set_rates(
    conn: &mut PgConnection,
    org_id: &str,
    drawing: Option<i64>,
    document: Option<i64>,
) -> Result<CreditRates, Error> {
    for (field, value) in [("drawingPageRate", drawing), ("documentPageRate", document)] {
        if value.is_some_and(|rate| !(0..=1_000_000).contains(&rate)) {
            return Err(Error::InvalidField(FieldError::new(
                field,
                "must be an integer from 0 to 1000000",
            )));
        }
    }
    let defaults = CreditRates::default();
    let (drawing, document): (i64, i64) = sqlx::query_as(
        "INSERT INTO credit_rates (org_id, drawing_page_rate, document_page_rate) \
         VALUES ($1, COALESCE($2, $4), COALESCE($3, $5)) \
         ON CONFLICT (org_id) DO UPDATE SET \
           drawing_page_rate = COALESCE($2, credit_rates.drawing_page_rate), \
           document_page_rate = COALESCE($3, credit_rates.document_page_rate) \
         RETURNING drawing_page_rate, document_page_rate",
    )
    .bind(org_id)
    .bind(drawing)
    .bind(document)
    .bind(defaults.drawing)
    .bind(defaults.document)
    .fetch_one(conn)
    .await?;
    Ok(CreditRates { drawing, document })
}

/// Takes `amount` from the organization's balance for `job_id`, atomically: `false` (and
/// nothing changed) when the balance is too low. Concurrent reservations of one
/// organization serialize on its balance row, so the balance never goes negative.
pub async fn reserve(
    conn: &mut PgConnection,
    org_id: &str,
    job_id: &str,
    amount: i64,
) -> Result<bool, Error> {
    if amount == 0 {
        return Ok(true);
    }
    let reserved = sqlx::query(
        "UPDATE credit_balances SET balance = balance - $2 WHERE org_id = $1 AND balance >= $2",
    )
    .bind(org_id)
    .bind(amount)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if reserved {
        append(
            conn,
            org_id,
            Some(job_id),
            "reserve",
            -amount,
            "credits reserved by preflight",
        )
        .await?;
    }
    Ok(reserved)
}

/// Records that `amount` of the job's reservation was consumed by a processed page (the
/// balance paid for it at reservation time).
pub async fn debit(
    conn: &mut PgConnection,
    org_id: &str,
    job_id: &str,
    amount: i64,
) -> Result<(), Error> {
    if amount == 0 {
        return Ok(());
    }
    append(
        conn,
        org_id,
        Some(job_id),
        "debit",
        -amount,
        "page processed",
    )
    .await
}

/// Gives the unused part of a job's reservation back to the organization.
pub async fn release(
    conn: &mut PgConnection,
    org_id: &str,
    job_id: &str,
    amount: i64,
) -> Result<(), Error> {
    if amount <= 0 {
        return Ok(());
    }
    sqlx::query("UPDATE credit_balances SET balance = balance + $2 WHERE org_id = $1")
        .bind(org_id)
        .bind(amount)
        .execute(&mut *conn)
        .await?;
    append(
        conn,
        org_id,
        Some(job_id),
        "release",
        amount,
        "unused reservation released",
    )
    .await
}

async fn append(
    conn: &mut PgConnection,
    org_id: &str,
    job_id: Option<&str>,
    kind: &str,
    amount: i64,
    reason: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO credit_ledger (org_id, job_id, kind, amount, reason, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(org_id)
    .bind(job_id)
    .bind(kind)
    .bind(amount)
    .bind(reason)
    .bind(super::now())
    .execute(conn)
    .await?;
    Ok(())
}
