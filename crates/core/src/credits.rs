//! Bounds of credit amounts and rates, shared by the admin API (the edge) and the
//! orchestrator's internal RPCs, which re-check whoever calls them.

use crate::validate::FieldError;

/// The largest absolute amount one grant (or correction) may move.
pub const MAX_GRANT: i64 = 1_000_000_000_000;

/// The largest credit rate per page.
pub const MAX_RATE: i64 = 1_000_000;

/// A grant amount: non-zero (negative corrects a balance), at most [`MAX_GRANT`] in
/// absolute value.
pub fn grant_amount(amount: i64) -> Result<i64, FieldError> {
    if amount != 0 && amount.unsigned_abs() <= MAX_GRANT.unsigned_abs() {
        Ok(amount)
    } else {
        Err(FieldError::new(
            "amount",
            "must be a non-zero integer of at most 10^12 in absolute value",
        ))
    }
}

/// A grant's reason: 1 to 180 printable characters.
pub fn grant_reason(reason: &str) -> Result<&str, FieldError> {
    let trimmed = reason.trim();
    if trimmed.is_empty() || trimmed.chars().count() > 180 || trimmed.chars().any(char::is_control)
    {
        return Err(FieldError::new(
            "reason",
            "must be 1 to 180 printable characters",
        ));
    }
    Ok(trimmed)
}

/// A per-page rate: 0 to [`MAX_RATE`] credits.
pub fn rate(field: &'static str, rate: i64) -> Result<i64, FieldError> {
    if (0..=MAX_RATE).contains(&rate) {
        Ok(rate)
    } else {
        Err(FieldError::new(
            field,
            format!("must be an integer from 0 to {MAX_RATE}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_reasons_and_rates_are_bounded() {
        assert_eq!(grant_amount(-5), Ok(-5));
        assert_eq!(grant_amount(MAX_GRANT), Ok(MAX_GRANT));
        for bad in [0, MAX_GRANT + 1, -MAX_GRANT - 1, i64::MIN, i64::MAX] {
            assert!(grant_amount(bad).is_err(), "{bad}");
        }
        assert_eq!(grant_reason(" welcome "), Ok("welcome"));
        for bad in ["", "   ", "a\u{0}b", &"x".repeat(181)] {
            assert!(grant_reason(bad).is_err(), "{bad:?}");
        }
        assert_eq!(rate("drawingPageRate", 0), Ok(0));
        assert!(rate("drawingPageRate", -1).is_err());
        assert!(rate("drawingPageRate", MAX_RATE + 1).is_err());
    }
}
