//! Who may do what on the NATS server: the roles ffleet's processes connect as, the subjects and
//! JetStream API calls each role needs (`roles`), and the server's authorization include
//! rendered from them (`auth_conf`). Certificates and keys are made by the `ffleet` binary
//! (`ffleet secrets init`); this module only knows names and permissions.

pub mod auth_conf;
pub mod roles;

pub use roles::{Permissions, Role};
