//! Start-up and the event loop: the config is already valid, then the data dir is locked,
//! the store loaded, the broker bound, pins claimed and power-on policies applied, the mesh
//! joined; then one task handles every event until the agent stops.

use super::*;

/// Runs the agent until `cancel` fires or a fatal error happens.
pub async fn run(settings: Settings, cancel: CancellationToken) -> Result<(), AgentError> {
    let data_dir = settings.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| identity::IdentityError::DataDir {
        dir: data_dir.clone(),
        source,
    })?;
    let _lock = runtime::lock(&data_dir)?;
    let store_dir = data_dir.join("store");
    let store_wiped = data_dir.join(identity::ID_FILE).exists() && !store_dir.exists();
    let uuid = identity::load_or_create(&data_dir)?;
    let (store, mut replica) = Store::open(&store_dir, uuid)?;
    let lost = match store.lost() {
        Some(why) => Some(why.to_string()),
        None if store_wiped => {
            let why = format!(
                "the store {} was missing though this instance's identity was kept",
                store_dir.display()
            );
            tracing::error!("{why}; this instance's own changes are gone from this disk, and it makes no new change until a peer has sent them back");
            Some(why)
        }
        None => fence_mark::read(&data_dir).inspect(|why| {
            tracing::warn!("the fence of an earlier start is still up ({why}): this instance makes no new change until a peer has sent its own changes back");
        }),
    };
    replica.set_max_clock_ahead(settings.config.mesh.max_clock_ahead_ms);
    let base = settings.config.base_topic.clone();

    let local_secret = crate::secret::local_password(&data_dir)?;
    let key = crate::secret::instance_key(&data_dir)?;
    replica.set_signer(key.clone());
    let mesh = match crate::membership::MeshFile::load(&data_dir)? {
        Some(m) => m,
        None => {
            // A new instance founds a mesh of its own; an invitation moves it to another.
            let m = crate::membership::MeshFile {
                mesh: Uuid::new_v4(),
                joined_with: None,
            };
            m.save(&data_dir)?;
            m
        }
    };
    let tls_names = crate::tls::Names::of_this_host(uuid, settings.bind);
    let tls = crate::tls::Material::load(&data_dir, &tls_names)?;
    let join = match settings.config.mesh.join.as_deref() {
        Some(text) => {
            let token = crate::membership::Token::decode(text)
                .map_err(|e| AgentError::Join(e.to_string()))?;
            join::needs_join(&mesh, &tls.ca.fingerprint(), &token).then_some(token)
        }
        None => None,
    };
    let broker_cfg = &settings.config.broker;
    if broker_cfg.allow_anonymous {
        tracing::warn!("[broker] allow-anonymous is on: any client that reaches the broker can switch relays without a password; use it in a lab only");
    }
    let auth = crate::door::auth::Auth::new(crate::door::auth::Keys {
        mesh: mesh.mesh,
        local_secret,
        allow_anonymous: broker_cfg.allow_anonymous,
        ..Default::default()
    });
    let broker = broker::start(broker::BrokerOptions {
        bind: settings.bind,
        choice: settings.port,
        mqtt5: settings.mqtt5_port,
        plaintext: broker_cfg.plaintext,
        tls_port: settings.tls_port,
        websocket: broker_cfg.websocket.then_some(match broker_cfg.ws_port {
            Some(p) => broker::PortChoice::Fixed(p),
            None => broker::PortChoice::FirstFree(broker::DEFAULT_WS_PORT),
        }),
        tls: tls.server_config()?,
        segments: (broker_cfg.segment_bytes, broker_cfg.segment_count),
        client_id: format!("pimesh-agent-{uuid}"),
        base: base.clone(),
        discovery_prefix: Some(&settings.config.homeassistant)
            .filter(|ha| ha.enabled)
            .map(|ha| ha.discovery_prefix.clone()),
        auth: auth.clone(),
        limits: crate::door::Limits {
            max_retained_topics: broker_cfg.max_retained,
            ..Default::default()
        },
        stop: cancel.child_token(),
    })?;
    let mut broker = broker;
    let web_tls = std::sync::Arc::new(crate::tls::ServerSlot::new(tls.web_server_config()?));
    let http_port = start_web(&settings, &broker, uuid, auth.clone(), &web_tls, &cancel)?;
    let mesh_port = match (settings.config.mesh.tls, broker.port) {
        (false, Some(plain)) => plain,
        _ => broker.tls_port,
    };
    let mesh_tls = if settings.config.mesh.tls {
        Some(tls.mesh_client_config()?)
    } else {
        None
    };
    let board = &settings.config.board;
    let mut gpio = hal::open_with(board.backend, &data_dir, &board.line_prefix)?;
    let Some((link, mut link_rx)) = broker.local.take() else {
        return Err(AgentError::BrokerDied);
    };
    let (link, mut shared_rx) = match &broker_cfg.external {
        Some(external) => {
            let ha = &settings.config.homeassistant;
            let plan = shared::plan(
                &base,
                uuid,
                ha.enabled
                    .then(|| format!("{}/status", ha.discovery_prefix)),
            );
            let (shared, rx) = crate::external::External::spawn(
                external,
                format!("pimesh-{uuid}"),
                plan,
                cancel.child_token(),
            )?;
            tracing::info!(host = %external.host, port = external.port, tls = external.tls, "serving the house on the shared broker too");
            (own_link::OwnLink::new(link, Some(shared)), Some(rx))
        }
        None => (own_link::OwnLink::new(link, None), None),
    };
    let (internal, mut internal_rx) = mpsc::unbounded_channel();
    let internal_for_sync = internal.clone();
    let internal_compact = internal.clone();
    let (mesh_tx, mut mesh_rx) = mpsc::channel(1024);
    let mut agent = Agent {
        uuid,
        name: settings.name.clone(),
        topics: Topics { base: base.clone() },
        base,
        port: mesh_port,
        bind: settings.bind,
        node: Node::new(uuid, &settings.name, replica),
        store,
        hw: hardware::Hardware::new(RelayBank::new(
            settings.config.relays.iter().map(RelaySpec::from).collect(),
        )),
        link,
        internal,
        deferred: Default::default(),
        syncer: durable::fsync_thread(internal_for_sync),
        compactor: super::compaction::compaction_thread(internal_compact),
        peers: Peers::new(uuid, &settings.name),
        links: HashMap::new(),
        mesh_tx,
        data_dir: data_dir.clone(),
        members: join::Membership {
            key,
            mesh: std::sync::Arc::new(std::sync::Mutex::new(mesh.mesh)),
            auth,
            invitations: admin::load_invitations(&data_dir),
            keys_dirty: false,
            join,
        },
        tls: join::Tls {
            material: tls,
            names: tls_names,
            door: broker.door.tls.clone(),
            web: web_tls,
            mesh: mesh_tls,
        },
        last_hello: None,
        dispatch: crate::mesh::dispatch::Dispatcher::new(answers::load(&data_dir)),
        answers_file: Default::default(),
        known: known::load(&data_dir),
        jobs: Default::default(),
        running: false,
        fence_marked: false,
        advertise: None,
        warns: Default::default(),
        trim: Default::default(),
        resolved: HashMap::new(),
        same_boot: runtime::same_boot(&data_dir),
        echoes: heapless::Deque::new(),
        ha: discovery::Discovery::new(settings.config.homeassistant.clone()),
        lan: None,
    };
    if settings.config.mesh.mdns {
        let announce = crate::lan::Announce {
            uuid,
            name: settings.name.clone(),
            mesh: mesh.mesh,
            mesh_port,
            mqtt_port: broker.port.unwrap_or(broker.tls_port),
            mqtt_tls: broker.port.is_none(),
        };
        agent.lan = crate::lan::announce(announce)
            .map_err(|e| tracing::warn!("{e}"))
            .ok();
    }
    agent
        .peers
        .set_stale_after(settings.config.mesh.stale_after_ms);
    if let Some(why) = lost {
        // Peers may hold our updates the disk lost: no change of ours until one sends them
        // back (crate::mesh::fence). What the disk lost may also have been all that said who
        // the peers are, so an instance that looks alone waits too, within the fence's limit.
        agent.fence(&why);
    }
    agent.reconcile_objects(&settings.config);
    agent.record_ha_components(&settings.config);
    agent.record_self_as_member();
    agent.adopt_unsigned();
    let mut claimed = Vec::new();
    for cfg in &settings.config.relays {
        let on = agent.claim_relay(gpio.as_mut(), cfg.clone())?;
        claimed.push((cfg.id.clone(), on, agent.on_for(&cfg.id)));
    }
    let start = agent.hw.bank.start(&claimed, std::time::Instant::now());
    agent.perform(start).await;
    for cfg in &settings.config.inputs {
        agent.claim_input(gpio.as_mut(), cfg.clone())?;
    }
    let (serial_tx, mut serial_rx) = mpsc::unbounded_channel();
    agent.start_serials(&settings.config.serials, &serial_tx, &cancel);
    agent.flush_store();
    for peer in &settings.config.mesh.peers {
        agent.connect_peer(peer);
    }
    let known: Vec<String> = agent.known.iter().map(|(_, a)| a.clone()).collect();
    for addr in known {
        agent.dial_known(&addr);
    }
    if let Some(token) = agent.members.join.clone() {
        tracing::info!(mesh = %token.mesh, "joining the mesh of the invitation");
        let request = crate::membership::JoinRequest {
            uuid,
            name: agent.name.clone(),
            key: crate::secret::to_hex(agent.members.key.verifying_key().as_bytes()),
            tls: false,
        };
        let tx = agent.internal.clone();
        let (base, stop) = (agent.base.clone(), cancel.child_token());
        let peers = settings.config.mesh.peers.clone();
        let lan = settings.config.mesh.mdns;
        let own = [
            broker.port,
            broker.port5,
            Some(broker.tls_port),
            broker.ws_port,
        ];
        let own: Vec<u16> = own.into_iter().flatten().collect();
        tokio::spawn(async move {
            let result = join::join(token, peers, request, base, lan, own, stop).await;
            let _ = tx.send(Internal::Joined(result));
        });
    }
    agent.running = true;

    let info = RuntimeInfo {
        pid: std::process::id(),
        uuid,
        name: agent.name.clone(),
        port: broker.port,
        mqtt5_port: broker.port5,
        tls_port: Some(broker.tls_port),
        ws_port: broker.ws_port,
        http_port,
        base_topic: agent.base.clone(),
    };
    agent.advertise = Some((data_dir.clone(), info));
    agent.on_link_up().await;

    let mut beat = tokio::time::interval(Duration::from_millis(BEAT_MS));
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            ev = link_rx.recv() => {
                if !agent.on_link_burst(ev, &mut link_rx).await {
                    break Err(AgentError::BrokerDied);
                }
            }
            Some((addr, ev)) = mesh_rx.recv() => agent.on_peer_link(&addr, ev).await,
            Some(ev) = internal_rx.recv() => agent.on_internal(ev).await,
            Some(ev) = serial_rx.recv() => agent.on_serial(ev).await,
            Some(ev) = recv_shared(&mut shared_rx) => agent.on_shared(ev).await,
            _ = beat.tick() => {
                agent.on_beat().await;
                agent.shared_beat().await;
            }
        }
        agent.settle_commands().await;
        agent.check_claims();
        // Durable before any automation job goes out: a job's id is derived from the
        // triggering update's sequence number, which must never be reused.
        agent.commit().await;
        agent.run_jobs().await;
        agent.commit().await;
        agent.publish_pending().await;
    };
    agent.shut_down().await;
    RuntimeInfo::remove(&data_dir);
    drop(gpio);
    result
}

