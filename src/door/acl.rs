//! Who may publish and read where: one pure function per direction, checked for every packet.
//!
//! Topics come in two namespaces. The house's public topics live under `<base>/` (states,
//! `set`, `send`, `event`, instance status); everything internal lives under
//! `$pimesh/<base>/` ([`crate::api::internal`]), which no `#` or `<base>/#` subscriber sees.
//!
//! Three kinds of client reach an agent's broker. *Members* are the other instances of the
//! mesh: each may write only under its own `$pimesh/<base>/mesh/<uuid>/`, so no member can
//! speak for another on the broker. *The instance itself* (its CLI, with the credentials in
//! its data dir) may do what a user may, and run the agent's admin requests (users,
//! invitations). *Users* (Home Assistant, scripts, devices) may use the house's topics:
//! commands, the `get` and `peers` requests and their answers, and any topic outside
//! `<base>/` and `$pimesh/`, but never the mesh's internal topics (in either direction) and
//! never a topic only the agent writes (an object's state, events, instance status, answers
//! to the CLI, the Home Assistant discovery configs of pimesh's devices).

use uuid::Uuid;

/// The part of `$pimesh/<base>/` the mesh protocol lives under.
pub const MESH: &str = "mesh";
/// `$pimesh/<base>/agent/admin`: user management and invitations, for the instance's own CLI
/// only.
pub const ADMIN: &str = "agent/admin";
/// `$pimesh/<base>/agent/get` and `agent/peers`: requests users may send.
const USER_REQUESTS: [&str; 2] = ["agent/get", "agent/peers"];
/// `$pimesh/<base>/client/`: answers to clients (the local CLI's, each user's, the web
/// page's).
const REPLIES: &str = "client/";
/// `$pimesh/<base>/client/local/`: answers to the instance's own tools (invitation tokens,
/// generated passwords); nobody else reads there.
pub const LOCAL_REPLIES: &str = "client/local/";
/// `$pimesh/<base>/join/`: joins by invitation.
const JOIN: &str = "join/";

/// What follows `$pimesh/<base>/` in `topic` (a topic or a filter), if it lies there.
fn internal_rest<'a>(base: &str, topic: &'a str) -> Option<&'a str> {
    topic
        .strip_prefix(crate::api::INTERNAL)?
        .strip_prefix('/')?
        .strip_prefix(base)?
        .strip_prefix('/')
}

/// What follows `<base>/` in `topic`, if it lies there.
fn public_rest<'a>(base: &str, topic: &'a str) -> Option<&'a str> {
    topic.strip_prefix(base)?.strip_prefix('/')
}

/// `$pimesh/<base>/agent/admin`.
pub fn admin_topic(base: &str) -> String {
    format!("{}/{ADMIN}", crate::api::internal(base))
}

/// Whether the agent may publish an answer on `topic`, a reply topic some client named:
/// anywhere outside `<base>/` and the `$` topics; under `<base>/` and `$pimesh/<base>/` only
/// below `client/` (never an object's state, never an internal topic, never the local tools'
/// answers).
pub fn may_answer_on(base: &str, topic: &str) -> bool {
    let replies = |rest: &str| rest.starts_with(REPLIES) && !rest.starts_with(LOCAL_REPLIES);
    if topic.starts_with('$') {
        return internal_rest(base, topic).is_some_and(replies);
    }
    public_rest(base, topic).is_none_or(replies)
}

/// Whether a request from `sender` (as the front door names it, `<role>/<client id>`) may
/// have its answer on `topic`: a user's answer topic (`$pimesh/<base>/client/user-<name>/…`)
/// only for that user's own requests, so one user cannot send answers to another's tools.
pub fn may_answer_to(base: &str, topic: &str, sender: Option<&str>) -> bool {
    let Some(owner) = internal_rest(base, topic)
        .and_then(|rest| rest.strip_prefix(REPLIES))
        .and_then(|rest| rest.strip_prefix(crate::api::USER_REPLIES))
        .and_then(|rest| rest.split('/').next())
    else {
        return true;
    };
    sender
        .and_then(|s| s.strip_prefix("user "))
        .and_then(|s| s.strip_prefix(owner))
        .is_some_and(|s| s.starts_with('/'))
}

