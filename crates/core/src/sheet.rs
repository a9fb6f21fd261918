//! Drawing sheet numbers and titles, found in the text of a page.
//!
//! Construction drawings carry a title block with the sheet number (`A1.01`, `S-201`,
//! `FP-001`) and the sheet title (`FIRST FLOOR PLAN`). We only get the page's text in
//! content-stream order (no coordinates), so [`detect_sheet`] works on lines of text:
//!
//! 1. **Candidates.** A whitespace-separated token (trimmed of surrounding punctuation,
//!    and split at `/` so detail references like `3/A5.01` yield `A5.01`) is a candidate
//!    when it is, in full: a discipline designator of one or two uppercase letters whose
//!    first letter is a US National CAD Standard discipline (`A C D E F G H I L M O P Q R S
//!    T V W X Z`, plus `B`), an optional `-` or `.` separator, 1–4 digits, and an optional
//!    `.` with 1–3 digits. `H2O`, `ISO-9001`, `2024-01-05`, `Page 3` and `NO.5` do not
//!    match. A few letter pairs that are units or chemistry rather than disciplines
//!    (`CO2`, `KW`, …), four-digit years (`FY2024`) and grades following a standards body
//!    (`ASTM A615`) are rejected.
//! 2. **Weak shapes need a label.** A single letter with one or two digits and no
//!    separator (`A1`, `T2`, `C4`) is as likely a grid line, a transformer or a note tag
//!    as a sheet, so it only counts next to a sheet label.
//! 3. **Choice.** A candidate on a line with a sheet-number label (`SHEET NO.`, `SHEET`,
//!    `DWG NO.`, `DRAWING NUMBER`, …) or on the line right after one wins; among equals
//!    the last one in text order wins, because title blocks are usually drawn last
//!    (cross-references in the notes come earlier).
//! 4. **Title.** The nearest line (same line first, then one, two, three lines away,
//!    preferring the line above on a tie) that reads like a title: mostly uppercase
//!    words, at least three letters, letters dominating digits, and not a title-block
//!    label (`SCALE`, `DATE`, `DRAWN BY`, …). A leading `SHEET TITLE:`/`TITLE:` label is
//!    stripped.

/// A sheet number, and its title when one was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sheet {
    /// The sheet number as printed, e.g. `A1.01`.
    pub number: String,
    /// The sheet title, e.g. `FIRST FLOOR PLAN`.
    pub title: Option<String>,
}

/// First letters of discipline designators (US National CAD Standard).
const DISCIPLINES: &[u8] = b"ABCDEFGHILMOPQRSTVWXZ";

/// Letter pairs that look like designators but are units, chemistry or paging.
const NOT_DESIGNATORS: &[&str] = &[
    "CO", "HP", "KW", "KV", "KA", "GA", "PG", "PH", "SF", "LF", "SQ", "FT", "MM", "CM", "OZ",
];

/// Standards bodies whose designations (`ASTM A615`) look like sheet numbers.
const STANDARDS_BODIES: &[&str] = &["ASTM", "ANSI", "ASME", "ISO", "UL", "NFPA", "AWS", "AISC"];

/// Words that start a title-block label rather than a title.
const LABEL_WORDS: &[&str] = &[
    "SCALE", "DATE", "DRAWN", "CHECKED", "APPROVED", "PROJECT", "JOB", "SHEET", "DWG", "DRAWING",
    "REV", "REVISION", "ISSUE", "ISSUED", "NO", "NO.", "NUMBER", "SEAL", "OF",
];

/// Longest title we report; longer lines are notes, not titles.
const MAX_TITLE_CHARS: usize = 120;

/// Finds the sheet number (and title) in a page's text; see the module documentation
/// for the heuristic. `None` when nothing looks like a sheet number.
pub fn detect_sheet(text: &str) -> Option<Sheet> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let mut best: Option<(bool, usize, usize, &str)> = None; // (labelled, order, line, number)
    let mut order = 0;
    for (index, line) in lines.iter().enumerate() {
        let labelled = is_number_label(line) || (index > 0 && is_number_label(lines[index - 1]));
        let mut previous_word = "";
        for word in line.split_whitespace() {
            for part in word.split('/') {
                let token = trim_punctuation(part);
                if let Some(shape) = candidate_shape(token)
                    && !STANDARDS_BODIES.contains(&previous_word)
                    && (shape == Shape::Strong || labelled)
                {
                    order += 1;
                    let key = (labelled, order);
                    if best.is_none_or(|(l, o, _, _)| key > (l, o)) {
                        best = Some((labelled, order, index, token));
                    }
                }
            }
            previous_word = trim_punctuation(word);
        }
    }
    let (_, _, line_index, number) = best?;
    Some(Sheet {
        number: number.to_owned(),
        title: find_title(&lines, line_index, number),
    })
}

/// How much a token looks like a sheet number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Only with a label next to it: one letter and one or two digits (`A1`).
    Weak,
    /// Anything else that matches the pattern (`A101`, `A-1`, `E2.1`, `FP-001`).
    Strong,
}

