//! What a configuration section promises: it names its key and checks its own values. Each crate
//! that reads a section (`[nats]` the NATS crate, `[limits]` the media crate, `[encoder]` ...)
//! owns its type and its rules; the runtime only gathers the sections and checks what spans
//! several. Pure, so a section's rules are tested without loading anything.

/// Why a section's values are refused, naming the key (`encoder.slots must be >= 1`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// A section of the configuration (`[KEY]` in `ffleet.toml`, `FFLEET_<KEY>__...` in the
/// environment).
pub trait Section {
    const KEY: &'static str;

    /// Checks what no type can: bounds and consistency within the section.
    fn validate(&self) -> Result<(), Invalid>;
}

/// Each `(key, value)` must be a finite number above zero; `section` prefixes the key.
pub fn positive(section: &str, values: &[(&str, f64)]) -> Result<(), Invalid> {
    for (name, v) in values {
        if !(v.is_finite() && *v > 0.0) {
            return Err(Invalid(format!("{section}.{name} must be > 0 (got {v})")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_names_the_key_and_refuses_zero_nan_and_negatives() {
        assert!(positive("s", &[("a", 1.0), ("b", 0.5)]).is_ok());
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let e = positive("s", &[("a", 1.0), ("b", bad)]).unwrap_err();
            assert!(e.0.starts_with("s.b must be > 0"), "{e}");
        }
    }
}
