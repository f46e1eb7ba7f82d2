//! How an error is written for a person: the error and its causes, each said once.

/// An error and its causes, each said once: the library errors name their cause in their own
/// message and keep it as their source too (so it can be classified), and `{:#}` would print
/// it again after every layer that already said it.
pub fn describe(e: &anyhow::Error) -> String {
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
            super::describe(&e),
            "submitting j1: nats publish: insufficient resources"
        );
        let plain = anyhow::anyhow!("root").context("outer");
        assert_eq!(super::describe(&plain), "outer: root");
    }
}
