//! The one mapping from the agent's domain errors to `tonic::Status`.
