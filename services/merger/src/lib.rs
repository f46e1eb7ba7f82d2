//! merger
