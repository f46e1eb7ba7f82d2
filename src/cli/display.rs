//! How the CLI writes things for people: paths as they were typed (never percent-encoded URIs),
//! counts with the right noun form, and errors with each cause once.

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

/// An error and its causes, each said once: the library errors name their cause in their own
/// message and keep it as their source too (so it can be classified), and `{:#}` would print
/// it again after every layer that already said it.
pub fn error(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let part = cause.to_string();
        if text.contains(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_cause_is_said_once() {
        /// Names its cause in its message and keeps it as its source, as the libraries do.
        #[derive(Debug)]
        struct Op(std::io::Error);
        impl std::fmt::Display for Op {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "nats publish: {}", self.0)
            }
        }
        impl std::error::Error for Op {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = anyhow::Error::new(Op(std::io::Error::other("insufficient resources")))
            .context("submitting j1");
        assert_eq!(
            super::error(&e),
            "submitting j1: nats publish: insufficient resources"
        );
        let plain = anyhow::anyhow!("root").context("outer");
        assert_eq!(super::error(&plain), "outer: root");
    }

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
