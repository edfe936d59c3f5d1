//! What the host has only one of, for tests that run side by side in one process.
//!
//! The suites are one test binary: tests of different topics run at the same time (two test
//! threads unless `--test-threads` says otherwise). Almost everything a test uses is its own:
//! temporary directories with unique names, servers on ports the kernel hands out, sidecars on
//! [`harness::services::free_port`] ports, environment variables set on child processes only.
//! What is not: the ports a sidecar binds when its configuration names none, gRPC 50051
//! (`[grpc] port`) and metrics 9180 (`[monitoring] metrics_port`,
//! [`medusa::config::DEFAULT_METRICS_PORT`]).
//!
//! - The sidecars of a [`crate::dc::Datacenter`] run on the operator's `medusa.ini`, which has no
//!   `[monitoring]`: the first binds 9180, the others warn. Any number of datacenters may run
//!   side by side, as before: each holds [`DefaultPorts::share`] while it lives.
//! - The image test runs the container on the host network with the operator's configuration:
//!   it binds 50051 and 9180. It holds [`DefaultPorts::take`] from its start (the image build
//!   included, which takes both cores for minutes when the layer cache is cold): no datacenter
//!   runs beside it.
//! - The metrics test of the default port must find 9180 free, then scrape its own sidecar
//!   there: it holds [`DefaultPorts::take`] too.
//!
//! [`harness::services::free_port`] never hands out either port. Servers that bind port 0
//! themselves (s3s-fs, the simulated Management API, the fault proxy) may still be given 50051
//! by the kernel while the image test runs, now from any test beside it: a small chance, not
//! excluded here.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Holders of the default ports: any number sharing them, or one alone.
struct Holders {
    shared: usize,
    alone: bool,
}

static HOLDERS: Mutex<Holders> = Mutex::new(Holders { shared: 0, alone: false });

/// How often a waiting test looks again.
const POLL: Duration = Duration::from_millis(100);

/// The default gRPC and metrics ports of the host, held until dropped.
#[must_use = "the ports are held only while the guard lives"]
pub struct DefaultPorts {
    alone: bool,
}

impl DefaultPorts {
    /// Shares the ports with other sharers; waits while a test holds them alone. A test may
    /// share them more than once (two datacenters): sharers never wait for each other.
    pub async fn share() -> DefaultPorts {
        loop {
            {
                let mut h = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
                if !h.alone {
                    h.shared += 1;
                    return DefaultPorts { alone: false };
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Takes the ports alone; waits until nobody holds them.
    pub async fn take() -> DefaultPorts {
        loop {
            {
                let mut h = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
                if !h.alone && h.shared == 0 {
                    h.alone = true;
                    return DefaultPorts { alone: true };
                }
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for DefaultPorts {
    fn drop(&mut self) {
        let mut h = HOLDERS.lock().unwrap_or_else(PoisonError::into_inner);
        if self.alone {
            h.alone = false;
        } else {
            h.shared -= 1;
        }
    }
}