/// The next event of the shared broker's link; never, without one.
async fn recv_shared(
    rx: &mut Option<mpsc::Receiver<crate::external::ExternalEvent>>,
) -> Option<crate::external::ExternalEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Serves the floor-plan page (`[web]`) next to the broker, with its users and the
/// instance's certificate (`tls`, which a join replaces).
/// A fixed port that is taken stops the start; no free port in the search range only costs
/// the page.
fn start_web(
    settings: &Settings,
    broker: &broker::Broker,
    uuid: Uuid,
    auth: crate::door::auth::Auth,
    tls: &std::sync::Arc<crate::tls::ServerSlot>,
    cancel: &CancellationToken,
) -> Result<Option<u16>, AgentError> {
    let web = &settings.config.web;
    if !web.enabled {
        return Ok(None);
    }
    let started = crate::web::start(crate::web::WebOptions {
        config: web.clone(),
        bind: settings.bind,
        base: settings.config.base_topic.clone(),
        uuid,
        name: settings.name.clone(),
        data_dir: settings.data_dir.clone(),
        auth,
        router: broker.door.router.clone(),
        tls: tls.clone(),
        stop: cancel.child_token(),
    });
    match started {
        Ok(port) => Ok(Some(port)),
        Err(e @ crate::web::WebError::NoFreePort { .. }) => {
            tracing::warn!(error = %e, "running without the web page");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