/// Who a connection authenticated as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Another instance of the mesh.
    Member(Uuid),
    /// This instance's own tools (credentials from its data dir).
    Local,
    /// A user account, or an anonymous client where `allow-anonymous` is on.
    User(String),
    /// An instance presenting an invitation: may only ask to join.
    Joiner(String),
}

impl Role {
    /// A short name for logs.
    pub fn describe(&self) -> String {
        match self {
            Role::Member(u) => format!("member {u}"),
            Role::Local => "local".into(),
            Role::User(n) => format!("user {n}"),
            Role::Joiner(id) => format!("invitation {id}"),
        }
    }

    /// Members and the local CLI are never rate limited and keep reserved connection slots.
    pub fn is_trusted(&self) -> bool {
        matches!(self, Role::Member(_) | Role::Local)
    }
}

/// `$pimesh/<base>/join/<invitation>/`: the only topics a joiner may use.
pub fn join_prefix(base: &str, invitation: &str) -> String {
    format!("{}/{JOIN}{invitation}/", crate::api::internal(base))
}

/// `$pimesh/<base>/join/+/request`: every join request, for the agent.
pub fn join_request_filter(base: &str) -> String {
    format!("{}/{JOIN}+/request", crate::api::internal(base))
}

/// The invitation id of a join request topic (`$pimesh/<base>/join/<id>/request`).
pub fn join_request_id<'a>(base: &str, topic: &'a str) -> Option<&'a str> {
    internal_rest(base, topic)?
        .strip_prefix(JOIN)?
        .strip_suffix("/request")
}

/// Whether `role` may log in over `channel`: a member that comes over TLS must present a
/// certificate of the mesh CA (mutual authentication) besides its key's proof. Over plaintext
/// its proof alone is checked, as mesh links with `[mesh] tls = false` need.
pub fn may_connect_over(role: &Role, channel: super::Channel) -> Result<(), &'static str> {
    match (role, channel) {
        (Role::Member(_), super::Channel::Tls { client_cert: false }) => {
            Err("a member connecting over TLS must present its certificate from the mesh CA")
        }
        _ => Ok(()),
    }
}

/// Whether `role` may publish on `topic`.
pub fn may_publish(base: &str, role: &Role, topic: &str) -> bool {
    if topic.is_empty() || topic.contains(['+', '#', '\0']) {
        return false;
    }
    let internal = internal_rest(base, topic);
    if topic.starts_with('$') && internal.is_none() {
        return false;
    }
    match role {
        Role::Member(uuid) => internal.is_some_and(|r| r.starts_with(&format!("{MESH}/{uuid}/"))),
        Role::Joiner(id) => topic == format!("{}request", join_prefix(base, id)),
        Role::Local | Role::User(_) => match (internal, public_rest(base, topic)) {
            (Some(r), _) => USER_REQUESTS.contains(&r) || (*role == Role::Local && r == ADMIN),
            (None, Some(r)) => is_command(r),
            (None, None) => true,
        },
    }
}

/// Whether a publish of `role` on `topic` is a command or a request to the agent: everything
/// a user or the local CLI may publish under `<base>/` or `$pimesh/<base>/` is one (see
/// [`may_publish`]). Such a publish is never retained (a command kept on the broker would be
/// run again), carries its sender and counts against a user's command rate.
pub fn is_request(base: &str, role: &Role, topic: &str) -> bool {
    matches!(role, Role::Local | Role::User(_))
        && (public_rest(base, topic).is_some() || internal_rest(base, topic).is_some())
}

/// Under `<base>/` users may only send commands: `<object>/set` and `<device>/send`.
fn is_command(rest: &str) -> bool {
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        [object, "set" | "send"] => !object.is_empty(),
        _ => false,
    }
}

