//! What the agent publishes goes out here: always on its own broker (in process), and, with
//! `[broker] external`, the public part of it on the shared broker too.
//!
//! On the shared broker every instance would otherwise publish the same retained states
//! and discovery configs, interleaved, so a slow instance could briefly put an older state
//! back. So one instance speaks there for the house: the live one with the lowest UUID
//! (`Agent::shared_beat`). Answers go where their client is; events come from the one
//! instance that saw them, so every instance sends its own.

use crate::broker::local::{LocalError, LocalLink, PublishProperties, ResponseTo};
use crate::external::External;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The agent's publishing link. Cheap to clone.
#[derive(Clone, Debug)]
pub(super) struct OwnLink {
    local: LocalLink,
    shared: Option<External>,
    /// This instance speaks for the house on the shared broker.
    speaker: Arc<AtomicBool>,
}

impl OwnLink {
    pub(super) fn new(local: LocalLink, shared: Option<External>) -> Self {
        OwnLink {
            local,
            shared,
            speaker: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The shared broker's link, with `[broker] external`.
    pub(super) fn shared(&self) -> Option<&External> {
        self.shared.as_ref()
    }

    /// Sets whether we speak for the house on the shared broker; true when that changed.
    pub(super) fn set_speaker(&self, speaker: bool) -> bool {
        self.speaker.swap(speaker, Ordering::Relaxed) != speaker
    }

    /// Whether we speak for the house on the shared broker.
    pub(super) fn is_speaker(&self) -> bool {
        self.shared.is_some() && self.speaker.load(Ordering::Relaxed)
    }

    /// Publishes on our broker; a public topic also on the shared broker (retained ones
    /// only while we speak for the house).
    pub(super) async fn publish(
        &self,
        topic: &str,
        qos: rumqttc::QoS,
        retain: bool,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), LocalError> {
        let payload = payload.into();
        if let Some(shared) = &self.shared {
            let public = !topic.starts_with('$');
            if public && (!retain || self.speaker.load(Ordering::Relaxed)) {
                shared.publish(topic, retain, payload.clone(), None);
            }
        }
        self.local.publish(topic, qos, retain, payload).await
    }

    /// Publishes an answer where its client is: the shared broker for a command that came
    /// from there, our own otherwise.
    pub(super) fn answer(
        &self,
        to: &ResponseTo,
        payload: Vec<u8>,
        properties: Option<PublishProperties>,
    ) -> Result<(), String> {
        match (&self.shared, to.shared) {
            (Some(shared), true) => {
                let correlation = properties.and_then(|p| p.correlation_data);
                if !shared.publish(&to.topic, false, payload, correlation) {
                    return Err("the shared broker is not connected".into());
                }
                Ok(())
            }
            _ => self
                .local
                .publish_with(&to.topic, false, payload, properties)
                .map_err(|e| e.to_string()),
        }
    }

    /// Subscribes on our own broker.
    pub(super) fn subscribe_many(&self, filters: &[String]) -> Result<(), LocalError> {
        self.local.subscribe_many(filters)
    }
}
