//! PDF inspection and extraction as the pipeline uses them: through `Inspector`, which
//! runs the real orchestrator binary's `pdf-worker` children under limits. Fixtures come
//! from the independent writer in `plangrep_test_support::pdf`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plangrep_job_orchestrator::pdf::{Inspector, Limits, PageBox, PageOutcome, PageText};
use plangrep_test_support::eventually;
use plangrep_test_support::pdf::{self, ARCH_D, LETTER, PdfBuilder};

const BINARY: &str = env!("CARGO_BIN_EXE_job-orchestrator");

/// A fixture written to a temporary file, deleted on drop.
struct PdfFile(PathBuf);

impl PdfFile {
    fn new(bytes: &[u8]) -> Self {
        let path = std::env::temp_dir().join(format!(
            "plangrep-pdf-{}.pdf",
            plangrep_test_support::random_token()
        ));
        std::fs::write(&path, bytes).expect("write fixture");
        Self(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PdfFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn inspector(limits: Limits) -> Inspector {
    Inspector::new(BINARY.into(), limits)
}

fn size(width_pt: f64, height_pt: f64) -> PageBox {
    PageBox {
        width_pt,
        height_pt,
    }
}

/// The pipeline moves streams and their futures into spawned tasks.
fn assert_send<T: Send>(_: &T) {}

async fn extract_all(
    inspector: &Inspector,
    file: &PdfFile,
    first: u32,
    last: u32,
) -> Vec<PageOutcome> {
    let mut stream = inspector.extract(file.path(), first, last);
    assert_send(&stream);
    assert_send(&stream.next_page());
    let mut outcomes = Vec::new();
    while let Some(outcome) = stream.next_page().await {
        outcomes.push(outcome);
    }
    outcomes
}

fn text(outcome: &PageOutcome) -> &PageText {
    outcome
        .result
        .as_ref()
        .unwrap_or_else(|error| panic!("page {} failed: {error}", outcome.page_number))
}

fn non_whitespace(lines: &[&str]) -> u32 {
    lines
        .iter()
        .flat_map(|line| line.chars())
        .filter(|c| !c.is_whitespace())
        .count() as u32
}

/// A letter page, a page whose content stream inflates to 250 MB of spaces (minutes of
/// work for a debug build's inflater and content parser), and another letter page.
fn document_with_a_slow_page() -> Vec<u8> {
    let (width, height) = LETTER;
    PdfBuilder::new()
        .page(width, height, &["BEFORE"])
        .flate_page(
            width,
            height,
            "BT /F1 12 Tf 72 720 Td (SLOW) Tj ET\n",
            250_000_000,
        )
        .page(width, height, &["AFTER"])
        .build()
}

#[tokio::test]
async fn inspecting_a_drawing_set_and_spec_book_gives_every_page_size() {
    let file = PdfFile::new(&pdf::drawing_set_and_spec_book());

    let pages = inspector(Limits::default())
        .inspect(file.path())
        .await
        .unwrap();

    let drawing = size(ARCH_D.0, ARCH_D.1);
    let letter = size(LETTER.0, LETTER.1);
    assert_eq!(pages, [drawing, drawing, drawing, drawing, letter, letter]);
}

#[tokio::test]
async fn inherited_cropped_and_rotated_pages_report_their_displayed_size() {
    let file = PdfFile::new(
        &PdfBuilder::new()
            .page_inheriting_size(1224.0, 792.0, &["INHERITED"])
            .page(612.0, 792.0, &["ROTATED"])
            .rotated(90)
            .page(612.0, 792.0, &["CROPPED"])
            .cropped([36.0, 36.0, 576.0, 756.0])
            .page(ARCH_D.1, ARCH_D.0, &["PORTRAIT DRAWING TURNED"])
            .rotated(-90)
            .build(),
    );

    let pages = inspector(Limits::default())
        .inspect(file.path())
        .await
        .unwrap();

    assert_eq!(
        pages,
        [
            size(1224.0, 792.0),
            size(792.0, 612.0),
            size(540.0, 720.0),
            size(ARCH_D.0, ARCH_D.1)
        ]
    );
}

#[tokio::test]
async fn extraction_reports_sheet_numbers_titles_and_text_per_page() {
    let file = PdfFile::new(&pdf::drawing_set_and_spec_book());

    let outcomes = extract_all(&inspector(Limits::default()), &file, 1, 6).await;

    let numbers: Vec<u32> = outcomes.iter().map(|o| o.page_number).collect();
    assert_eq!(numbers, [1, 2, 3, 4, 5, 6]);
    let sheets: Vec<(Option<&str>, Option<&str>)> = outcomes
        .iter()
        .map(|o| {
            (
                text(o).sheet_number.as_deref(),
                text(o).sheet_title.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        sheets,
        [
            (Some("A1.01"), Some("FIRST FLOOR PLAN")),
            (Some("S-201"), Some("FOUNDATION PLAN")),
            (Some("M-101"), Some("MECHANICAL FLOOR PLAN")),
            (None, None),
            (None, None),
            (None, None),
        ]
    );
    // The scanned sheet has no text layer, and is still a valid page.
    assert_eq!(text(&outcomes[3]).text_chars, 0);
    assert_eq!(
        text(&outcomes[4]).text_chars,
        non_whitespace(&[
            "SECTION 09 91 23 - INTERIOR PAINTING",
            "PART 1 - GENERAL",
            "1.1 SUMMARY",
            "A. Section includes materials and installation.",
        ])
    );
}

#[tokio::test]
async fn extraction_can_start_mid_document_and_ends_after_the_last_page_asked_for() {
    let file = PdfFile::new(&pdf::drawing_set_and_spec_book());

    let outcomes = extract_all(&inspector(Limits::default()), &file, 2, 3).await;

    let sheets: Vec<(u32, Option<&str>)> = outcomes
        .iter()
        .map(|o| (o.page_number, text(o).sheet_number.as_deref()))
        .collect();
    assert_eq!(sheets, [(2, Some("S-201")), (3, Some("M-101"))]);
}

#[tokio::test]
async fn pages_past_the_end_of_the_document_are_page_errors() {
    let file = PdfFile::new(&pdf::many_pages(2));

    let outcomes = extract_all(&inspector(Limits::default()), &file, 2, 3).await;

    assert_eq!(outcomes.len(), 2);
    assert!(outcomes[0].result.is_ok());
    let error = outcomes[1].result.as_ref().unwrap_err();
    assert!(error.contains("no such page"), "{error}");
}

#[tokio::test]
async fn a_file_that_is_not_a_pdf_is_invalid() {
    let file = PdfFile::new(&pdf::not_a_pdf());

    let invalid = inspector(Limits::default())
        .inspect(file.path())
        .await
        .unwrap_err();

    assert!(invalid.to_string().starts_with("not a PDF"), "{invalid}");
}

#[tokio::test]
async fn a_truncated_pdf_is_invalid() {
    let file = PdfFile::new(&pdf::truncated(&pdf::drawing_set_and_spec_book()));

    let invalid = inspector(Limits::default())
        .inspect(file.path())
        .await
        .unwrap_err();

    assert!(
        invalid.message.starts_with("the PDF is damaged"),
        "{invalid}"
    );
}

#[tokio::test]
async fn extracting_from_an_unreadable_file_fails_every_page_with_one_child() {
    let file = PdfFile::new(&pdf::not_a_pdf());

    let outcomes = extract_all(&inspector(Limits::default()), &file, 1, 50).await;

    assert_eq!(outcomes.len(), 50);
    for outcome in &outcomes {
        let error = outcome.result.as_ref().unwrap_err();
        assert!(error.starts_with("not a PDF"), "{error}");
    }
}

#[tokio::test]
async fn a_nesting_bomb_is_an_invalid_pdf_and_the_caller_is_unharmed() {
    let file = PdfFile::new(&pdf::stack_bomb());

    let invalid = inspector(Limits::default())
        .inspect(file.path())
        .await
        .unwrap_err();

    assert!(
        invalid.message.starts_with("the PDF is damaged"),
        "{invalid}"
    );
    // Still here, and the next file is read as usual.
    let good = PdfFile::new(&pdf::many_pages(1));
    assert_eq!(
        inspector(Limits::default())
            .inspect(good.path())
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_content_stream_nesting_bomb_fails_only_its_page() {
    let (width, height) = LETTER;
    let file = PdfFile::new(
        &PdfBuilder::new()
            .page(width, height, &["BEFORE"])
            .raw_page(
                width,
                height,
                pdf::nested_operand_content(pdf::STACK_BOMB_DEPTH),
            )
            .page(width, height, &["AFTER"])
            .build(),
    );
    let inspector = inspector(Limits::default());
    assert_eq!(inspector.inspect(file.path()).await.unwrap().len(), 3);

    let outcomes = extract_all(&inspector, &file, 1, 3).await;

    assert_eq!(text(&outcomes[0]).text_chars, 6);
    assert!(outcomes[1].result.is_err(), "{:?}", outcomes[1]);
    assert_eq!(text(&outcomes[2]).text_chars, 5);
}

#[tokio::test]
async fn a_page_that_exhausts_the_memory_limit_aborts_only_its_child_and_the_next_page_follows() {
    let (width, height) = LETTER;
    let file = PdfFile::new(
        &PdfBuilder::new()
            .page(width, height, &["BEFORE"])
            .raw_page(width, height, pdf::operand_flood_content(1_500_000))
            .page(width, height, &["AFTER"])
            .build(),
    );
    let inspector = inspector(Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    });
    assert_eq!(inspector.inspect(file.path()).await.unwrap().len(), 3);

    let outcomes = extract_all(&inspector, &file, 1, 3).await;

    assert_eq!(text(&outcomes[0]).text_chars, 6);
    let error = outcomes[1].result.as_ref().unwrap_err();
    // The failed allocation aborts the child: SIGABRT, past any catch_unwind.
    assert!(
        error.contains("crashed on this page (killed by signal 6)"),
        "{error}"
    );
    assert_eq!(text(&outcomes[2]).text_chars, 5);
}

#[tokio::test]
async fn a_page_that_exceeds_the_cpu_limit_kills_only_its_child_and_the_next_page_follows() {
    let file = PdfFile::new(&document_with_a_slow_page());
    let limits = Limits {
        cpu_seconds: 1,
        wall_clock: Duration::from_secs(120),
        ..Limits::default()
    };

    let outcomes = extract_all(&inspector(limits), &file, 1, 3).await;

    assert_eq!(outcomes.len(), 3);
    assert_eq!(text(&outcomes[0]).text_chars, 6);
    let error = outcomes[1].result.as_ref().unwrap_err();
    // SIGXCPU (24) at the soft limit, or SIGKILL (9) at the hard limit a second later.
    assert!(
        error.contains("crashed on this page (killed by signal"),
        "{error}"
    );
    assert_eq!(text(&outcomes[2]).text_chars, 5);
}

#[tokio::test]
async fn a_long_document_is_not_cut_short_by_the_per_process_cpu_limit() {
    // Twenty pages of 60 000 operands each: about 0.1 CPU seconds per page in a debug
    // build, 2 s in all, under a 1 s limit. The worker steps down after half its budget
    // and a fresh one continues, so no healthy page is killed (a page only needs to
    // fit in half the budget).
    let (width, height) = LETTER;
    let file = PdfFile::new(
        &(0..20)
            .fold(PdfBuilder::new(), |builder, _| {
                builder.raw_page(width, height, pdf::operand_flood_content(60_000))
            })
            .build(),
    );
    let limits = Limits {
        cpu_seconds: 1,
        ..Limits::default()
    };

    let outcomes = extract_all(&inspector(limits), &file, 1, 20).await;

    assert_eq!(outcomes.len(), 20);
    for outcome in &outcomes {
        assert_eq!(text(outcome).text_chars, 0);
    }
}

#[tokio::test]
async fn a_page_that_exceeds_the_wall_clock_is_killed_and_the_next_page_follows() {
    let file = PdfFile::new(&document_with_a_slow_page());
    let limits = Limits {
        wall_clock: Duration::from_secs(3),
        ..Limits::default()
    };
    let started = Instant::now();

    let outcomes = extract_all(&inspector(limits), &file, 1, 3).await;

    let error = outcomes[1].result.as_ref().unwrap_err();
    assert!(error.contains("timed out"), "{error}");
    assert_eq!(text(&outcomes[2]).text_chars, 5);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_inspection_past_the_wall_clock_is_an_invalid_pdf() {
    // Opening 5 000 pages takes seconds in a debug build.
    let file = PdfFile::new(&pdf::many_pages(5_000));
    let limits = Limits {
        wall_clock: Duration::from_millis(100),
        ..Limits::default()
    };

    let invalid = inspector(limits).inspect(file.path()).await.unwrap_err();

    assert!(invalid.message.contains("timed out"), "{invalid}");
    assert_eq!(
        workers_on(&file),
        0,
        "the timed-out worker is killed and reaped"
    );
}

#[tokio::test]
async fn inspecting_five_hundred_pages_takes_one_child_and_little_time() {
    let file = PdfFile::new(&pdf::many_pages(500));
    let started = Instant::now();

    let pages = inspector(Limits::default())
        .inspect(file.path())
        .await
        .unwrap();

    let elapsed = started.elapsed();
    eprintln!("inspect of 500 pages: {elapsed:?}");
    assert_eq!(pages.len(), 500);
    assert!(elapsed < Duration::from_secs(30), "{elapsed:?}");
}

/// Processes whose command line mentions `file` (zombies have an empty one).
fn workers_on(file: &PdfFile) -> usize {
    let needle = file.path().as_os_str().as_encoded_bytes().to_vec();
    std::fs::read_dir("/proc")
        .expect("procfs")
        .filter_map(|entry| std::fs::read(entry.ok()?.path().join("cmdline")).ok())
        .filter(|cmdline| {
            cmdline
                .windows(needle.len())
                .any(|w| w == needle.as_slice())
        })
        .count()
}

#[tokio::test]
async fn dropping_a_page_stream_kills_its_child() {
    let file = PdfFile::new(&document_with_a_slow_page());
    let mut stream = inspector(Limits::default()).extract(file.path(), 1, 3);
    // Page 1 is quick; the child is now busy on the slow page 2.
    assert!(stream.next_page().await.unwrap().result.is_ok());
    assert_eq!(workers_on(&file), 1);

    drop(stream);

    eventually("the worker to be gone", Duration::from_secs(10), || async {
        (workers_on(&file) == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_page_abandoned_mid_extraction_is_extracted_again_by_the_next_call() {
    let file = PdfFile::new(&document_with_a_slow_page());
    let mut stream = inspector(Limits::default()).extract(file.path(), 2, 3);

    // Give up on the slow page 2 while its child works on it.
    let abandoned = tokio::time::timeout(Duration::from_millis(200), stream.next_page()).await;
    assert!(abandoned.is_err(), "page 2 should still be in progress");

    // The abandoned child is gone, and the stream starts page 2 again.
    eventually(
        "the abandoned worker to be gone",
        Duration::from_secs(10),
        || async { (workers_on(&file) == 0).then_some(()) },
    )
    .await;
    let retry = stream.next_page();
    tokio::pin!(retry);
    let still_working = tokio::time::timeout(Duration::from_millis(200), &mut retry).await;
    assert!(still_working.is_err());
    assert_eq!(workers_on(&file), 1);
}
