//! Naming the ring's nodes as Medusa does (contract §7.3): a node's name is the first label of the first
//! name its address has whose first label does not look like an IP address (Kubernetes gives a
//! pod IP several PTR names, such as `10-0-0-1.ns.pod.cluster.local` and
//! `demo-dc1-r1-sts-0.demo-dc1-service.ns.svc.cluster.local`); an address without such a name
//! is named by itself. The tokenmap keys made this way must equal the pod names the operator
//! maps restores onto, or a restore finds no node of its backup.
//!
//! Where names come from is a seam ([`Resolver`]): the system's is [`SystemResolver`]; tests
//! give several names of their own.

use std::net::IpAddr;
use std::path::PathBuf;

use async_trait::async_trait;

/// Every name an address has, in the order the naming rule reads them.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// The names of `ip` (empty when it has none or the lookup failed).
    async fn names(&self, ip: IpAddr) -> Vec<String>;
}

/// The node name for `ip` among `names`: Medusa's rule.
pub fn node_name(names: &[String], ip: &str) -> String {
    names
        .iter()
        // A "name" that is an address (the C library's answer when it knows none) names nothing.
        .filter(|n| n.parse::<IpAddr>().is_err())
        .filter_map(|n| n.split('.').next())
        .find(|label| !label.is_empty() && !ip_shaped(label, ip))
        .map_or_else(|| ip.to_string(), str::to_string)
}

/// A label that merely spells an address: `10-0-0-1`, `10.0.0.1`, `fd00--1`, or the address.
fn ip_shaped(label: &str, ip: &str) -> bool {
    label == ip
        || label.replace('-', ".").parse::<IpAddr>().is_ok()
        || label.replace('-', ":").parse::<IpAddr>().is_ok()
        || label.parse::<IpAddr>().is_ok()
}

/// No names at all: every node is named by its address (`resolve_ip_addresses = False`).
pub struct AddressesOnly;

#[async_trait]
impl Resolver for AddressesOnly {
    async fn names(&self, _ip: IpAddr) -> Vec<String> {
        Vec::new()
    }
}

/// The system's names of an address: those of a hosts(5)-format file named by
/// `$MEDUSA_RS_HOSTS_FILE` first (for hosts without reverse DNS, and for tests), then every PTR
/// record from the resolvers of `/etc/resolv.conf`, then the C library's answer (which also
/// reads `/etc/hosts`).
pub struct SystemResolver {
    hosts_file: Option<PathBuf>,
    dns: Option<hickory_resolver::TokioResolver>,
}

impl SystemResolver {
    /// Reads the environment and the system's resolver configuration (a missing or unusable
    /// `/etc/resolv.conf` leaves the C library's lookup).
    pub fn from_env() -> SystemResolver {
        let hosts_file = std::env::var_os("MEDUSA_RS_HOSTS_FILE").filter(|v| !v.is_empty()).map(PathBuf::from);
        let dns = hickory_resolver::Resolver::builder_tokio().and_then(|b| b.build());
        if let Err(e) = &dns {
            tracing::debug!(error = %e, "no DNS resolver configuration: node names from the C library only");
        }
        SystemResolver { hosts_file, dns: dns.ok() }
    }
}

/// The names `text` (hosts(5) format) gives `ip`, in order.
pub fn hosts_file_names(text: &str, ip: IpAddr) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut fields = line.split_whitespace();
        if fields.next().and_then(|a| a.parse::<IpAddr>().ok()) == Some(ip) {
            out.extend(fields.map(str::to_string));
        }
    }
    out
}

#[async_trait]
impl Resolver for SystemResolver {
    /// The sources in order, stopping at the first that gives a name the rule accepts (as the
    /// C library reads `/etc/hosts` before asking DNS), so that a hosts file spares DNS queries.
    async fn names(&self, ip: IpAddr) -> Vec<String> {
        let text = ip.to_string();
        let named = |names: &[String]| node_name(names, &text) != text;
        let mut names = Vec::new();
        if let Some(path) = &self.hosts_file {
            match tokio::fs::read_to_string(path).await {
                Ok(hosts) => names.extend(hosts_file_names(&hosts, ip)),
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "MEDUSA_RS_HOSTS_FILE unreadable"),
            }
        }
        if !named(&names)
            && let Some(dns) = &self.dns
            && let Ok(ptr) = dns.reverse_lookup(ip).await
        {
            let ptrs = ptr.answers().iter().filter_map(|r| match &r.data {
                hickory_resolver::proto::rr::RData::PTR(name) => Some(name.to_string()),
                _ => None,
            });
            names.extend(ptrs.map(|n| n.trim_end_matches('.').to_string()));
        }
        if !named(&names) {
            // The C library's lookup blocks (a resolver may take seconds): not on the runtime.
            let libc = tokio::task::spawn_blocking(move || dns_lookup::lookup_addr(&ip).ok()).await;
            names.extend(libc.ok().flatten());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_resolving_a_node_is_named_by_its_address() {
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(node_name(&AddressesOnly.names(ip).await, "10.0.0.7"), "10.0.0.7");
    }

    #[test]
    fn the_first_name_that_is_not_an_address_wins() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ip = "10.0.0.1";
        let k8s = names(&["10-0-0-1.ns.pod.cluster.local", "demo-dc1-r1-sts-0.demo-dc1-service.ns.svc.cluster.local"]);
        assert_eq!(node_name(&k8s, ip), "demo-dc1-r1-sts-0");
        assert_eq!(node_name(&names(&["10.0.0.1", "10-0-0-1.x", "pod-a.x"]), ip), "pod-a");
        assert_eq!(node_name(&names(&["10-0-0-1.ns.pod.cluster.local"]), ip), ip, "only IP-shaped names");
        assert_eq!(node_name(&[], ip), ip);
        assert_eq!(node_name(&names(&["fd00--1.x", "node-6"]), "fd00::1"), "node-6");
        assert_eq!(node_name(&names(&["host.example.com"]), ip), "host");
    }

    #[test]
    fn hosts_file_lines_give_every_name() {
        let text = "# comment\n127.0.0.1 localhost\n10.0.0.2 10-0-0-2.pod a.svc # alias\n10.0.0.2 b\n";
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(hosts_file_names(text, ip), ["10-0-0-2.pod", "a.svc", "b"]);
        assert!(hosts_file_names(text, "10.0.0.3".parse().unwrap()).is_empty());
    }
}
