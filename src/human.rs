//! Numbers as people read them on a terminal.

/// A duration, short: `42.0s`, `3.5min`, `2.1h`.
pub fn duration(seconds: f64) -> String {
    if seconds < 90.0 {
        format!("{seconds:.1}s")
    } else if seconds < 5400.0 {
        format!("{:.1}min", seconds / 60.0)
    } else {
        format!("{:.1}h", seconds / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_pick_their_unit() {
        assert_eq!(super::duration(42.0), "42.0s");
        assert_eq!(super::duration(210.0), "3.5min");
        assert_eq!(super::duration(7560.0), "2.1h");
    }
}
