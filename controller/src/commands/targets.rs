//! `hoist targets`: Prometheus file_sd JSON, one target group per host, so Prometheus
//! scrapes every agent's `metrics_listen`.

use serde_json::{Value, json};

use crate::{
    commands::{Failure, Global, load_fleet, select},
    fleet::Host,
};

/// `hoist targets`: needs only the fleet file.
pub fn run(global: &Global) -> Result<(), Failure> {
    let fleet = load_fleet(global)?;
    let hosts = select(&fleet, global)?;
    let text = serde_json::to_string_pretty(&file_sd(&hosts))
        .map_err(|e| Failure::failed(anyhow::Error::new(e).context("encoding JSON")))?;
    println!("{text}");
    Ok(())
}

/// The port hoistd's metrics endpoint uses unless the host says otherwise.
pub const DEFAULT_METRICS_PORT: u16 = 9464;

/// `host:port` of a host's metrics endpoint: its `metrics` key, else the host part of
/// its gRPC address with the default metrics port.
pub fn metrics_address(host: &Host) -> String {
    if let Some(m) = &host.metrics {
        return m.clone();
    }
    let name = host
        .address
        .rsplit_once(':')
        .map_or(host.address.as_str(), |(h, _)| h);
    format!("{name}:{DEFAULT_METRICS_PORT}")
}

pub fn file_sd(hosts: &[&Host]) -> Value {
    Value::Array(
        hosts
            .iter()
            .map(|h| {
                json!({
                    "targets": [metrics_address(h)],
                    "labels": {
                        "hoist_host": h.name,
                        "hoist_groups": h.groups.join(","),
                    },
                })
            })
            .collect(),
    )
}