/// Whether a client may publish on `topic` given Home Assistant discovery under `prefix`
/// (none when it is off): only the agent writes the configs of pimesh's own devices (node
/// ids starting with `pimesh`), so nobody can rename, hijack or remove a device of the
/// house. Home Assistant's `<prefix>/status` and other integrations' configs stay open.
pub fn may_publish_discovery(prefix: Option<&str>, topic: &str) -> bool {
    let Some(rest) = prefix.and_then(|p| topic.strip_prefix(p)?.strip_prefix('/')) else {
        return true;
    };
    !rest
        .split('/')
        .skip(1)
        .any(|level| level.starts_with("pimesh"))
}

/// Whether `role` may subscribe to `filter` (a `#` or `+` that could reach internal topics is
/// allowed; what it matches there is never delivered, see [`may_read`]).
pub fn may_subscribe(base: &str, role: &Role, filter: &str) -> bool {
    match role {
        Role::Member(_) => true,
        Role::Joiner(id) => filter == format!("{}reply", join_prefix(base, id)),
        Role::Local | Role::User(_) => {
            let mesh = format!("{MESH}/");
            internal_rest(base, &format!("{filter}/")).is_none_or(|r| !r.starts_with(&mesh))
        }
    }
}

/// Whether a message on `topic` may be delivered to `role`: of the internal topics, members
/// read all but the local tools' answers, the local CLI and users only the answers to clients
/// (the local tools' answers the local CLI alone), whatever filter matched them.
pub fn may_read(base: &str, role: &Role, topic: &str) -> bool {
    let Some(rest) = internal_rest(base, topic) else {
        return !matches!(role, Role::Joiner(_));
    };
    if rest.starts_with(LOCAL_REPLIES) {
        return *role == Role::Local;
    }
    match role {
        Role::Member(_) => true,
        Role::Joiner(id) => topic == format!("{}reply", join_prefix(base, id)),
        Role::Local => rest.starts_with(REPLIES),
        // A user reads the answers to its own requests only, not another user's.
        Role::User(name) => rest
            .strip_prefix(REPLIES)
            .and_then(|r| r.strip_prefix(crate::api::USER_REPLIES))
            .and_then(|r| r.strip_prefix(name.as_str()))
            .is_some_and(|r| r.starts_with('/')),
    }
}

/// Whether `filter` is a well-formed MQTT topic filter (`#` last and alone in its level,
/// `+` alone in its level, not empty, no NUL).
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| {
        (!l.contains('#') || (*l == "#" && i == levels.len() - 1))
            && (!l.contains('+') || *l == "+")
    })
}

