//! The names an instance certificate carries, and how they are found on this host.

use super::UUID_URI_PREFIX;
use rustls::pki_types::ServerName;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use uuid::Uuid;

/// The names an instance certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The instance (a `pimesh:<uuid>` URI and the common name).
    pub uuid: Uuid,
    /// Host names: the machine's, `localhost`.
    pub dns: Vec<String>,
    /// Addresses: loopback and those the instance is reached at.
    pub ips: Vec<IpAddr>,
}

impl Names {
    /// The names of instance `uuid` on this machine: its host name (also with `.local`),
    /// `localhost`, loopback, the address it listens on (if one) and the addresses of its
    /// default routes.
    pub fn of_this_host(uuid: Uuid, bind: IpAddr) -> Names {
        let mut dns = vec!["localhost".to_string()];
        if let Some(host) = host_name() {
            // Clients on the LAN often know a Pi by its mDNS name.
            dns.push(format!("{host}.local"));
            dns.push(host);
        }
        let mut ips = vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
        if bind.is_unspecified() {
            // A UDP "connect" picks a route without sending anything (TEST-NET addresses).
            ips.extend(local_ip_towards("192.0.2.1:9"));
            ips.extend(local_ip_towards("[2001:db8::1]:9"));
        } else {
            ips.push(bind);
        }
        Names::new(uuid, dns, ips)
    }

    /// Names, sorted and without duplicates.
    pub fn new(uuid: Uuid, mut dns: Vec<String>, mut ips: Vec<IpAddr>) -> Names {
        dns.retain(|d| ServerName::try_from(d.as_str()).is_ok());
        dns.sort();
        dns.dedup();
        ips.sort();
        ips.dedup();
        Names { uuid, dns, ips }
    }

    pub(super) fn sans(&self) -> Result<Vec<rcgen::SanType>, rcgen::Error> {
        let mut sans = vec![rcgen::SanType::URI(rcgen::Ia5String::try_from(format!(
            "{UUID_URI_PREFIX}{}",
            self.uuid
        ))?)];
        for d in &self.dns {
            sans.push(rcgen::SanType::DnsName(rcgen::Ia5String::try_from(
                d.as_str(),
            )?));
        }
        sans.extend(self.ips.iter().map(|ip| rcgen::SanType::IpAddress(*ip)));
        Ok(sans)
    }

    /// Every name as a server name.
    pub(super) fn server_names(&self) -> Vec<ServerName<'static>> {
        let dns = self
            .dns
            .iter()
            .filter_map(|d| ServerName::try_from(d.clone()).ok());
        dns.chain(self.ips.iter().map(|ip| ServerName::from(*ip)))
            .collect()
    }
}

/// The machine's host name, if it is a valid DNS name.
fn host_name() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let host = raw.trim().to_ascii_lowercase();
    (!host.is_empty() && ServerName::try_from(host.as_str()).is_ok()).then_some(host)
}

/// The local address the kernel would use to reach `target` (no packet is sent).
fn local_ip_towards(target: &str) -> Option<IpAddr> {
    let target: std::net::SocketAddr = target.parse().ok()?;
    let any: std::net::SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = std::net::UdpSocket::bind(any).ok()?;
    sock.connect(target).ok()?;
    sock.local_addr().ok().map(|a| a.ip())
}