/// Classifies `token` when all of it is a sheet number.
fn candidate_shape(token: &str) -> Option<Shape> {
    let bytes = token.as_bytes();
    let letters = bytes.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if !(1..=2).contains(&letters) || !DISCIPLINES.contains(&bytes[0]) {
        return None;
    }
    if letters == 2 && NOT_DESIGNATORS.contains(&&token[..2]) {
        return None;
    }
    let mut rest = &bytes[letters..];
    let separated = matches!(rest.first(), Some(b'-' | b'.'));
    if separated {
        rest = &rest[1..];
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if !(1..=4).contains(&digits) {
        return None;
    }
    let major = &rest[..digits];
    if digits == 4 && (major.starts_with(b"19") || major.starts_with(b"20")) {
        return None; // a year: FY2024, Q-2019
    }
    let rest = &rest[digits..];
    let decimal = match rest {
        [] => false,
        [b'.', tail @ ..]
            if (1..=3).contains(&tail.len()) && tail.iter().all(u8::is_ascii_digit) =>
        {
            true
        }
        _ => return None,
    };
    if letters == 1 && !separated && !decimal && digits <= 2 {
        Some(Shape::Weak)
    } else {
        Some(Shape::Strong)
    }
}

/// Strips punctuation a sheet number may be written with (`(A1.01)`, `A1.01,`).
fn trim_punctuation(word: &str) -> &str {
    word.trim_matches(|c: char| matches!(c, ',' | ';' | ':' | '(' | ')' | '[' | ']' | '"' | '\''))
        .trim_end_matches('.')
}

/// Whether `line` labels a sheet number (`SHEET NO.`, `SHEET:`, `DWG NO`, `DRAWING NUMBER`).
fn is_number_label(line: &str) -> bool {
    let upper = line.to_ascii_uppercase();
    let words: Vec<&str> = upper
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '#')
        .filter(|w| !w.is_empty())
        .collect();
    words.windows(2).any(|pair| {
        matches!(pair[0], "SHEET" | "DWG" | "DRAWING")
            && matches!(pair[1], "NO" | "NUMBER" | "NUM" | "#")
    }) || words.first() == Some(&"SHEET") && !words.contains(&"TITLE")
}

/// The title nearest to the number on line `line_index`.
fn find_title(lines: &[&str], line_index: usize, number: &str) -> Option<String> {
    let same_line = lines[line_index].replacen(number, " ", 1);
    if let Some(title) = as_title(&same_line) {
        return Some(title);
    }
    for distance in 1..=3 {
        let above = line_index.checked_sub(distance).map(|i| lines[i]);
        let below = lines.get(line_index + distance).copied();
        for line in [above, below].into_iter().flatten() {
            if let Some(title) = as_title(line) {
                return Some(title);
            }
        }
    }
    None
}

