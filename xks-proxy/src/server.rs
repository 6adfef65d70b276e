//! The listener, shared with the front end (crate `https-server`); the proxy's metrics
//! observe its connections.

pub use https_server::{
    BodyReadError, BodyTimeout, ConnectionLimits, ConnectionObserver, Transport, bind,
    drain_capped, find_body_timeout, read_capped, serve,
};

use crate::metrics::Metrics;

impl ConnectionObserver for Metrics {
    fn connection_accepted(&self) {
        Metrics::connection_accepted(self);
    }

    fn connection_closed(&self) {
        Metrics::connection_closed(self);
    }
}
