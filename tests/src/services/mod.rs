//! Real external services started on loopback in temp dirs for the end-to-end tests;
//! each is stopped when dropped.

pub mod docker;
pub mod git;
pub mod git_http;
pub mod http_health;
pub mod nginx_php;
pub mod postgres;
pub mod promtool;
pub mod supervisor;
pub mod systemd;
pub mod tls;
pub mod webhook;
