//! Pages and what they cost (SPEC §4 "Processing"): a page is a *drawing* when its shorter
//! side is at least 11 in (792 pt), else a *document* page; credits are charged per page
//! at the organization's rate for its kind.

use std::fmt;
use std::str::FromStr;

/// The shorter side, in points, from which a page counts as a drawing (11 in).
pub const DRAWING_MIN_SHORT_SIDE_PT: f64 = 792.0;

/// What kind of page this is, by size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PageKind {
    /// A drawing sheet (shorter side ≥ 11 in).
    Drawing,
    /// Any smaller page (letter, A4, legal, …).
    Document,
}

impl PageKind {
    /// The kind of a `width_pt` × `height_pt` page (orientation does not matter).
    /// Rounding noise of a few hundredths of a point does not make a letter-size
    /// landscape page (792 × 612) a drawing, because the shorter side decides.
    pub fn of(width_pt: f64, height_pt: f64) -> Self {
        if width_pt.min(height_pt) >= DRAWING_MIN_SHORT_SIDE_PT - 0.5 {
            PageKind::Drawing
        } else {
            PageKind::Document
        }
    }

    /// The wire name (`drawing` / `document`).
    pub const fn as_str(self) -> &'static str {
        match self {
            PageKind::Drawing => "drawing",
            PageKind::Document => "document",
        }
    }
}

impl fmt::Display for PageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for PageKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drawing" => Ok(PageKind::Drawing),
            "document" => Ok(PageKind::Document),
            other => Err(format!("unknown page kind {other:?}")),
        }
    }
}

/// Credits per page of each kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreditRates {
    /// Credits per drawing page.
    pub drawing: i64,
    /// Credits per document page.
    pub document: i64,
}

impl Default for CreditRates {
    /// The SPEC defaults: 10 per drawing page, 1 per document page.
    fn default() -> Self {
        Self {
            drawing: 10,
            document: 1,
        }
    }
}

impl CreditRates {
    /// The price of one page of `kind`.
    pub const fn cost(&self, kind: PageKind) -> i64 {
        match kind {
            PageKind::Drawing => self.drawing,
            PageKind::Document => self.document,
        }
    }

    /// The credits a set of pages needs (saturating: an absurd total is simply too many).
    pub fn required(&self, drawing_pages: u32, document_pages: u32) -> i64 {
        self.drawing
            .saturating_mul(i64::from(drawing_pages))
            .saturating_add(self.document.saturating_mul(i64::from(document_pages)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shorter_side_decides_the_kind() {
        assert_eq!(PageKind::of(612.0, 792.0), PageKind::Document); // letter
        assert_eq!(PageKind::of(792.0, 612.0), PageKind::Document); // letter, landscape
        assert_eq!(PageKind::of(595.3, 841.9), PageKind::Document); // A4
        assert_eq!(PageKind::of(792.0, 1224.0), PageKind::Drawing); // tabloid, 11 × 17 in
        assert_eq!(PageKind::of(2592.0, 1728.0), PageKind::Drawing); // ARCH D
        assert_eq!(PageKind::of(791.9, 1224.0), PageKind::Drawing); // rounding noise
        assert_eq!(PageKind::of(780.0, 1224.0), PageKind::Document);
    }

    #[test]
    fn credits_follow_the_rates() {
        let rates = CreditRates::default();
        assert_eq!(rates.required(3, 12), 42);
        assert_eq!(rates.cost(PageKind::Drawing), 10);
        let custom = CreditRates {
            drawing: 7,
            document: 0,
        };
        assert_eq!(custom.required(2, 100), 14);
        assert_eq!(
            CreditRates {
                drawing: i64::MAX,
                document: 1
            }
            .required(2, 1),
            i64::MAX
        );
    }

    #[test]
    fn kinds_round_trip() {
        for kind in [PageKind::Drawing, PageKind::Document] {
            assert_eq!(kind.as_str().parse::<PageKind>(), Ok(kind));
        }
    }
}