/// `line` as a title, when it reads like one (see the module documentation).
fn as_title(line: &str) -> Option<String> {
    let mut text = line.trim();
    for label in ["SHEET TITLE", "DRAWING TITLE", "TITLE"] {
        if let Some(rest) = strip_prefix_ignore_case(text, label) {
            text = rest.trim_start_matches([':', '-', ' ']).trim();
            break;
        }
    }
    let first_word = text.split_whitespace().next()?;
    if LABEL_WORDS.contains(&first_word.trim_end_matches(':')) {
        return None;
    }
    let letters = text.chars().filter(char::is_ascii_alphabetic).count();
    let uppercase = text.chars().filter(char::is_ascii_uppercase).count();
    let digits = text.chars().filter(char::is_ascii_digit).count();
    let mostly_uppercase = uppercase * 10 >= letters * 8;
    if letters < 3 || !mostly_uppercase || digits > letters || text.len() > MAX_TITLE_CHARS {
        return None;
    }
    if text
        .split_whitespace()
        .all(|w| candidate_shape(trim_punctuation(w)).is_some())
    {
        return None; // another sheet number, not a title
    }
    Some(text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// `text` without a leading `prefix` (ASCII case-insensitive), if it starts with it.
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn number(text: &str) -> Option<String> {
        detect_sheet(text).map(|sheet| sheet.number)
    }

    fn sheet(number: &str, title: Option<&str>) -> Option<Sheet> {
        Some(Sheet {
            number: number.to_owned(),
            title: title.map(str::to_owned),
        })
    }

    #[test]
    fn common_sheet_number_formats_are_recognised() {
        for n in [
            "A1.01", "S-201", "M-101", "E2.1", "A101", "FP-001", "C0.00", "AD-1", "P.301",
        ] {
            assert_eq!(
                number(&format!("GENERAL NOTES\n{n}\n")),
                Some(n.to_owned()),
                "{n}"
            );
        }
    }

    #[test]
    fn a_title_block_yields_number_and_title() {
        let text = "KEYED NOTES\n1. PROVIDE BLOCKING\nACME ARCHITECTS\nSHEET TITLE\nFIRST FLOOR PLAN\nSHEET NUMBER\nA1.01\n";
        assert_eq!(detect_sheet(text), sheet("A1.01", Some("FIRST FLOOR PLAN")));
    }

    #[test]
    fn the_title_may_follow_the_number() {
        let text = "S-201\nFOUNDATION PLAN\nSCALE: 1/8\" = 1'-0\"\n";
        assert_eq!(detect_sheet(text), sheet("S-201", Some("FOUNDATION PLAN")));
    }

    #[test]
    fn the_title_may_share_the_line_with_the_number() {
        assert_eq!(
            detect_sheet("M-101 MECHANICAL FLOOR PLAN - LEVEL 1"),
            sheet("M-101", Some("MECHANICAL FLOOR PLAN - LEVEL 1"))
        );
    }

    #[test]
    fn a_labelled_title_is_stripped_of_its_label() {
        let text = "SHEET TITLE: ROOF PLAN\nSHEET NO. A1.04\n";
        assert_eq!(detect_sheet(text), sheet("A1.04", Some("ROOF PLAN")));
    }

    #[test]
    fn the_last_candidate_wins_without_a_label() {
        let text = "SEE DETAIL 3/A5.01 AND A6.10\nREFLECTED CEILING PLAN\nA2.01\n";
        assert_eq!(
            detect_sheet(text),
            sheet("A2.01", Some("REFLECTED CEILING PLAN"))
        );
    }

    #[test]
    fn a_labelled_candidate_beats_a_later_unlabelled_one() {
        let text = "SHEET NO: E2.1\nPOWER PLAN\nREFER TO M-101 FOR UNITS\n";
        assert_eq!(number(text), Some("E2.1".to_owned()));
    }

    #[test]
    fn a_value_under_a_sheet_label_is_labelled() {
        let text = "A3.01\nDWG NO.\nA2\n";
        assert_eq!(number(text), Some("A2".to_owned()));
    }

    #[test]
    fn detail_references_split_at_the_slash() {
        assert_eq!(number("SECTION 2/S-501"), Some("S-501".to_owned()));
    }

    #[test]
    fn punctuation_around_the_number_is_ignored() {
        assert_eq!(number("(A1.01),"), Some("A1.01".to_owned()));
        assert_eq!(number("SEE A1.01."), Some("A1.01".to_owned()));
    }

    #[test]
    fn weak_shapes_need_a_label() {
        assert_eq!(number("GRID LINE A1 TO A4\nT2 TRANSFORMER"), None);
        assert_eq!(number("SHEET A1"), Some("A1".to_owned()));
    }

    #[test]
    fn chemistry_units_and_standards_are_not_sheets() {
        for text in [
            "H2O",
            "CO2 SENSOR",
            "ISO-9001 CERTIFIED",
            "ISO 9001",
            "ASTM A615 GRADE 60",
            "KW-200",
            "FY2024 BUDGET",
        ] {
            assert_eq!(number(text), None, "{text}");
        }
    }

    #[test]
    fn dates_and_page_numbers_are_not_sheets() {
        for text in [
            "2024-01-05",
            "01.05.2024",
            "Page 3 of 10",
            "PAGE 3",
            "NO.5",
            "Section 01 10 00 - Summary",
            "1.2 SUBMITTALS",
        ] {
            assert_eq!(number(text), None, "{text}");
        }
    }

    #[test]
    fn lowercase_and_overlong_tokens_are_not_sheets() {
        for text in [
            "a1.01", "ABC-101", "A12345", "A1.0001", "A-", "A1.", "A1-01",
        ] {
            assert_eq!(number(text), None, "{text}");
        }
    }

    #[test]
    fn spec_text_has_no_sheet() {
        let text = "SECTION 09 91 23\nINTERIOR PAINTING\nPART 1 - GENERAL\n1.1 SUMMARY\nA. Section includes surface preparation.\n";
        assert_eq!(detect_sheet(text), None);
    }

    #[test]
    fn labels_and_notes_are_not_titles() {
        let text = "SCALE: AS NOTED\nDATE: 01/05/2024\nA1.01\nDRAWN BY: JD\n";
        assert_eq!(detect_sheet(text), sheet("A1.01", None));
    }

    #[test]
    fn mixed_case_lines_are_not_titles() {
        let text = "Provide all work per code.\nC0.00\n";
        assert_eq!(detect_sheet(text), sheet("C0.00", None));
    }

    #[test]
    fn the_nearest_title_wins_and_above_breaks_ties() {
        let text = "COVER SHEET\nSITE PLAN\nC1.0\nGRADING PLAN\n";
        assert_eq!(detect_sheet(text), sheet("C1.0", Some("SITE PLAN")));
    }

    #[test]
    fn another_number_is_not_a_title() {
        let text = "A5.01 A5.02\nA1.01\n";
        assert_eq!(detect_sheet(text), sheet("A1.01", None));
    }

    #[test]
    fn overlong_lines_are_not_titles() {
        let long = "THIS IS A VERY LONG GENERAL NOTE ".repeat(5);
        assert_eq!(
            detect_sheet(&format!("{long}\nA1.01")),
            sheet("A1.01", None)
        );
    }

    #[test]
    fn empty_text_has_no_sheet() {
        assert_eq!(detect_sheet(""), None);
        assert_eq!(detect_sheet("   \n\n"), None);
    }
}
