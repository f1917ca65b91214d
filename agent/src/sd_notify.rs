//! systemd notifications (`sd_notify`): READY after the listeners are bound, STOPPING
//! on drain, RELOADING on SIGHUP, WATCHDOG pings when `WATCHDOG_USEC` is set. A no-op
//! when not started by systemd.

use std::{os::unix::net::UnixDatagram, time::Duration};

/// Sends `state` (e.g. `READY=1`) to `$NOTIFY_SOCKET`, if set.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt as _;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
    } else {
        socket.send_to(state.as_bytes(), &path)
    };
    if let Err(err) = sent {
        tracing::warn!(error = %err, state, "sd_notify failed");
    }
}

/// The watchdog ping period (half of `WATCHDOG_USEC`), when systemd asks for one for
/// this process.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        && pid != std::process::id()
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// `CLOCK_MONOTONIC` in microseconds, for `MONOTONIC_USEC=` with `RELOADING=1`.
pub fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// `42s`, `5m`, `3h`, `2d`: how long ago, for `STATUS=`.
pub fn human_secs(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn human_secs_picks_the_largest_unit() {
        assert_eq!(super::human_secs(5), "5s");
        assert_eq!(super::human_secs(150), "2m");
        assert_eq!(super::human_secs(7300), "2h");
        assert_eq!(super::human_secs(200_000), "2d");
    }

    #[test]
    fn monotonic_moves_forward() {
        let a = super::monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(super::monotonic_usec() > a);
    }
}