/// Whether a topic name matches a filter, as MQTT defines it (`$` topics are not matched by
/// a leading wildcard).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "pimesh";

    #[test]
    fn only_the_agent_writes_pimesh_discovery_configs() {
        let ha = Some("homeassistant");
        assert!(may_publish_discovery(ha, "homeassistant/status"));
        assert!(may_publish_discovery(
            ha,
            "homeassistant/switch/zigbee_1/config"
        ));
        assert!(!may_publish_discovery(
            ha,
            "homeassistant/device/pimesh_lamp/config"
        ));
        assert!(!may_publish_discovery(
            ha,
            "homeassistant/switch/pimesh_lamp/pimesh_lamp_state/config"
        ));
        assert!(!may_publish_discovery(
            ha,
            "homeassistant/device/pimesh-instance_0a/config"
        ));
        assert!(may_publish_discovery(
            None,
            "homeassistant/device/pimesh_lamp/config"
        ));
        assert!(may_publish_discovery(ha, "other/device/pimesh_lamp/config"));
    }

    #[test]
    fn a_member_writes_only_under_its_own_uuid() {
        let me = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        let m = Role::Member(me);
        assert!(may_publish(
            B,
            &m,
            &format!("$pimesh/pimesh/mesh/{me}/updates")
        ));
        assert!(may_publish(
            B,
            &m,
            &format!("$pimesh/pimesh/mesh/{me}/status")
        ));
        assert!(!may_publish(
            B,
            &m,
            &format!("$pimesh/pimesh/mesh/{other}/updates")
        ));
        assert!(!may_publish(
            B,
            &m,
            &format!("$pimesh/other/mesh/{me}/updates")
        ));
        assert!(!may_publish(B, &m, &format!("pimesh/mesh/{me}/updates")));
        assert!(!may_publish(B, &m, "$pimesh/pimesh/mesh/owner"));
        assert!(!may_publish(B, &m, "pimesh/relay-1/set"));
        assert!(!may_publish(B, &m, "pimesh/relay-1"));
    }

    #[test]
    fn users_send_commands_but_never_write_what_the_agent_writes() {
        let u = Role::User("ha".into());
        for ok in [
            "pimesh/relay-1/set",
            "pimesh/port/send",
            "$pimesh/pimesh/agent/get",
            "$pimesh/pimesh/agent/peers",
            "zigbee2mqtt/lamp/set",
            "home/temp",
        ] {
            assert!(may_publish(B, &u, ok), "{ok}");
            assert!(may_publish(B, &Role::Local, ok), "{ok}");
        }
        for refused in [
            "pimesh/relay-1",
            "pimesh/relay-1/event",
            "pimesh/instance/x/status",
            "pimesh/agent/get",
            "$pimesh/pimesh/mesh/owner",
            "$pimesh/pimesh/mesh/x/set",
            "$pimesh/pimesh/relay-1/set",
            "$pimesh/pimesh/client/cli/reply",
            "$pimesh/pimesh/agent/admin",
            "$pimesh/pimesh/join/abc/request",
            "$pimesh/other/agent/get",
            "$pimesh/x",
            "$SYS/x",
            "a/+/b",
            "",
        ] {
            assert!(!may_publish(B, &u, refused), "{refused}");
        }
        assert!(may_publish(B, &Role::Local, "$pimesh/pimesh/agent/admin"));
        assert!(is_request(B, &u, "$pimesh/pimesh/agent/get"));
        assert!(is_request(B, &u, "pimesh/relay-1/set"));
        assert!(!is_request(B, &u, "home/temp"));
        assert!(!is_request(
            B,
            &Role::Member(Uuid::nil()),
            "pimesh/relay-1/set"
        ));
    }

    #[test]
    fn internal_topics_are_never_read_by_users() {
        let u = Role::User("ha".into());
        let m = Role::Member(Uuid::nil());
        assert!(!may_subscribe(B, &u, "$pimesh/pimesh/mesh/#"));
        assert!(!may_subscribe(B, &u, "$pimesh/pimesh/mesh"));
        assert!(may_subscribe(B, &u, "$pimesh/pimesh/meshes"));
        assert!(may_subscribe(B, &u, "#"));
        assert!(may_subscribe(B, &u, "$pimesh/#"));
        assert!(may_subscribe(B, &u, "pimesh/#"));
        assert!(!may_read(B, &u, "$pimesh/pimesh/mesh/x/beat"));
        assert!(!may_read(B, &u, "$pimesh/pimesh/join/abc/reply"));
        assert!(!may_read(B, &u, "$pimesh/pimesh/agent/get"));
        assert!(!may_read(B, &u, "$pimesh/pimesh/client/cli/reply"));
        assert!(may_read(B, &u, "$pimesh/pimesh/client/user-ha/reply"));
        assert!(!may_read(B, &u, "$pimesh/pimesh/client/user-hacker/reply"));
        assert!(!may_read(B, &u, "$pimesh/pimesh/client/user-ha"));
        // Answers on a user's topic only for that user's requests.
        let mine = "$pimesh/pimesh/client/user-ha/reply";
        assert!(may_answer_to(B, mine, Some("user ha/ha-client")));
        assert!(!may_answer_to(B, mine, Some("user hacker/ha-client")));
        assert!(!may_answer_to(B, mine, Some("user h/ha-client")));
        assert!(!may_answer_to(B, mine, Some("user hax/c")));
        assert!(!may_answer_to(B, mine, None));
        assert!(may_answer_to(
            B,
            "$pimesh/pimesh/client/cli/reply",
            Some("local/cli")
        ));
        assert!(may_answer_to(B, "app/answers", Some("user hacker/c")));
        assert!(!may_read(B, &u, "$pimesh/pimesh/client/#"));
        assert!(!may_read(B, &u, "$pimesh/pimesh/client/+/reply"));
        assert!(!may_read(B, &u, "$pimesh/pimesh/client/web-1234abcd/reply"));
        assert!(may_read(B, &Role::Local, "$pimesh/pimesh/client/cli/reply"));
        assert!(may_read(B, &u, "pimesh/relay-1"));
        assert!(may_read(B, &u, "$SYS/broker/uptime"));
        assert!(may_read(B, &m, "$pimesh/pimesh/mesh/x/beat"));
        assert!(!may_read(B, &u, "$pimesh/pimesh/client/local/reply"));
        assert!(!may_read(B, &m, "$pimesh/pimesh/client/local/reply"));
        assert!(may_read(
            B,
            &Role::Local,
            "$pimesh/pimesh/client/local/reply"
        ));
        assert!(!may_read(B, &Role::Local, "$pimesh/pimesh/mesh/x/beat"));
    }

    #[test]
    fn answers_never_land_on_what_the_agent_owns() {
        assert!(may_answer_on(B, "$pimesh/pimesh/client/cli/reply"));
        assert!(may_answer_on(B, "pimesh/client/mine"));
        assert!(may_answer_on(B, "home/replies/1"));
        assert!(!may_answer_on(B, "pimesh/relay-1"));
        assert!(!may_answer_on(B, "$pimesh/pimesh/mesh/x/updates"));
        assert!(!may_answer_on(B, "$pimesh/pimesh/client/local/reply"));
        assert!(!may_answer_on(B, "$pimesh/other/client/cli/reply"));
        assert!(!may_answer_on(B, "$SYS/broker/uptime"));
    }

    #[test]
    fn a_joiner_uses_only_its_invitation_topics() {
        let j = Role::Joiner("abc".into());
        assert!(may_publish(B, &j, "$pimesh/pimesh/join/abc/request"));
        assert!(!may_publish(B, &j, "$pimesh/pimesh/join/abd/request"));
        assert!(!may_publish(B, &j, "pimesh/relay-1/set"));
        assert!(may_subscribe(B, &j, "$pimesh/pimesh/join/abc/reply"));
        assert!(!may_subscribe(B, &j, "#"));
        assert!(!may_read(B, &j, "pimesh/relay-1"));
        assert!(may_read(B, &j, "$pimesh/pimesh/join/abc/reply"));
        assert_eq!(
            join_request_id(B, "$pimesh/pimesh/join/abc/request"),
            Some("abc")
        );
        assert_eq!(join_request_id(B, "pimesh/join/abc/request"), None);
    }

    #[test]
    fn a_member_over_tls_needs_the_mesh_certificate() {
        use crate::door::Channel;
        let m = Role::Member(Uuid::from_u128(1));
        let no_cert = Channel::Tls { client_cert: false };
        assert!(may_connect_over(&m, no_cert).is_err());
        assert!(may_connect_over(&m, Channel::Tls { client_cert: true }).is_ok());
        assert!(may_connect_over(&m, Channel::Plain).is_ok());
        assert!(may_connect_over(&Role::User("ha".into()), no_cert).is_ok());
        assert!(may_connect_over(&Role::Local, no_cert).is_ok());
    }

    #[test]
    fn filters_match_as_mqtt_says() {
        assert!(matches("#", "a/b"));
        assert!(matches("a/+/c", "a/b/c"));
        assert!(matches("a/#", "a"));
        assert!(!matches("a/+", "a/b/c"));
        assert!(!matches("#", "$SYS/x"));
        assert!(matches("$SYS/#", "$SYS/x"));
        assert!(valid_filter("a/+/#"));
        assert!(!valid_filter("a/#/b"));
        assert!(!valid_filter("a/b+"));
        assert!(!valid_filter(""));
    }
}
