//! A check of the instruction topic's publishers: one whose QoS the node's reliable subscriptions
//! cannot match (best effort) is never heard, so the node says so, once per publisher.

use std::time::{Duration, Instant};

use r2r::qos::ReliabilityPolicy;

/// Warns, once per publisher, about instruction publishers whose QoS the node's reliable
/// subscriptions cannot match (best effort): what they send is never heard.
pub struct QosCheck {
    topic: String,
    warned: Vec<Vec<u8>>,
    /// When each unwarned best-effort publisher was first seen without its node's name.
    unnamed_since: Vec<(Vec<u8>, Instant)>,
    next: Instant,
}

/// The graph can list an endpoint before its node's name arrives (rmw sends names separately,
/// on ros_discovery_info): the warning waits this long for the name before it goes out without.
const NAME_GRACE: Duration = Duration::from_secs(3);
/// What rmw reports as the node name of an endpoint whose node it does not know yet.
const UNKNOWN_NODE_NAME: &str = "_NODE_NAME_UNKNOWN_";

impl QosCheck {
    pub fn new(topic: String) -> Self {
        Self { topic, warned: Vec::new(), unnamed_since: Vec::new(), next: Instant::now() }
    }

    pub fn poll(&mut self, node: &r2r::Node) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + Duration::from_secs(1);
        let Ok(publishers) = node.get_publishers_info_by_topic(&self.topic, false) else {
            return;
        };
        // Forget publishers that are gone, so the lists stay as long as the graph's.
        let present: Vec<Vec<u8>> = publishers.iter().map(|p| p.endpoint_gid.to_vec()).collect();
        self.warned.retain(|g| present.contains(g));
        self.unnamed_since.retain(|(g, _)| present.contains(g));
        for p in publishers {
            let gid = p.endpoint_gid.to_vec();
            if p.qos_profile.reliability != ReliabilityPolicy::BestEffort || self.warned.contains(&gid) {
                continue;
            }
            let named = p.node_name != UNKNOWN_NODE_NAME;
            if !named {
                let since = match self.unnamed_since.iter().find(|(g, _)| *g == gid) {
                    Some((_, since)) => *since,
                    None => {
                        self.unnamed_since.push((gid.clone(), now));
                        now
                    }
                };
                if now < since + NAME_GRACE {
                    continue;
                }
            }
            self.unnamed_since.retain(|(g, _)| *g != gid);
            self.warned.push(gid);
            let publisher = if named {
                format!("{}/{}", p.node_namespace.trim_end_matches('/'), p.node_name)
            } else {
                "a node whose name is not known yet".to_owned()
            };
            tracing::warn!(
                "{publisher} publishes on {} with best-effort reliability, which this node's reliable instruction \
                 subscriptions cannot hear: its instructions are ignored (publish with reliable QoS, volatile or transient local)",
                self.topic
            );
        }
    }
}
