//! What a file is and how a browser may show it: the stored MIME type (the
//! client's claim checked against the file's magic bytes), the download's
//! `Content-Disposition`, and file names safe to store and to put in a header.
//! Pure functions, no I/O.

/// How many leading bytes of an upload are kept for sniffing.
pub const SNIFF_BYTES: usize = 8192;

pub const OCTET_STREAM: &str = "application/octet-stream";

/// Longest stored file name, in characters.
const MAX_NAME_CHARS: usize = 255;

/// A file name safe to store and show: the last path component only, no
/// control or bidi-override characters, trimmed, at most 255 characters;
/// `file` when nothing usable is left.
pub fn sanitize_filename(raw: Option<&str>) -> String {
    let raw = raw.unwrap_or("");
    // Browsers send a bare name, but old ones (and scripts) may send a full path.
    let last = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .take(MAX_NAME_CHARS)
        .collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "file".to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// Characters that reorder displayed text (`evil\u{202E}gpj.exe` shows as `evilexe.jpg`).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// The essence of a MIME type (`type/subtype`, lower case, parameters dropped),
/// or `None` when it is not a well-formed one. What passes can go in a header.
pub fn normalize_mime(raw: &str) -> Option<String> {
    let essence = raw.split(';').next()?.trim().to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/')?;
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    (token(kind) && token(sub)).then_some(essence)
}

/// The type to store for an upload. Magic bytes win over the client's claim (a
/// PNG is a PNG whatever the client says, an HTML page named `cat.png` is HTML).
/// A claimed raster image type the bytes do not confirm becomes
/// `application/octet-stream`, so nothing unverified is ever shown inline as an
/// image. Without a usable claim the file name's extension decides.
pub fn decide_mime(claimed: Option<&str>, filename: &str, head: &[u8]) -> String {
    let claimed = claimed
        .and_then(normalize_mime)
        .filter(|m| m != OCTET_STREAM)
        .or_else(|| {
            mime_guess::from_path(filename)
                .first()
                .and_then(|m| normalize_mime(m.essence_str()))
        });
    let sniffed = infer::get(head).and_then(|t| normalize_mime(t.mime_type()));
    match (sniffed, claimed) {
        // infer reports any XML as text/xml: keep a more precise XML claim (SVG).
        (Some(sniffed), Some(claimed)) if sniffed == "text/xml" && is_xml_type(&claimed) => claimed,
        (Some(sniffed), _) => sniffed,
        (None, Some(claimed)) if claimed.starts_with("image/") && !is_xml_type(&claimed) => {
            OCTET_STREAM.to_owned()
        }
        (None, Some(claimed)) => claimed,
        (None, None) => OCTET_STREAM.to_owned(),
    }
}

fn is_xml_type(mime: &str) -> bool {
    mime.ends_with("+xml") || mime.ends_with("/xml")
}

/// Raster image types whose width/height are read at upload and that get thumbnails.
pub fn is_previewable_image(mime: &str) -> bool {
    matches!(
        mime,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Shown in the page (`<img>`, `<audio>`, `<video>`, plain text).
    Inline,
    /// Always downloaded: anything a browser could execute or render as a page.
    Attachment,
}

/// Inline only for an allow-list of types a browser renders without running
/// anything; everything else (HTML, SVG, XML, JavaScript, PDF, unknown...) is a
/// download. PDF is a download too: viewers run scripts in it, and a file that is
/// a download can always be opened by the user on purpose.
pub fn disposition_for(mime: &str) -> Disposition {
    let inline = matches!(
        mime,
        "image/png"
            | "image/jpeg"
            | "image/gif"
            | "image/webp"
            | "image/bmp"
            | "image/avif"
            | "text/plain"
    ) || ((mime.starts_with("audio/") || mime.starts_with("video/"))
        && !is_xml_type(mime));
    if inline {
        Disposition::Inline
    } else {
        Disposition::Attachment
    }
}

/// The `Content-Disposition` value: an ASCII fallback name for old clients and
/// the exact name as RFC 5987 `filename*`.
pub fn content_disposition(disposition: Disposition, filename: &str) -> String {
    let kind = match disposition {
        Disposition::Inline => "inline",
        Disposition::Attachment => "attachment",
    };
    let fallback: String = filename
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' && c != '%' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "{kind}; filename=\"{fallback}\"; filename*=UTF-8''{}",
        rfc5987_encode(filename)
    )
}

/// Percent-encodes everything but RFC 5987's `attr-char`.
pub fn rfc5987_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The `Content-Type` header for a stored type: text gets its charset.
pub fn content_type_header(mime: &str) -> String {
    if mime.starts_with("text/") {
        format!("{mime}; charset=utf-8")
    } else {
        mime.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn filenames_are_cleaned() {
        assert_eq!(sanitize_filename(Some("cat.png")), "cat.png");
        assert_eq!(sanitize_filename(Some("../../etc/passwd")), "passwd");
        assert_eq!(sanitize_filename(Some("C:\\Users\\me\\doc.txt")), "doc.txt");
        assert_eq!(sanitize_filename(Some("a\u{0}b\nc.txt")), "abc.txt");
        assert_eq!(
            sanitize_filename(Some("evil\u{202E}gpj.exe")),
            "evilgpj.exe"
        );
        assert_eq!(sanitize_filename(Some("  ")), "file");
        assert_eq!(sanitize_filename(Some("..")), "file");
        assert_eq!(sanitize_filename(None), "file");
        assert_eq!(sanitize_filename(Some("报告.pdf")), "报告.pdf");
        assert_eq!(
            sanitize_filename(Some(&"x".repeat(400))).chars().count(),
            255
        );
    }

    #[test]
    fn mime_normalization() {
        assert_eq!(
            normalize_mime("Text/HTML; charset=utf-8").as_deref(),
            Some("text/html")
        );
        assert_eq!(
            normalize_mime("image/svg+xml").as_deref(),
            Some("image/svg+xml")
        );
        assert_eq!(normalize_mime("text"), None);
        assert_eq!(normalize_mime("text/html\r\nX-Evil: 1"), None);
        assert_eq!(normalize_mime("/x"), None);
    }

    #[test]
    fn magic_bytes_beat_the_claim() {
        assert_eq!(decide_mime(Some("text/html"), "x.html", PNG), "image/png");
        assert_eq!(decide_mime(None, "x.bin", PNG), "image/png");
        // An HTML page claiming to be a PNG is HTML.
        assert_eq!(
            decide_mime(
                Some("image/png"),
                "cat.png",
                b"<html><script>alert(1)</script>"
            ),
            "text/html"
        );
        // An unconfirmed image claim is not trusted.
        assert_eq!(
            decide_mime(Some("image/png"), "cat.png", b"hello"),
            OCTET_STREAM
        );
        // SVG keeps its own type (and is served as a download).
        assert_eq!(
            decide_mime(
                Some("image/svg+xml"),
                "a.svg",
                b"<?xml version=\"1.0\"?><svg/>"
            ),
            "image/svg+xml"
        );
        assert_eq!(
            decide_mime(Some("image/svg+xml"), "a.svg", b"<svg/>"),
            "image/svg+xml"
        );
        assert_eq!(
            decide_mime(Some("text/plain"), "a.txt", b"hello"),
            "text/plain"
        );
        assert_eq!(
            decide_mime(Some("application/octet-stream"), "a.txt", b"hi"),
            "text/plain"
        );
        assert_eq!(decide_mime(None, "noext", b"hi"), OCTET_STREAM);
        assert_eq!(decide_mime(Some("garbage"), "noext", b"hi"), OCTET_STREAM);
    }

    #[test]
    fn executable_types_are_downloads() {
        for mime in [
            "text/html",
            "image/svg+xml",
            "text/xml",
            "application/xml",
            "application/xhtml+xml",
            "text/javascript",
            "application/javascript",
            "application/pdf",
            "application/octet-stream",
            "text/css",
            "audio/x-foo+xml",
        ] {
            assert_eq!(disposition_for(mime), Disposition::Attachment, "{mime}");
        }
        for mime in [
            "image/png",
            "image/jpeg",
            "audio/mpeg",
            "video/mp4",
            "text/plain",
        ] {
            assert_eq!(disposition_for(mime), Disposition::Inline, "{mime}");
        }
    }

    #[test]
    fn disposition_header() {
        assert_eq!(
            content_disposition(Disposition::Attachment, "a b.html"),
            "attachment; filename=\"a b.html\"; filename*=UTF-8''a%20b.html"
        );
        assert_eq!(
            content_disposition(Disposition::Inline, "报告\".png"),
            "inline; filename=\"___.png\"; filename*=UTF-8''%E6%8A%A5%E5%91%8A%22.png"
        );
    }
}
