//! Where a command runs, decided without I/O from the receiving instance's view of the mesh.
//!
//! - Hardware objects (relays, serial channels) run on their one holder; if the holder is offline the answer
//!   is `unavailable` at once, from the mesh view, not after a timeout.
//! - Virtual objects run round-robin over the live instances that run them, in UUID order
//!   (the mesh's agreed order): the first command on the first, the next on the second, …
//! - Moves (room, x, y) are plain replicated state: any instance records them.
//! - Inputs cannot be commanded: their state comes from their pin.

use uuid::Uuid;

/// Where to run a command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// Run it here.
    Local,
    /// Send it to this instance.
    Forward(Uuid),
    /// Nobody can run it now; the reason for the answer.
    Unavailable(String),
    /// It can never run; the reason for the answer.
    Rejected(String),
}

/// What the router needs to know about the object a command is for.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    /// Object id, for messages.
    pub id: &'a str,
    /// Its kind (`relay`, `input`, `virtual`, …).
    pub kind: &'a str,
    /// Instances claiming it: the holder of a relay, the runners of a virtual object.
    pub claimants: Vec<Uuid>,
}

/// Round-robin position of the receiving instance; advances once per routed virtual command.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// Commands routed so far.
    next: u64,
}

impl RoundRobin {
    /// Picks the next of `candidates` (already in agreed order), advancing the rotation.
    pub fn pick(&mut self, candidates: &[Uuid]) -> Option<Uuid> {
        if candidates.is_empty() {
            return None;
        }
        let i = (self.next % candidates.len() as u64) as usize;
        self.next = self.next.wrapping_add(1);
        Some(candidates[i])
    }
}

/// Decides where a state command for `target` runs, as seen by instance `me`.
/// `alive` tells which instances are online; `skip` lists executors already tried for this
/// command (a retry after an executor died); `name` names instances for messages.
pub fn route(
    me: Uuid,
    target: &Target<'_>,
    alive: impl Fn(Uuid) -> bool,
    skip: &[Uuid],
    rr: &mut RoundRobin,
    name: impl Fn(Uuid) -> String,
) -> Route {
    match target.kind {
        "relay" | "serial-channel" => match target.claimants.as_slice() {
            [] => Route::Unavailable(format!("no instance holds {}", target.id)),
            [holder] if *holder == me => Route::Local,
            [holder] if alive(*holder) && !skip.contains(holder) => Route::Forward(*holder),
            [holder] => Route::Unavailable(format!(
                "{} is held by {}, which is offline",
                target.id,
                name(*holder)
            )),
            many => Route::Rejected(format!(
                "{} is claimed by more than one instance ({}); remove it from all configs but one",
                target.id,
                many.iter().map(|u| name(*u)).collect::<Vec<_>>().join(", ")
            )),
        },
        "virtual" => {
            let mut live: Vec<Uuid> = target
                .claimants
                .iter()
                .copied()
                .filter(|u| alive(*u) && !skip.contains(u))
                .collect();
            live.sort();
            match rr.pick(&live) {
                Some(u) if u == me => Route::Local,
                Some(u) => Route::Forward(u),
                None => Route::Unavailable(format!(
                    "no live instance runs the virtual object {}",
                    target.id
                )),
            }
        }
        kind => Route::Rejected(format!(
            "{} is an {kind}; its state comes from its pin and cannot be set",
            target.id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        let mut v: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        v.sort();
        v
    }

    fn name(u: Uuid) -> String {
        u.to_string()[..4].to_string()
    }

    #[test]
    fn relays_run_on_their_holder_only() {
        let [me, a] = ids(2)[..] else { unreachable!() };
        let mut rr = RoundRobin::default();
        let mine = Target {
            id: "l",
            kind: "relay",
            claimants: vec![me],
        };
        assert_eq!(route(me, &mine, |_| true, &[], &mut rr, name), Route::Local);
        let theirs = Target {
            id: "l",
            kind: "relay",
            claimants: vec![a],
        };
        assert_eq!(
            route(me, &theirs, |_| true, &[], &mut rr, name),
            Route::Forward(a)
        );
        assert!(matches!(
            route(me, &theirs, |u| u == me, &[], &mut rr, name),
            Route::Unavailable(_)
        ));
        let nobody = Target {
            id: "l",
            kind: "relay",
            claimants: vec![],
        };
        assert!(matches!(
            route(me, &nobody, |_| true, &[], &mut rr, name),
            Route::Unavailable(_)
        ));
        let both = Target {
            id: "l",
            kind: "relay",
            claimants: vec![me, a],
        };
        assert!(matches!(
            route(me, &both, |_| true, &[], &mut rr, name),
            Route::Rejected(_)
        ));
        let input = Target {
            id: "b",
            kind: "input",
            claimants: vec![me],
        };
        assert!(matches!(
            route(me, &input, |_| true, &[], &mut rr, name),
            Route::Rejected(_)
        ));
    }

    #[test]
    fn serial_channels_run_on_their_holder_like_relays() {
        let [me, a] = ids(2)[..] else { unreachable!() };
        let mut rr = RoundRobin::default();
        let target = |claimants| Target {
            id: "arduino-r1",
            kind: "serial-channel",
            claimants,
        };
        assert_eq!(
            route(me, &target(vec![me]), |_| true, &[], &mut rr, name),
            Route::Local
        );
        assert_eq!(
            route(me, &target(vec![a]), |_| true, &[], &mut rr, name),
            Route::Forward(a)
        );
        assert!(matches!(
            route(me, &target(vec![a]), |u| u == me, &[], &mut rr, name),
            Route::Unavailable(_)
        ));
        assert!(matches!(
            route(me, &target(vec![me, a]), |_| true, &[], &mut rr, name),
            Route::Rejected(_)
        ));
    }

    #[test]
    fn virtual_commands_rotate_in_uuid_order_and_skip_the_dead() {
        let all = ids(3);
        let me = all[1];
        let mut rr = RoundRobin::default();
        let v = Target {
            id: "v",
            kind: "virtual",
            claimants: vec![all[2], all[0], all[1]],
        };
        let picks: Vec<Route> = (0..6)
            .map(|_| route(me, &v, |_| true, &[], &mut rr, name))
            .collect();
        assert_eq!(
            picks,
            vec![
                Route::Forward(all[0]),
                Route::Local,
                Route::Forward(all[2]),
                Route::Forward(all[0]),
                Route::Local,
                Route::Forward(all[2]),
            ]
        );
        let dead = all[2];
        for _ in 0..4 {
            assert_ne!(
                route(me, &v, |u| u != dead, &[], &mut rr, name),
                Route::Forward(dead)
            );
        }
        // A retry never goes back to an executor already tried.
        assert_eq!(
            route(me, &v, |_| true, &[all[0], all[2]], &mut rr, name),
            Route::Local
        );
        assert!(matches!(
            route(me, &v, |_| false, &[me], &mut rr, name),
            Route::Unavailable(_)
        ));
    }
}
