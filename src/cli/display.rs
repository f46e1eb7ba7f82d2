//! How the CLI writes things for people: paths as they were typed (never percent-encoded URIs)
//! and counts with the right noun form.

use std::path::Path;

/// `1 segment`, `2 segments`, `0 segments`.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// A job's input or output as a person reads it: a `file://` URI becomes its path (decoded, so
/// `out%20vid%C3%A9o.mkv` reads `out vidéo.mkv`); anything else is shown as it is.
pub fn location(uri: &str) -> String {
    url::Url::parse(uri)
        .ok()
        .filter(|u| u.scheme() == "file")
        .and_then(|u| u.to_file_path().ok())
        .map_or_else(|| uri.to_owned(), |p| p.display().to_string())
}

/// The output to name in a summary: the path the user gave when there is one, else the event's.
pub fn output(given: Option<&Path>, uri: &str) -> String {
    given.map_or_else(|| location(uri), |p| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(count(1, "segment"), "1 segment");
        assert_eq!(count(0, "segment"), "0 segments");
        assert_eq!(count(12, "frame"), "12 frames");
    }

    #[test]
    fn file_uris_read_as_paths() {
        assert_eq!(
            location("file:///tmp/out%20vid%C3%A9o.mkv"),
            "/tmp/out vidéo.mkv"
        );
        assert_eq!(location("object://jobs/x.mp4"), "object://jobs/x.mp4");
        assert_eq!(
            output(
                Some(Path::new("out vidéo.mkv")),
                "file:///w/out%20vid%C3%A9o.mkv"
            ),
            "out vidéo.mkv"
        );
    }
}
