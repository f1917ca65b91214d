//! How the controller writes: tables and colours, job events as text or JSON lines.

pub mod escape;
pub mod render;
pub mod table;
