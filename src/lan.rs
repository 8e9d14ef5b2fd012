//! Zero-configuration discovery on the LAN: mDNS/DNS-SD (RFC 6762, 6763) through `mdns-sd`.
//!
//! Every instance announces itself twice: as `_pimesh._tcp` on the port peers link to, for
//! other instances, and as `_mqtt._tcp` on its MQTT port, for Home Assistant's discovery of
//! brokers. Both carry the instance's UUID, name and mesh id in their TXT records. A new
//! instance joining with `--join TOKEN` looks for the inviting instance's UUID among the
//! `_pimesh._tcp` services when the token's addresses do not answer, so an invitation works
//! on one LAN with no address at all (the inviter may not know one for itself).
//!
//! It is a convenience on top, never a requirement: an instance whose network has no
//! multicast (or none at all) logs one warning and runs as before.

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use std::net::IpAddr;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// The service type instances announce to each other.
pub const SERVICE: &str = "_pimesh._tcp.local.";
/// The service type of an MQTT broker, which Home Assistant browses for.
pub const MQTT_SERVICE: &str = "_mqtt._tcp.local.";

/// Why the LAN announcement did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot announce this instance on the LAN by mDNS ({0}); peers and invitations still work by address")]
pub struct LanError(String);

/// What an instance announces.
#[derive(Clone, Debug, PartialEq)]
pub struct Announce {
    /// The instance's UUID.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// The mesh it belongs to.
    pub mesh: Uuid,
    /// The port peers link to (the TLS port, or the plaintext one with `[mesh] tls = false`).
    pub mesh_port: u16,
    /// The port MQTT clients use: the plaintext port when there is one, else the TLS port.
    pub mqtt_port: u16,
    /// Whether `mqtt_port` speaks TLS.
    pub mqtt_tls: bool,
}

impl Announce {
    /// The TXT record: `uuid`, `mesh`, `name`, `version` (and `tls` on the MQTT service).
    fn txt(&self, tls: Option<bool>) -> Vec<(&'static str, String)> {
        let mut txt = vec![
            ("uuid", self.uuid.to_string()),
            ("mesh", self.mesh.to_string()),
            ("name", self.name.chars().take(63).collect()),
            ("version", env!("CARGO_PKG_VERSION").to_string()),
        ];
        if let Some(tls) = tls {
            txt.push(("tls", if tls { "1" } else { "0" }.to_string()));
        }
        txt
    }

    /// The two services: `_pimesh._tcp` and `_mqtt._tcp`, named `pimesh <name> <uuid>` (the
    /// UUID keeps two instances of one name apart) on host `pimesh-<uuid>.local.`, with the
    /// addresses of every interface they are announced on.
    fn services(&self) -> Result<[ServiceInfo; 2], LanError> {
        let instance = format!("pimesh {} {}", self.name, self.uuid.simple());
        let host = format!("pimesh-{}.local.", self.uuid.simple());
        let make = |ty: &str, port: u16, tls: Option<bool>| {
            ServiceInfo::new(ty, &instance, &host, "", port, &self.txt(tls)[..])
                .map(ServiceInfo::enable_addr_auto)
                .map_err(|e| LanError(e.to_string()))
        };
        Ok([
            make(SERVICE, self.mesh_port, None)?,
            make(MQTT_SERVICE, self.mqtt_port, Some(self.mqtt_tls))?,
        ])
    }
}

/// This instance's announcement; withdrawn (goodbye packets) when dropped.
pub struct Announcement {
    /// The mDNS responder, a thread of its own.
    daemon: ServiceDaemon,
    /// What is announced now.
    what: Announce,
}

impl std::fmt::Debug for Announcement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Announcement({:?})", self.what)
    }
}

/// Starts announcing `what` on every interface.
pub fn announce(what: Announce) -> Result<Announcement, LanError> {
    let daemon = ServiceDaemon::new().map_err(|e| LanError(e.to_string()))?;
    for service in what.services()? {
        daemon
            .register(service)
            .map_err(|e| LanError(e.to_string()))?;
    }
    tracing::info!(uuid = %what.uuid, port = what.mesh_port, "announced on the LAN as {SERVICE} and {MQTT_SERVICE}");
    Ok(Announcement { daemon, what })
}

