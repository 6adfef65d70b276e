//! The listener limits as a service's `[server]` config section gives them, and their
//! validation: one set of names, defaults, bounds and messages for both services.

use std::time::Duration;

use crate::ConnectionLimits;

/// Defaults of the `[server]` limit settings.
pub mod defaults {
    /// Most connections open at once.
    pub const MAX_CONNECTIONS: usize = 4096;
    /// Most authenticated requests in flight at once.
    pub const MAX_IN_FLIGHT_REQUESTS: usize = 1024;
    /// Idle connections are closed after this many seconds.
    pub const IDLE_TIMEOUT_SECONDS: u64 = 60;
    /// From accept to the first request's complete headers (TLS handshake included), and
    /// for each later request's headers on HTTP/1.1 (milliseconds).
    pub const REQUEST_HEADER_TIMEOUT_MS: u64 = 10_000;
    /// From a request's headers to the end of its body (milliseconds).
    pub const REQUEST_BODY_TIMEOUT_MS: u64 = 10_000;
    /// Longest accepted header or body deadline (milliseconds).
    pub const MAX_REQUEST_TIMEOUT_MS: u64 = 300_000;
    /// Most concurrent requests (streams) on one h2 connection.
    pub const MAX_CONCURRENT_STREAMS: u32 = 200;
}

/// The `[server]` limit settings as written in a config file (each optional: absent means
/// the default in [`defaults`]). Services declare these keys in their own `[server]` schema
/// and hand the values here to be validated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerLimitSettings {
    /// `max_connections`.
    pub max_connections: Option<usize>,
    /// `max_in_flight_requests`.
    pub max_in_flight_requests: Option<usize>,
    /// `idle_timeout_seconds`.
    pub idle_timeout_seconds: Option<u64>,
    /// `request_header_timeout_ms`.
    pub request_header_timeout_ms: Option<u64>,
    /// `request_body_timeout_ms`.
    pub request_body_timeout_ms: Option<u64>,
    /// `max_concurrent_streams`.
    pub max_concurrent_streams: Option<u32>,
}

/// Validated `[server]` limits: the listener's and the service's in-flight limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Connection count, deadlines and the h2 stream limit, for [`crate::serve`].
    pub connection: ConnectionLimits,
    /// Most authenticated requests in flight at once (a service counts them from the
    /// verified signature, so unauthenticated requests cannot hold them).
    pub max_in_flight_requests: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimitSettings::default().validate(&mut Vec::new())
    }
}

impl ServerLimitSettings {
    /// The limits, with defaults for absent settings; every invalid setting adds a problem
    /// (named `server.<key>`) to `problems`.
    pub fn validate(&self, problems: &mut Vec<String>) -> ServerLimits {
        let max_connections = self.max_connections.unwrap_or(defaults::MAX_CONNECTIONS);
        let max_in_flight_requests = self
            .max_in_flight_requests
            .unwrap_or(defaults::MAX_IN_FLIGHT_REQUESTS);
        if max_connections == 0 || max_in_flight_requests == 0 {
            problems.push(
                "server.max_connections and server.max_in_flight_requests: at least 1".into(),
            );
        }
        let idle_timeout = Duration::from_secs(
            self.idle_timeout_seconds
                .unwrap_or(defaults::IDLE_TIMEOUT_SECONDS),
        );
        if idle_timeout.is_zero() {
            problems.push("server.idle_timeout_seconds: at least 1".into());
        }
        let request_header_timeout = request_timeout(
            "server.request_header_timeout_ms",
            self.request_header_timeout_ms,
            defaults::REQUEST_HEADER_TIMEOUT_MS,
            problems,
        );
        let body_timeout = request_timeout(
            "server.request_body_timeout_ms",
            self.request_body_timeout_ms,
            defaults::REQUEST_BODY_TIMEOUT_MS,
            problems,
        );
        let max_concurrent_streams = self
            .max_concurrent_streams
            .unwrap_or(defaults::MAX_CONCURRENT_STREAMS);
        if max_concurrent_streams == 0 {
            problems.push("server.max_concurrent_streams: at least 1".into());
        }
        ServerLimits {
            connection: ConnectionLimits {
                // Zero is reported above; keep a usable value for the rest of validation.
                max_connections: max_connections.max(1),
                idle_timeout,
                request_header_timeout,
                body_timeout,
                max_concurrent_streams: max_concurrent_streams.max(1),
            },
            max_in_flight_requests: max_in_flight_requests.max(1),
        }
    }
}

/// A deadline in milliseconds: 1 ms to [`defaults::MAX_REQUEST_TIMEOUT_MS`].
fn request_timeout(
    key: &str,
    raw: Option<u64>,
    default: u64,
    problems: &mut Vec<String>,
) -> Duration {
    let ms = raw.unwrap_or(default);
    if ms == 0 || ms > defaults::MAX_REQUEST_TIMEOUT_MS {
        problems.push(format!(
            "{key}: {ms} is not between 1 and {} milliseconds",
            defaults::MAX_REQUEST_TIMEOUT_MS
        ));
    }
    Duration::from_millis(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_listener_defaults() {
        let mut problems = Vec::new();
        let limits = ServerLimitSettings::default().validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(limits.connection, ConnectionLimits::default());
        assert_eq!(
            limits.max_in_flight_requests,
            defaults::MAX_IN_FLIGHT_REQUESTS
        );
    }

    #[test]
    fn every_invalid_setting_is_reported() {
        let mut problems = Vec::new();
        let settings = ServerLimitSettings {
            max_connections: Some(0),
            max_in_flight_requests: Some(1),
            idle_timeout_seconds: Some(0),
            request_header_timeout_ms: Some(0),
            request_body_timeout_ms: Some(defaults::MAX_REQUEST_TIMEOUT_MS + 1),
            max_concurrent_streams: Some(0),
        };
        let _ = settings.validate(&mut problems);
        assert_eq!(problems.len(), 5, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.starts_with("server.request_body_timeout_ms"))
        );
    }

    #[test]
    fn given_values_are_used() {
        let mut problems = Vec::new();
        let limits = ServerLimitSettings {
            max_connections: Some(8),
            max_in_flight_requests: Some(3),
            idle_timeout_seconds: Some(5),
            request_header_timeout_ms: Some(700),
            request_body_timeout_ms: Some(900),
            max_concurrent_streams: Some(16),
        }
        .validate(&mut problems);
        assert!(problems.is_empty());
        assert_eq!(limits.connection.max_connections, 8);
        assert_eq!(limits.max_in_flight_requests, 3);
        assert_eq!(limits.connection.idle_timeout, Duration::from_secs(5));
        assert_eq!(
            limits.connection.request_header_timeout,
            Duration::from_millis(700)
        );
        assert_eq!(limits.connection.body_timeout, Duration::from_millis(900));
        assert_eq!(limits.connection.max_concurrent_streams, 16);
    }
}
