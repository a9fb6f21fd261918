//! The displayed size of a page (runs in the worker child): `/MediaBox`, `/CropBox` and
//! `/Rotate` are inheritable from the page tree (PDF 32000-1 §7.7.3.4), the crop box is
//! clipped to the media box (§14.11.2), `/UserUnit` scales both (§14.11.2.1), and a
//! quarter turn swaps width and height.

use lopdf::{Dictionary, Document, Object, ObjectId};

use super::PageBox;

/// How far up the page tree we look for an inherited attribute (lopdf bounds the tree's
/// depth too; a cycle in `/Parent` ends here).
const MAX_TREE_DEPTH: usize = 64;

/// US Letter: what readers (pdf.js, poppler) assume when no `/MediaBox` is given at all.
const DEFAULT_MEDIA_BOX: [f64; 4] = [0.0, 0.0, 612.0, 792.0];

/// The displayed size of page `page_number` (object `page_id`).
pub fn page_box(
    document: &Document,
    page_number: u32,
    page_id: ObjectId,
) -> Result<PageBox, String> {
    let page = document
        .get_dictionary(page_id)
        .map_err(|_| format!("the PDF is damaged: page {page_number} cannot be read"))?;
    let media = match inherited(document, page, b"MediaBox") {
        Some(object) => rectangle(document, object).ok_or_else(|| {
            format!("the PDF is damaged: page {page_number} has an invalid /MediaBox")
        })?,
        None => DEFAULT_MEDIA_BOX,
    };
    // An unreadable or disjoint crop box is ignored, as readers do.
    let visible = inherited(document, page, b"CropBox")
        .and_then(|object| rectangle(document, object))
        .and_then(|crop| intersect(crop, media))
        .unwrap_or(media);
    let unit = page
        .get(b"UserUnit")
        .ok()
        .and_then(|object| number(document, object))
        .filter(|unit| *unit > 0.0)
        .unwrap_or(1.0);
    let rotate = inherited(document, page, b"Rotate")
        .and_then(|object| number(document, object))
        .map_or(0, |degrees| (degrees as i64).rem_euclid(360));
    let width = (visible[2] - visible[0]) * unit;
    let height = (visible[3] - visible[1]) * unit;
    if !(width > 0.0 && height > 0.0 && width.is_finite() && height.is_finite()) {
        return Err(format!(
            "the PDF is damaged: page {page_number} has an empty /MediaBox"
        ));
    }
    Ok(if rotate == 90 || rotate == 270 {
        PageBox {
            width_pt: height,
            height_pt: width,
        }
    } else {
        PageBox {
            width_pt: width,
            height_pt: height,
        }
    })
}

/// `key` on the page or its nearest ancestor that has it.
fn inherited<'a>(document: &'a Document, page: &'a Dictionary, key: &[u8]) -> Option<&'a Object> {
    let mut node = page;
    for _ in 0..MAX_TREE_DEPTH {
        if let Ok(value) = node.get(key) {
            return Some(value);
        }
        let parent = node.get(b"Parent").ok()?.as_reference().ok()?;
        node = document.get_dictionary(parent).ok()?;
    }
    None
}

/// A rectangle `[x1 y1 x2 y2]`, normalised so that x1 ≤ x2 and y1 ≤ y2.
fn rectangle(document: &Document, object: &Object) -> Option<[f64; 4]> {
    let (_, object) = document.dereference(object).ok()?;
    let values = object.as_array().ok()?;
    if values.len() != 4 {
        return None;
    }
    let mut corners = [0.0; 4];
    for (corner, value) in corners.iter_mut().zip(values) {
        *corner = number(document, value)?;
    }
    let [x1, y1, x2, y2] = corners;
    Some([x1.min(x2), y1.min(y2), x1.max(x2), y1.max(y2)])
}

/// The overlap of two rectangles, if they overlap.
fn intersect(a: [f64; 4], b: [f64; 4]) -> Option<[f64; 4]> {
    let overlap = [
        a[0].max(b[0]),
        a[1].max(b[1]),
        a[2].min(b[2]),
        a[3].min(b[3]),
    ];
    (overlap[0] < overlap[2] && overlap[1] < overlap[3]).then_some(overlap)
}

/// An integer or real, possibly behind a reference.
fn number(document: &Document, object: &Object) -> Option<f64> {
    let (_, object) = document.dereference(object).ok()?;
    match object {
        Object::Integer(value) => Some(*value as f64),
        Object::Real(value) => Some(f64::from(*value)),
        _ => None,
    }
    .filter(|value| value.is_finite())
}
