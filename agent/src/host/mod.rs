//! The host: the one process spawner, the app's services (probed and restarted), health
//! checks, and resource sampling.

pub mod checks;
pub mod logs;
pub mod process;
pub mod resources;
pub mod services;
