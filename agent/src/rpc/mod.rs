//! The gRPC edge: the `hoist.v1.Agent` service, the authorization layer in front of it,
//! mutual TLS, and the one place domain errors become `tonic::Status`.

pub mod authz;
pub mod bounds;
pub mod error;
pub mod server;
pub mod tls;