impl Announcement {
    /// Announces the mesh this instance joined instead of its former one.
    pub fn set_mesh(&mut self, mesh: Uuid) {
        self.what.mesh = mesh;
        match self.what.services() {
            // Registering a service of the same name again replaces its records.
            Ok(services) => {
                for service in services {
                    if let Err(e) = self.daemon.register(service) {
                        tracing::warn!(error = %e, "cannot announce the new mesh on the LAN");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot announce the new mesh on the LAN"),
        }
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        if let Ok(services) = self.what.services() {
            for service in services {
                let _ = self.daemon.unregister(service.get_fullname());
            }
        }
        let _ = self.daemon.shutdown();
    }
}

/// `HOST:PORT` addresses an announced instance may be reached at: its IPv4 addresses and
/// global IPv6 ones (a link-local one would need its interface), never loopback (that would
/// be our own machine, not the announcer's).
fn reachable(addrs: impl IntoIterator<Item = IpAddr>, port: u16) -> Vec<String> {
    let mut out: Vec<String> = addrs
        .into_iter()
        .filter(|ip| !ip.is_loopback() && !ip.is_unspecified())
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) => Some(format!("{v4}:{port}")),
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) != 0xfe80 => {
                Some(format!("[{v6}]:{port}"))
            }
            IpAddr::V6(_) => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Looks on the LAN, for up to `wait`, for the instance `uuid` announcing `_pimesh._tcp`;
/// returns its addresses as soon as it answers (none when it does not, or when mDNS cannot
/// run here). Blocking: call it off the async runtime.
pub fn find(uuid: Uuid, wait: Duration) -> Vec<String> {
    let end = Instant::now() + wait;
    let daemon = match ServiceDaemon::new() {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "no mDNS on this machine");
            std::thread::sleep(wait);
            return Vec::new();
        }
    };
    let mut found = Vec::new();
    if let Ok(events) = daemon.browse(SERVICE) {
        let wanted = uuid.to_string();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match events.recv_timeout(left) {
                Ok(ServiceEvent::ServiceResolved(s))
                    if s.get_property_val_str("uuid") == Some(wanted.as_str()) =>
                {
                    let ips = s.get_addresses().iter().map(|a| a.to_ip_addr());
                    found = reachable(ips, s.get_port());
                    if !found.is_empty() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    let _ = daemon.shutdown();
    found
}

/// An instance or broker announced on the LAN, as `pimesh lan` shows it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Found {
    /// `pimesh` (an instance, for peers) or `mqtt` (a broker).
    pub service: String,
    /// The instance name in its TXT (none for a broker that is not pimesh).
    pub name: Option<String>,
    /// The UUID in its TXT.
    pub uuid: Option<String>,
    /// The mesh id in its TXT.
    pub mesh: Option<String>,
    /// `HOST:PORT` addresses.
    pub addrs: Vec<String>,
}

/// Every `_pimesh._tcp` and `_mqtt._tcp` service that answers within `wait`, sorted.
pub fn browse(wait: Duration) -> Result<Vec<Found>, LanError> {
    let end = Instant::now() + wait;
    let daemon = ServiceDaemon::new().map_err(|e| LanError(e.to_string()))?;
    let (pimesh, mqtt) = match (daemon.browse(SERVICE), daemon.browse(MQTT_SERVICE)) {
        (Ok(p), Ok(m)) => (p, m),
        (Err(e), _) | (_, Err(e)) => {
            let _ = daemon.shutdown();
            return Err(LanError(e.to_string()));
        }
    };
    let mut found: std::collections::BTreeMap<String, Found> = Default::default();
    // Two channels and no select: take turns, each waiting a little.
    let turns = [("pimesh", &pimesh), ("mqtt", &mqtt)];
    let mut turn = 0;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        let (service, events) = turns[turn % 2];
        turn += 1;
        let Ok(ServiceEvent::ServiceResolved(s)) =
            events.recv_timeout(left.min(Duration::from_millis(50)))
        else {
            continue;
        };
        let text = |key: &str| s.get_property_val_str(key).map(str::to_string);
        let ips = s.get_addresses().iter().map(|a| a.to_ip_addr());
        found.insert(
            s.get_fullname().to_string(),
            Found {
                service: service.to_string(),
                name: text("name"),
                uuid: text("uuid"),
                mesh: text("mesh"),
                addrs: reachable(ips, s.get_port()),
            },
        );
    }
    let _ = daemon.shutdown();
    let mut all: Vec<Found> = found.into_values().collect();
    all.sort();
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn announce() -> Announce {
        Announce {
            uuid: Uuid::from_u128(7),
            name: "kitchen".into(),
            mesh: Uuid::from_u128(9),
            mesh_port: 8883,
            mqtt_port: 1883,
            mqtt_tls: false,
        }
    }

    #[test]
    fn both_services_carry_uuid_and_mesh_in_their_txt() {
        let [pimesh, mqtt] = announce().services().unwrap();
        assert_eq!(pimesh.get_type(), SERVICE);
        assert_eq!(mqtt.get_type(), MQTT_SERVICE);
        assert_eq!(pimesh.get_port(), 8883);
        assert_eq!(mqtt.get_port(), 1883);
        for s in [&pimesh, &mqtt] {
            assert_eq!(
                s.get_property_val_str("uuid"),
                Some(Uuid::from_u128(7).to_string().as_str())
            );
            assert_eq!(
                s.get_property_val_str("mesh"),
                Some(Uuid::from_u128(9).to_string().as_str())
            );
            assert_eq!(s.get_property_val_str("name"), Some("kitchen"));
            assert!(s.get_fullname().starts_with("pimesh kitchen "));
        }
        assert_eq!(mqtt.get_property_val_str("tls"), Some("0"));
        assert_eq!(pimesh.get_property_val_str("tls"), None);
    }

    #[test]
    fn found_addresses_leave_out_loopback_and_link_local() {
        let ips: Vec<IpAddr> = ["10.0.0.2", "127.0.0.1", "fe80::1", "fd00::2", "10.0.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(reachable(ips, 8883), ["10.0.0.2:8883", "[fd00::2]:8883"]);
    }
}
