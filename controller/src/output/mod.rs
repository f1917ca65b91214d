//! How the controller writes: tables and colours, job events as text or JSON lines.

pub mod escape;
pub mod redact;
pub mod render;
pub mod table;
